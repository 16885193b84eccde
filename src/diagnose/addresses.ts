/**
 * IP address helpers for the checks: comparing addresses whatever their text form (RFC 5952),
 * the reverse name of an address (RFC 1035 3.5 in-addr.arpa, RFC 3596 2.5 ip6.arpa) and the
 * label form DNS blocklists use (RFC 5782 2.1 and 2.4), and the SPF mechanism naming an
 * address (RFC 7208 5.6). Trust: inputs are operator settings or DNS answers; a text that is not
 * an address is returned as itself or refused, never guessed at.
 */
import { isIPv4, isIPv6 } from 'node:net';
import { formatIpv6, parseIpv6 } from '../policy/client-network.js';

/** The canonical text of an address (RFC 5952 for IPv6), or the text itself if it is none. */
export function canonicalAddress(address: string): string {
  if (isIPv4(address)) return address;
  const groups = parseIpv6(address);
  return groups === null ? address : formatIpv6(groups);
}

export function sameAddress(a: string, b: string): boolean {
  return canonicalAddress(a) === canonicalAddress(b);
}

/** "2.0.192" style labels: IPv4 octets or IPv6 nibbles, least significant first. */
export function reversedLabels(address: string): string {
  if (isIPv4(address)) return address.split('.').reverse().join('.');
  const groups = parseIpv6(address);
  if (groups === null) throw new Error(`not an IP address: ${address}`);
  const hex = groups.map((g) => g.toString(16).padStart(4, '0')).join('');
  return hex.split('').reverse().join('.');
}

/** The name whose PTR record names the host at `address`. */
export function reverseName(address: string): string {
  return `${reversedLabels(address)}.${isIPv4(address) ? 'in-addr' : 'ip6'}.arpa`;
}

/** "ip4:192.0.2.10" or "ip6:2001:db8::10". */
export function spfMechanism(address: string): string {
  return `${isIPv4(address) ? 'ip4' : 'ip6'}:${canonicalAddress(address)}`;
}

export function isIpAddress(text: string): boolean {
  return isIPv4(text) || isIPv6(text);
}
