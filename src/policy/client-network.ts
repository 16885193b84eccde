/**
 * The client network: what a per-client limit counts by. An IPv4 client counts by its address;
 * an IPv6 client by its /64, because one host or one customer normally holds a whole /64
 * (RFC 4291 section 2.5.4: global unicast interface ids are 64 bits; RFC 6177 section 2: a
 * site gets at least a /64) and can pick a fresh address in it for every connection. An
 * IPv4-mapped address (::ffff:a.b.c.d, RFC 4291 section 2.5.5.2, what a dual-stack listener
 * reports for an IPv4 peer) and the NAT64 well-known prefix (64:ff9b::/96, RFC 6052 section 2.1)
 * count as the IPv4 address they carry.
 *
 * Every per-client limit uses this one function: the AUTH lock-out (auth/lockout.ts), the
 * connections per client (limits.connections_per_ip, server/listeners.ts), and the rate limits
 * and greylisting to come.
 *
 * Trust: the input is a peer address from the kernel (socket.remoteAddress); anything that is
 * not an IP address (e.g. "unknown") is returned unchanged as its own key.
 */
import { isIPv4 } from 'node:net';

/** Prefix length an IPv6 client is counted by. */
export const IPV6_CLIENT_PREFIX = 64;

/**
 * The key of `address`'s client network: "192.0.2.1" for IPv4 (and IPv4-mapped or NAT64 IPv6),
 * "2001:db8:1:2::/64" for IPv6 (RFC 5952 text of the prefix), with the zone id kept for a
 * scoped address ("fe80::/64%eth0": the same prefix on two links is two networks).
 */
export function clientNetworkKey(address: string): string {
  if (isIPv4(address)) return address;
  const percent = address.indexOf('%');
  const zone = percent >= 0 ? address.slice(percent) : '';
  if (zone === '%') return address;
  const groups = parseIpv6(percent >= 0 ? address.slice(0, percent) : address);
  if (groups === null) return address;
  const v4 = embeddedIpv4(groups);
  if (v4 !== null) return v4;
  const prefix = [...groups.slice(0, 4), 0, 0, 0, 0];
  return `${formatIpv6(prefix)}/${IPV6_CLIENT_PREFIX}${zone}`;
}

/**
 * The eight 16-bit groups of an IPv6 address in RFC 4291 section 2.2 text form (with "::" and
 * a dotted IPv4 tail allowed; no zone id), or null if `text` is not one.
 */
export function parseIpv6(text: string): number[] | null {
  if (!/^[0-9a-fA-F:.]+$/.test(text)) return null;
  const halves = text.split('::');
  if (halves.length > 2) return null;
  const parts = (s: string): string[] => (s === '' ? [] : s.split(':'));
  const head = parts(halves[0] ?? '');
  const tail = halves.length === 2 ? parts(halves[1] ?? '') : [];
  // A dotted IPv4 tail may end the address (RFC 4291 section 2.2, item 3), nowhere else.
  const lastPart = halves.length === 2 ? tail : head;
  let v4Groups: number[] = [];
  const last = lastPart[lastPart.length - 1];
  if (last !== undefined && last.includes('.')) {
    if (!isIPv4(last)) return null;
    const o = last.split('.').map(Number);
    v4Groups = [((o[0] ?? 0) << 8) | (o[1] ?? 0), ((o[2] ?? 0) << 8) | (o[3] ?? 0)];
    lastPart.pop();
  }
  const headNums = hexGroups(head);
  const tailNums = hexGroups(tail);
  if (headNums === null || tailNums === null) return null;
  const explicit = headNums.length + tailNums.length + v4Groups.length;
  if (halves.length === 1) return explicit === 8 ? [...headNums, ...v4Groups] : null;
  // "::" stands for at least one group of zeros (RFC 4291 section 2.2, item 2).
  if (explicit > 7) return null;
  const zeros = new Array<number>(8 - explicit).fill(0);
  return [...headNums, ...zeros, ...tailNums, ...v4Groups];
}

/** Each part as a 16-bit group of 1 to 4 hex digits, or null if one is not. */
function hexGroups(parts: readonly string[]): number[] | null {
  const out: number[] = [];
  for (const p of parts) {
    if (!/^[0-9a-fA-F]{1,4}$/.test(p)) return null;
    out.push(parseInt(p, 16));
  }
  return out;
}

/** The IPv4 address inside ::ffff:0:0/96 (mapped) or 64:ff9b::/96 (NAT64), or null. */
function embeddedIpv4(g: readonly number[]): string | null {
  const mapped = g[0] === 0 && g[1] === 0 && g[2] === 0 && g[3] === 0 && g[4] === 0 && g[5] === 0xffff;
  const nat64 = g[0] === 0x64 && g[1] === 0xff9b && g[2] === 0 && g[3] === 0 && g[4] === 0 && g[5] === 0;
  if (!mapped && !nat64) return null;
  const hi = g[6] ?? 0;
  const lo = g[7] ?? 0;
  return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
}

/**
 * RFC 5952 section 4 text of eight groups: lowercase, no leading zeros, the longest run of two
 * or more zero groups (the first of equal runs) written "::".
 */
export function formatIpv6(groups: readonly number[]): string {
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < groups.length;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < groups.length && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const text = (xs: readonly number[]): string => xs.map((x) => x.toString(16)).join(':');
  if (bestStart < 0) return text(groups);
  return `${text(groups.slice(0, bestStart))}::${text(groups.slice(bestStart + bestLen))}`;
}
