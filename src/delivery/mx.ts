/**
 * Where mail for a domain goes: the ordered list of hosts (with their addresses) to try, or why
 * there is none. Follows RFC 5321 5.1 (MX ordering, random order among equal preferences,
 * implicit MX, discarding our own MX entry and every worse one), RFC 7505 (null MX) and
 * RFC 5321 4.2.5 / 5.1 (a DNS failure that may clear up defers the message, never bounces it).
 *
 * Choices this module makes, beyond the RFC text:
 * - Null MX: a record set made only of "." targets is a null MX (RFC 7505 3: the domain accepts
 *   no mail; the caller fails with 556 5.1.10 / 550 5.7.27 as RFC 7505 4.2 says). A "." mixed with
 *   real MX records breaks RFC 7505 3 ("MUST NOT" publish others); the "." entry is ignored and the
 *   others are used, as the domain still advertises hosts that may take the mail.
 * - A host listed more than once is kept once, at its best preference. Equal-preference hosts
 *   are shuffled with the injected random(), one draw per distinct host in the order the answer
 *   first listed it, so a seeded random gives a reproducible order.
 * - The MX list is capped at maxMx hosts (default 10) after sorting, before address lookups,
 *   to bound the lookups one domain can cause.
 * - Each host's addresses: AAAA and A are both asked; one family comes first, then the other
 *   (IPv6 first unless preferIpv6 is false), each in the order DNS returned it. Duplicates go.
 * - An MX target that is an IP address literal ("192.0.2.1", not allowed by RFC 5321 5.1 but seen
 *   in the wild) is used as that host's only address, without a lookup.
 * - An MX target that is a CNAME (RFC 5321 5.1 says it must not be) is accepted: the address
 *   lookups follow the alias.
 * - A host whose address lookups failed temporarily is skipped; if no host is left with an
 *   address and any lookup failed temporarily, the result is 'temp', otherwise 'no-address'
 *   (permanent: every MX name, or the domain itself, answered "no such name" or "no address";
 *   a caller should fail it with 5.4.4 "unable to route", or 5.1.2 when the domain is nxdomain).
 * - Own addresses (opts.isOwnAddress): a host with any address of ours is this host. Per RFC 5321
 *   5.1, it and every host of equal or worse preference are dropped; if nothing better is left
 *   the mail would loop back to us (RFC 5321 5.4.6 / RFC 3463 5.4.6): kind 'loop'. The domain
 *   given as an address literal ("[192.0.2.1]", RFC 5321 4.1.3) is delivered to that address.
 *
 * Trust: DNS answers are untrusted data; names and addresses are only compared and returned.
 */
import net from 'node:net';
import { normalizeDnsName, type DnsResolver, type DnsResult, type AddressRecord } from './dns.js';

export interface MxHost {
  /** Lower-case host name without trailing dot (or the address literal's address). */
  name: string;
  preference: number;
  /** IP addresses to try in order; never empty in a 'hosts' route. */
  addresses: string[];
}

export type MxRoute =
  /** Hosts to try in order. implicit: the domain had no MX records and is its own host. */
  | { kind: 'hosts'; hosts: MxHost[]; implicit: boolean }
  /** RFC 7505: the domain accepts no mail (fail with 556 5.1.10). */
  | { kind: 'null-mx' }
  /** The domain does not exist (NXDOMAIN on the MX query): permanent, 5.1.2. */
  | { kind: 'nxdomain' }
  /** No MX host (or the implicit host) has an address, and no lookup failed temporarily: permanent. */
  | { kind: 'no-address'; reason: string }
  /** The best remaining MX host is this host: the mail would loop back to us (5.4.6). */
  | { kind: 'loop'; reason: string }
  /** A DNS failure that may clear up (SERVFAIL, timeout …): defer. */
  | { kind: 'temp'; reason: string };

export interface ResolveMxOptions {
  /** Uniform random in [0, 1): orders equal-preference hosts (RFC 5321 5.1). */
  random: () => number;
  /** Most MX hosts kept after sorting. Default DEFAULT_MAX_MX. */
  maxMx?: number;
  /** IPv6 addresses before IPv4 ones for each host. Default true. */
  preferIpv6?: boolean;
  /** True for an address this server receives mail on (loop detection). Default: none. */
  isOwnAddress?: (ip: string) => boolean;
}

export const DEFAULT_MAX_MX = 10;

interface HostAddresses {
  addresses: string[];
  /** Why a lookup failed temporarily, when one did. */
  temp: string | undefined;
  /** Both lookups said "no such name" (as opposed to "no record of that type"). */
  nxdomain: boolean;
}

/** The address inside a domain address literal ("[192.0.2.1]", "[IPv6:2001:db8::1]"), if it is one. */
function addressLiteral(domain: string): string | undefined {
  if (!domain.startsWith('[') || !domain.endsWith(']')) return undefined;
  const inner = domain.slice(1, -1);
  if (net.isIPv4(inner)) return inner;
  if (inner.toLowerCase().startsWith('ipv6:') && net.isIPv6(inner.slice(5))) return inner.slice(5);
  return undefined;
}

function addressesOfResult(r: DnsResult<AddressRecord[]>): string[] {
  return r.kind === 'ok' ? r.records.map((x) => x.address) : [];
}

async function lookupAddresses(name: string, dns: DnsResolver, preferIpv6: boolean): Promise<HostAddresses> {
  if (net.isIP(name) !== 0) return { addresses: [name], temp: undefined, nxdomain: false };
  const [v6, v4] = await Promise.all([dns.aaaa(name), dns.a(name)]);
  const first = preferIpv6 ? v6 : v4;
  const second = preferIpv6 ? v4 : v6;
  const addresses = [...new Set([...addressesOfResult(first), ...addressesOfResult(second)])];
  const temps = [v6, v4].flatMap((r) => (r.kind === 'temp' ? [r.reason] : []));
  return {
    addresses,
    temp: temps.length > 0 ? temps.join('; ') : undefined,
    nxdomain: v6.kind === 'nxdomain' && v4.kind === 'nxdomain',
  };
}

function describeMissing(name: string, h: HostAddresses): string {
  return `${name}: ${h.nxdomain ? 'no such host' : 'no A or AAAA record'}`;
}

/** Resolves the delivery route for `domain` (RFC 5321 5.1). Never rejects. */
export async function resolveMx(domain: string, dns: DnsResolver, opts: ResolveMxOptions): Promise<MxRoute> {
  const isOwn = opts.isOwnAddress ?? ((): boolean => false);
  const preferIpv6 = opts.preferIpv6 ?? true;
  const maxMx = Math.max(1, opts.maxMx ?? DEFAULT_MAX_MX);
  const name = normalizeDnsName(domain);

  const literal = addressLiteral(name);
  if (literal !== undefined) {
    if (isOwn(literal))
      return { kind: 'loop', reason: `mail for ${domain} loops back to myself (${literal})` };
    return { kind: 'hosts', hosts: [{ name: literal, preference: 0, addresses: [literal] }], implicit: true };
  }
  if (name === '') return { kind: 'nxdomain' };

  const mx = await dns.mx(name);
  if (mx.kind === 'nxdomain') return { kind: 'nxdomain' };
  if (mx.kind === 'temp') return { kind: 'temp', reason: mx.reason };
  if (mx.kind === 'nodata' || mx.records.length === 0) return implicitRoute(name, dns, preferIpv6, isOwn);

  // RFC 7505: "." as exchange (Node reports ""). Alone it is a null MX; mixed in, it is ignored.
  const real = mx.records.filter((r) => normalizeDnsName(r.exchange) !== '');
  if (real.length === 0) return { kind: 'null-mx' };

  // One entry per host name, at its best preference.
  const best = new Map<string, number>();
  for (const r of real) {
    const host = normalizeDnsName(r.exchange);
    const seen = best.get(host);
    if (seen === undefined || r.priority < seen) best.set(host, r.priority);
  }
  const ordered = [...best]
    .map(([host, preference]) => ({ host, preference, tie: opts.random() }))
    .sort((x, y) => x.preference - y.preference || x.tie - y.tie)
    .slice(0, maxMx);

  const candidates = await Promise.all(
    ordered.map(async (h) => ({ ...h, found: await lookupAddresses(h.host, dns, preferIpv6) })),
  );

  // RFC 5321 5.1: drop our own entry and every entry of equal or worse preference.
  const own = candidates.find((c) => c.found.addresses.some(isOwn));
  const kept = own === undefined ? candidates : candidates.filter((c) => c.preference < own.preference);
  if (own !== undefined && kept.length === 0) {
    return {
      kind: 'loop',
      reason: `mail for ${name} loops back to myself: ${own.host} (MX preference ${own.preference}) is this server`,
    };
  }

  const hosts: MxHost[] = kept
    .filter((c) => c.found.addresses.length > 0)
    .map((c) => ({ name: c.host, preference: c.preference, addresses: c.found.addresses }));
  if (hosts.length > 0) return { kind: 'hosts', hosts, implicit: false };

  const temps = kept.flatMap((c) => (c.found.temp !== undefined ? [c.found.temp] : []));
  if (temps.length > 0) return { kind: 'temp', reason: temps.join('; ') };
  return {
    kind: 'no-address',
    reason: `no MX host of ${name} has an address (${kept.map((c) => describeMissing(c.host, c.found)).join(', ')})`,
  };
}

/** RFC 5321 5.1: no MX records, so the domain itself is the host, at preference 0. */
async function implicitRoute(
  name: string,
  dns: DnsResolver,
  preferIpv6: boolean,
  isOwn: (ip: string) => boolean,
): Promise<MxRoute> {
  const found = await lookupAddresses(name, dns, preferIpv6);
  const mine = found.addresses.find(isOwn);
  if (mine !== undefined) {
    return {
      kind: 'loop',
      reason: `mail for ${name} loops back to myself: it has no MX and ${mine} is this server`,
    };
  }
  if (found.addresses.length > 0) {
    return { kind: 'hosts', hosts: [{ name, preference: 0, addresses: found.addresses }], implicit: true };
  }
  if (found.temp !== undefined) return { kind: 'temp', reason: found.temp };
  return { kind: 'no-address', reason: `${name} has no MX record and ${describeMissing(name, found)}` };
}
