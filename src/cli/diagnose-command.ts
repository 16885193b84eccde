/**
 * `sterna diagnose [DOMAIN]`: checks what makes or breaks the delivery of a domain's mail (MX,
 * the host name, reverse DNS, SPF, DKIM, DMARC, MTA-STS, TLS-RPT, the certificate, blocklists)
 * through Sterna's own resolver ([dns] servers), and says what to fix. Exit codes: 0 nothing
 * worse than warnings, 1 an error found, 2 usage or configuration error. Trust: arguments and
 * configuration are the operator's; DNS answers are untrusted (src/diagnose/).
 */
import type { Writable } from 'node:stream';
import type { Config } from '../config/schema.js';
import { NodeDnsResolver } from '../delivery/dns.js';
import { canonicalAddress, isIpAddress } from '../diagnose/addresses.js';
import { exitCodeOf } from '../diagnose/finding.js';
import { renderJson, renderText } from '../diagnose/render.js';
import { diagnose } from '../diagnose/run.js';

export const DIAGNOSE_HELP = `Usage: sterna diagnose [DOMAIN] [options]

Checks what makes or breaks the delivery of DOMAIN's mail, and says what to fix: its MX records,
the A/AAAA records of this server's host name, reverse DNS (PTR) of the public addresses, SPF,
DKIM, DMARC, MTA-STS and TLS-RPT records, the certificates of the listeners ([tls] cert_file,
and ecdsa_cert_file when set) and DNS blocklists. All lookups go through the [dns] servers of the configuration.
Without DOMAIN: every local domain but "localhost" and the host name (the host name if none).

Options:
  --config FILE          the configuration (hostname, [dns], [tls], [diagnose])
  --address IP           a public address of this server (repeatable); default:
                         [diagnose] public_addresses, else the host name's A/AAAA records
  --dkim-selector S      a DKIM selector whose key record to check in every domain
                         (repeatable); each domain's own selectors from [[dkim.keys]]
                         (keys in state "publish" or "active") are checked too
  --dnsbl ZONE           a blocklist zone to check (repeatable); default: [diagnose] dnsbl_zones
  --ca-file FILE         trust the CA certificates in FILE too (a private CA)
  --json                 the report as JSON

Exit codes: 0 no errors (warnings allowed), 1 an error found, 2 usage or configuration error.
`;

export interface DiagnoseIo {
  stdout: Writable;
  stderr: Writable;
  config: Config;
}

interface Parsed {
  domain?: string;
  addresses: string[];
  selectors: string[];
  zones: string[];
  caFile?: string;
  json: boolean;
  help: boolean;
}

const VALUE_OPTIONS = ['--address', '--dkim-selector', '--dnsbl', '--ca-file'] as const;
type ValueOption = (typeof VALUE_OPTIONS)[number];

function isValueOption(name: string): name is ValueOption {
  return VALUE_OPTIONS.some((o) => o === name);
}

const NAME = /^(?=.*[A-Za-z0-9])[A-Za-z0-9_.-]+$/;

function parseArgs(args: readonly string[]): Parsed | string {
  const p: Parsed = { addresses: [], selectors: [], zones: [], json: false, help: false };
  for (let i = 0; i < args.length; i++) {
    const a = args[i] ?? '';
    if (a === '--json') p.json = true;
    else if (a === '--help' || a === '-h') p.help = true;
    else if (a.startsWith('--')) {
      const eq = a.indexOf('=');
      const name = eq === -1 ? a : a.slice(0, eq);
      if (!isValueOption(name)) return `unknown option "${a}"`;
      const value = eq === -1 ? args[++i] : a.slice(eq + 1);
      if (value === undefined || value === '') return `${name} needs a value`;
      switch (name) {
        case '--address':
          if (!isIpAddress(value)) return `--address: "${value}" is not an IP address`;
          p.addresses.push(canonicalAddress(value));
          break;
        case '--dkim-selector':
          if (!NAME.test(value)) return `--dkim-selector: "${value}" is not a DKIM selector`;
          p.selectors.push(value);
          break;
        case '--dnsbl':
          if (!NAME.test(value)) return `--dnsbl: "${value}" is not a DNS zone`;
          p.zones.push(value);
          break;
        case '--ca-file':
          p.caFile = value;
          break;
        default: {
          const never: never = name;
          return `unknown option "${String(never)}"`;
        }
      }
    } else if (p.domain === undefined) {
      if (!NAME.test(a) || !a.includes('.')) return `"${a}" is not a domain name`;
      p.domain = a.toLowerCase().replace(/\.$/, '');
    } else return `unexpected argument "${a}" (one domain at a time)`;
  }
  return p;
}

/**
 * The selectors of each domain's signing keys ([[dkim.keys]], docs/mail-auth.md): those in state
 * "publish" (the record must be out before the key signs) and "active". A retired key's record is
 * meant to go away, so its absence is no fault.
 */
export function configuredSelectors(config: Config): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const k of config.dkim.keys) {
    if (k.state === 'retired') continue;
    const domain = k.domain.toLowerCase();
    const list = out.get(domain) ?? [];
    if (!list.includes(k.selector)) list.push(k.selector);
    out.set(domain, list);
  }
  return out;
}

/** The domains checked without DOMAIN: the local domains but localhost and the host name, or the host name. */
function defaultDomains(config: Config): string[] {
  const host = config.hostname.toLowerCase();
  const domains = config.local_domains
    .map((d) => d.toLowerCase())
    .filter((d) => d !== 'localhost' && d !== host);
  return domains.length > 0 ? domains : [host];
}

export async function runDiagnoseCommand(args: readonly string[], io: DiagnoseIo): Promise<number> {
  const p = parseArgs(args);
  if (typeof p === 'string') {
    io.stderr.write(`sterna diagnose: ${p}\n\n${DIAGNOSE_HELP}`);
    return 2;
  }
  if (p.help) {
    io.stdout.write(DIAGNOSE_HELP);
    return 0;
  }
  const { config } = io;
  const dns = new NodeDnsResolver({
    servers: config.dns.servers,
    timeoutMs: config.dns.timeout_ms,
    tries: config.dns.tries,
  });
  const fromOption = p.addresses.length > 0;
  try {
    const report = await diagnose({
      domains: p.domain !== undefined ? [p.domain] : defaultDomains(config),
      hostname: config.hostname.toLowerCase(),
      addresses: fromOption ? p.addresses : config.diagnose.public_addresses.map(canonicalAddress),
      addressSource: fromOption ? 'option' : 'configuration',
      dns,
      dkimSelectors: p.selectors,
      configuredSelectors: configuredSelectors(config),
      dnsblZones: p.zones.length > 0 ? p.zones : config.diagnose.dnsbl_zones,
      certFile: config.tls.cert_file,
      keyFile: config.tls.key_file,
      ecdsaCertFile: config.tls.ecdsa_cert_file,
      ecdsaKeyFile: config.tls.ecdsa_key_file,
      ...(p.caFile !== undefined ? { caFile: p.caFile } : {}),
      now: new Date(),
    });
    io.stdout.write(p.json ? renderJson(report) : renderText(report));
    return exitCodeOf(report.findings);
  } finally {
    dns.cancel();
  }
}
