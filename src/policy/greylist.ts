/**
 * Greylisting: the first attempt of a new triplet (client network, sender, recipient) gets a
 * temporary refusal (451 4.7.1, RFC 5321 4.2.5: a real MTA retries, most spam engines do not);
 * a retry after `delay` and within `retryWindow` of the first attempt passes, and the triplet
 * then passes at once for `passTtl` (refreshed by each message). A client network whose
 * triplets passed `trustAfter` times is trusted (not greylisted) for `trustMs` after its last
 * pass. The client network is the address's /24 (IPv4) or /64 (IPv6): large senders retry from
 * another address of their pool.
 * State lives in the state store (src/state/), so it survives a restart and nodes share it.
 * Pure apart from the store: the clock is injected. Trust: keys are built from client data and
 * used only as store keys.
 */
import { isIPv4 } from 'node:net';
import type { StateStore } from '../state/store.js';
import { formatIpv6, parseIpv6 } from './client-network.js';

export interface GreylistOptions {
  delayMs: number;
  retryWindowMs: number;
  passTtlMs: number;
  trustAfter: number;
  trustMs: number;
  ipv4Prefix: number;
  ipv6Prefix: number;
  store: StateStore;
  now: () => number;
}

export type GreylistVerdict =
  | { kind: 'pass'; why: 'known' | 'retried' | 'trusted-network' }
  /** retryInMs: from now until the delay has passed. */
  | { kind: 'defer'; retryInMs: number; first: boolean };

interface TripletRecord {
  /** First attempt (ms since the epoch). */
  first: number;
  passed?: true;
}

function parseRecord(text: string | null): TripletRecord | null {
  if (text === null) return null;
  try {
    const v: unknown = JSON.parse(text);
    if (typeof v !== 'object' || v === null || !('first' in v) || typeof v.first !== 'number') return null;
    return 'passed' in v && v.passed === true ? { first: v.first, passed: true } : { first: v.first };
  } catch {
    return null;
  }
}

/** The client's network as greylisting counts it: "192.0.2.0/24", "2001:db8:1:2::/64". */
export function greylistNetwork(ip: string, ipv4Prefix: number, ipv6Prefix: number): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip)?.[1];
  const v4 = mapped ?? ip;
  if (isIPv4(v4)) {
    const n = v4.split('.').reduce((acc, o) => acc * 256 + Number(o), 0);
    const size = 2 ** (32 - ipv4Prefix);
    const base = Math.floor(n / size) * size;
    const octets = [24, 16, 8, 0].map((shift) => Math.floor(base / 2 ** shift) % 256);
    return `${octets.join('.')}/${ipv4Prefix}`;
  }
  const groups = parseIpv6(ip.replace(/%.*$/, ''));
  if (groups === null) return ip;
  const masked = groups.map((g, i) => {
    const bits = Math.max(0, Math.min(16, ipv6Prefix - i * 16));
    return bits === 16 ? g : bits === 0 ? 0 : g & (0xffff << (16 - bits)) & 0xffff;
  });
  return `${formatIpv6(masked)}/${ipv6Prefix}`;
}

export class Greylist {
  readonly #o: GreylistOptions;

  constructor(opts: GreylistOptions) {
    this.#o = opts;
  }

  /** Decides for one recipient; records the attempt. Rejects when the store fails. */
  async check(ip: string, sender: string, recipient: string): Promise<GreylistVerdict> {
    const o = this.#o;
    const net = greylistNetwork(ip, o.ipv4Prefix, o.ipv6Prefix);
    const netKey = `grey:net:${net}`;
    if (o.trustAfter > 0) {
      const passes = Number((await o.store.get(netKey)) ?? 0);
      if (passes >= o.trustAfter) return { kind: 'pass', why: 'trusted-network' };
    }
    const key = `grey:t:${net}|${sender.toLowerCase() || '<>'}|${recipient.toLowerCase()}`;
    const now = o.now();
    const rec = parseRecord(await o.store.get(key));
    if (rec?.passed === true) {
      await o.store.set(key, JSON.stringify(rec), o.passTtlMs);
      return { kind: 'pass', why: 'known' };
    }
    if (rec === null || now - rec.first > o.retryWindowMs) {
      await o.store.set(key, JSON.stringify({ first: now }), o.retryWindowMs);
      return { kind: 'defer', retryInMs: o.delayMs, first: true };
    }
    const waited = now - rec.first;
    if (waited < o.delayMs) return { kind: 'defer', retryInMs: o.delayMs - waited, first: false };
    await o.store.set(key, JSON.stringify({ first: rec.first, passed: true }), o.passTtlMs);
    if (o.trustAfter > 0) {
      const passes = Number((await o.store.get(netKey)) ?? 0);
      await o.store.set(netKey, String(passes + 1), o.trustMs);
    }
    return { kind: 'pass', why: 'retried' };
  }
}
