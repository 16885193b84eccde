/**
 * The domain's MX records (RFC 5321 5.1): present, not a null MX (RFC 7505), each naming a host
 * name (not an IP literal, not an alias: RFC 2181 10.3) that has addresses, and at least one
 * of them this server (its host name or one of its public addresses). Trust: DNS answers are
 * untrusted and quoted as text.
 */
import { isIpAddress, sameAddress } from './addresses.js';
import type { DomainContext } from './context.js';
import { finding, type Finding } from './finding.js';
import { lookupAddresses } from './host.js';

export async function checkMx(ctx: DomainContext): Promise<Finding[]> {
  const { domain, hostname, dns } = ctx;
  const publish = `publish: ${domain}. IN MX 10 ${hostname}.`;
  const r = await dns.mx(domain);
  if (r.kind === 'temp') {
    return [
      finding(
        'mx',
        'warning',
        'mx.unknown',
        domain,
        `could not check: ${r.reason}`,
        'check [dns] servers and try again',
      ),
    ];
  }
  if (r.kind === 'nxdomain') {
    return [
      finding(
        'mx',
        'error',
        'mx.nxdomain',
        domain,
        `${domain} does not exist in the DNS: nobody can send mail to it, and receivers refuse mail from it`,
        `register the domain or publish its zone, then ${publish}`,
      ),
    ];
  }
  if (r.kind === 'nodata') {
    const implicit = await lookupAddresses(dns, domain);
    if (implicit.addresses.length > 0) {
      return [
        finding(
          'mx',
          'warning',
          'mx.implicit',
          domain,
          `${domain} has no MX record; senders fall back to its address ${implicit.addresses.join(', ')} (RFC 5321 5.1), which many treat as a misconfiguration`,
          publish,
        ),
      ];
    }
    return [
      finding(
        'mx',
        'error',
        'mx.missing',
        domain,
        `${domain} has no MX record (and no address): other servers cannot deliver mail to it`,
        publish,
      ),
    ];
  }
  const records = [...r.records].sort((a, b) => a.priority - b.priority);
  const isNull = (x: { exchange: string }): boolean => x.exchange === '' || x.exchange === '.';
  if (records.some(isNull)) {
    return [
      records.length === 1
        ? finding(
            'mx',
            'error',
            'mx.null',
            domain,
            `${domain} publishes a null MX (MX 0 ".", RFC 7505): it accepts no mail, and receivers refuse mail sent from it (RFC 7505 4.2)`,
            `if ${domain} should send or receive mail, remove the null MX and ${publish}`,
          )
        : finding(
            'mx',
            'error',
            'mx.null-mixed',
            domain,
            `${domain} publishes a null MX beside other MX records; RFC 7505 3 says a null MX must be the only one, and senders may take the domain for one that accepts no mail`,
            'remove the null MX record (MX 0 ".")',
          ),
    ];
  }
  const findings: Finding[] = [];
  const described: string[] = [];
  let ours = false;
  for (const mx of records) {
    const host = mx.exchange.replace(/\.$/, '');
    const bare = host.replace(/^\[(.*)\]$/, '$1');
    if (isIpAddress(bare)) {
      findings.push(
        finding(
          'mx',
          'error',
          'mx.ip-literal',
          domain,
          `MX ${mx.priority} ${host} names an IP address, not a host name (RFC 5321 5.1): senders look it up as a name and fail`,
          `publish a name for it and point the MX there: ${hostname}. IN ${bare.includes(':') ? 'AAAA' : 'A'} ${bare} and ${domain}. IN MX ${mx.priority} ${hostname}.`,
        ),
      );
      continue;
    }
    const alias = await dns.cname(host);
    if (alias.kind === 'ok') {
      const target = alias.records[0] ?? '';
      findings.push(
        finding(
          'mx',
          'warning',
          'mx.cname',
          domain,
          `MX ${mx.priority} ${host} is an alias (CNAME of ${target}); RFC 2181 10.3 forbids MX records that point at aliases, and some senders refuse them`,
          `point the MX at the real name: ${domain}. IN MX ${mx.priority} ${target}.`,
        ),
      );
    }
    const { addresses, failed } = await lookupAddresses(dns, host);
    if (failed !== undefined) {
      findings.push(
        finding(
          'mx',
          'warning',
          'mx.unknown',
          domain,
          `could not check ${host}: ${failed}`,
          'check [dns] servers and try again',
        ),
      );
      continue;
    }
    if (addresses.length === 0) {
      findings.push(
        finding(
          'mx',
          'error',
          'mx.no-address',
          domain,
          `MX ${mx.priority} ${host} has no A or AAAA record: senders cannot connect to it`,
          `publish: ${host}. IN A <its address>`,
        ),
      );
      continue;
    }
    const here =
      host.toLowerCase() === hostname.toLowerCase() ||
      addresses.some((a) => ctx.addresses.some((p) => sameAddress(a, p)));
    if (here) ours = true;
    described.push(`${mx.priority} ${host} (${addresses.join(', ')})${here ? ', this server' : ''}`);
  }
  if (described.length > 0 && !ours) {
    findings.push(
      finding(
        'mx',
        'warning',
        'mx.elsewhere',
        domain,
        `no MX host of ${domain} is this server (${hostname}${ctx.addresses.length > 0 ? `, ${ctx.addresses.join(', ')}` : ''}): MX ${described.join('; ')}; mail for ${domain} does not come here`,
        `if this server should receive mail for ${domain}, ${publish}`,
      ),
    );
  } else if (described.length > 0 && findings.length === 0) {
    findings.push(finding('mx', 'ok', 'mx.ok', domain, `MX ${described.join('; ')}`));
  }
  return findings;
}
