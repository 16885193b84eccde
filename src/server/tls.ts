/**
 * TLS material and its reload. Loads the configured certificate and key (checking that they
 * parse and belong together), and the optional second, ECDSA one (dual certificates: OpenSSL
 * serves each client the one its signature algorithms allow, RFC 8446 4.2.3 / RFC 5246
 * 7.4.1.4.1), or generates a self-signed ECDSA P-256 TEST certificate under <data_dir>/tls when
 * none is configured. TlsContextProvider hands out the current
 * SecureContext to listeners (implicit TLS, RFC 8314) and to STARTTLS upgrades (RFC 3207),
 * and swaps it when the files change or on SIGHUP: connections started afterwards use the new
 * certificate, sessions already open keep theirs. TLS 1.0 and 1.1 are always refused
 * (RFC 8996); the minimum is tls.min_version.
 *
 * Trust: the files are operator-provided (trusted); a file that fails to load at start-up stops
 * the server, one that fails on reload is logged and the previous certificate stays in use.
 * The private key is written with mode 0600 and never logged.
 */
import { X509Certificate, createPrivateKey, randomBytes, type KeyObject } from 'node:crypto';
import { watch as fsWatch, type FSWatcher } from 'node:fs';
import { chmod, mkdir, open, readFile, rename, stat, unlink } from 'node:fs/promises';
import { basename, dirname, join, resolve as resolvePath } from 'node:path';
import tls from 'node:tls';
import { ConfigError, type ConfigProblem } from '../config/load.js';
import type { Config } from '../config/schema.js';
import type { TicketKeys } from './ticket-keys.js';

/** The few logger methods this module uses; a pino Logger fits. */
export interface TlsLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

/** One certificate chain and its key. */
export interface TlsPair {
  /** PEM certificate chain, leaf first. */
  cert: Buffer;
  /** PEM private key. */
  key: Buffer;
  certFile: string;
  keyFile: string;
}

export interface TlsMaterial extends TlsPair {
  /** True when this is the self-signed test certificate Sterna generated. */
  generated: boolean;
  /** tls.ecdsa_cert_file / ecdsa_key_file: served beside the first to clients that accept ECDSA. */
  ecdsa?: TlsPair;
}

export interface TlsFilesConfig {
  /** tls.cert_file; '' together with keyFile: use (or generate) the test certificate. */
  certFile: string;
  /** tls.key_file. */
  keyFile: string;
  /** tls.ecdsa_cert_file; '' (or absent): no second certificate. */
  ecdsaCertFile?: string;
  /** tls.ecdsa_key_file. */
  ecdsaKeyFile?: string;
  dataDir: string;
  hostname: string;
}

/** The [tls] files of a configuration, as ensureTlsMaterial takes them. */
export function tlsFilesConfig(config: Config): TlsFilesConfig {
  return {
    certFile: config.tls.cert_file,
    keyFile: config.tls.key_file,
    ecdsaCertFile: config.tls.ecdsa_cert_file,
    ecdsaKeyFile: config.tls.ecdsa_key_file,
    dataDir: config.data_dir,
    hostname: config.hostname,
  };
}

/** The configuration keys a pair of files comes from, for error messages. */
interface PairKeys {
  cert: string;
  key: string;
}
const MAIN_KEYS: PairKeys = { cert: 'tls.cert_file', key: 'tls.key_file' };
const ECDSA_KEYS: PairKeys = { cert: 'tls.ecdsa_cert_file', key: 'tls.ecdsa_key_file' };

const DAY_MS = 24 * 3600 * 1000;
/** Validity of a generated test certificate. */
const TEST_CERT_VALIDITY_MS = 365 * DAY_MS;
/** A generated certificate is replaced when it expires within this time. */
const TEST_CERT_RENEW_BEFORE_MS = 30 * DAY_MS;
export const TEST_CERT_NAME = 'test-cert.pem';
export const TEST_KEY_NAME = 'test-key.pem';

const noLogger: TlsLogger = { info: () => undefined, warn: () => undefined, error: () => undefined };

/**
 * Returns the certificate and key to serve. With tls.cert_file/key_file set: reads and checks
 * them (throws ConfigError naming the key and the reason). Without: reuses or generates the
 * self-signed test pair under <dataDir>/tls.
 */
export async function ensureTlsMaterial(
  cfg: TlsFilesConfig,
  logger: TlsLogger = noLogger,
): Promise<TlsMaterial> {
  const ecdsaCertFile = cfg.ecdsaCertFile ?? '';
  const ecdsaKeyFile = cfg.ecdsaKeyFile ?? '';
  if (cfg.certFile !== '' || cfg.keyFile !== '' || ecdsaCertFile !== '' || ecdsaKeyFile !== '') {
    const unset = (
      [
        [cfg.certFile, 'tls.cert_file'],
        [cfg.keyFile, 'tls.key_file'],
        ...(ecdsaCertFile !== '' || ecdsaKeyFile !== ''
          ? [
              [ecdsaCertFile, 'tls.ecdsa_cert_file'],
              [ecdsaKeyFile, 'tls.ecdsa_key_file'],
            ]
          : []),
      ] as const
    ).filter(([file]) => file === '');
    if (unset.length > 0) {
      throw new ConfigError(
        'tls',
        unset.map(([, key]) => ({ key, message: `${key}: must be set together with the other TLS files` })),
      );
    }
    const { main, ecdsa } = await readConfiguredPairs(cfg.certFile, cfg.keyFile, ecdsaCertFile, ecdsaKeyFile);
    for (const pair of ecdsa !== undefined ? [main, ecdsa] : [main]) {
      checkExpiry(pair, logger);
      if (pair.x509.checkHost(cfg.hostname) === undefined) {
        logger.warn(
          { certFile: pair.certFile, hostname: cfg.hostname, subject: pair.x509.subject },
          "the TLS certificate does not name this server's hostname; clients that verify it will refuse it",
        );
      }
    }
    return {
      ...plainPair(main),
      generated: false,
      ...(ecdsa !== undefined ? { ecdsa: plainPair(ecdsa) } : {}),
    };
  }

  const dir = resolvePath(cfg.dataDir, 'tls');
  const certFile = join(dir, TEST_CERT_NAME);
  const keyFile = join(dir, TEST_KEY_NAME);
  const why = await reusableTestPair(certFile, keyFile, cfg.hostname);
  let material: TlsMaterial;
  if (typeof why !== 'string') {
    material = why;
  } else {
    logger.info({ certFile, reason: why }, 'generating a self-signed test certificate');
    material = await generateTestPair(dir, certFile, keyFile, cfg.hostname);
  }
  logger.warn(
    { certFile, keyFile, hostname: cfg.hostname },
    'using a self-signed TEST certificate: other servers and clients will not trust it; set tls.cert_file and tls.key_file for production',
  );
  return material;
}

interface CheckedPair extends TlsPair {
  x509: X509Certificate;
  notAfter: Date;
  /** The key's type as node:crypto names it: 'rsa', 'ec', 'rsa-pss', 'ed25519', ... */
  keyType: string;
}

function plainPair(p: CheckedPair): TlsPair {
  return { cert: p.cert, key: p.key, certFile: p.certFile, keyFile: p.keyFile };
}

/** Logs a certificate that expired or expires within 30 days (at start and on reload). */
function checkExpiry(pair: CheckedPair, logger: TlsLogger): void {
  const left = pair.notAfter.getTime() - Date.now();
  if (left <= 0) {
    logger.error(
      { certFile: pair.certFile, notAfter: pair.notAfter.toISOString() },
      'the TLS certificate has EXPIRED: clients that verify certificates will refuse it; renew it',
    );
  } else if (left < TEST_CERT_RENEW_BEFORE_MS) {
    logger.warn(
      { certFile: pair.certFile, notAfter: pair.notAfter.toISOString() },
      'the TLS certificate expires within 30 days; renew it',
    );
  }
}

/**
 * Reads the configured pair and, when its files are given, the ECDSA one, and checks them:
 * each parses and matches, the ECDSA one holds an EC key and the first one does not (two
 * certificates of one key type would leave OpenSSL serving only the last). Throws ConfigError
 * naming every key at fault.
 */
async function readConfiguredPairs(
  certFile: string,
  keyFile: string,
  ecdsaCertFile: string,
  ecdsaKeyFile: string,
): Promise<{ main: CheckedPair; ecdsa?: CheckedPair }> {
  const dual = ecdsaCertFile !== '';
  const [mainRead, ecdsaRead] = await Promise.allSettled([
    readTlsPair(certFile, keyFile),
    dual ? readTlsPair(ecdsaCertFile, ecdsaKeyFile, ECDSA_KEYS) : Promise.resolve(undefined),
  ]);
  const problems: ConfigProblem[] = [];
  for (const r of [mainRead, ecdsaRead]) {
    if (r.status === 'rejected') {
      if (!(r.reason instanceof ConfigError)) throw r.reason;
      problems.push(...r.reason.problems);
    }
  }
  const main = mainRead.status === 'fulfilled' ? mainRead.value : undefined;
  const ecdsa = ecdsaRead.status === 'fulfilled' ? ecdsaRead.value : undefined;
  if (ecdsa !== undefined && ecdsa.keyType !== 'ec') {
    problems.push({
      key: 'tls.ecdsa_key_file',
      message: `tls.ecdsa_key_file: the key in ${ecdsaKeyFile} is ${ecdsa.keyType}, not ECDSA`,
    });
  }
  if (dual && main !== undefined && main.keyType === 'ec') {
    problems.push({
      key: 'tls.key_file',
      message: `tls.key_file: the key in ${keyFile} is ECDSA too; with tls.ecdsa_cert_file set, tls.cert_file and tls.key_file are the RSA certificate`,
    });
  }
  if (problems.length > 0 || main === undefined) throw new ConfigError(certFile, problems);
  return ecdsa !== undefined ? { main, ecdsa } : { main };
}

/**
 * Checks the configured [tls] files as the server will load them (check-config and serve, before
 * anything starts). Throws ConfigError naming the key at fault; nothing when no file is set.
 */
export async function checkTlsFiles(cfg: TlsFilesConfig): Promise<void> {
  if (cfg.certFile === '' && cfg.keyFile === '') return;
  await readConfiguredPairs(cfg.certFile, cfg.keyFile, cfg.ecdsaCertFile ?? '', cfg.ecdsaKeyFile ?? '');
}

/**
 * Reads a certificate and key and checks that both parse and that the key belongs to the
 * certificate. Throws ConfigError naming tls.cert_file / tls.key_file (or `keys`) and the reason.
 */
export async function readTlsPair(
  certFile: string,
  keyFile: string,
  keys: PairKeys = MAIN_KEYS,
): Promise<CheckedPair> {
  const problems: ConfigProblem[] = [];
  const [certRead, keyRead] = await Promise.allSettled([readFile(certFile), readFile(keyFile)]);
  let x509: X509Certificate | undefined;
  let keyObj: KeyObject | undefined;
  if (certRead.status === 'rejected') {
    problems.push({
      key: keys.cert,
      message: `${keys.cert}: cannot read ${certFile}: ${reason(certRead.reason)}`,
    });
  } else {
    try {
      x509 = new X509Certificate(certRead.value);
    } catch (err) {
      problems.push({
        key: keys.cert,
        message: `${keys.cert}: ${certFile} does not hold a PEM certificate (${reason(err)})`,
      });
    }
  }
  if (keyRead.status === 'rejected') {
    problems.push({
      key: keys.key,
      message: `${keys.key}: cannot read ${keyFile}: ${reason(keyRead.reason)}`,
    });
  } else {
    try {
      keyObj = createPrivateKey(keyRead.value);
    } catch (err) {
      problems.push({
        key: keys.key,
        message: `${keys.key}: ${keyFile} does not hold an unencrypted PEM private key (${reason(err)})`,
      });
    }
  }
  if (x509 !== undefined && keyObj !== undefined && !x509.checkPrivateKey(keyObj)) {
    problems.push({
      key: keys.key,
      message: `${keys.key}: the key in ${keyFile} does not belong to the certificate in ${certFile}`,
    });
  }
  if (
    problems.length > 0 ||
    x509 === undefined ||
    certRead.status !== 'fulfilled' ||
    keyRead.status !== 'fulfilled'
  ) {
    throw new ConfigError(certFile, problems);
  }
  return {
    cert: certRead.value,
    key: keyRead.value,
    certFile,
    keyFile,
    x509,
    notAfter: new Date(x509.validTo),
    keyType: keyObj?.asymmetricKeyType ?? 'unknown',
  };
}

const ERRNO_TEXT: Record<string, string> = {
  ENOENT: 'no such file',
  EACCES: 'permission denied',
  EISDIR: 'it is a directory',
};

function reason(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const code = 'code' in err && typeof err.code === 'string' ? err.code : undefined;
  if (code !== undefined && /^E[A-Z0-9]+$/.test(code)) return ERRNO_TEXT[code] ?? code;
  return err.message;
}

/** The existing generated pair if it can be reused, or why it cannot. */
async function reusableTestPair(
  certFile: string,
  keyFile: string,
  hostname: string,
): Promise<TlsMaterial | string> {
  let pair: CheckedPair;
  try {
    pair = await readTlsPair(certFile, keyFile);
  } catch (err) {
    if (err instanceof ConfigError) return err.problems.map((p) => p.message).join('; ');
    throw err;
  }
  if (pair.notAfter.getTime() - Date.now() < TEST_CERT_RENEW_BEFORE_MS) return 'it expires within 30 days';
  if (pair.x509.checkHost(hostname) === undefined) return `it does not name the hostname ${hostname}`;
  // Test certificates made before they were ECDSA: a P-256 one takes 1.5x the handshakes.
  if (pair.keyType !== 'ec') return `it is ${pair.keyType}; the test certificate is ECDSA P-256 now`;
  // The key must stay private even if someone copied it in with a looser mode.
  const st = await stat(keyFile);
  if ((st.mode & 0o077) !== 0) await chmod(keyFile, 0o600);
  return { cert: pair.cert, key: pair.key, generated: true, certFile, keyFile };
}

async function generateTestPair(
  dir: string,
  certFile: string,
  keyFile: string,
  hostname: string,
): Promise<TlsMaterial> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const pems = await generateSelfSigned(hostname, new Date());
  const cert = Buffer.from(pems.cert);
  const key = Buffer.from(pems.key);
  // Key first: a crash between the two writes leaves a mismatched pair, which the next start
  // detects (checkPrivateKey) and regenerates.
  await writeFileDurably(keyFile, key, 0o600);
  await writeFileDurably(certFile, cert, 0o644);
  return { cert, key, generated: true, certFile, keyFile };
}

/**
 * A self-signed certificate for `hostname` (also localhost, 127.0.0.1, ::1), valid one year;
 * ECDSA P-256 unless `keyType` says 'rsa' (RSA-2048).
 */
export async function generateSelfSigned(
  hostname: string,
  notBefore: Date,
  keyType: 'ec' | 'rsa' = 'ec',
): Promise<{ cert: string; key: string }> {
  const dnsNames = [...new Set([hostname.toLowerCase(), 'localhost'])];
  // Loaded only when a test certificate must be made: the library is large, and a server with
  // real certificates (or an existing test pair) should not carry it in memory.
  const { generate } = await import('selfsigned');
  const pems = await generate([{ name: 'commonName', value: hostname }], {
    ...(keyType === 'rsa'
      ? { keyType: 'rsa' as const, keySize: 2048 }
      : { keyType: 'ec' as const, curve: 'P-256' as const }),
    algorithm: 'sha256',
    notBeforeDate: notBefore,
    notAfterDate: new Date(notBefore.getTime() + TEST_CERT_VALIDITY_MS),
    extensions: [
      { name: 'basicConstraints', cA: false },
      // keyEncipherment is for RSA key transport only (RFC 5480 3 forbids it for EC keys).
      { name: 'keyUsage', digitalSignature: true, keyEncipherment: keyType === 'rsa', critical: true },
      { name: 'extKeyUsage', serverAuth: true },
      {
        name: 'subjectAltName',
        altNames: [
          ...dnsNames.map((value) => ({ type: 2 as const, value })),
          { type: 7 as const, ip: '127.0.0.1' },
          { type: 7 as const, ip: '::1' },
        ],
      },
    ],
  });
  return { cert: pems.cert, key: pems.private };
}

/** Write to a temporary file, fsync, rename over the target, fsync the directory. */
async function writeFileDurably(path: string, data: Buffer, mode: number): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  const fh = await open(tmp, 'wx', mode);
  try {
    await fh.chmod(mode);
    await fh.writeFile(data);
    await fh.sync();
  } catch (err) {
    await fh.close();
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
  await fh.close();
  await rename(tmp, path);
  const dh = await open(dirname(path), 'r');
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
}

export interface TlsContextOptions {
  minVersion: 'TLSv1.2' | 'TLSv1.3';
  logger?: TlsLogger;
  /** watch(): interval of the stat fallback. Default 30 s. */
  pollIntervalMs?: number;
  /** watch(): quiet time after a change before reloading (cert and key are often written apart). Default 500 ms. */
  debounceMs?: number;
  /**
   * The session ticket keys every context seals tickets with (ticket-keys.ts): shared by the
   * workers of a cluster, so a ticket resumes on any of them. Absent: each context makes its
   * own (Node's default).
   */
  ticketKeys?: TicketKeys;
}

interface FileStamp {
  ino: number;
  size: number;
  mtimeMs: number;
}

/** The current SecureContext, swapped on reload. */
export class TlsContextProvider {
  #material: TlsMaterial;
  #context: tls.SecureContext;
  readonly #minVersion: 'TLSv1.2' | 'TLSv1.3';
  readonly #logger: TlsLogger;
  readonly #pollIntervalMs: number;
  readonly #debounceMs: number;
  readonly #ticketKeys: TicketKeys | undefined;
  readonly #servers = new Set<tls.Server>();
  readonly #watchers: FSWatcher[] = [];
  #pollTimer: NodeJS.Timeout | undefined;
  #debounceTimer: NodeJS.Timeout | undefined;
  #stamps = '';
  #reloading: Promise<boolean> | undefined;
  #closed = false;

  constructor(material: TlsMaterial, opts: TlsContextOptions) {
    this.#material = material;
    this.#minVersion = opts.minVersion;
    this.#logger = opts.logger ?? noLogger;
    this.#pollIntervalMs = opts.pollIntervalMs ?? 30_000;
    this.#debounceMs = opts.debounceMs ?? 500;
    this.#ticketKeys = opts.ticketKeys;
    this.#context = this.#createContext(material);
    this.#ticketKeys?.onChange((keys) => {
      // New keys: a new context for the connections to come (the same certificate).
      if (this.#closed) return;
      this.#context = this.#createContext(this.#material);
      for (const server of this.#servers) server.setTicketKeys(keys);
    });
  }

  /** The current secure context; connections started after a reload use the new one, existing sessions keep theirs. */
  get context(): tls.SecureContext {
    return this.#context;
  }

  /** The material behind the current context. */
  get material(): TlsMaterial {
    return this.#material;
  }

  /**
   * Options for tls.createServer or new tls.TLSSocket({ isServer: true, ... }). A TLSSocket
   * uses `secureContext` (the current one). A tls.Server builds its default context from
   * cert/key once, so pass the server to attach() as well: reload() then updates it; clients
   * that send SNI always get the current context through SNICallback.
   */
  serverOptions(): tls.TlsOptions {
    return {
      secureContext: this.#context,
      ...this.#contextOptions(this.#material),
      SNICallback: (_servername, cb) => cb(null, this.#context),
    };
  }

  /** Keeps a tls.Server's default context (used for clients without SNI) current across reloads. */
  attach(server: tls.Server): void {
    this.#servers.add(server);
    server.once('close', () => this.#servers.delete(server));
  }

  /** Re-reads the files; on failure keeps the old context and logs the reason. Returns true if the context changed. */
  reload(): Promise<boolean> {
    // One reload at a time; a request during a reload runs after it (the files may have moved on).
    const next = (this.#reloading ?? Promise.resolve(false)).then(() => this.#reloadNow());
    this.#reloading = next;
    return next;
  }

  async #reloadNow(): Promise<boolean> {
    const { certFile, keyFile } = this.#material;
    const old = this.#material.ecdsa;
    let pair: CheckedPair;
    let ecdsa: CheckedPair | undefined;
    let next: TlsMaterial;
    let context: tls.SecureContext;
    try {
      ({ main: pair, ecdsa } =
        old !== undefined
          ? await readConfiguredPairs(certFile, keyFile, old.certFile, old.keyFile)
          : { main: await readTlsPair(certFile, keyFile), ecdsa: undefined });
      const same = (a: TlsPair, b: TlsPair | undefined): boolean =>
        b !== undefined && a.cert.equals(b.cert) && a.key.equals(b.key);
      if (same(pair, this.#material) && (ecdsa === undefined || same(ecdsa, old))) return false;
      next = {
        ...this.#material,
        cert: pair.cert,
        key: pair.key,
        ...(ecdsa !== undefined ? { ecdsa: plainPair(ecdsa) } : {}),
      };
      context = this.#createContext(next);
    } catch (err) {
      const why = err instanceof ConfigError ? err.problems.map((p) => p.message).join('; ') : reason(err);
      this.#logger.error(
        { certFile, keyFile, reason: why },
        'TLS reload failed; the previous certificate stays in use',
      );
      return false;
    }
    this.#material = next;
    this.#context = context;
    for (const server of this.#servers) server.setSecureContext(this.#contextOptions(next));
    for (const p of ecdsa !== undefined ? [pair, ecdsa] : [pair]) {
      this.#logger.info(
        {
          certFile: p.certFile,
          subject: p.x509.subject,
          notAfter: p.notAfter.toISOString(),
          fingerprint: p.x509.fingerprint256,
        },
        'TLS certificate reloaded',
      );
      checkExpiry(p, this.#logger);
    }
    return true;
  }

  /** When the first of the served certificates expires (ms since the epoch), or null if unparsable. */
  expiresAt(): number | null {
    const m = this.#material;
    let first: number | null = null;
    for (const pem of m.ecdsa !== undefined ? [m.cert, m.ecdsa.cert] : [m.cert]) {
      let at: number;
      try {
        at = Date.parse(new X509Certificate(pem).validTo);
      } catch {
        return null;
      }
      if (first === null || at < first) first = at;
    }
    return first;
  }

  /**
   * Watches certFile and keyFile and reloads when they change: fs.watch on their directories
   * (catches renames and symlink swaps such as certbot's), plus a periodic stat as a fallback
   * for file systems where fs.watch is silent. Changes are debounced.
   */
  watch(): void {
    if (this.#closed || this.#pollTimer !== undefined) return;
    const files = this.#files();
    const names = new Set(files.map((f) => basename(f)));
    for (const dir of new Set(files.map((f) => dirname(f)))) {
      try {
        const w = fsWatch(dir, { persistent: false }, (_event, filename) => {
          if (filename === null || names.has(filename)) this.#schedule();
        });
        w.on('error', (err) => {
          this.#logger.warn(
            { dir, reason: reason(err) },
            'cannot watch the TLS directory; relying on periodic checks',
          );
        });
        this.#watchers.push(w);
      } catch (err) {
        this.#logger.warn(
          { dir, reason: reason(err) },
          'cannot watch the TLS directory; relying on periodic checks',
        );
      }
    }
    void this.#stampFiles().then((s) => {
      this.#stamps = s;
    });
    this.#pollTimer = setInterval(() => {
      void this.#stampFiles().then((s) => {
        if (s !== this.#stamps) {
          this.#stamps = s;
          this.#schedule();
        }
      });
    }, this.#pollIntervalMs);
    this.#pollTimer.unref();
  }

  /** Stops watching. Open connections are not affected. */
  close(): void {
    this.#closed = true;
    for (const w of this.#watchers) w.close();
    this.#watchers.length = 0;
    if (this.#pollTimer !== undefined) clearInterval(this.#pollTimer);
    if (this.#debounceTimer !== undefined) clearTimeout(this.#debounceTimer);
    this.#pollTimer = undefined;
    this.#debounceTimer = undefined;
    this.#servers.clear();
  }

  #schedule(): void {
    if (this.#closed) return;
    if (this.#debounceTimer !== undefined) clearTimeout(this.#debounceTimer);
    this.#debounceTimer = setTimeout(() => {
      this.#debounceTimer = undefined;
      void this.#stampFiles().then((s) => {
        this.#stamps = s;
        return this.reload();
      });
    }, this.#debounceMs);
    this.#debounceTimer.unref();
  }

  async #stampFiles(): Promise<string> {
    const stamps: (FileStamp | null)[] = [];
    for (const f of this.#files()) {
      try {
        const st = await stat(f);
        stamps.push({ ino: st.ino, size: st.size, mtimeMs: st.mtimeMs });
      } catch {
        stamps.push(null);
      }
    }
    return JSON.stringify(stamps);
  }

  #versionOptions(): Pick<tls.SecureContextOptions, 'minVersion'> {
    // RFC 8996: TLS 1.0 and 1.1 are never offered, whatever the Node default.
    return { minVersion: this.#minVersion };
  }

  #ticketKeyOptions(): Pick<tls.SecureContextOptions, 'ticketKeys'> {
    return this.#ticketKeys !== undefined ? { ticketKeys: this.#ticketKeys.current } : {};
  }

  /** The files behind the current material, watched for changes. */
  #files(): string[] {
    const m = this.#material;
    return m.ecdsa !== undefined
      ? [m.certFile, m.keyFile, m.ecdsa.certFile, m.ecdsa.keyFile]
      : [m.certFile, m.keyFile];
  }

  /** Certificates, keys, versions and ticket keys of a context; with an ECDSA pair, both chains (OpenSSL picks per client). */
  #contextOptions(m: TlsMaterial): tls.SecureContextOptions {
    return {
      cert: m.ecdsa !== undefined ? [m.cert, m.ecdsa.cert] : m.cert,
      key: m.ecdsa !== undefined ? [m.key, m.ecdsa.key] : m.key,
      ...this.#versionOptions(),
      ...this.#ticketKeyOptions(),
    };
  }

  #createContext(m: TlsMaterial): tls.SecureContext {
    return tls.createSecureContext(this.#contextOptions(m));
  }
}
