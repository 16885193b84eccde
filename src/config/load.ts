/**
 * Configuration loading: reads the TOML file (smol-toml), validates it against the schema
 * (schema.ts, zod), checks the rules that span several keys, fills in the defaults that depend
 * on the machine (hostname, local domains, paths under data_dir) and returns a deeply frozen
 * Config. Every problem is reported at once, each naming its key exactly as the user writes it
 * in TOML ("limits.message_bytes", "listen.smtp[0]", 'aliases."a@example.org"').
 *
 * Standards: TOML 1.0; domain names per RFC 1035 2.3.1 / RFC 5890 (IDNA); addresses per
 * RFC 5321 4.1.2. Trust: the file is written by the operator (trusted) but may hold mistakes;
 * nothing in it is executed, and a value that does not validate stops start-up (fail closed).
 */
import { readFile } from 'node:fs/promises';
import { hostname as osHostname } from 'node:os';
import { isIPv4, isIPv6 } from 'node:net';
import { resolve as resolvePath } from 'node:path';
import { domainToASCII } from 'node:url';
import { parse as parseToml, TomlError, TomlDate } from 'smol-toml';
import { z } from 'zod';
import { configSchema, listenSchema, type Config, type ParsedConfig } from './schema.js';

/** One thing wrong with the configuration. */
export interface ConfigProblem {
  /** Dotted TOML path of the key, e.g. "limits.message_bytes" or "listen.smtp[0]"; '' for the file as a whole. */
  readonly key: string;
  /** One line for the operator: names the key, says what was found and what is expected. */
  readonly message: string;
}

/** The configuration cannot be used. `problems` lists every problem found; `key` is the first one's. */
export class ConfigError extends Error {
  readonly code = 'STERNA_CONFIG_INVALID';
  /** Dotted TOML path of the (first) offending key; '' when the file itself is the problem. */
  readonly key: string;
  /** The file (or other source) the configuration came from. */
  readonly source: string;
  readonly problems: readonly ConfigProblem[];
  /** For a TOML syntax error: the lines around it, with a caret under the column. */
  readonly excerpt: string;

  constructor(source: string, problems: readonly ConfigProblem[], excerpt = '') {
    const list = problems.length > 0 ? problems : [{ key: '', message: 'invalid configuration' }];
    super(`${source}: ${list.map((p) => p.message).join('; ')}`);
    this.name = 'ConfigError';
    this.source = source;
    this.problems = Object.freeze([...list]);
    this.key = list[0]?.key ?? '';
    this.excerpt = excerpt;
  }
}

export interface LoadOptions {
  /** Environment; STERNA_CONFIG names the file when `file` is undefined. Default: process.env. */
  env?: NodeJS.ProcessEnv;
  /** The machine's host name, used when `hostname` is not configured. Default: os.hostname(). */
  hostname?: string;
}

/**
 * Loads the configuration. `file` undefined (and no STERNA_CONFIG in the environment): the
 * embedded defaults. Throws ConfigError naming every problem.
 */
export async function loadConfig(file: string | undefined, opts: LoadOptions = {}): Promise<Config> {
  const env = opts.env ?? process.env;
  const path =
    file ??
    (env['STERNA_CONFIG'] !== undefined && env['STERNA_CONFIG'] !== '' ? env['STERNA_CONFIG'] : undefined);
  const hostOpts = opts.hostname !== undefined ? { hostname: opts.hostname } : {};
  if (path === undefined) return parseConfigText('', '(embedded defaults)', hostOpts);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    throw new ConfigError(path, [{ key: '', message: `cannot read the configuration file: ${reason}` }]);
  }
  return parseConfigText(text, path, hostOpts);
}

/** Parses and validates TOML text. `source` names it in error messages (usually the file path). */
export function parseConfigText(text: string, source: string, opts: { hostname?: string } = {}): Config {
  let raw: unknown;
  try {
    raw = parseToml(text);
  } catch (err) {
    if (err instanceof TomlError) {
      const reason = (err.message.split('\n')[0] ?? '').replace(/^Invalid TOML document:\s*/, '');
      throw new ConfigError(
        source,
        [{ key: '', message: `${source}:${err.line}:${err.column}: TOML syntax error: ${reason}` }],
        err.codeblock.trimEnd(),
      );
    }
    throw err;
  }

  const problems: ConfigProblem[] = [];
  const result = configSchema.safeParse(raw);
  if (!result.success) problems.push(...schemaProblems(result.error.issues, raw));
  problems.push(...crossKeyProblems(raw));
  if (!result.success || problems.length > 0) throw new ConfigError(source, inFileOrder(problems, raw));
  return deepFreeze(complete(result.data, opts.hostname ?? osHostname()));
}

/** Sorts problems by where their top-level key first appears in the file (stable within a key). */
function inFileOrder(problems: ConfigProblem[], raw: unknown): ConfigProblem[] {
  const order = new Map(
    Object.keys(typeof raw === 'object' && raw !== null ? raw : {}).map((k, i) => [k, i]),
  );
  const rank = (p: ConfigProblem): number => {
    const m = /^(?:"((?:[^"\\]|\\.)*)"|([A-Za-z0-9_-]+))/.exec(p.key);
    const top = m === null ? '' : (m[2] ?? (JSON.parse(`"${m[1] ?? ''}"`) as string));
    return order.get(top) ?? order.size;
  };
  return problems
    .map((p, i) => ({ p, i, r: rank(p) }))
    .sort((a, b) => a.r - b.r || a.i - b.i)
    .map((x) => x.p);
}

/**
 * Settings that are valid but weaken security on purpose, one line each naming the key, for
 * `sterna check-config` (and the start-up log). Today: relays whose AUTH credentials may go over
 * TLS that is not verified (transport."d".auth_over_unverified_tls = true).
 */
export function configWarnings(config: Config): string[] {
  const out: string[] = [];
  for (const [domain, t] of Object.entries(config.transport)) {
    if (typeof t === 'string' || t.auth_over_unverified_tls !== true) continue;
    out.push(
      `${tomlKeyPath(['transport', domain, 'auth_over_unverified_tls'])} = true: the AUTH password for ${t.relay} is sent without verifying the relay's certificate; an active attacker on the path can collect it (prefer tls = "required-verify" with tls_ca_file)`,
    );
  }
  return out;
}

/** The text the CLI prints before exiting with status 2. */
export function formatConfigError(e: ConfigError): string {
  const n = e.problems.length;
  const lines = [
    `sterna: the configuration in ${e.source} is not valid (${n} problem${n === 1 ? '' : 's'}):`,
  ];
  for (const p of e.problems) lines.push(`  - ${p.message}`);
  if (e.excerpt !== '') {
    lines.push('');
    for (const l of e.excerpt.split('\n')) lines.push(`    ${l}`);
  }
  lines.push('', 'See docs/configuration.md for every key, its type and its default.');
  return lines.join('\n');
}

// ---------------------------------------------------------------------------------------------
// Filling in what depends on the machine

function complete(parsed: ParsedConfig, machineHostname: string): Config {
  const hostname = (parsed.hostname ?? machineHostname).toLowerCase();
  const dataDir = resolvePath(parsed.data_dir);
  const under = (value: string, fallback: string): string =>
    value === '' ? resolvePath(dataDir, fallback) : resolvePath(value);
  const optionalPath = (value: string): string => (value === '' ? '' : resolvePath(value));
  const domains = parsed.local_domains ?? ['localhost', hostname];
  return {
    ...parsed,
    hostname,
    data_dir: dataDir,
    local_domains: [...new Set(domains.map((d) => d.toLowerCase()))],
    aliases_file: optionalPath(parsed.aliases_file),
    lists: parsed.lists.map((l) => ({ ...l, file: optionalPath(l.file) })),
    transport: Object.fromEntries(
      Object.entries(parsed.transport).map(([domain, t]) => [
        domain,
        typeof t === 'string'
          ? t
          : {
              ...t,
              ...(t.auth_password_file !== undefined
                ? { auth_password_file: resolvePath(t.auth_password_file) }
                : {}),
              ...(t.tls_ca_file !== undefined ? { tls_ca_file: resolvePath(t.tls_ca_file) } : {}),
            },
      ]),
    ),
    outbound: {
      ...parsed.outbound,
      tls_policy: Object.fromEntries(
        Object.entries(parsed.outbound.tls_policy).map(([domain, p]) => [domain.toLowerCase(), p]),
      ),
      ...(parsed.outbound.tls_ca_file !== undefined
        ? { tls_ca_file: resolvePath(parsed.outbound.tls_ca_file) }
        : {}),
    },
    tls: {
      ...parsed.tls,
      cert_file: optionalPath(parsed.tls.cert_file),
      key_file: optionalPath(parsed.tls.key_file),
      ecdsa_cert_file: optionalPath(parsed.tls.ecdsa_cert_file),
      ecdsa_key_file: optionalPath(parsed.tls.ecdsa_key_file),
    },
    auth: {
      ...parsed.auth,
      users_file: under(parsed.auth.users_file, 'users.json'),
      oauth: { ...parsed.auth.oauth, jwks_file: optionalPath(parsed.auth.oauth.jwks_file) },
      dovecot: { ...parsed.auth.dovecot, socket: resolvePath(parsed.auth.dovecot.socket) },
    },
    spool: { ...parsed.spool, dir: under(parsed.spool.dir, 'spool') },
    http_api: { ...parsed.http_api, keys_file: under(parsed.http_api.keys_file, 'api-keys.json') },
    local_delivery: {
      ...parsed.local_delivery,
      maildir_root: under(parsed.local_delivery.maildir_root, 'mailboxes'),
      postmaster:
        parsed.local_delivery.postmaster === '' ? `postmaster@${hostname}` : parsed.local_delivery.postmaster,
    },
  };
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

// ---------------------------------------------------------------------------------------------
// Key paths as written in TOML

type PathSegment = PropertyKey;

/** ["listen", "smtp", 0] -> listen.smtp[0]; keys that are not bare TOML keys are quoted. */
function tomlKeyPath(path: readonly PathSegment[]): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else {
      const s = String(seg);
      const k = /^[A-Za-z0-9_-]+$/.test(s) ? s : JSON.stringify(s);
      out += out === '' ? k : `.${k}`;
    }
  }
  return out;
}

function valueAt(root: unknown, path: readonly PathSegment[]): unknown {
  let cur = root;
  for (const seg of path) {
    if (typeof cur !== 'object' || cur === null) return undefined;
    cur = (cur as Record<PropertyKey, unknown>)[seg];
  }
  return cur;
}

/** The schema node for a path, with defaults and optionals unwrapped. */
function schemaAt(path: readonly PathSegment[]): z.ZodType | undefined {
  let cur: z.ZodType | undefined = unwrap(configSchema);
  for (const seg of path) {
    if (cur instanceof z.ZodObject && typeof seg === 'string') {
      const shape = cur.shape as Record<string, z.ZodType>;
      cur = Object.hasOwn(shape, seg) ? shape[seg] : undefined;
    } else if (cur instanceof z.ZodArray) cur = cur.element as z.ZodType;
    else if (cur instanceof z.ZodRecord) cur = cur.valueType as z.ZodType;
    else return undefined;
    // A union of a string form and a table (transport."d"): the table branch names the keys.
    if (cur instanceof z.ZodUnion) cur = (cur.options as z.ZodType[]).find((o) => o instanceof z.ZodObject);
    if (cur === undefined) return undefined;
    cur = unwrap(cur);
  }
  return cur;
}

function unwrap(s: z.ZodType): z.ZodType {
  let cur = s;
  for (;;) {
    if (cur instanceof z.ZodDefault || cur instanceof z.ZodOptional) cur = cur.unwrap() as z.ZodType;
    else return cur;
  }
}

function objectKeys(s: z.ZodType | undefined): string[] {
  return s instanceof z.ZodObject ? Object.keys(s.shape) : [];
}

// ---------------------------------------------------------------------------------------------
// Schema issues -> problems

/** How a TOML value looks to the user: `string "10M"`, `number 1.5`, `a table`. */
function describe(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (typeof v === 'string') return `string ${JSON.stringify(v.length > 60 ? `${v.slice(0, 57)}...` : v)}`;
  if (typeof v === 'number' || typeof v === 'bigint') return `number ${String(v)}`;
  if (typeof v === 'boolean') return `boolean ${v}`;
  if (Array.isArray(v)) return 'an array';
  if (v instanceof TomlDate || v instanceof Date) return 'a date';
  return 'a table';
}

const EXPECTED_TYPE: Record<string, string> = {
  string: 'a string (in quotes)',
  number: 'a number',
  int: 'an integer',
  boolean: 'true or false',
  array: 'an array, e.g. ["..."]',
  object: 'a table',
  record: 'a table',
};

function numberRange(s: z.ZodType | undefined): string | undefined {
  if (!(s instanceof z.ZodNumber)) return undefined;
  let lo = s.minValue;
  let hi = s.maxValue;
  // .int() gives format "safeint" (or int32, uint32): whole numbers only.
  const isInt = s.format !== null && s.format.includes('int');
  if (isInt) {
    if (lo !== null && !s.safeParse(lo).success) lo += 1;
    if (hi !== null && !s.safeParse(hi).success) hi -= 1;
  }
  const kind = isInt ? 'an integer' : 'a number';
  const safe = (x: number | null): boolean => x !== null && Math.abs(x) < Number.MAX_SAFE_INTEGER;
  if (safe(lo) && safe(hi)) return `${kind} from ${lo} to ${hi}`;
  if (safe(lo)) return `${kind} >= ${lo}`;
  if (safe(hi)) return `${kind} <= ${hi}`;
  return kind;
}

function quoteList(values: readonly unknown[]): string {
  return values.map((v) => JSON.stringify(v)).join(', ');
}

function schemaProblems(issues: readonly z.core.$ZodIssue[], raw: unknown): ConfigProblem[] {
  const out: ConfigProblem[] = [];
  const seen = new Set<string>();
  for (const issue of issues) {
    if (issue.code === 'unrecognized_keys') {
      for (const k of issue.keys) out.push(unknownKeyProblem(issue.path, k));
      continue;
    }
    if (issue.code === 'invalid_union') {
      // A table given where a table is one of the forms: report that form's problems, by key.
      const tableBranch = issue.errors.find((branch) => branch.every((i) => i.path.length > 0));
      if (tableBranch !== undefined && typeof valueAt(raw, issue.path) === 'object') {
        const nested = tableBranch.map((i) => ({ ...i, path: [...issue.path, ...i.path] }));
        out.push(...schemaProblems(nested, raw));
        continue;
      }
    }
    const key = tomlKeyPath(issue.path);
    // One problem per key: zod may report the same bad value twice (e.g. two upper bounds).
    if (seen.has(key)) continue;
    seen.add(key);
    out.push({
      key,
      message: `${key === '' ? 'the file' : key}: ${issueText(issue, valueAt(raw, issue.path))}`,
    });
  }
  return out;
}

function issueText(issue: z.core.$ZodIssue, value: unknown): string {
  const got = `got ${describe(value)}`;
  const leaf = schemaAt(issue.path);
  switch (issue.code) {
    case 'invalid_type': {
      if (issue.expected === 'number' || issue.expected === 'int') {
        const range = numberRange(leaf);
        if (typeof value === 'number' && !Number.isInteger(value))
          return `expected ${range ?? 'an integer'}, ${got}`;
        return `expected ${range ?? EXPECTED_TYPE[issue.expected] ?? issue.expected}, ${got}`;
      }
      return `expected ${EXPECTED_TYPE[issue.expected] ?? issue.expected}, ${got}`;
    }
    case 'too_small':
    case 'too_big': {
      if (issue.origin === 'number' || issue.origin === 'int' || issue.origin === 'bigint') {
        return `expected ${numberRange(leaf) ?? 'a number in range'}, ${got}`;
      }
      const bound = Number(issue.code === 'too_small' ? issue.minimum : issue.maximum);
      if (issue.origin === 'string') {
        if (issue.code === 'too_small' && bound === 1) return 'must not be empty';
        return issue.code === 'too_small'
          ? `expected at least ${bound} characters, ${got}`
          : `expected at most ${bound} characters, got ${typeof value === 'string' ? value.length : 0}`;
      }
      return issue.code === 'too_small'
        ? `expected at least ${bound} entries`
        : `expected at most ${bound} entries`;
    }
    case 'invalid_value':
      return `expected one of ${quoteList(issue.values)}, ${got}`;
    case 'invalid_format':
      // The schema's own message already says what is expected (e.g. "expected a domain name").
      return `${issue.message}, ${got}`;
    case 'invalid_union': {
      const forms = issue.errors.flatMap((branch) =>
        branch
          .filter((i) => i.path.length === 0)
          .map((i) =>
            i.code === 'invalid_value'
              ? quoteList(i.values)
              : i.code === 'invalid_type'
                ? (EXPECTED_TYPE[i.expected] ?? i.expected)
                : i.message,
          ),
      );
      return `expected ${forms.join(' or ')}, ${got}`;
    }
    default:
      return `${issue.message}, ${got}`;
  }
}

function unknownKeyProblem(tablePath: readonly PathSegment[], name: string): ConfigProblem {
  const key = tomlKeyPath([...tablePath, name]);
  const table = tomlKeyPath(tablePath);
  const where = table === '' ? 'at top level' : `in table [${table}]`;
  const known = objectKeys(schemaAt(tablePath));
  let hint = '';
  const close = closest(name, known);
  if (close !== undefined) {
    hint = `; did you mean "${tomlKeyPath([...tablePath, close])}"?`;
  } else {
    // The right key in the wrong table: `message_bytes` at top level belongs in [limits].
    const home = known.find((t) => objectKeys(schemaAt([...tablePath, t])).includes(name));
    hint =
      home !== undefined
        ? `; it belongs in table [${tomlKeyPath([...tablePath, home])}]`
        : `; known keys here: ${known.join(', ')}`;
  }
  return { key, message: `unknown key "${key}" ${where}${hint}` };
}

/** The known key nearest to `name` if it is a plausible typo (small edit distance). */
function closest(name: string, known: readonly string[]): string | undefined {
  const lower = name.toLowerCase();
  let best: string | undefined;
  let bestDist = Infinity;
  for (const k of known) {
    const d = editDistance(lower, k);
    if (d < bestDist) {
      bestDist = d;
      best = k;
    }
  }
  const allowed = Math.max(1, Math.min(3, Math.floor(name.length / 3)));
  return bestDist <= allowed ? best : undefined;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      cur[j] = Math.min((prev[j] ?? 0) + 1, (cur[j - 1] ?? 0) + 1, (prev[j - 1] ?? 0) + cost);
    }
    prev = cur;
  }
  return prev[b.length] ?? 0;
}

// ---------------------------------------------------------------------------------------------
// Rules that span keys. They read the raw input defensively so that they can run even when other
// parts of the file failed validation: every problem is reported in one pass.

function crossKeyProblems(raw: unknown): ConfigProblem[] {
  const out: ConfigProblem[] = [];
  if (typeof raw !== 'object' || raw === null) return out;
  const root = raw as Record<string, unknown>;

  // TLS: a certificate without its key (or the reverse) cannot be used.
  const tls = asTable(root['tls']);
  const certFile = tls['cert_file'] ?? '';
  const keyFile = tls['key_file'] ?? '';
  if (typeof certFile === 'string' && typeof keyFile === 'string' && (certFile === '') !== (keyFile === '')) {
    const missing = certFile === '' ? 'tls.cert_file' : 'tls.key_file';
    const present = missing === 'tls.cert_file' ? 'tls.key_file' : 'tls.cert_file';
    out.push({
      key: missing,
      message: `${missing}: must be set when ${present} is set (set both, or neither to use a generated test certificate)`,
    });
  }
  // Dual certificates: the ECDSA pair is set together, and beside the first (RSA) pair.
  const ecdsaCert = tls['ecdsa_cert_file'] ?? '';
  const ecdsaKey = tls['ecdsa_key_file'] ?? '';
  if (typeof ecdsaCert === 'string' && typeof ecdsaKey === 'string') {
    if ((ecdsaCert === '') !== (ecdsaKey === '')) {
      const missing = ecdsaCert === '' ? 'tls.ecdsa_cert_file' : 'tls.ecdsa_key_file';
      const present = missing === 'tls.ecdsa_cert_file' ? 'tls.ecdsa_key_file' : 'tls.ecdsa_cert_file';
      out.push({
        key: missing,
        message: `${missing}: must be set when ${present} is set (set both, or neither)`,
      });
    }
    if ((ecdsaCert !== '' || ecdsaKey !== '') && certFile === '' && keyFile === '') {
      out.push({
        key: 'tls.cert_file',
        message:
          'tls.cert_file: must be set when tls.ecdsa_cert_file is set (the RSA certificate served beside the ECDSA one; for an ECDSA certificate alone use cert_file and key_file)',
      });
    }
  }

  // Listeners: each address valid and used once across smtp, submission and submissions.
  out.push(...listenProblems(asTable(root['listen']), asTable(root['http_api'])['listen']));

  // local_domains: each a domain name.
  const domains = root['local_domains'];
  if (Array.isArray(domains)) {
    domains.forEach((d: unknown, i) => {
      if (typeof d === 'string' && d !== '' && !isDomainName(d)) {
        out.push({
          key: `local_domains[${i}]`,
          message: `local_domains[${i}]: expected a domain name such as "example.org", got ${describe(d)}`,
        });
      }
    });
  }

  const host = root['hostname'];
  if (typeof host === 'string' && /^[A-Za-z0-9.-]+$/.test(host) && !isDomainName(host)) {
    out.push({
      key: 'hostname',
      message: `hostname: expected a domain name such as "mx.example.org", got ${describe(host)}`,
    });
  }

  // aliases: "local@domain" or "@domain" -> addresses.
  const aliases = root['aliases'];
  if (typeof aliases === 'object' && aliases !== null && !Array.isArray(aliases)) {
    for (const [k, v] of Object.entries(aliases as Record<string, unknown>)) {
      const keyPath = tomlKeyPath(['aliases', k]);
      if (!isAliasKey(k)) {
        out.push({
          key: keyPath,
          message: `${keyPath}: an alias must be "local@domain" or "@domain" (catch-all for the domain), got ${JSON.stringify(k)}`,
        });
      }
      if (Array.isArray(v)) {
        v.forEach((target: unknown, i) => {
          if (typeof target === 'string' && target !== '' && !isAddress(target)) {
            const p = tomlKeyPath(['aliases', k, i]);
            out.push({
              key: p,
              message: `${p}: expected an address such as "user@example.org", got ${describe(target)}`,
            });
          }
        });
      }
    }
  }

  const outbound = root['outbound'];
  const outboundTls =
    typeof outbound === 'object' && outbound !== null
      ? (outbound as Record<string, unknown>)['tls']
      : undefined;
  out.push(...transportProblems(root['transport'], outboundTls ?? 'opportunistic'));
  out.push(...authProblems(asTable(root['auth'])));

  const ld = root['local_delivery'];
  if (typeof ld === 'object' && ld !== null) {
    const pm = (ld as Record<string, unknown>)['postmaster'];
    if (typeof pm === 'string' && pm !== '' && !isAddress(pm)) {
      out.push({
        key: 'local_delivery.postmaster',
        message: `local_delivery.postmaster: expected an address such as "postmaster@example.org", got ${describe(pm)}`,
      });
    }
  }
  return out;
}

/**
 * [auth]: an OAuth mechanism needs an issuer, an audience and exactly one key source; the
 * dovecot backend can relay only what Sterna decodes into a password (PLAIN, LOGIN), and has no
 * users file to say which token users are "known".
 */
function authProblems(auth: Record<string, unknown>): ConfigProblem[] {
  const out: ConfigProblem[] = [];
  const mechanisms = Array.isArray(auth['mechanisms']) ? (auth['mechanisms'] as unknown[]) : [];
  const oauth = asTable(auth['oauth']);
  const oauthOn = mechanisms.some((m) => m === 'OAUTHBEARER' || m === 'XOAUTH2');
  if (oauthOn) {
    const why = 'must be set when auth.mechanisms has OAUTHBEARER or XOAUTH2';
    if (typeof oauth['issuer'] !== 'string' || oauth['issuer'] === '') {
      out.push({ key: 'auth.oauth.issuer', message: `auth.oauth.issuer: ${why} (the tokens' "iss")` });
    }
    if (!Array.isArray(oauth['audience']) || oauth['audience'].length === 0) {
      out.push({
        key: 'auth.oauth.audience',
        message: `auth.oauth.audience: ${why} (the tokens' "aud", e.g. ["smtp.example.org"])`,
      });
    }
    const file = typeof oauth['jwks_file'] === 'string' && oauth['jwks_file'] !== '';
    const url = typeof oauth['jwks_url'] === 'string' && oauth['jwks_url'] !== '';
    if (file === url) {
      out.push({
        key: 'auth.oauth.jwks_file',
        message: `auth.oauth.jwks_file: set exactly one of auth.oauth.jwks_file and auth.oauth.jwks_url (where the issuer's public keys are)`,
      });
    }
  }
  const jwksUrl = oauth['jwks_url'];
  if (typeof jwksUrl === 'string' && jwksUrl !== '' && !/^https?:\/\/[^/\s]+/.test(jwksUrl)) {
    out.push({
      key: 'auth.oauth.jwks_url',
      message: `auth.oauth.jwks_url: expected an http:// or https:// URL, got ${describe(jwksUrl)}`,
    });
  }
  if (auth['backend'] === 'dovecot') {
    mechanisms.forEach((m, i) => {
      if (m === 'CRAM-MD5') {
        out.push({
          key: `auth.mechanisms[${i}]`,
          message: `auth.mechanisms[${i}]: CRAM-MD5 cannot be relayed to Dovecot (backend = "dovecot" checks passwords: PLAIN and LOGIN)`,
        });
      }
    });
    if (oauthOn && oauth['users'] !== 'local_domains') {
      out.push({
        key: 'auth.oauth.users',
        message:
          'auth.oauth.users: must be "local_domains" with backend = "dovecot" (Sterna has no list of Dovecot\'s users)',
      });
    }
  }
  return out;
}

/**
 * transport: "*" only as a relay (not local, discard or lmtp); AUTH credentials complete; a relay port in range; AUTH
 * credentials only to a relay whose certificate is verified, unless auth_over_unverified_tls
 * says otherwise. `outboundTls` is [outbound] tls, the default of a relay's tls.
 */
function transportProblems(transport: unknown, outboundTls: unknown): ConfigProblem[] {
  const out: ConfigProblem[] = [];
  if (typeof transport !== 'object' || transport === null || Array.isArray(transport)) return out;
  for (const [domain, value] of Object.entries(transport as Record<string, unknown>)) {
    const at = (k?: string): string =>
      tomlKeyPath(k === undefined ? ['transport', domain] : ['transport', domain, k]);
    if (typeof value === 'string') {
      if (domain === '*') {
        out.push({
          key: at(),
          message: `${at()}: "*" (every other domain) may only name a relay table, e.g. { relay = "smtp.example.net:587" }, got ${describe(value)}`,
        });
      }
      continue;
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value)) continue;
    const t = value as Record<string, unknown>;
    const relay = t['relay'];
    if (typeof relay === 'string') {
      const port = /:(\d{1,5})$/.exec(relay)?.[1];
      if (port !== undefined && (Number(port) < 1 || Number(port) > 65535)) {
        out.push({
          key: at('relay'),
          message: `${at('relay')}: the port must be from 1 to 65535, got ${describe(relay)}`,
        });
      }
    }
    const user = t['auth_user'];
    const hasPassword = t['auth_password'] !== undefined;
    const hasFile = t['auth_password_file'] !== undefined;
    if (user !== undefined && !hasPassword && !hasFile) {
      out.push({
        key: at('auth_password_file'),
        message: `${at('auth_password_file')}: must be set when ${at('auth_user')} is set (or auth_password)`,
      });
    }
    if (hasPassword && hasFile) {
      out.push({
        key: at('auth_password'),
        message: `${at('auth_password')}: set auth_password or auth_password_file, not both`,
      });
    }
    if (user === undefined && (hasPassword || hasFile)) {
      out.push({
        key: at('auth_user'),
        message: `${at('auth_user')}: must be set when a password is set`,
      });
    }
    if (t['implicit_tls'] === true && t['tls'] === 'none') {
      out.push({
        key: at('tls'),
        message: `${at('tls')}: "none" contradicts implicit_tls = true (TLS from the first byte)`,
      });
    } else if (user !== undefined && t['tls'] === 'none') {
      out.push({
        key: at('tls'),
        message: `${at('tls')}: AUTH is only sent over TLS; "none" would never authenticate`,
      });
    } else if (user !== undefined && t['auth_over_unverified_tls'] !== true) {
      // The password must only reach the real relay: an unverified certificate lets an active
      // attacker on the path pose as it. Implicit TLS with credentials verifies when tls is unset.
      const implicit = t['implicit_tls'] === true;
      const effective = t['tls'] ?? (implicit ? 'required-verify' : outboundTls);
      if (effective !== 'required-verify') {
        const now =
          t['tls'] === undefined ? `unset ([outbound] tls is ${describe(outboundTls)})` : describe(t['tls']);
        out.push({
          key: at('tls'),
          message: `${at('tls')}: a relay with AUTH credentials must verify its certificate, so that the password only goes to the real relay: set tls = "required-verify" (and tls_ca_file for a private CA)${implicit ? ', or leave tls unset with implicit_tls = true' : ''}; got ${now}. To send the credentials without verification anyway, set ${at('auth_over_unverified_tls')} = true`,
        });
      }
    }
    if (t['auth_over_unverified_tls'] !== undefined && user === undefined) {
      out.push({
        key: at('auth_over_unverified_tls'),
        message: `${at('auth_over_unverified_tls')}: only meaningful with ${at('auth_user')} (there are no credentials to protect)`,
      });
    }
  }
  return out;
}

/** The schema's own "address:port" check, so that the two never disagree. */
const listenAddress = listenSchema.unwrap().shape.smtp.unwrap().element;

interface Endpoint {
  key: string;
  value: string;
  host: string;
  port: number;
}

/** A TOML table as a record; anything else (absent, or a wrong type reported by the schema) as {}. */
function asTable(v: unknown): Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
}

/** [listen] and [http_api] listen (none by default) share the checks: no address used twice. */
function listenProblems(listen: Record<string, unknown>, httpApi: unknown): ConfigProblem[] {
  const out: ConfigProblem[] = [];
  const endpoints: Endpoint[] = [];
  const defaults = listenSchema.parse(undefined);
  const groups: [string, unknown[]][] = (['smtp', 'submission', 'submissions'] as const).map((kind) => {
    const given = listen[kind];
    return [`listen.${kind}`, given === undefined ? defaults[kind] : Array.isArray(given) ? given : []];
  });
  groups.push(['http_api.listen', Array.isArray(httpApi) ? httpApi : []]);
  for (const [prefix, values] of groups) {
    values.forEach((value, i) => {
      // Entries of the wrong shape are reported by the schema; only well-formed ones are compared.
      if (typeof value !== 'string' || !listenAddress.safeParse(value).success) return;
      const key = `${prefix}[${i}]`;
      const cut = value.lastIndexOf(':');
      let host = value.slice(0, cut);
      const port = Number(value.slice(cut + 1));
      if (port > 65535) {
        out.push({
          key,
          message: `${key}: port ${port} is out of range (0 to 65535), in ${JSON.stringify(value)}`,
        });
        return;
      }
      if (host.startsWith('[')) {
        host = host.slice(1, -1);
        if (!isIPv6(host)) {
          out.push({
            key,
            message: `${key}: ${JSON.stringify(host)} is not an IPv6 address, in ${JSON.stringify(value)}`,
          });
          return;
        }
        host = canonicalIPv6(host);
      } else if (/^[0-9.]+$/.test(host)) {
        if (!isIPv4(host)) {
          out.push({
            key,
            message: `${key}: ${JSON.stringify(host)} is not an IPv4 address, in ${JSON.stringify(value)}`,
          });
          return;
        }
      } else {
        host = host.toLowerCase();
      }
      endpoints.push({ key, value, host, port });
    });
  }
  for (let i = 0; i < endpoints.length; i++) {
    const a = endpoints[i]!;
    if (a.port === 0) continue; // port 0: the system picks a free port each time, never a clash.
    for (let j = 0; j < i; j++) {
      const b = endpoints[j]!;
      if (a.port === b.port && bindingsOverlap(a.host, b.host)) {
        out.push({
          key: a.key,
          message: `${a.key}: ${JSON.stringify(a.value)} is already used by ${b.key} (${JSON.stringify(b.value)}); each listen address must be unique`,
        });
        break;
      }
    }
  }
  return out;
}

/** Two binds on one port clash if the hosts are equal or one is a wildcard covering the other. */
function bindingsOverlap(a: string, b: string): boolean {
  if (a === b) return true;
  // "[::]" listens on IPv4 too (Node binds dual-stack by default); "0.0.0.0" covers IPv4.
  if (a === '::' || b === '::') return true;
  if (a === '0.0.0.0') return isIPv4(b);
  if (b === '0.0.0.0') return isIPv4(a);
  return false;
}

function canonicalIPv6(ip: string): string {
  return new URL(`http://[${ip}]/`).hostname.slice(1, -1);
}

/** RFC 1035 2.3.1 host name (LDH labels of 1-63 octets, 253 in all), U-labels allowed via IDNA. */
function isDomainName(name: string): boolean {
  const d = name.endsWith('.') ? name.slice(0, -1) : name;
  if (d === '' || /[\s@[\]]/.test(d)) return false;
  const ascii = /^[\x21-\x7e]*$/.test(d) ? d : domainToASCII(d);
  if (ascii === '' || ascii.length > 253) return false;
  return ascii
    .split('.')
    .every((l) => l.length >= 1 && l.length <= 63 && /^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?$/.test(l));
}

/** local@domain (RFC 5321 4.1.2, loosely: any local part without spaces, controls or angle brackets). */
function isAddress(addr: string): boolean {
  const at = addr.lastIndexOf('@');
  if (at <= 0) return false;
  const local = addr.slice(0, at);
  return local.length <= 64 && !/[\s<>\x00-\x1f\x7f]/.test(local) && isDomainName(addr.slice(at + 1));
}

function isAliasKey(k: string): boolean {
  return k.startsWith('@') ? isDomainName(k.slice(1)) : isAddress(k);
}
