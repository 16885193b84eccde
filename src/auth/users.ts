/**
 * The users file: who may authenticate, with which password, and which sender addresses each
 * user owns. `UserStore` is the server's read side (reloaded when the file changes, so
 * `sterna user add` takes effect without a restart); `addUser` and friends are the CLI's
 * write side (lock file, atomic replace, mode 0600).
 *
 * Format (docs/authentication.md):
 *   { "version": 1, "users": { "alice@example.org": { "password": "scrypt$...",
 *       "cram": "plain$..." (optional), "sendAs": ["alias@example.org", "@example.net"] } } }
 * Addresses are compared case-insensitively as a whole (local part and domain) and stored
 * lower-cased.
 *
 * RFCs: 4954 section 5 (authorization identity), 6409 section 6.1 (the submission server may
 * check that the sender is one the user is allowed to use).
 * Trust: the file is operator-controlled but may be edited by hand, so it is validated on
 * every load; credentials come from the network. Hashes and secrets are never logged.
 */

import { randomBytes } from 'node:crypto';
import { watch, type FSWatcher } from 'node:fs';
import { mkdir, open, readFile, rename, stat, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { cramSecret, hashPassword, parseStoredHash, verifyCram, verifyPassword } from './passwords.js';
import type { Credentials } from './sasl.js';

/** What the store logs: pino's logger fits this shape. */
export interface UserStoreLogger {
  info(obj: Record<string, unknown>, msg: string): void;
  error(obj: Record<string, unknown>, msg: string): void;
}

export interface UserRecord {
  /** scrypt hash, see passwords.ts. */
  password: string;
  /** CRAM-MD5 secret (password-equivalent); present only for users created with --cram-md5. */
  cram?: string;
  /** Other senders this user may use: full addresses, or "@domain" for a whole domain. */
  sendAs?: string[];
}

export interface UsersFile {
  version: 1;
  users: Record<string, UserRecord>;
}

export type UserFileErrorCode = 'USER_EXISTS' | 'USER_NOT_FOUND' | 'BAD_ADDRESS' | 'BAD_FILE' | 'LOCKED';

/** An error the CLI can explain to the operator; `code` is stable. */
export class UserFileError extends Error {
  readonly code: UserFileErrorCode;
  constructor(code: UserFileErrorCode, message: string) {
    super(message);
    this.name = 'UserFileError';
    this.code = code;
  }
}

/** Lower-cases the whole address: the store treats addresses case-insensitively. */
export function normalizeAddress(address: string): string {
  return address.toLowerCase();
}

// Deliberately simple: one "@", non-empty local part and domain, no whitespace or controls.
const ADDRESS_RE = /^[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+$/;
const DOMAIN_RE = /^@[^@\s\x00-\x1f\x7f]+$/;
const MAX_ADDRESS_LENGTH = 254;

/** True for `local@domain` with non-empty parts, one "@" and no whitespace. */
export function isValidAddress(address: string): boolean {
  return address.length <= MAX_ADDRESS_LENGTH && ADDRESS_RE.test(address);
}

/** True for a sendAs entry: a valid address or "@domain". */
export function isValidSendAs(entry: string): boolean {
  return isValidAddress(entry) || (entry.length <= MAX_ADDRESS_LENGTH && DOMAIN_RE.test(entry));
}

/**
 * Validates parsed JSON as a users file. Throws UserFileError('BAD_FILE') naming the first
 * problem; the message never contains a hash or secret.
 */
export function parseUsersFile(json: unknown): UsersFile {
  const bad = (why: string): UserFileError => new UserFileError('BAD_FILE', why);
  if (!isPlainObject(json)) throw bad('top level is not a JSON object');
  for (const key of Object.keys(json)) {
    if (key !== 'version' && key !== 'users') throw bad(`unknown top-level key "${key}"`);
  }
  if (json['version'] !== 1) throw bad('"version" must be 1');
  const users = json['users'];
  if (!isPlainObject(users)) throw bad('"users" is not an object');
  const out: Record<string, UserRecord> = {};
  for (const [address, value] of Object.entries(users)) {
    const where = `user "${address}"`;
    if (!isValidAddress(address)) throw bad(`${where}: not an address of the form local@domain`);
    const key = normalizeAddress(address);
    if (Object.hasOwn(out, key)) throw bad(`${where}: listed twice (addresses are case-insensitive)`);
    if (!isPlainObject(value)) throw bad(`${where}: not an object`);
    for (const field of Object.keys(value)) {
      if (field !== 'password' && field !== 'cram' && field !== 'sendAs') {
        throw bad(`${where}: unknown key "${field}"`);
      }
    }
    const password = value['password'];
    if (typeof password !== 'string') throw bad(`${where}: "password" must be a string`);
    const record: UserRecord = { password };
    const cram = value['cram'];
    if (cram !== undefined) {
      if (typeof cram !== 'string') throw bad(`${where}: "cram" must be a string`);
      record.cram = cram;
    }
    const sendAs = value['sendAs'];
    if (sendAs !== undefined) {
      if (!Array.isArray(sendAs)) throw bad(`${where}: "sendAs" must be an array`);
      const entries: string[] = [];
      for (const entry of sendAs) {
        if (typeof entry !== 'string' || !isValidSendAs(entry)) {
          throw bad(`${where}: "sendAs" entries must be addresses or "@domain"`);
        }
        entries.push(normalizeAddress(entry));
      }
      record.sendAs = entries;
    }
    out[key] = record;
  }
  return { version: 1, users: out };
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Reads and validates the file; a missing file is an empty store. JSON errors hide the text. */
async function readUsersFile(file: string): Promise<UsersFile> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if (isErrnoException(err) && err.code === 'ENOENT') return { version: 1, users: {} };
    throw err;
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    // V8's message quotes part of the text, which may be a hash or a CRAM secret: don't pass it on.
    throw new UserFileError('BAD_FILE', 'not valid JSON (is it half-written or hand-edited?)');
  }
  return parseUsersFile(json);
}

function isErrnoException(err: unknown): err is NodeJS.ErrnoException {
  return err instanceof Error && 'code' in err;
}

// --- read side: the store the server uses --------------------------------------------------

export interface UserStoreOptions {
  /** Re-read the file when it changes (fs.watch plus a periodic stat). Default true. */
  watch?: boolean;
  logger?: UserStoreLogger;
  /** Period of the stat fallback. Default 2,000 ms. */
  pollIntervalMs?: number;
  /** Quiet time after a change before re-reading. Default 100 ms. */
  debounceMs?: number;
  /** Use fs.watch besides the stat poll. Default true; false leaves the poll alone (tests, NFS). */
  fsWatch?: boolean;
}

export type VerifyResult = { ok: true; user: string } | { ok: false };

/** Hashed once per process and used for unknown users, so they cost as much as known ones. */
let dummyHash: Promise<string> | undefined;
function getDummyHash(): Promise<string> {
  dummyHash ??= hashPassword(randomBytes(16).toString('base64'));
  return dummyHash;
}
const DUMMY_CRAM = cramSecret(randomBytes(16).toString('base64'));

export class UserStore {
  readonly #file: string;
  readonly #logger: UserStoreLogger | undefined;
  #users: ReadonlyMap<string, UserRecord>;
  #signature: string;
  #watcher: FSWatcher | undefined;
  #pollTimer: NodeJS.Timeout | undefined;
  #debounceTimer: NodeJS.Timeout | undefined;
  readonly #debounceMs: number;
  #reloading: Promise<void> | undefined;
  #reloadAgain = false;
  #closed = false;

  private constructor(
    file: string,
    users: ReadonlyMap<string, UserRecord>,
    signature: string,
    opts: UserStoreOptions,
  ) {
    this.#file = file;
    this.#users = users;
    this.#signature = signature;
    this.#logger = opts.logger;
    this.#debounceMs = opts.debounceMs ?? 100;
  }

  /**
   * Loads `file` (missing: no users yet) and, unless `watch: false`, follows its changes.
   * Rejects with UserFileError('BAD_FILE') when the file exists but is invalid.
   */
  static async open(file: string, opts: UserStoreOptions = {}): Promise<UserStore> {
    const signature = await fileSignature(file);
    const parsed = await readUsersFile(file);
    const store = new UserStore(file, toMap(parsed), signature, opts);
    if (opts.watch ?? true) store.#startWatching(opts.pollIntervalMs ?? 2_000, opts.fsWatch ?? true);
    // Start the dummy hash now rather than during the first unknown-user attempt.
    void getDummyHash();
    return store;
  }

  /**
   * Checks credentials from a finished SASL exchange. PLAIN/LOGIN: scrypt against the stored
   * hash, and the authorization identity, if given, must be the user itself (no proxy
   * authorisation). CRAM-MD5: HMAC against the stored secret; a user without one fails.
   * Unknown users are checked against a dummy so that timing does not reveal who exists.
   */
  async verify(creds: Credentials): Promise<VerifyResult> {
    switch (creds.kind) {
      case 'password': {
        const user = normalizeAddress(creds.authcid);
        const record = this.#users.get(user);
        // A user whose "password" is not a scrypt string (e.g. "!") cannot log in with a
        // password; they cost a dummy hash like unknown users.
        const usable = record !== undefined && parseStoredHash(record.password) !== null;
        const stored = usable ? record.password : await getDummyHash();
        const matches = await verifyPassword(creds.password, stored);
        const passwordOk = usable && matches;
        // RFC 4954 section 5 / RFC 4616 section 2: an authzid other than the authcid would be
        // a request to act as someone else, which we do not allow.
        const authzOk = creds.authzid === '' || normalizeAddress(creds.authzid) === user;
        return passwordOk && authzOk ? { ok: true, user } : { ok: false };
      }
      case 'cram-md5': {
        const user = normalizeAddress(creds.username);
        const record = this.#users.get(user);
        const secret = record?.cram ?? DUMMY_CRAM;
        const digestOk = verifyCram(secret, creds.challenge, creds.digestHex);
        return record?.cram !== undefined && digestOk ? { ok: true, user } : { ok: false };
      }
      case 'oauth':
        // Tokens are checked by oauth.ts, never against this file.
        return { ok: false };
      default:
        return assertNever(creds);
    }
  }

  /** True if `address` is a user (case-insensitive). */
  has(address: string): boolean {
    return this.#users.has(normalizeAddress(address));
  }

  /**
   * May the authenticated `user` use `sender` as MAIL FROM? Yes for the user's own address,
   * each sendAs address, any address in a sendAs "@domain", and the null sender "" (bounces
   * and auto-replies, RFC 3834 section 3.3; it claims no one's address). Case-insensitive.
   */
  mayUseSender(user: string, sender: string): boolean {
    if (sender === '') return true;
    const record = this.#users.get(normalizeAddress(user));
    if (record === undefined) return false;
    const wanted = normalizeAddress(sender);
    if (wanted === normalizeAddress(user)) return true;
    const at = wanted.lastIndexOf('@');
    const domain = at >= 0 ? wanted.slice(at) : undefined;
    return (record.sendAs ?? []).some((entry) =>
      entry.startsWith('@') ? entry === domain : entry === wanted,
    );
  }

  /** Every user, sorted. */
  list(): string[] {
    return [...this.#users.keys()].sort();
  }

  /** Stops following the file. */
  close(): void {
    this.#closed = true;
    this.#watcher?.close();
    this.#watcher = undefined;
    clearInterval(this.#pollTimer);
    clearTimeout(this.#debounceTimer);
  }

  /** Re-reads the file now (also what the watchers call). Never throws. */
  async reload(): Promise<void> {
    if (this.#reloading !== undefined) {
      this.#reloadAgain = true;
      return this.#reloading;
    }
    this.#reloading = (async () => {
      do {
        this.#reloadAgain = false;
        await this.#reloadOnce();
      } while (this.#reloadAgain && !this.#closed);
    })();
    try {
      await this.#reloading;
    } finally {
      this.#reloading = undefined;
    }
  }

  async #reloadOnce(): Promise<void> {
    // The signature is taken before reading: if the file changes during the read, the next
    // poll sees a newer signature and reads again.
    let signature: string;
    try {
      signature = await fileSignature(this.#file);
    } catch (err) {
      this.#logger?.error(
        { file: this.#file, err: describe(err) },
        'users file: cannot stat; keeping the users loaded before',
      );
      return;
    }
    this.#signature = signature;
    let parsed: UsersFile;
    try {
      parsed = await readUsersFile(this.#file);
    } catch (err) {
      // Fail safe rather than closed here: a half-written or mistyped file must not lock every
      // user out. The previous contents stay in force until a valid file appears.
      this.#logger?.error(
        { file: this.#file, err: describe(err) },
        'users file: invalid, keeping the users loaded before; fix the file or use `sterna user`',
      );
      return;
    }
    if (this.#closed) return;
    this.#users = toMap(parsed);
    this.#logger?.info(
      { file: this.#file, users: this.#users.size, missing: signature === MISSING },
      'users file reloaded',
    );
  }

  #startWatching(pollIntervalMs: number, fsWatch: boolean): void {
    const dir = dirname(this.#file);
    const name = basename(this.#file);
    if (fsWatch) this.#startFsWatch(dir, name);
    this.#pollTimer = setInterval(() => {
      void fileSignature(this.#file).then(
        (sig) => {
          if (sig !== this.#signature) this.#scheduleReload();
        },
        () => undefined,
      );
    }, pollIntervalMs);
    this.#pollTimer.unref();
  }

  #startFsWatch(dir: string, name: string): void {
    try {
      // Watch the directory, not the file: an atomic replace gives the file a new inode,
      // which a watch on the old one would never report.
      this.#watcher = watch(dir, { persistent: false }, (_event, filename) => {
        if (filename === null || filename === name) this.#scheduleReload();
      });
      this.#watcher.on('error', () => {
        // E.g. the directory was removed; the stat poll below carries on alone.
        this.#watcher?.close();
        this.#watcher = undefined;
      });
    } catch {
      // No directory yet, or no inotify: the poll alone will notice changes.
      this.#watcher = undefined;
    }
  }

  #scheduleReload(): void {
    if (this.#closed) return;
    clearTimeout(this.#debounceTimer);
    this.#debounceTimer = setTimeout(() => void this.reload(), this.#debounceMs);
    this.#debounceTimer.unref();
  }
}

function toMap(file: UsersFile): ReadonlyMap<string, UserRecord> {
  return new Map(Object.entries(file.users));
}

const MISSING = 'missing';

/** Identifies one version of the file without reading it. */
async function fileSignature(file: string): Promise<string> {
  try {
    const s = await stat(file, { bigint: true });
    return `${s.ino}:${s.size}:${s.mtimeNs}:${s.ctimeNs}`;
  } catch (err) {
    if (isErrnoException(err) && err.code === 'ENOENT') return MISSING;
    throw err;
  }
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function assertNever(x: never): never {
  throw new Error(`unexpected value: ${String(x)}`);
}

// --- write side: used by `sterna user` ----------------------------------------------------

export interface AddUserOptions {
  /** Also store the CRAM-MD5 secret (password-equivalent; see docs/authentication.md). */
  cram?: boolean;
  sendAs?: string[];
}

/** Adds a user. UserFileError: BAD_ADDRESS, USER_EXISTS, BAD_FILE, LOCKED. */
export async function addUser(
  file: string,
  address: string,
  password: string,
  opts: AddUserOptions = {},
): Promise<void> {
  const sendAs = checkedSendAs(opts.sendAs ?? []);
  const key = checkedAddress(address);
  const record: UserRecord = { password: await hashPassword(password) };
  if (opts.cram === true) record.cram = cramSecret(password);
  if (sendAs.length > 0) record.sendAs = sendAs;
  await modifyUsersFile(file, (users) => {
    if (users.has(key)) throw new UserFileError('USER_EXISTS', `user ${key} already exists`);
    users.set(key, record);
  });
}

/** Removes a user. UserFileError: BAD_ADDRESS, USER_NOT_FOUND, BAD_FILE, LOCKED. */
export async function deleteUser(file: string, address: string): Promise<void> {
  const key = checkedAddress(address);
  await modifyUsersFile(file, (users) => {
    if (!users.delete(key)) throw new UserFileError('USER_NOT_FOUND', `no user ${key}`);
  });
}

/**
 * Replaces a user's password; a user with a CRAM-MD5 secret gets the new one too.
 * UserFileError: BAD_ADDRESS, USER_NOT_FOUND, BAD_FILE, LOCKED.
 */
export async function setPassword(file: string, address: string, password: string): Promise<void> {
  const key = checkedAddress(address);
  const hash = await hashPassword(password);
  await modifyUsersFile(file, (users) => {
    const record = users.get(key);
    if (record === undefined) throw new UserFileError('USER_NOT_FOUND', `no user ${key}`);
    record.password = hash;
    if (record.cram !== undefined) record.cram = cramSecret(password);
  });
}

/** Every user in the file, sorted; a missing file has none. */
export async function listUsers(file: string): Promise<string[]> {
  const parsed = await readUsersFile(file);
  return Object.keys(parsed.users).sort();
}

function checkedAddress(address: string): string {
  if (!isValidAddress(address)) {
    throw new UserFileError('BAD_ADDRESS', `"${address}" is not an address of the form local@domain`);
  }
  return normalizeAddress(address);
}

function checkedSendAs(entries: string[]): string[] {
  const out: string[] = [];
  for (const entry of entries) {
    if (!isValidSendAs(entry)) {
      throw new UserFileError('BAD_ADDRESS', `send-as "${entry}" is neither an address nor "@domain"`);
    }
    const normalized = normalizeAddress(entry);
    if (!out.includes(normalized)) out.push(normalized);
  }
  return out;
}

const LOCK_RETRY_MS = 50;
const LOCK_TIMEOUT_MS = 5_000;

/** Read-modify-write under the lock file, then an atomic replace. */
async function modifyUsersFile(
  file: string,
  change: (users: Map<string, UserRecord>) => void,
): Promise<void> {
  await mkdir(dirname(file), { recursive: true, mode: 0o700 });
  const release = await acquireLock(`${file}.lock`);
  try {
    const users = new Map(Object.entries((await readUsersFile(file)).users));
    change(users);
    const sorted = Object.fromEntries([...users].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
    const contents: UsersFile = { version: 1, users: sorted };
    await writeFileAtomic(file, JSON.stringify(contents, null, 2) + '\n');
  } finally {
    await release();
  }
}

/** Creates `lockFile` exclusively, retrying briefly while another writer holds it. */
async function acquireLock(lockFile: string): Promise<() => Promise<void>> {
  const deadline = Date.now() + LOCK_TIMEOUT_MS;
  for (;;) {
    try {
      const fh = await open(lockFile, 'wx', 0o600);
      try {
        await fh.writeFile(`${process.pid}\n`);
      } finally {
        await fh.close();
      }
      return () => unlink(lockFile).catch(() => undefined);
    } catch (err) {
      if (!(isErrnoException(err) && err.code === 'EEXIST')) throw err;
      if (Date.now() >= deadline) {
        throw new UserFileError(
          'LOCKED',
          `${lockFile} exists: another \`sterna user\` command is changing the users file. ` +
            'If none is running, a previous one was killed: remove that file and try again.',
        );
      }
      await new Promise((resolve) => setTimeout(resolve, LOCK_RETRY_MS));
    }
  }
}

/**
 * Writes `file` so that readers see the old or the new contents, never a mix: temporary file
 * in the same directory (mode 0600), fsync, rename over the target, fsync the directory.
 */
export async function writeFileAtomic(file: string, contents: string): Promise<void> {
  const dir = dirname(file);
  const tmp = join(dir, `.${basename(file)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  const fh = await open(tmp, 'wx', 0o600);
  try {
    await fh.writeFile(contents, 'utf8');
    await fh.sync();
  } catch (err) {
    await fh.close();
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
  await fh.close();
  try {
    await rename(tmp, file);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
  const dh = await open(dir, 'r');
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
}
