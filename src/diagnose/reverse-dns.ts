/**
 * Reverse DNS of each public address: a PTR record (RFC 1035 3.5, RFC 3596 2.5) whose name
 * resolves back to the address (forward-confirmed reverse DNS, which large receivers require)
 * and is this server's host name (the name it gives in EHLO). Trust: DNS answers are untrusted.
 */
import { reverseName, sameAddress } from './addresses.js';
import type { HostContext } from './context.js';
import { finding, type Finding } from './finding.js';
import { lookupAddresses } from './host.js';

export async function checkReverseDns(ctx: HostContext): Promise<Finding[]> {
  return (await Promise.all(ctx.addresses.map((a) => checkOne(ctx, a)))).flat();
}

async function checkOne(ctx: HostContext, address: string): Promise<Finding[]> {
  const { hostname, dns } = ctx;
  const setIt = `ask whoever runs ${address} (the hosting provider, for most servers) to set its PTR record to ${hostname}`;
  const r = await dns.ptr(reverseName(address));
  if (r.kind === 'temp') {
    return [
      finding(
        'reverse-dns',
        'warning',
        'ptr.unknown',
        address,
        `could not check: ${r.reason}`,
        'check [dns] servers and try again',
      ),
    ];
  }
  if (r.kind !== 'ok') {
    return [
      finding(
        'reverse-dns',
        'error',
        'ptr.missing',
        address,
        `${address} has no reverse DNS (PTR record): many receivers (Gmail, Outlook …) refuse or junk mail from an address without one`,
        setIt,
      ),
    ];
  }
  const confirmed: string[] = [];
  for (const name of r.records) {
    const forward = await lookupAddresses(dns, name);
    if (forward.addresses.some((a) => sameAddress(a, address))) confirmed.push(name);
  }
  if (confirmed.length === 0) {
    return [
      finding(
        'reverse-dns',
        'error',
        'ptr.not-confirmed',
        address,
        `the PTR record of ${address} names ${r.records.join(', ')}, which does not resolve back to ${address}: forward-confirmed reverse DNS fails, and receivers treat the address like one without reverse DNS`,
        `${setIt} (which must resolve to ${address}), or publish: ${r.records[0] ?? hostname}. IN ${address.includes(':') ? 'AAAA' : 'A'} ${address}`,
      ),
    ];
  }
  if (!confirmed.some((n) => n.toLowerCase() === hostname.toLowerCase())) {
    return [
      finding(
        'reverse-dns',
        'warning',
        'ptr.not-hostname',
        address,
        `the PTR record of ${address} names ${confirmed.join(', ')}, not ${hostname}, the name this server gives in EHLO; some receivers score the difference down`,
        `${setIt}, or set hostname in the configuration to ${confirmed[0] ?? ''}`,
      ),
    ];
  }
  return [
    finding(
      'reverse-dns',
      'ok',
      'ptr.ok',
      address,
      `${address} has reverse DNS ${hostname}, which resolves back to it`,
    ),
  ];
}
