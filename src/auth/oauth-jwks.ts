/**
 * Where the OAuth issuer's public keys come from (a JSON Web Key Set, RFC 7517 section 5):
 * - a file, re-read when it changes (its inode, size and times are compared at every token
 *   check, which costs one stat) and on SIGHUP; an invalid new file is logged and the keys
 *   loaded before stay in force;
 * - an http(s) URL, fetched by jose's remote key set: a timeout per fetch, the keys cached for
 *   a while, and a token whose "kid" is unknown fetches the set again, at most once per
 *   cooldown period, so that a flood of made-up "kid"s cannot turn into a flood of requests.
 *
 * Trust: the file and URL are the operator's choice; their contents are validated by jose.
 * Tokens are never passed to the log.
 */
import { stat, readFile } from 'node:fs/promises';
import { createLocalJWKSet, createRemoteJWKSet, type JSONWebKeySet, type JWTVerifyGetKey } from 'jose';

/** What the key sources log: pino's logger fits this shape. */
export interface JwksLogger {
  info(obj: Record<string, unknown>, msg: string): void;
  error(obj: Record<string, unknown>, msg: string): void;
}

export interface KeySource {
  /** The jose key resolver for jwtVerify. */
  readonly getKey: JWTVerifyGetKey;
  /** SIGHUP: read the file (or fetch the URL) again now. Never throws. */
  reload(): Promise<void>;
}

/** A JWKS file. open() fails (start-up stops) when the file cannot be read or is not a key set. */
export class JwksFile implements KeySource {
  readonly #file: string;
  readonly #log: JwksLogger | undefined;
  #keys: ReturnType<typeof createLocalJWKSet>;
  #signature: string;

  private constructor(
    file: string,
    keys: ReturnType<typeof createLocalJWKSet>,
    sig: string,
    log?: JwksLogger,
  ) {
    this.#file = file;
    this.#keys = keys;
    this.#signature = sig;
    this.#log = log;
  }

  static async open(file: string, log?: JwksLogger): Promise<JwksFile> {
    const sig = await signature(file);
    return new JwksFile(file, createLocalJWKSet(await readKeySet(file)), sig, log);
  }

  readonly getKey: JWTVerifyGetKey = async (header, token) => {
    const now = await signature(this.#file).catch(() => this.#signature);
    if (now !== this.#signature) await this.reload();
    return this.#keys(header, token);
  };

  async reload(): Promise<void> {
    try {
      const sig = await signature(this.#file);
      const keys = createLocalJWKSet(await readKeySet(this.#file));
      this.#keys = keys;
      this.#signature = sig;
      this.#log?.info({ file: this.#file }, 'OAuth key set (JWKS) file reloaded');
    } catch (err) {
      // Remember the signature anyway, so that a broken file is reported once, not per token.
      this.#signature = await signature(this.#file).catch(() => this.#signature);
      this.#log?.error(
        { file: this.#file, err: err instanceof Error ? err.message : String(err) },
        'OAuth key set (JWKS) file not valid; keeping the keys loaded before',
      );
    }
  }
}

export interface JwksUrlOptions {
  timeoutMs: number;
  cacheMs: number;
  /** Least time between two fetches caused by an unknown "kid". */
  refreshMinMs: number;
}

/** A JWKS at a URL, fetched at first use. */
export class JwksUrl implements KeySource {
  readonly #remote: ReturnType<typeof createRemoteJWKSet>;
  readonly getKey: JWTVerifyGetKey;

  constructor(url: string, opts: JwksUrlOptions) {
    this.#remote = createRemoteJWKSet(new URL(url), {
      timeoutDuration: opts.timeoutMs,
      cacheMaxAge: opts.cacheMs,
      cooldownDuration: opts.refreshMinMs,
    });
    this.getKey = (header, token) => this.#remote(header, token);
  }

  async reload(): Promise<void> {
    // A failed fetch keeps the previous keys; the next token check tries again.
    await this.#remote.reload().catch(() => undefined);
  }
}

async function readKeySet(file: string): Promise<JSONWebKeySet> {
  let json: unknown;
  try {
    json = JSON.parse(await readFile(file, 'utf8'));
  } catch (err) {
    if (err instanceof SyntaxError) throw new Error(`${file}: not valid JSON`);
    throw err;
  }
  if (!isKeySet(json)) throw new Error(`${file}: not a JSON Web Key Set (expected {"keys": [...]})`);
  return json;
}

function isKeySet(v: unknown): v is JSONWebKeySet {
  if (typeof v !== 'object' || v === null || !('keys' in v)) return false;
  const keys: unknown = v.keys;
  return Array.isArray(keys) && keys.every((k) => typeof k === 'object' && k !== null);
}

async function signature(file: string): Promise<string> {
  const s = await stat(file, { bigint: true });
  return `${s.ino}:${s.size}:${s.mtimeNs}:${s.ctimeNs}`;
}
