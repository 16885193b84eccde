/**
 * API keys of the HTTP submission API (docs/http-api.md): the keys file, its writers (for
 * `sterna apikey`) and the server's reader, which follows the file as it changes.
 *
 * A key is "stk_<id>_<secret>": a public id of 12 hex digits (named in logs, the Received
 * header and `sterna apikey list`) and a secret of 256 random bits (base64url). Only the
 * SHA-256 of the secret is stored: for a random 256-bit secret a fast hash is enough (no
 * dictionary to try, 2^256 guesses), so a stolen file gives no usable key, and checking a key
 * costs microseconds. Each key belongs to a user of the users file and may be bound to sender
 * addresses ("--sender", an address or "@domain"); it works only while its user exists.
 *
 * File: JSON, mode 0600, replaced atomically (auth/users.ts writeFileAtomic).
 * Trust: the file is the operator's; the bearer token compared against it is untrusted input.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { mkdir, readFile, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { isValidSendAs, normalizeAddress, writeFileAtomic } from '../auth/users.js';

export interface ApiKeyRecord {
  user: string;
  /** Sender addresses ("a@example.org" or "@example.org") the key may use; empty: the user's own. */
  senders: string[];
  /** SHA-256 of the secret, hex. */
  hash: string;
  /** Creation time, ISO 8601. */
  created: string;
}

interface KeysFile {
  version: 1;
  keys: Record<string, ApiKeyRecord>;
}

/** The identity a valid key stands for. */
export interface ApiIdentity {
  id: string;
  user: string;
  senders: readonly string[];
}

export class ApiKeyFileError extends Error {}

const KEY_RE = /^stk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$/;

function hashSecret(secret: string): string {
  return createHash('sha256').update(secret, 'utf8').digest('hex');
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Parses and checks the file's contents; throws ApiKeyFileError saying what is wrong. */
export function parseKeysFile(json: unknown): KeysFile {
  if (!isRecord(json) || json['version'] !== 1 || !isRecord(json['keys'])) {
    throw new ApiKeyFileError('expected {"version": 1, "keys": {...}}');
  }
  const keys: Record<string, ApiKeyRecord> = {};
  for (const [id, v] of Object.entries(json['keys'])) {
    if (!/^[0-9a-f]{12}$/.test(id)) throw new ApiKeyFileError(`key id "${id}" is not 12 hex digits`);
    if (
      !isRecord(v) ||
      typeof v['user'] !== 'string' ||
      typeof v['hash'] !== 'string' ||
      !/^[0-9a-f]{64}$/.test(v['hash']) ||
      typeof v['created'] !== 'string' ||
      !Array.isArray(v['senders']) ||
      !v['senders'].every((s): s is string => typeof s === 'string' && isValidSendAs(s))
    ) {
      throw new ApiKeyFileError(`key ${id}: expected user, senders (addresses or "@domain"), hash, created`);
    }
    keys[id] = { user: v['user'], senders: v['senders'], hash: v['hash'], created: v['created'] };
  }
  return { version: 1, keys };
}

async function readKeysFile(file: string): Promise<KeysFile> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if (err instanceof Error && 'code' in err && err.code === 'ENOENT') return { version: 1, keys: {} };
    throw err;
  }
  try {
    return parseKeysFile(JSON.parse(text));
  } catch (err) {
    throw new ApiKeyFileError(`${file}: ${err instanceof Error ? err.message : String(err)}`);
  }
}

/** Adds a key for `user`; returns the key (shown once, never stored) and its id. */
export async function addApiKey(
  file: string,
  user: string,
  senders: readonly string[],
  now: Date = new Date(),
): Promise<{ id: string; key: string }> {
  for (const s of senders) {
    if (!isValidSendAs(s)) throw new ApiKeyFileError(`--sender ${s}: expected an address or "@domain"`);
  }
  const contents = await readKeysFile(file);
  let id = randomBytes(6).toString('hex');
  while (contents.keys[id] !== undefined) id = randomBytes(6).toString('hex');
  const secret = randomBytes(32).toString('base64url');
  contents.keys[id] = {
    user: normalizeAddress(user),
    senders: senders.map(normalizeAddress),
    hash: hashSecret(secret),
    created: now.toISOString(),
  };
  await mkdir(dirname(file), { recursive: true, mode: 0o700 });
  await writeFileAtomic(file, JSON.stringify(contents, null, 2) + '\n');
  return { id, key: `stk_${id}_${secret}` };
}

/** Deletes the key with this id; false when there is none. */
export async function deleteApiKey(file: string, id: string): Promise<boolean> {
  const contents = await readKeysFile(file);
  if (!Object.hasOwn(contents.keys, id)) return false;
  const keys = Object.fromEntries(Object.entries(contents.keys).filter(([k]) => k !== id));
  await writeFileAtomic(file, JSON.stringify({ version: 1, keys }, null, 2) + '\n');
  return true;
}

/** Every key's id and record (never a secret: the file holds none), sorted by user then id. */
export async function listApiKeys(file: string): Promise<(ApiKeyRecord & { id: string })[]> {
  const { keys } = await readKeysFile(file);
  return Object.entries(keys)
    .map(([id, r]) => ({ id, ...r }))
    .sort((a, b) => (a.user === b.user ? (a.id < b.id ? -1 : 1) : a.user < b.user ? -1 : 1));
}

/**
 * The server's view of the keys file: re-read when its inode, size or mtime changed (checked
 * before each lookup, a stat), so `sterna apikey add|delete` takes effect at once. A file that
 * cannot be read or parsed keeps the previous keys and is reported through onError.
 */
export class ApiKeyStore {
  readonly #file: string;
  readonly #onError: (err: unknown) => void;
  #keys: Record<string, ApiKeyRecord> = {};
  #signature = '';

  constructor(file: string, onError: (err: unknown) => void) {
    this.#file = file;
    this.#onError = onError;
  }

  async #refresh(): Promise<void> {
    let signature: string;
    try {
      const st = await stat(this.#file);
      signature = `${st.ino}:${st.size}:${st.mtimeMs}`;
    } catch (err) {
      if (err instanceof Error && 'code' in err && err.code === 'ENOENT') signature = 'absent';
      else {
        this.#onError(err);
        return;
      }
    }
    if (signature === this.#signature) return;
    try {
      this.#keys = (await readKeysFile(this.#file)).keys;
      this.#signature = signature;
    } catch (err) {
      this.#onError(err);
    }
  }

  /** The identity for a bearer token, or null (unknown, malformed, or wrong secret). */
  async verify(token: string): Promise<ApiIdentity | null> {
    await this.#refresh();
    const m = KEY_RE.exec(token);
    if (m === null) return null;
    const id = m[1] ?? '';
    const record = Object.hasOwn(this.#keys, id) ? this.#keys[id] : undefined;
    const given = Buffer.from(hashSecret(m[2] ?? ''), 'hex');
    // Compared in constant time even for an unknown id, so timing tells nothing.
    const stored = Buffer.from(record?.hash ?? '0'.repeat(64), 'hex');
    if (!timingSafeEqual(given, stored) || record === undefined) return null;
    return { id, user: record.user, senders: record.senders };
  }
}
