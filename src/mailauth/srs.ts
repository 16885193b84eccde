/**
 * The Sender Rewriting Scheme (SRS, Shevek's "Sender Rewriting Scheme" paper as implemented by
 * libsrs2 and postsrsd): when Sterna forwards mail from an outside domain to another domain,
 * the envelope sender becomes an address in Sterna's SRS domain, so that the next hop's SPF
 * check (RFC 7208) of MAIL FROM is made against Sterna, the host that really sends; bounces to
 * that address come back here, are verified and go on to the original sender.
 *
 *   SRS0=HHHHHH=TT=orig.example=alice@srs.example        (we forward alice@orig.example)
 *   SRS1=HHHHHH=fwd.example==hhhh=tt=orig.example=alice@srs.example
 *                                                       (we forward fwd.example's SRS0 address)
 *
 * HHHHHH: the first 6 base32 characters of HMAC-SHA256(secret, the lower-cased parts), so no
 * one without the secret can make an address that Sterna routes (an open relay otherwise);
 * TT: the day (days since 1970 modulo 1024) in two base32 characters, so an address expires.
 * An SRS1 address carries the first forwarder's opaque part unchanged (only that forwarder can
 * check its hash and age) and a hash of its own over it; a bounce to it goes back to that
 * forwarder as its SRS0 address. Base32 makes hash and timestamp case-insensitive, as SMTP
 * relays may change the case of a local part; compared in constant time.
 *
 * Pure; no I/O (the secret is read by srs-secret.ts). Trust level: addresses arriving in RCPT
 * TO are untrusted (a forged or expired one is refused); the secret is the operator's.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
/** Characters of the hash in an address: 30 bits. */
export const SRS_HASH_LENGTH = 6;
const DAY_MS = 86_400_000;
/** The timestamp counts days modulo 1024 (two base32 characters), as libsrs2. */
const TIME_SLOTS = 1024;

export interface SrsOptions {
  /** The domain of rewritten addresses (its MX must be Sterna, its SPF must allow Sterna). */
  domain: string;
  /** The secrets: the first makes new addresses, every one is accepted (rotation). */
  secrets: readonly Buffer[];
  /** Days an SRS0 address stays valid for a bounce. */
  maxAgeDays: number;
  now?: () => number;
}

/** Why an address is not a valid SRS address of ours. */
export type SrsFailure =
  /** Not an SRS address at our SRS domain at all: the ordinary rules apply to it. */
  | 'not-srs'
  /** An SRS address at our domain that does not parse. */
  | 'malformed'
  /** Its hash was not made with our secret: forged or damaged. */
  | 'bad-hash'
  /** Its timestamp is older than maxAgeDays. */
  | 'expired';

export type SrsReverse = { ok: true; address: string } | { ok: false; reason: SrsFailure };

function split(address: string): { local: string; domain: string } {
  const at = address.lastIndexOf('@');
  return at < 0
    ? { local: address, domain: '' }
    : { local: address.slice(0, at), domain: address.slice(at + 1) };
}

/** An SRS0 or SRS1 local part, case-insensitively, with any separator libsrs2 accepts (= + -). */
const SRS_PREFIX = /^SRS([01])[=+-]/i;

export class Srs {
  readonly domain: string;
  readonly #secrets: readonly Buffer[];
  readonly maxAgeDays: number;
  readonly #now: () => number;

  constructor(o: SrsOptions) {
    if (o.secrets.length === 0) throw new Error('SRS needs at least one secret');
    this.domain = o.domain.toLowerCase();
    this.#secrets = o.secrets;
    this.maxAgeDays = o.maxAgeDays;
    this.#now = o.now ?? Date.now;
  }

  /** Whether `address` is in our SRS domain and looks like SRS (valid or not). */
  isSrsAddress(address: string): boolean {
    const { local, domain } = split(address);
    return domain.toLowerCase() === this.domain && SRS_PREFIX.test(local);
  }

  /**
   * The sender a forwarded copy gets: SRS0 for an ordinary address, SRS1 for another
   * forwarder's SRS0 address, a new SRS1 (same first hop) for an SRS1 address. The caller
   * decides whether the sender is rewritten at all (not <>, not local: forward.ts).
   */
  forward(sender: string): string {
    const { local, domain } = split(sender);
    const srs = SRS_PREFIX.exec(local);
    if (srs !== null && srs[1] === '0') {
      // SRS1=HHH=firsthop=<SRS0's separator><SRS0's rest>
      const opaque = local.slice(4); // "=hhh=tt=d=l", separator included
      return `SRS1=${this.#hash([domain.toLowerCase(), opaque])}=${domain}=${opaque}@${this.domain}`;
    }
    if (srs !== null) {
      const parsed = parseSrs1(local);
      if (parsed !== null) {
        return `SRS1=${this.#hash([parsed.firstHop.toLowerCase(), parsed.opaque])}=${parsed.firstHop}=${parsed.opaque}@${this.domain}`;
      }
    }
    const tt = this.#timestamp();
    return `SRS0=${this.#hash([tt, domain.toLowerCase(), local])}=${tt}=${domain}=${local}@${this.domain}`;
  }

  /**
   * The address a bounce to `address` goes to. `checkAge` false: the hash is checked, the age
   * not (a bounce accepted in time and retried later in the queue is not refused then).
   */
  reverse(address: string, opts: { checkAge?: boolean } = {}): SrsReverse {
    if (!this.isSrsAddress(address)) return { ok: false, reason: 'not-srs' };
    const { local } = split(address);
    if (local[3] === '1') {
      const p = parseSrs1(local);
      if (p === null) return { ok: false, reason: 'malformed' };
      if (!this.#hashMatches(p.hash, [p.firstHop.toLowerCase(), p.opaque]))
        return { ok: false, reason: 'bad-hash' };
      return { ok: true, address: `SRS0${p.opaque}@${p.firstHop}` };
    }
    // SRS0=HHH=TT=domain=local: the original local part is everything after the 4th separator.
    const m = /^SRS0[=+-]([^=]+)=([^=]{2})=([^=@]+)=(.+)$/i.exec(local);
    if (m === null) return { ok: false, reason: 'malformed' };
    const [, hash = '', tt = '', domain = '', orig = ''] = m;
    const day = decodeTimestamp(tt);
    if (day === null) return { ok: false, reason: 'malformed' };
    if (!this.#hashMatches(hash, [tt.toUpperCase(), domain.toLowerCase(), orig]))
      return { ok: false, reason: 'bad-hash' };
    if (opts.checkAge !== false) {
      const age = (this.#today() - day + TIME_SLOTS) % TIME_SLOTS;
      if (age > this.maxAgeDays) return { ok: false, reason: 'expired' };
    }
    return { ok: true, address: `${orig}@${domain}` };
  }

  #today(): number {
    return Math.floor(this.#now() / DAY_MS) % TIME_SLOTS;
  }

  #timestamp(): string {
    const day = this.#today();
    return `${BASE32[(day >> 5) & 31] ?? 'A'}${BASE32[day & 31] ?? 'A'}`;
  }

  #hash(parts: readonly string[], secret: Buffer = this.#secrets[0] ?? Buffer.alloc(0)): string {
    const mac = createHmac('sha256', secret);
    // Lower-cased: a relay may change the case of the local part on the way back.
    for (const p of parts) mac.update(`${p.toLowerCase()}\0`, 'utf8');
    return base32(mac.digest().subarray(0, 8)).slice(0, SRS_HASH_LENGTH);
  }

  #hashMatches(given: string, parts: readonly string[]): boolean {
    const g = Buffer.from(given.toUpperCase(), 'utf8');
    return this.#secrets.some((secret) => {
      const want = Buffer.from(this.#hash(parts, secret), 'utf8');
      return g.length === want.length && timingSafeEqual(g, want);
    });
  }
}

/** SRS1=HHH=firsthop=<sep>rest → its parts, the opaque part with its leading separator. */
function parseSrs1(local: string): { hash: string; firstHop: string; opaque: string } | null {
  const m = /^SRS1[=+-]([^=]+)=([^=@]+)=([=+-].+)$/i.exec(local);
  if (m === null) return null;
  const [, hash = '', firstHop = '', opaque = ''] = m;
  return { hash, firstHop, opaque };
}

function decodeTimestamp(tt: string): number | null {
  const hi = BASE32.indexOf(tt.charAt(0).toUpperCase());
  const lo = BASE32.indexOf(tt.charAt(1).toUpperCase());
  return hi < 0 || lo < 0 ? null : (hi << 5) | lo;
}

/** RFC 4648 base32, no padding. */
function base32(data: Buffer): string {
  let out = '';
  let bits = 0;
  let value = 0;
  for (const byte of data) {
    value = ((value << 8) | byte) & 0xffff; // only the low bits are still needed
    bits += 8;
    while (bits >= 5) {
      out += BASE32[(value >>> (bits - 5)) & 31] ?? '';
      bits -= 5;
    }
  }
  if (bits > 0) out += BASE32[(value << (5 - bits)) & 31] ?? '';
  return out;
}
