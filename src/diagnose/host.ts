/**
 * The host name's own records: a fully qualified name (RFC 5321 4.1.1.1: the EHLO name is the
 * host's primary name) with A and/or AAAA records, which receivers check against the connecting
 * address; and the configured public addresses among them. Also works out which addresses the
 * other checks use when none are configured: the host name's. Trust: DNS answers are untrusted.
 */
import type { DnsResult, AddressRecord } from '../delivery/dns.js';
import { sameAddress } from './addresses.js';
import type { DiagnoseDns } from './context.js';
import { finding, type Finding } from './finding.js';

function addresses(r: DnsResult<AddressRecord[]>): string[] {
  return r.kind === 'ok' ? r.records.map((x) => x.address) : [];
}

/** The A and AAAA addresses of `name`, and the reason if a lookup failed for the time being. */
export async function lookupAddresses(
  dns: DiagnoseDns,
  name: string,
): Promise<{ addresses: string[]; failed?: string }> {
  const [a, aaaa] = await Promise.all([dns.a(name), dns.aaaa(name)]);
  const found = [...addresses(a), ...addresses(aaaa)];
  const temp = [a, aaaa].find((r) => r.kind === 'temp');
  return temp?.kind === 'temp' && found.length === 0
    ? { addresses: found, failed: temp.reason }
    : { addresses: found };
}

export interface HostCheck {
  findings: Finding[];
  /** The host name's addresses (empty when it has none or the lookup failed). */
  hostAddresses: string[];
}

/** `configured`: the public addresses the operator gave (may be empty). */
export async function checkHost(
  dns: DiagnoseDns,
  hostname: string,
  configured: readonly string[],
): Promise<HostCheck> {
  const findings: Finding[] = [];
  const example = configured[0] ?? '<public address>';
  if (!hostname.includes('.') || hostname === 'localhost') {
    findings.push(
      finding(
        'host',
        'error',
        'host.not-fqdn',
        hostname,
        `the host name "${hostname}" is not a fully qualified domain name; receivers refuse or score down an EHLO name they cannot resolve`,
        'set hostname in the configuration to the full name of this server, e.g. "mail.example.org", and publish its A record',
      ),
    );
    return { findings, hostAddresses: [] };
  }
  const { addresses: found, failed } = await lookupAddresses(dns, hostname);
  if (failed !== undefined) {
    findings.push(
      finding(
        'host',
        'warning',
        'host.unknown',
        hostname,
        `could not check: ${failed}`,
        'check [dns] servers and try again',
      ),
    );
    return { findings, hostAddresses: [] };
  }
  if (found.length === 0) {
    findings.push(
      finding(
        'host',
        'error',
        'host.no-address',
        hostname,
        `${hostname} has no A or AAAA record: receivers check that the name this server gives in EHLO resolves`,
        `publish: ${hostname}. IN A ${example}`,
      ),
    );
    return { findings, hostAddresses: [] };
  }
  const missing = configured.filter((c) => !found.some((f) => sameAddress(c, f)));
  if (missing.length === 0) {
    findings.push(finding('host', 'ok', 'host.ok', hostname, `${hostname} resolves to ${found.join(', ')}`));
  }
  for (const m of missing) {
    findings.push(
      finding(
        'host',
        'warning',
        'host.address-missing',
        hostname,
        `${hostname} resolves to ${found.join(', ')}, not to the public address ${m}`,
        `publish: ${hostname}. IN ${m.includes(':') ? 'AAAA' : 'A'} ${m}`,
      ),
    );
  }
  return { findings, hostAddresses: found };
}
