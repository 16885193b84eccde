/**
 * ARC sealing (RFC 8617) of the copies Sterna forwards to other domains (queue/forward.ts): an
 * ARC set of instance N+1 at the top of the copy, N the highest instance the message already
 * carries:
 *
 *   ARC-Seal: i=N+1; a=rsa-sha256; cv=none|pass|fail; d=; s=; b=      (RFC 8617 4.1.3)
 *   ARC-Message-Signature: i=N+1; a=rsa-sha256; c=relaxed/relaxed; …   (4.1.2)
 *   ARC-Authentication-Results: i=N+1; <our Authentication-Results>    (4.1.1)
 *
 * The AAR is the Authentication-Results field Sterna put on the message when it arrived (its
 * authserv-id ours: forged ones were removed on arrival, so the topmost is ours). cv (RFC 8617
 * 5.1.1, 4.1.3): none for the first set; pass when our check found the incoming chain valid
 * (arc=pass); fail otherwise (arc=fail, or a chain we could not verify). No set is added when the
 * newest incoming seal already says cv=fail (RFC 8617 5.1.2 step 2: the chain is over), when
 * N is 50 (RFC 8617 4.2.1: i is at most 50), when the message carries no Authentication-Results
 * of ours (it was not checked on arrival: nothing to attest), or when no key applies.
 *
 * The key: the active RSA key of [[dkim.keys]] for the domain of the alias that forwards (or its
 * nearest parent), else the hostname's (mailauth 4.13 seals with rsa-sha256 only). The hashing,
 * canonicalization and crypto are mailauth's sealMessage(), fed the copy as it streams.
 * Trust level: the message is untrusted; our Authentication-Results field is trusted (made
 * here); the keys are the operator's secrets, never logged.
 */
import { PassThrough } from 'node:stream';
import { sealMessage } from 'mailauth';
import { authservIdOf, AUTH_RESULTS_NAME } from './authserv-id.js';
import type { DkimKey, DkimKeyStore } from './dkim-keys.js';
import { HeaderSection, writeWithBackpressure } from './header-section.js';

// mailauth 4.13's sealMessage() reads these too (lib/arc/index.js createSeal); its type omits them.
declare module 'mailauth' {
  interface ARCSealOptions {
    /** The AAR's payload: "authserv-id; results" (without "i=N; "). */
    authResults?: string;
    /** The chain validation status the seal states. */
    cv?: ArcCv;
    /** The instance of the new set. */
    i?: number;
  }
}

export type ArcCv = 'none' | 'pass' | 'fail';

/** RFC 8617 4.2.1: the largest instance a set may have. */
export const ARC_MAX_INSTANCE = 50;

export type SealPlan =
  | { kind: 'seal'; instance: number; cv: ArcCv; authResults: string; key: DkimKey }
  | { kind: 'skip'; reason: string };

export interface ArcSealerOptions {
  /** The [[dkim.keys]] store (only its lookup of active keys by domain). */
  keys: Pick<DkimKeyStore, 'keysFor'>;
  hostname: string;
  /** Our authserv-id ([mailauth] authserv_id, or the hostname). */
  authservId: string;
  now?: () => number;
}

/** One header field, unfolded only for reading: its lower-cased name and its value as written. */
interface Field {
  name: string;
  value: string;
}

/** The fields of a header section (continuation lines joined to their field). */
export function headerFields(header: Buffer): Field[] {
  const out: Field[] = [];
  for (const line of header.toString('utf8').split(/\r?\n/)) {
    if (line === '') break;
    const last = out.at(-1);
    if ((line.startsWith(' ') || line.startsWith('\t')) && last !== undefined) {
      last.value += `\r\n${line}`;
      continue;
    }
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    out.push({ name: line.slice(0, colon).trim().toLowerCase(), value: line.slice(colon + 1) });
  }
  return out;
}

/** The value of tag `tag` of a tag=value list (RFC 6376 3.2), or undefined. */
function tagOf(value: string, tag: string): string | undefined {
  for (const part of value.replace(/\r\n[ \t]/g, ' ').split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim().toLowerCase() === tag) return part.slice(eq + 1).trim();
  }
  return undefined;
}

const ARC_FIELDS = new Set(['arc-seal', 'arc-message-signature', 'arc-authentication-results']);

export class ArcSealer {
  readonly #o: ArcSealerOptions;

  constructor(o: ArcSealerOptions) {
    this.#o = o;
  }

  /** The RSA key that seals for `domain`: its own (or a parent's), else the hostname's. */
  keyFor(domain: string): DkimKey | undefined {
    const rsa = (d: string): DkimKey | undefined =>
      this.#o.keys.keysFor(d).find((k) => k.algorithm === 'rsa');
    return rsa(domain) ?? rsa(this.#o.hostname);
  }

  /** What to add to a copy whose header section is `header` (null: too large to read). */
  plan(header: Buffer | null, forwardingDomain: string): SealPlan {
    const key = this.keyFor(forwardingDomain);
    if (key === undefined)
      return {
        kind: 'skip',
        reason: `no active RSA key in [[dkim.keys]] for ${forwardingDomain} or ${this.#o.hostname}`,
      };
    if (header === null) return { kind: 'skip', reason: 'header section too large to read' };
    const fields = headerFields(header);
    const ours = fields.find(
      (f) =>
        f.name === AUTH_RESULTS_NAME &&
        authservIdOf(f.value)?.toLowerCase() === this.#o.authservId.toLowerCase(),
    );
    if (ours === undefined)
      return { kind: 'skip', reason: 'no Authentication-Results field of ours: the message was not checked' };
    let newest = 0;
    const seals = new Map<number, string | undefined>();
    let arcFields = 0;
    for (const f of fields) {
      if (!ARC_FIELDS.has(f.name)) continue;
      arcFields++;
      const i = Number(tagOf(f.value, 'i'));
      if (!Number.isInteger(i) || i < 1) continue;
      if (i > newest) newest = i;
      if (f.name === 'arc-seal') seals.set(i, tagOf(f.value, 'cv')?.toLowerCase());
    }
    const newestCv = seals.get(newest);
    if (arcFields > 0 && newest === 0)
      return { kind: 'skip', reason: 'ARC fields without a readable instance' };
    if (newest >= ARC_MAX_INSTANCE)
      return { kind: 'skip', reason: `the chain has ${newest} sets already (RFC 8617 4.2.1: at most 50)` };
    if (newestCv === 'fail')
      return { kind: 'skip', reason: `the newest seal (i=${newest}) says cv=fail: the chain is over` };
    const authResults = ours.value.replace(/^[ \t]+/, '').replace(/\r\n$/, '');
    const arc = /(?:^|;)\s*arc\s*=\s*([a-z]+)/i
      .exec(ours.value.replace(/\r\n[ \t]/g, ' '))?.[1]
      ?.toLowerCase();
    const cv: ArcCv = newest === 0 ? 'none' : arc === 'pass' ? 'pass' : 'fail';
    return { kind: 'seal', instance: newest + 1, cv, authResults, key };
  }

  /** A sealer for one copy: write every octet of it, then finish() gives the three fields. */
  begin(plan: Extract<SealPlan, { kind: 'seal' }>): ArcSealStream {
    return new ArcSealStream(plan, new Date((this.#o.now ?? Date.now)()));
  }
}

export class ArcSealStream {
  readonly #input = new PassThrough({ highWaterMark: 64 * 1024 });
  /** Settles with the fields or the error; never rejects. */
  readonly #done: Promise<Buffer | Error>;

  constructor(plan: Extract<SealPlan, { kind: 'seal' }>, signTime: Date) {
    this.#done = sealMessage(this.#input, {
      signingDomain: plan.key.domain,
      selector: plan.key.selector,
      privateKey: plan.key.pem,
      algorithm: 'rsa-sha256',
      authResults: plan.authResults,
      cv: plan.cv,
      i: plan.instance,
      signTime,
    }).catch((err: unknown) => (err instanceof Error ? err : new Error(String(err))));
  }

  write(chunk: Buffer): Promise<void> {
    return writeWithBackpressure(this.#input, chunk, this.#done);
  }

  /** The ARC-Seal, ARC-Message-Signature and ARC-Authentication-Results fields, CRLF-ended. */
  async finish(sawHeaderEnd: boolean): Promise<Buffer> {
    // A message that is all header section: its empty body starts here (RFC 6376 3.4.4).
    if (!sawHeaderEnd) this.#input.write(Buffer.from('\r\n'));
    this.#input.end();
    const out = await this.#done;
    if (out instanceof Error) throw out;
    return out;
  }

  abort(): void {
    this.#input.destroy();
  }
}

/** The header section of a message read from `body`, or null when it is longer than `max` octets. */
export async function readHeaderSection(body: AsyncIterable<Buffer>, max: number): Promise<Buffer | null> {
  const scan = new HeaderSection();
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of body) {
    chunks.push(chunk);
    total += chunk.length;
    if (scan.scan(chunk)) break;
    if (total > max) return null;
  }
  return scan.bytes > max ? null : Buffer.concat(chunks);
}
