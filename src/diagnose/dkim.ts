/**
 * The DKIM key records of the given selectors (RFC 6376 3.6.1): published at
 * SELECTOR._domainkey.DOMAIN, one record, a valid tag list, v=DKIM1 if present, a known key type
 * (rsa, or ed25519 per RFC 8463), a key that is not revoked (empty p=) and that parses, an RSA
 * key of at least 1024 bits (RFC 8301 3.2: verifiers must refuse shorter ones), not in testing
 * mode (t=y). Trust: the records are untrusted DNS data; key bytes are only parsed.
 */
import { createPublicKey } from 'node:crypto';
import type { DomainContext } from './context.js';
import { finding, type Finding } from './finding.js';
import { parseTagList, tagValue, txtStrings } from './txt-records.js';

/** RFC 8301 3.2: signers must use RSA keys of at least 1024 bits; verifiers must not accept shorter ones. */
const MIN_RSA_BITS = 1024;

export async function checkDkim(ctx: DomainContext): Promise<Finding[]> {
  if (ctx.dkimSelectors.length === 0) {
    return [
      finding(
        'dkim',
        'warning',
        'dkim.no-selector',
        ctx.domain,
        'no DKIM selector to check: none was given and the configuration names none; mail that is not DKIM-signed fails DMARC whenever SPF does (forwarding), and Gmail and Yahoo ask bulk senders for both',
        'sign outgoing mail with DKIM: sterna dkim keygen DOMAIN prints the record to publish and the [[dkim.keys]] entry to add (sterna diagnose then checks its selector)',
      ),
    ];
  }
  return (await Promise.all(ctx.dkimSelectors.map((s) => checkSelector(ctx, s)))).flat();
}

async function checkSelector(ctx: DomainContext, selector: string): Promise<Finding[]> {
  const name = `${selector}._domainkey.${ctx.domain}`;
  const publish = `publish: ${name}. IN TXT "v=DKIM1; k=rsa; p=<the base64 public key of the signing key>"`;
  const txt = txtStrings(await ctx.dns.txt(name));
  if (!Array.isArray(txt)) {
    return [
      finding(
        'dkim',
        'warning',
        'dkim.unknown',
        name,
        `could not check: ${txt.failed}`,
        'check [dns] servers and try again',
      ),
    ];
  }
  if (txt.length === 0) {
    return [
      finding(
        'dkim',
        'error',
        'dkim.missing',
        name,
        `no DKIM key is published for selector "${selector}": every signature made with it fails`,
        publish,
      ),
    ];
  }
  if (txt.length > 1) {
    return [
      finding(
        'dkim',
        'error',
        'dkim.multiple',
        name,
        `${txt.length} TXT records at ${name}: verifiers may pick any of them (RFC 6376 3.6.2.2), so signatures fail at random`,
        'keep only the key record',
      ),
    ];
  }
  const record = txt[0] ?? '';
  const bad = (id: string, message: string, fix = publish): Finding[] => [
    finding('dkim', 'error', id, name, message, fix),
  ];
  const tags = parseTagList(record);
  if (tags === null)
    return bad('dkim.syntax', `the DKIM record "${record}" is not a tag=value list (RFC 6376 3.2)`);
  const v = tagValue(tags, 'v');
  if (v !== undefined && (v !== 'DKIM1' || tags[0]?.[0] !== 'v')) {
    return bad(
      'dkim.syntax',
      `the DKIM record "${record}" has v=${v}; it must be "v=DKIM1" and come first (RFC 6376 3.6.1)`,
    );
  }
  const k = (tagValue(tags, 'k') ?? 'rsa').toLowerCase();
  const p = tagValue(tags, 'p');
  if (p === undefined)
    return bad('dkim.syntax', `the DKIM record has no p= tag (the public key, RFC 6376 3.6.1)`);
  const key = p.replace(/\s+/g, '');
  if (key === '') {
    return bad(
      'dkim.revoked',
      `the key of selector "${selector}" is revoked (empty p=): every signature made with it fails`,
    );
  }
  let detail: string;
  if (k === 'rsa') {
    let bits: number | undefined;
    try {
      bits = createPublicKey({ key: Buffer.from(key, 'base64'), format: 'der', type: 'spki' })
        .asymmetricKeyDetails?.modulusLength;
    } catch {
      bits = undefined;
    }
    if (bits === undefined)
      return bad('dkim.bad-key', `the p= value of selector "${selector}" is not a valid RSA public key`);
    if (bits < MIN_RSA_BITS) {
      return bad(
        'dkim.weak-key',
        `the RSA key of selector "${selector}" has ${bits} bits: RFC 8301 3.2 tells verifiers to refuse keys under ${MIN_RSA_BITS} bits, so every signature made with it fails`,
        'make a 2048-bit key, publish it under a new selector, sign with it, then remove this one',
      );
    }
    detail = `RSA, ${bits} bits`;
  } else if (k === 'ed25519') {
    if (Buffer.from(key, 'base64').length !== 32) {
      return bad(
        'dkim.bad-key',
        `the p= value of selector "${selector}" is not a 32-byte Ed25519 key (RFC 8463 4.2)`,
      );
    }
    detail = 'Ed25519';
  } else {
    return bad(
      'dkim.key-type',
      `selector "${selector}" has key type k=${k}, which verifiers do not know (rsa or ed25519)`,
    );
  }
  if ((tagValue(tags, 't') ?? '').split(':').some((f) => f.trim().toLowerCase() === 'y')) {
    return [
      finding(
        'dkim',
        'warning',
        'dkim.testing',
        name,
        `selector "${selector}" (${detail}) is in testing mode (t=y): verifiers may treat its signatures as absent (RFC 6376 3.6.1)`,
        'remove t=y from the record once signing works',
      ),
    ];
  }
  return [finding('dkim', 'ok', 'dkim.ok', name, `selector "${selector}" publishes a valid key (${detail})`)];
}
