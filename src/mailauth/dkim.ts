/**
 * DKIM results (RFC 6376, RFC 8463 ed25519) as Sterna reports them, from mailauth's verifier
 * output. The hashing, canonicalization and crypto are mailauth's; this module decides what a
 * result means, where mailauth's own mapping differs from the RFCs or from Sterna's policy:
 *
 * - body hash mismatch: mailauth says "neutral"; RFC 6376 6.1.3 makes it a PERMFAIL of the
 *   signature, which RFC 8601 2.7.1 reports as "fail".
 * - no key record, or a record that does not parse: mailauth says "neutral"; RFC 6376 6.1.2
 *   PERMFAIL, RFC 8601 2.7.1 "permerror" (the key cannot be had).
 * - an RSA key under min_rsa_key_bits (1024, RFC 8301 3.2): mailauth says "policy"; Sterna
 *   reports "fail", as RFC 8301 3.2 says such a signature is not valid.
 * - rsa-sha1: mailauth verifies it; RFC 8301 3.1 says verifiers must not consider it valid: "fail".
 * - l= (body length) that leaves part of the body unsigned: mailauth passes it; unless
 *   allow_partial_body is set, Sterna reports "policy" (RFC 8601 2.7.1: verified, but refused by
 *   local policy; RFC 6376 8.2: content can be appended after the signed part) and DMARC does
 *   not count it.
 * - a DKIM-Signature field that mailauth cannot parse (unknown algorithm or canonicalization,
 *   no d= or s=) is skipped silently by mailauth; Sterna reports it as "neutral" (RFC 8601
 *   2.7.1: a signature with syntax errors), one result per such field.
 * - a DNS failure stays "temperror" (RFC 6376 6.1.2 TEMPFAIL), never "fail".
 * Trust level: signatures, keys and their comments are untrusted.
 */
import type { DKIMResult } from 'mailauth';
import type { DkimOutcome } from './results.js';

export interface DkimPolicy {
  allowPartialBody: boolean;
}

const PERMERROR_COMMENTS = new Set([
  'no key',
  'unknown key version',
  'unknown key type',
  'invalid public key',
]);

/** mailauth keeps fields its typings do not list; read them without trusting their types. */
function field(r: DKIMResult, name: string): unknown {
  return (r as unknown as Record<string, unknown>)[name];
}

function text(v: unknown): string | undefined {
  return typeof v === 'string' && v !== '' ? v : undefined;
}

export function dkimOutcome(r: DKIMResult, policy: DkimPolicy): DkimOutcome {
  const status = r.status;
  const base: DkimOutcome = { result: 'neutral' };
  const domain = text(r.signingDomain);
  const selector = text(r.selector);
  const algorithm = text(field(r, 'algo'));
  const b = text(field(r, 'signature'));
  if (domain !== undefined) base.domain = domain;
  if (selector !== undefined) base.selector = selector;
  if (algorithm !== undefined) base.algorithm = algorithm;
  if (b !== undefined) base.b = b.replace(/\s+/g, '').slice(0, 8);
  const comment = status.comment ?? '';
  switch (status.result) {
    case 'none':
      return { result: 'none', reason: 'message not signed' };
    case 'pass':
      if (algorithm?.toLowerCase() === 'rsa-sha1') {
        return { ...base, result: 'fail', reason: 'rsa-sha1 is not accepted (RFC 8301)' };
      }
      // underSized: octets of the canonicalized body after the l= limit (a number at run time).
      if (
        field(r, 'canonBodyLengthLimited') === true &&
        Boolean(status.underSized) &&
        !policy.allowPartialBody
      ) {
        return { ...base, result: 'policy', reason: 'l= leaves part of the body unsigned' };
      }
      return { ...base, result: 'pass' };
    case 'fail':
      return { ...base, result: 'fail', reason: comment || 'bad signature' };
    case 'policy':
      return { ...base, result: 'fail', reason: 'RSA key too short (RFC 8301 3.2)' };
    case 'temperror':
    case 'temperr':
      return { ...base, result: 'temperror', reason: comment || 'DNS failure' };
    case 'neutral':
      if (comment === 'body hash did not verify') return { ...base, result: 'fail', reason: comment };
      if (PERMERROR_COMMENTS.has(comment)) return { ...base, result: 'permerror', reason: comment };
      return { ...base, result: 'neutral', reason: comment || 'signature could not be verified' };
    case 'permerror':
      return { ...base, result: 'permerror', reason: comment };
    case 'softfail':
    case 'skipped':
      return { ...base, result: 'neutral', reason: comment };
    default: {
      const never: never = status.result;
      throw new Error(`unhandled DKIM status ${String(never)}`);
    }
  }
}

/** A DKIM-Signature field mailauth skipped as unparseable (see the module comment). */
export function unparseableSignature(): DkimOutcome {
  return { result: 'neutral', reason: 'DKIM-Signature field could not be parsed' };
}
