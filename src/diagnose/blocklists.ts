/**
 * Each public address looked up in each DNS blocklist zone (RFC 5782 2.1: IPv4 octets, 2.4:
 * IPv6 nibbles, reversed, under the zone). NXDOMAIN: not listed. An answer in 127.0.0.0/8:
 * listed, with the list's TXT reason (2.2), except 127.255.255.0/24, which Spamhaus and others
 * answer when they refuse the query (a public resolver, over the free limit): "could not check".
 * Any other answer means a broken or retired list. Trust: answers are untrusted DNS data.
 */
import { reversedLabels } from './addresses.js';
import type { HostContext } from './context.js';
import { finding, type Finding } from './finding.js';
import { txtStrings } from './txt-records.js';

export async function checkBlocklists(ctx: HostContext, zones: readonly string[]): Promise<Finding[]> {
  const all = await Promise.all(ctx.addresses.map((address) => checkAddress(ctx, zones, address)));
  return all.flat();
}

async function checkAddress(ctx: HostContext, zones: readonly string[], address: string): Promise<Finding[]> {
  const findings: Finding[] = [];
  const clean: string[] = [];
  const results = await Promise.all(
    zones.map(async (zone) => ({ zone, result: await lookup(ctx, zone, address) })),
  );
  for (const { zone, result } of results) {
    if (result === null) clean.push(zone);
    else findings.push(result);
  }
  if (clean.length > 0) {
    findings.push(
      finding('blocklist', 'ok', 'dnsbl.clean', address, `${address} is not listed on ${clean.join(', ')}`),
    );
  }
  return findings;
}

/** null when not listed, else the finding. */
async function lookup(ctx: HostContext, zone: string, address: string): Promise<Finding | null> {
  const name = `${reversedLabels(address)}.${zone}`;
  const answer = await ctx.dns.a(name);
  if (answer.kind === 'nxdomain' || answer.kind === 'nodata') return null;
  if (answer.kind === 'temp') {
    return finding(
      'blocklist',
      'warning',
      'dnsbl.unknown',
      address,
      `could not check ${zone}: ${answer.reason}`,
      'check [dns] servers and try again',
    );
  }
  const codes = answer.records.map((x) => x.address);
  if (codes.some((c) => c.startsWith('127.255.255.'))) {
    return finding(
      'blocklist',
      'warning',
      'dnsbl.refused',
      address,
      `could not check ${zone}: it refused the query (answer ${codes.join(', ')}; Spamhaus answers so to queries from public resolvers and over its free limit), which does not mean ${address} is listed`,
      `ask ${zone} through a resolver of your own in [dns] servers (not a public one like 8.8.8.8), or remove it from [diagnose] dnsbl_zones`,
    );
  }
  if (!codes.every((c) => c.startsWith('127.'))) {
    return finding(
      'blocklist',
      'warning',
      'dnsbl.odd-answer',
      address,
      `${zone} answered ${codes.join(', ')}, outside 127.0.0.0/8 (RFC 5782 2.1): the list may be retired and answer every query`,
      `remove ${zone} from [diagnose] dnsbl_zones`,
    );
  }
  const txt = txtStrings(await ctx.dns.txt(name));
  const reason = Array.isArray(txt) && txt.length > 0 ? `: "${txt.join(' ')}"` : '';
  return finding(
    'blocklist',
    'error',
    'dnsbl.listed',
    address,
    `${address} is listed on ${zone} (${codes.join(', ')})${reason}; receivers that use the list refuse mail from it`,
    `find out why (an open relay, a compromised account or password, a form sending spam), stop it, then ask ${zone} to delist ${address} on its web site`,
  );
}
