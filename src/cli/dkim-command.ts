/**
 * `sterna dkim …`: DKIM signing keys (src/mailauth/dkim-keys.ts, docs/mail-auth.md "Signing").
 * keygen writes a new private key (mode 0600, never over an existing file) and prints the DNS
 * TXT record to publish (RFC 6376 3.6.1, RFC 8463 for ed25519) and the configuration to add;
 * show prints the record of every configured key and checks it against the DNS, through
 * Sterna's own resolver ([dns] servers), saying in plain words what is missing or different.
 * Trust: run by the operator; DNS answers are untrusted and only compared, never executed.
 */
import { parseArgs } from 'node:util';
import { ConfigError, formatConfigError } from '../config/load.js';
import type { Config } from '../config/schema.js';
import { NodeDnsResolver, type DnsResolver } from '../delivery/dns.js';
import {
  defaultKeyFile,
  DkimKeyStore,
  generateKey,
  recordName,
  writeKeyFile,
  zoneLine,
  type DkimAlgorithm,
  type DkimKey,
} from '../mailauth/dkim-keys.js';

export interface DkimCommandIo {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
  config: Config;
  /** The resolver `show` asks; default: one built from [dns]. */
  dns?: DnsResolver;
  now?: () => number;
}

const USAGE = `Usage: sterna dkim COMMAND ...

Commands:
  keygen DOMAIN [--selector S] [--algorithm rsa|ed25519]
        write a new private key (mode 0600, under [dkim] key_dir, data_dir/dkim by default)
        and print the DNS TXT record to publish and the [[dkim.keys]] entry to add.
        Default selector: s<YYYYMM> for rsa (2048 bits), e<YYYYMM> for ed25519.
  show  print the record of every configured key and check it against the DNS.
        Exit status 1 when an active or "publish" key's record is missing or different.

Rotation: keygen a new selector, add it with state = "publish", wait until "show" says its
record matches, set it "active" and the old key "retired", restart; remove the retired key's
record after a week. See docs/mail-auth.md.
`;

export async function runDkimCommand(argv: string[], io: DkimCommandIo): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === '--help' || command === '-h') {
    (command === undefined ? io.stderr : io.stdout).write(USAGE);
    return command === undefined ? 2 : 0;
  }
  let parsed;
  try {
    parsed = parseArgs({
      args: rest,
      options: {
        selector: { type: 'string' },
        algorithm: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      allowPositionals: true,
    });
  } catch (err) {
    io.stderr.write(`sterna dkim ${command}: ${err instanceof Error ? err.message : String(err)}\n`);
    return 2;
  }
  if (parsed.values.help === true) {
    io.stdout.write(USAGE);
    return 0;
  }
  const args = parsed.positionals;
  switch (command) {
    case 'keygen': {
      const domain = args[0];
      if (domain === undefined || args.length !== 1) return usage(io, 'keygen needs exactly one DOMAIN');
      if (!/^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)+$/.test(domain))
        return usage(io, `"${domain}" is not a domain name`);
      const algorithm = parsed.values.algorithm ?? 'rsa';
      if (algorithm !== 'rsa' && algorithm !== 'ed25519')
        return usage(io, `--algorithm must be "rsa" or "ed25519", not "${algorithm}"`);
      const selector = parsed.values.selector ?? defaultSelector(algorithm, io.now?.() ?? Date.now());
      if (
        !/^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$/.test(selector)
      )
        return usage(io, `"${selector}" is not a selector: use letters, digits, "-" and "."`);
      return keygen(io, domain.toLowerCase(), selector, algorithm);
    }
    case 'show':
      if (args.length !== 0) return usage(io, 'show takes no arguments');
      return show(io);
    default:
      return usage(io, `unknown command "${command}"`);
  }
}

function usage(io: DkimCommandIo, problem: string): number {
  io.stderr.write(`sterna dkim: ${problem}\n\n${USAGE}`);
  return 2;
}

function defaultSelector(algorithm: DkimAlgorithm, now: number): string {
  const d = new Date(now);
  const month = String(d.getUTCMonth() + 1).padStart(2, '0');
  return `${algorithm === 'rsa' ? 's' : 'e'}${d.getUTCFullYear()}${month}`;
}

async function keygen(
  io: DkimCommandIo,
  domain: string,
  selector: string,
  algorithm: DkimAlgorithm,
): Promise<number> {
  const configured = io.config.dkim.keys.find(
    (k) => k.domain.toLowerCase() === domain && k.selector === selector,
  );
  const file =
    configured !== undefined && configured.key_file !== ''
      ? configured.key_file
      : defaultKeyFile(io.config, domain, selector);
  const { pem, record } = generateKey(algorithm);
  try {
    await writeKeyFile(file, pem);
  } catch (err) {
    const exists = err instanceof Error && 'code' in err && err.code === 'EEXIST';
    io.stderr.write(
      exists
        ? `sterna dkim keygen: ${file} already exists; choose another selector (--selector), or remove the file if it is not in use\n`
        : `sterna dkim keygen: cannot write ${file}: ${err instanceof Error ? err.message : String(err)}\n`,
    );
    return 1;
  }
  const bits = algorithm === 'rsa' ? 'rsa, 2048 bits' : 'ed25519';
  const out = [
    `Wrote the private key for ${domain} (${bits}, selector ${selector}) to ${file} (mode 0600).`,
    '',
    `1. Publish this TXT record in the DNS zone of ${domain}:`,
    '',
    zoneLine(domain, selector, record),
    '',
    configured === undefined
      ? '2. Add the key to the configuration, as "publish" until the record is visible:'
      : '2. The key is already in the configuration:',
    '',
    '[[dkim.keys]]',
    `domain = "${domain}"`,
    `selector = "${selector}"`,
    `algorithm = "${algorithm}"`,
    `state = "${configured?.state ?? 'publish'}"`,
    '',
    '3. Run "sterna dkim show". Once it says the record matches, set state = "active"',
    `   (and the domain's previous ${algorithm} key, if any, to "retired") and restart Sterna.`,
    '',
  ];
  io.stdout.write(out.join('\n'));
  return 0;
}

/** What the DNS says about one key. `problem`: an active or publish key that cannot verify. */
interface DnsCheck {
  text: string;
  problem: boolean;
}

async function show(io: DkimCommandIo): Promise<number> {
  let store: DkimKeyStore;
  try {
    store = await DkimKeyStore.load(io.config);
  } catch (err) {
    if (err instanceof ConfigError) {
      io.stderr.write(`${formatConfigError(err)}\n`);
      return 2;
    }
    throw err;
  }
  if (store.keys.length === 0) {
    io.stdout.write(
      'No DKIM keys are configured: nothing is signed. Make one with "sterna dkim keygen DOMAIN".\n',
    );
    return 0;
  }
  const dns =
    io.dns ??
    new NodeDnsResolver({
      servers: io.config.dns.servers,
      timeoutMs: io.config.dns.timeout_ms,
      tries: io.config.dns.tries,
    });
  let problems = 0;
  for (const key of store.keys) {
    const check = await checkDns(dns, key);
    if (check.problem) problems++;
    io.stdout.write(
      [
        `${key.domain}  selector ${key.selector}  ${key.algorithm === 'rsa' ? 'rsa-sha256' : 'ed25519-sha256'}  ${key.state}`,
        `  key file: ${key.file}`,
        `  record:   ${zoneLine(key.domain, key.selector, key.record).replace(/\n/g, '\n            ')}`,
        `  DNS:      ${check.text}`,
        '',
        '',
      ].join('\n'),
    );
  }
  io.stdout.write(
    problems === 0
      ? 'Every active and "publish" key is published as configured.\n'
      : `${problems} key${problems === 1 ? '' : 's'} must be published or corrected before receivers can verify ${problems === 1 ? 'its' : 'their'} signatures.\n`,
  );
  return problems === 0 ? 0 : 1;
}

/** RFC 6376 3.6.1 tag list of a key record: tag names lower-cased, values trimmed. */
function recordTags(value: string): Map<string, string> {
  const tags = new Map<string, string>();
  for (const part of value.split(';')) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    tags.set(part.slice(0, eq).trim().toLowerCase(), part.slice(eq + 1).replace(/\s+/g, ''));
  }
  return tags;
}

async function checkDns(dns: DnsResolver, key: DkimKey): Promise<DnsCheck> {
  const name = recordName(key.domain, key.selector);
  const retired = key.state === 'retired';
  const publishIt = 'publish the record above';
  if (dns.txt === undefined) return { text: 'not checked: this resolver has no TXT lookups', problem: true };
  const answer = await dns.txt(name);
  switch (answer.kind) {
    case 'nxdomain':
    case 'nodata':
      return retired
        ? { text: `no record at ${name} (the key is retired: nothing to do)`, problem: false }
        : { text: `MISSING: there is no TXT record at ${name}; ${publishIt}`, problem: true };
    case 'temp':
      return { text: `not checked: the DNS lookup of ${name} failed (${answer.reason})`, problem: !retired };
    case 'ok':
      break;
    default: {
      const never: never = answer;
      throw new Error(`unhandled DNS result ${JSON.stringify(never)}`);
    }
  }
  // Receivers join a record's character-strings with nothing between (RFC 6376 3.6.2.2).
  const records = answer.records.map((strings) => strings.join(''));
  const keyRecords = records.filter((r) => recordTags(r).has('p'));
  const ours = recordTags(key.record);
  if (keyRecords.length === 0) {
    return {
      text: `DIFFERENT: the TXT record at ${name} is not a DKIM key record (it has no p=): ${publishIt} in its place`,
      problem: !retired,
    };
  }
  if (keyRecords.length > 1) {
    return {
      text: `DIFFERENT: ${keyRecords.length} key records at ${name}; receivers cannot tell which to use: keep only the record above`,
      problem: !retired,
    };
  }
  const theirs = recordTags(keyRecords[0] ?? '');
  const kind = theirs.get('k') ?? 'rsa'; // RFC 6376 3.6.1: k= defaults to rsa
  if (kind.toLowerCase() !== key.algorithm) {
    return {
      text: `DIFFERENT: the record at ${name} is for a ${kind} key, this key is ${key.algorithm}: ${publishIt} in its place`,
      problem: !retired,
    };
  }
  if ((theirs.get('p') ?? '') === '') {
    return {
      text: `REVOKED: the record at ${name} has an empty p= (a revoked key)${retired ? '' : `; ${publishIt} in its place`}`,
      problem: !retired,
    };
  }
  if (theirs.get('p') !== ours.get('p')) {
    return {
      text: `DIFFERENT: the record at ${name} holds another public key than the key file: ${publishIt} in its place (or check key_file)`,
      problem: !retired,
    };
  }
  return retired
    ? {
        text: `published and matching; the key is retired: remove the record once mail signed with it has been delivered (a week is plenty)`,
        problem: false,
      }
    : { text: 'ok: the published record matches this key', problem: false };
}
