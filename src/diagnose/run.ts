/**
 * Runs every check of `sterna diagnose` and gathers the findings in report order: first the host
 * name (which also gives the public addresses when none are configured), then, at once, the
 * checks of each domain, of each address and of the certificate. Trust: see each check.
 */
import { checkBlocklists } from './blocklists.js';
import { checkCertificate } from './certificate.js';
import type { DiagnoseDns, DomainContext, HostContext } from './context.js';
import { checkDkim } from './dkim.js';
import { checkDmarc } from './dmarc.js';
import { CHECKS, finding, summarize, type Finding, type Summary } from './finding.js';
import { checkHost } from './host.js';
import { checkMtaSts } from './mta-sts.js';
import { checkMx } from './mx.js';
import { checkReverseDns } from './reverse-dns.js';
import { checkSpf } from './spf.js';
import { checkTlsRpt } from './tls-rpt.js';

/** Where the public addresses came from. */
export type AddressSource = 'option' | 'configuration' | 'hostname';

export interface DiagnoseOptions {
  domains: readonly string[];
  hostname: string;
  /** Public addresses from --address or [diagnose] public_addresses; empty: the host name's. */
  addresses: readonly string[];
  addressSource: Exclude<AddressSource, 'hostname'>;
  dns: DiagnoseDns;
  /** Selectors checked in every domain (--dkim-selector). */
  dkimSelectors: readonly string[];
  /**
   * Selectors by domain (lower case) from the configuration's [[dkim.keys]], checked in their
   * own domain only, after the --dkim-selector ones.
   */
  configuredSelectors?: ReadonlyMap<string, readonly string[]>;
  dnsblZones: readonly string[];
  certFile: string;
  keyFile: string;
  /** The optional ECDSA pair beside the main one ([tls] ecdsa_cert_file, ecdsa_key_file). */
  ecdsaCertFile?: string;
  ecdsaKeyFile?: string;
  caFile?: string;
  now: Date;
}

export interface Report {
  hostname: string;
  domains: readonly string[];
  addresses: readonly string[];
  addressSource: AddressSource;
  findings: Finding[];
  summary: Summary;
}

/** The selectors checked in `domain`: the given ones, then the domain's configured ones, each once. */
function selectorsOf(o: DiagnoseOptions, domain: string): string[] {
  const configured = o.configuredSelectors?.get(domain.toLowerCase()) ?? [];
  return [...new Set([...o.dkimSelectors, ...configured])];
}

export async function diagnose(o: DiagnoseOptions): Promise<Report> {
  const host = await checkHost(o.dns, o.hostname, o.addresses);
  const configured = o.addresses.length > 0;
  const addresses = configured ? o.addresses : host.hostAddresses;
  const findings: Finding[] = [...host.findings];
  if (addresses.length === 0) {
    findings.push(
      finding(
        'host',
        'warning',
        'host.no-public-address',
        o.hostname,
        'no public address is known (none configured, and the host name has none): reverse DNS, blocklists and the SPF check of the addresses were skipped',
        'set [diagnose] public_addresses in the configuration, or pass --address IP',
      ),
    );
  }
  const hostCtx: HostContext = { hostname: o.hostname, addresses, dns: o.dns, now: o.now };
  const perDomain = o.domains.map((domain) => {
    const ctx: DomainContext = { ...hostCtx, domain, dkimSelectors: selectorsOf(o, domain) };
    return [checkMx(ctx), checkSpf(ctx), checkDkim(ctx), checkDmarc(ctx), checkMtaSts(ctx), checkTlsRpt(ctx)];
  });
  const rest = await Promise.all([
    ...perDomain.flat(),
    checkReverseDns(hostCtx),
    checkCertificate({
      hostname: o.hostname,
      certFile: o.certFile,
      keyFile: o.keyFile,
      ...(o.caFile !== undefined ? { caFile: o.caFile } : {}),
      now: o.now,
    }),
    checkCertificate({
      hostname: o.hostname,
      certFile: o.ecdsaCertFile ?? '',
      keyFile: o.ecdsaKeyFile ?? '',
      pair: 'ecdsa',
      ...(o.caFile !== undefined ? { caFile: o.caFile } : {}),
      now: o.now,
    }),
    checkBlocklists(hostCtx, o.dnsblZones),
  ]);
  findings.push(...rest.flat());
  // Report order: by check (a stable sort keeps each check's own order).
  findings.sort((a, b) => CHECKS.indexOf(a.check) - CHECKS.indexOf(b.check));
  return {
    hostname: o.hostname,
    domains: o.domains,
    addresses,
    addressSource: configured ? o.addressSource : 'hostname',
    findings,
    summary: summarize(findings),
  };
}
