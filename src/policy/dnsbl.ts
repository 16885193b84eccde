/**
 * DNS block and allow lists (RFC 5782): the client's address reversed under each client zone
 * (IPv4 by octets, 2.1; IPv6 by nibbles, 2.4) and the sender's domain under each sender zone
 * (RHSBL, 2.2), looked up in parallel through Sterna's resolver (delivery/dns.ts: its servers,
 * cache and timeouts). A listing adds its zone's weight to a score (negative weights are allow
 * lists, DNSWL); at the threshold, RCPT is refused naming the list that weighs most.
 *
 * Only an A answer in 127.0.0.0/8 (RFC 5782 2.3) counts, and never one in 127.255.255.0/24:
 * Spamhaus answers 127.255.255.252-255 for a query it refuses (public resolver, over quota), and
 * that says nothing about the client. A zone's `codes` narrow what counts further. A DNS failure
 * or an answer later than the timeout counts as not listed: DNS trouble never refuses mail.
 * Trust: answers come from the network (untrusted) and are only compared.
 */
import { isIPv4 } from 'node:net';
import type { DnsResolver } from '../delivery/dns.js';
import type { Logger } from '../observability/log.js';
import { parseIpv6 } from './client-network.js';

export interface DnsblZone {
  zone: string;
  type: 'client' | 'sender';
  weight: number;
  codes: readonly string[];
}

export interface DnsblListing {
  zone: string;
  type: 'client' | 'sender';
  weight: number;
  /** The answers that counted. */
  codes: string[];
}

export interface DnsblResult {
  score: number;
  listings: DnsblListing[];
}

export const NOT_LISTED: DnsblResult = { score: 0, listings: [] };

export interface DnsblOptions {
  zones: readonly DnsblZone[];
  threshold: number;
  timeoutMs: number;
  resolver: DnsResolver;
  log: Logger;
}

/** 127.a.b.c as a number, or null when not in 127.0.0.0/8. */
function loopbackCode(address: string): number | null {
  const m = /^127\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(address);
  if (m === null) return null;
  const [a, b, c] = [Number(m[1]), Number(m[2]), Number(m[3])];
  if (a > 255 || b > 255 || c > 255) return null;
  return (a << 16) | (b << 8) | c;
}

/** Spamhaus's "query refused" range, 127.255.255.0/24: never a listing. */
const REFUSED_RANGE = { lo: (255 << 16) | (255 << 8), hi: (255 << 16) | (255 << 8) | 255 };

function codeRanges(codes: readonly string[]): { lo: number; hi: number }[] {
  return codes.map((c) => {
    const [from = '', to] = c.split('-');
    const lo = loopbackCode(from) ?? -1;
    const hi = to === undefined ? lo : (loopbackCode(to) ?? -1);
    return { lo, hi };
  });
}

/** The name to look up for a client address under zone (RFC 5782 2.1, 2.4), or null. */
export function reversedName(ip: string, zone: string): string | null {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip)?.[1];
  const v4 = mapped ?? ip;
  if (isIPv4(v4)) return `${v4.split('.').reverse().join('.')}.${zone}`;
  const groups = parseIpv6(ip);
  if (groups === null) return null;
  const nibbles = groups.flatMap((g) => [12, 8, 4, 0].map((shift) => ((g >> shift) & 0xf).toString(16)));
  return `${nibbles.reverse().join('.')}.${zone}`;
}

interface CompiledZone extends DnsblZone {
  ranges: { lo: number; hi: number }[];
}

export class Dnsbl {
  readonly #client: CompiledZone[];
  readonly #sender: CompiledZone[];
  readonly #opts: DnsblOptions;

  constructor(opts: DnsblOptions) {
    this.#opts = opts;
    const compiled = opts.zones.map((z) => ({
      ...z,
      zone: z.zone.toLowerCase(),
      ranges: codeRanges(z.codes),
    }));
    this.#client = compiled.filter((z) => z.type === 'client');
    this.#sender = compiled.filter((z) => z.type === 'sender');
  }

  get hasClientZones(): boolean {
    return this.#client.length > 0;
  }

  get hasSenderZones(): boolean {
    return this.#sender.length > 0;
  }

  /** Every client zone, in parallel; never rejects. */
  lookupClient(ip: string): Promise<DnsblResult> {
    return this.#lookup(this.#client, (z) => reversedName(ip, z.zone), { ip });
  }

  /** Every sender zone for the sender's domain (RHSBL); never rejects. */
  lookupSender(domain: string): Promise<DnsblResult> {
    const d = domain.toLowerCase().replace(/\.$/, '');
    if (d === '' || d.startsWith('[')) return Promise.resolve(NOT_LISTED);
    return this.#lookup(this.#sender, (z) => `${d}.${z.zone}`, { domain: d });
  }

  /** The listing to name in a refusal when the score reaches the threshold, else null. */
  blocking(result: DnsblResult): DnsblListing | null {
    if (result.score < this.#opts.threshold) return null;
    let top: DnsblListing | null = null;
    for (const l of result.listings) if (l.weight > 0 && (top === null || l.weight > top.weight)) top = l;
    return top;
  }

  async #lookup(
    zones: readonly CompiledZone[],
    nameOf: (z: CompiledZone) => string | null,
    subject: Record<string, string>,
  ): Promise<DnsblResult> {
    if (zones.length === 0) return NOT_LISTED;
    const found: DnsblListing[] = [];
    const all = Promise.all(
      zones.map(async (z) => {
        const name = nameOf(z);
        if (name === null) return;
        const listing = await this.#one(z, name);
        if (listing !== null) found.push(listing);
      }),
    );
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), this.#opts.timeoutMs);
      timer.unref();
    });
    const outcome = await Promise.race([all.then(() => 'done' as const), timedOut]);
    clearTimeout(timer);
    if (outcome === 'timeout')
      this.#opts.log.info({ ...subject }, 'DNSBL lookups timed out; counted as not listed');
    const listings = [...found].sort((a, b) => a.zone.localeCompare(b.zone));
    return { score: listings.reduce((s, l) => s + l.weight, 0), listings };
  }

  async #one(z: CompiledZone, name: string): Promise<DnsblListing | null> {
    const r = await this.#opts.resolver.a(name);
    if (r.kind === 'temp') {
      this.#opts.log.info({ zone: z.zone, reason: r.reason }, 'DNSBL lookup failed; counted as not listed');
      return null;
    }
    if (r.kind !== 'ok') return null;
    const codes = r.records
      .map((rec) => rec.address)
      .filter((a) => {
        const n = loopbackCode(a);
        if (n === null || (n >= REFUSED_RANGE.lo && n <= REFUSED_RANGE.hi)) return false;
        return z.ranges.length === 0 || z.ranges.some((x) => n >= x.lo && n <= x.hi);
      });
    if (codes.length === 0) return null;
    return { zone: z.zone, type: z.type, weight: z.weight, codes };
  }
}
