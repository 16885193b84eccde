/**
 * Local delivery into a Maildir, exactly once per (message, recipient).
 *
 * The file is written under tmp/, fsynced, renamed into new/ and the new/ directory is fsynced
 * (one fsync shared by the concurrent deliveries into it, dir-sync.ts), so a message is either absent or complete in new/ (the Maildir protocol, cr.yp.to/proto/maildir.html;
 * RFC 5321 4.4 for the Return-Path header the final delivery adds). The file name is derived from the
 * queue id and the recipient index, not from the clock or a random number, so a delivery retried after
 * a crash finds the copy the first attempt left and does not deliver it twice. docs/local-delivery.md
 * explains the layout and the reasoning.
 *
 * Trust: runs with the rights of the mailbox owner (later, in a uid-dropping helper). Its inputs come
 * from the queue (trusted), but the local part of an address comes from the network, which is why
 * maildirPathFor() makes it safe for the file system.
 */
import * as fsp from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { writeFully } from '../../io/write-fully.js';
import { DirSyncGroups, type DirSync } from './dir-sync.js';

export interface MaildirDelivery {
  /** Maildir directory of the mailbox (created with tmp/ new/ cur/ if missing, mode 0700). */
  maildir: string;
  /**
   * Stable unique name for this (message, recipient), see maildirUniqueName(): the same on every
   * retry and after a restart. Printable ASCII without '/', ':' or a leading '.'.
   */
  uniqueName: string;
  /** Header lines to prepend (already formatted, CRLF-terminated): Return-Path, Delivered-To. */
  prepend: string;
  /** The message body (CRLF line endings as received), streamed. */
  body: AsyncIterable<Buffer>;
}

export type LocalResult =
  | { kind: 'delivered'; path: string; duplicate: boolean }
  | { kind: 'deferred'; reason: string }
  | { kind: 'failed'; reason: string };

/** The file-system calls delivery makes; injectable so tests can produce errors root cannot get. */
export type MaildirFs = Pick<
  typeof fsp,
  'mkdir' | 'open' | 'rename' | 'stat' | 'readdir' | 'unlink' | 'chown'
>;

/**
 * Owner, group and modes of what delivery creates, for an IMAP server (Dovecot) that refuses a
 * Maildir its mail user does not own. uid/gid -1: leave as created (Sterna's own).
 */
export interface MaildirOwnership {
  uid: number;
  gid: number;
  dirMode: number;
  fileMode: number;
}

const DEFAULT_OWNERSHIP: MaildirOwnership = { uid: -1, gid: -1, dirMode: 0o700, fileMode: 0o600 };

export interface MaildirOptions {
  /**
   * Look for a copy left by an earlier attempt (new/<name>, then cur/<name>:2,<flags>) before writing.
   * Default true. Pass false only when this is certainly the first attempt for this recipient.
   */
  checkExisting?: boolean;
  /** File-system calls; default node:fs/promises. */
  fs?: MaildirFs;
  /** Owner, group and modes of new files and directories; default Sterna's user, 0700 and 0600. */
  ownership?: MaildirOwnership;
  /**
   * How the fsync of new/ after the rename runs; default: grouped with the concurrent
   * deliveries into the same directory (dir-sync.ts), process-wide.
   */
  dirSync?: DirSync;
}

/** The process's grouped fsyncs of new/ directories. */
const sharedDirSyncs = new DirSyncGroups();

/** Body bytes gathered into one write. */
const GATHER_BYTES = 256 * 1024;

/** NAME_MAX is 255; leave room for the ":2,<flags>" an IMAP server appends in cur/. */
const MAX_UNIQUE_NAME_BYTES = 200;
/** Local parts are at most 64 octets (RFC 5321 4.5.3.1.1); percent-encoding triples that at worst. */
const MAX_COMPONENT_BYTES = 255;

/**
 * The Maildir file name for one recipient of one message: `<qid>.R<index>.<host>`.
 * Stable across retries and restarts. The queue id already sorts by time, as the conventional
 * `time.unique.host` name does. In the host part '/' and ':' are written \057 and \072, as the
 * Maildir specification asks. No `,S=<size>`: the name must be known before the size is.
 */
export function maildirUniqueName(qid: string, recipientIndex: number, hostname: string): string {
  const host = hostname.replaceAll('/', '\\057').replaceAll(':', '\\072');
  return `${qid}.R${recipientIndex}.${host}`;
}

/** The Maildir++ folder spam goes to (a content filter's Junk verdict, src/filters/). */
export const JUNK_FOLDER = '.Junk';

/**
 * The Junk folder of a mailbox's Maildir: the Maildir++ subfolder `<maildir>/.Junk`, itself a
 * Maildir (tmp/ new/ cur/), which IMAP servers (Dovecot's Maildir++ layout) show as "Junk".
 */
export function junkFolderOf(maildir: string): string {
  return path.join(maildir, JUNK_FOLDER);
}

/**
 * The Maildir of a mailbox: `<root>/<domain>/<local>`. The domain is lower-cased; the local part is
 * kept as given (the caller passes the mailbox's canonical name, see docs/local-delivery.md). Both are
 * made safe for the file system: bytes outside `A-Z a-z 0-9 . _ + = -` (and '%' itself) are written
 * %XX in upper-case hex, and a leading '.' is written %2E, so no component is empty, '.', '..',
 * hidden, or contains '/'. The encoding is one-to-one, so two addresses never share a Maildir.
 * Throws RangeError for an empty local part or domain, or a component longer than 255 bytes.
 */
export function maildirPathFor(root: string, address: { local: string; domain: string }): string {
  return path.join(
    root,
    safeComponent(address.domain.toLowerCase(), 'domain'),
    safeComponent(address.local, 'local part'),
  );
}

/** `Return-Path: <sender>` (RFC 5321 4.4) and `Delivered-To: recipient`, CRLF-terminated. */
export function deliveryHeaders(opts: { sender: string; recipient: string }): string {
  for (const value of [opts.sender, opts.recipient]) {
    // A CR, LF or NUL here would let an address inject header lines; the address parser never lets one through.
    if (/[\r\n\0]/.test(value))
      throw new RangeError(`address ${JSON.stringify(value)} contains a line break or NUL`);
  }
  return `Return-Path: <${opts.sender}>\r\nDelivered-To: ${opts.recipient}\r\n`;
}

/**
 * Delivers one message to one Maildir. Never throws: every outcome is a LocalResult. The body is
 * read to its end or closed (its iterator's return()) in every case, so a spool file never leaks.
 */
export async function deliverToMaildir(d: MaildirDelivery, opts: MaildirOptions = {}): Promise<LocalResult> {
  const state = { bodyClosed: false };
  try {
    return await deliver(d, opts, state);
  } finally {
    if (!state.bodyClosed) await closeBody(d.body);
  }
}

async function deliver(
  d: MaildirDelivery,
  opts: MaildirOptions,
  state: { bodyClosed: boolean },
): Promise<LocalResult> {
  const fs = opts.fs ?? fsp;
  const nameProblem = uniqueNameProblem(d.uniqueName);
  if (nameProblem !== undefined) {
    return {
      kind: 'failed',
      reason: `invalid Maildir file name ${JSON.stringify(d.uniqueName)}: ${nameProblem}`,
    };
  }
  if (d.maildir === '') return { kind: 'failed', reason: 'invalid mailbox: empty Maildir path' };

  const tmpDir = path.join(d.maildir, 'tmp');
  const newDir = path.join(d.maildir, 'new');
  const tmpFile = path.join(tmpDir, d.uniqueName);
  const newFile = path.join(newDir, d.uniqueName);
  let tmpCreated = false;
  try {
    if (opts.checkExisting ?? true) {
      const found = await findExisting(fs, d.maildir, d.uniqueName);
      if (found !== undefined) return { kind: 'delivered', path: found, duplicate: true };
    }
    const own = opts.ownership ?? DEFAULT_OWNERSHIP;
    const fh = await openTmp(fs, d.maildir, tmpFile, own);
    tmpCreated = true;
    try {
      state.bodyClosed = true; // writeMessage reads it to the end or closes it
      await writeMessage(fh, tmpFile, d.prepend, d.body);
      await step('fsync', tmpFile, () => fh.sync());
    } finally {
      await fh.close().catch(() => undefined);
    }
    // rename() replaces an existing new/<name> atomically, so even without the check there is one file.
    await step('move the message into', newDir, async () => {
      try {
        await fs.rename(tmpFile, newFile);
      } catch (err) {
        // A Maildir left half-made (tmp/ without new/, from an older layout or a hand-made
        // directory): complete it, which is safe to repeat, and move the file once more.
        if (errnoCode(err) !== 'ENOENT') throw err;
        await createMaildir(fs, d.maildir, own);
        await fs.rename(tmpFile, newFile);
      }
    });
    tmpCreated = false;
    // A failure from here on leaves the message in new/; the retry finds it and reports a duplicate.
    // Shared with the deliveries into the same new/ whose renames came before it began.
    const dirSync = opts.dirSync ?? sharedDirSyncs.sync;
    await step('fsync directory', newDir, () => dirSync(newDir, () => syncDir(fs, newDir)));
    return { kind: 'delivered', path: newFile, duplicate: false };
  } catch (err) {
    if (tmpCreated) await fs.unlink(tmpFile).catch(() => undefined);
    return classify(fs, err);
  }
}

// ---------------------------------------------------------------------------------------------

/** An error from one step of the delivery, with the path it concerned. */
class StepError extends Error {
  constructor(
    readonly verb: string,
    readonly path: string,
    override readonly cause: unknown,
  ) {
    super(`cannot ${verb} ${path}`);
  }
}

/** An error from the body source (the spool), not from the Maildir. */
class BodyError extends Error {
  constructor(override readonly cause: unknown) {
    super('cannot read the message body');
  }
}

async function step<T>(verb: string, target: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw new StepError(verb, target, err);
  }
}

function uniqueNameProblem(name: string): string | undefined {
  if (name === '') return 'it is empty';
  if (Buffer.byteLength(name) > MAX_UNIQUE_NAME_BYTES)
    return `it is longer than ${MAX_UNIQUE_NAME_BYTES} bytes`;
  if (name.startsWith('.')) return "it starts with '.'";
  // Maildir: '/' separates directories and ':' starts the info part in cur/.
  if (!/^[\x21-\x7e]+$/.test(name) || /[/:]/.test(name)) return "use printable ASCII without '/' or ':'";
  return undefined;
}

const SAFE_BYTE = /^[A-Za-z0-9._+=-]$/;

function safeComponent(value: string, what: string): string {
  if (value === '') throw new RangeError(`empty ${what}: no Maildir for it`);
  let out = '';
  for (const byte of Buffer.from(value, 'utf8')) {
    const ch = String.fromCharCode(byte);
    const leadingDot = out === '' && ch === '.';
    out +=
      byte < 0x80 && SAFE_BYTE.test(ch) && !leadingDot
        ? ch
        : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  if (out.length > MAX_COMPONENT_BYTES)
    throw new RangeError(`${what} too long for a file name: ${out.length} bytes encoded`);
  return out;
}

/** new/<name>, or cur/<name> or cur/<name>:<info> after an IMAP server saw it; undefined if none. */
async function findExisting(fs: MaildirFs, maildir: string, name: string): Promise<string | undefined> {
  const inNew = path.join(maildir, 'new', name);
  const st = await step('look for an earlier delivery in', inNew, () =>
    unlessCode(fs.stat(inNew), 'ENOENT', undefined),
  );
  if (st?.isFile()) return inNew;
  // The rare path: only a crash between rename and recording the result gets here with a copy.
  const curDir = path.join(maildir, 'cur');
  const entries = await step('look for an earlier delivery in', curDir, () =>
    unlessCode(fs.readdir(curDir), 'ENOENT', []),
  );
  const found = entries.find((entry) => entry === name || entry.startsWith(`${name}:`));
  return found === undefined ? undefined : path.join(curDir, found);
}

/** Opens tmp/<name> for writing, creating the Maildir (and its parents) first if it is missing. */
async function openTmp(
  fs: MaildirFs,
  maildir: string,
  tmpFile: string,
  own: MaildirOwnership,
): Promise<FileHandle> {
  const open = async (): Promise<FileHandle> => {
    const fh = await fs.open(tmpFile, 'w', own.fileMode); // O_WRONLY|O_CREAT|O_TRUNC
    try {
      // The umask may have taken bits off the mode; the owner is set before any byte is written.
      if (own.fileMode !== DEFAULT_OWNERSHIP.fileMode) await fh.chmod(own.fileMode);
      if (own.uid !== -1 || own.gid !== -1) await fh.chown(own.uid, own.gid);
    } catch (err) {
      await fh.close().catch(() => undefined);
      await fs.unlink(tmpFile).catch(() => undefined);
      throw err;
    }
    return fh;
  };
  try {
    return await open();
  } catch (err) {
    if (errnoCode(err) !== 'ENOENT') throw new StepError('write', tmpFile, err);
  }
  await createMaildir(fs, maildir, own);
  return step('write', tmpFile, open);
}

/** Gives a directory delivery just created its configured owner and mode. */
async function ownDir(fs: MaildirFs, dir: string, own: MaildirOwnership): Promise<void> {
  if (own.dirMode !== DEFAULT_OWNERSHIP.dirMode) {
    await step('set the mode of', dir, async () => {
      const dh = await fs.open(dir, 'r');
      try {
        await dh.chmod(own.dirMode);
      } finally {
        await dh.close();
      }
    });
  }
  if (own.uid !== -1 || own.gid !== -1)
    await step('change the owner of', dir, () => fs.chown(dir, own.uid, own.gid));
}

/** Creates <maildir>/{tmp,new,cur} and makes every new directory entry durable. */
async function createMaildir(fs: MaildirFs, maildir: string, own: MaildirOwnership): Promise<void> {
  const first = await step('create directory', maildir, () =>
    fs.mkdir(maildir, { recursive: true, mode: own.dirMode }),
  );
  // Every directory mkdir made (the domain's too) gets the owner and mode: the IMAP server's
  // mail user must be able to reach and own the Maildir.
  if (first !== undefined) {
    for (let dir = maildir; ; dir = path.dirname(dir)) {
      await ownDir(fs, dir, own);
      if (path.resolve(dir) === path.resolve(first) || dir === path.dirname(dir)) break;
    }
  }
  // new/ and cur/ before tmp/: a delivery that finds tmp/ assumes the Maildir is whole, so tmp/
  // must be the last to appear (a concurrent delivery, or a crash between two mkdirs).
  for (const sub of ['new', 'cur', 'tmp']) {
    const dir = path.join(maildir, sub);
    const made = await step('create directory', dir, async () =>
      unlessCode(
        fs.mkdir(dir, { mode: own.dirMode }).then(() => true),
        'EEXIST',
        false,
      ),
    );
    if (made) await ownDir(fs, dir, own);
  }
  // fsync the Maildir (holds tmp/ new/ cur/) and, if mkdir created ancestors, each of them and the
  // directory above the first one; otherwise a crash could lose a Maildir we reported as delivered to.
  const toSync = [maildir];
  if (first !== undefined) {
    for (let dir = path.dirname(maildir); ; dir = path.dirname(dir)) {
      toSync.push(dir);
      if (path.resolve(dir) === path.resolve(path.dirname(first)) || dir === path.dirname(dir)) break;
    }
  }
  for (const dir of toSync) await step('fsync directory', dir, () => syncDir(fs, dir));
}

async function closeBody(body: AsyncIterable<Buffer>): Promise<void> {
  try {
    await body[Symbol.asyncIterator]().return?.();
  } catch {
    // Closing is best effort; the result already says what happened.
  }
}

async function writeMessage(
  fh: FileHandle,
  file: string,
  prepend: string,
  body: AsyncIterable<Buffer>,
): Promise<void> {
  // The delivery headers and the body's pieces go out together, GATHER_BYTES at a time: one
  // pwritev for a small message, where a write per piece cost a thread-pool round trip each.
  let batch: Buffer[] = [Buffer.from(prepend, 'utf8')];
  let batchBytes = batch[0]?.length ?? 0;
  const it = body[Symbol.asyncIterator]();
  for (;;) {
    let next: IteratorResult<Buffer>;
    try {
      next = await it.next();
    } catch (err) {
      throw new BodyError(err);
    }
    let done = true;
    if (next.done !== true) {
      done = false;
      batch.push(next.value);
      batchBytes += next.value.length;
    }
    if (!done && batchBytes < GATHER_BYTES) continue;
    try {
      // Awaiting each write before asking for more of the body is the backpressure.
      await writeFully(fh, batch, null);
    } catch (err) {
      if (!done) await it.return?.().catch(() => undefined);
      throw new StepError('write', file, err);
    }
    if (done) return;
    batch = [];
    batchBytes = 0;
  }
}

async function syncDir(fs: MaildirFs, dir: string): Promise<void> {
  const dh = await fs.open(dir, 'r');
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
}

/** `promise`, or `fallback` if it fails with errno `code`. */
async function unlessCode<T, F>(promise: Promise<T>, code: string, fallback: F): Promise<T | F> {
  try {
    return await promise;
  } catch (err) {
    if (errnoCode(err) === code) return fallback;
    throw err;
  }
}

function errnoCode(err: unknown): string | undefined {
  if (typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string')
    return err.code;
  return undefined;
}

/** What each errno means, and what the administrator should do about it. */
const TRANSIENT: Readonly<Record<string, readonly [string, string]>> = {
  EACCES: ['permission denied', 'check the owner and mode of the Maildir'],
  EPERM: ['operation not permitted', 'check the owner, mode and attributes (lsattr) of the Maildir'],
  ENOSPC: ['no space left on device', 'free space on the file system that holds the Maildir'],
  EDQUOT: ['disk quota exceeded', "raise the mailbox owner's quota or free space"],
  EIO: ['input/output error', 'check the disk and the kernel log'],
  EROFS: ['read-only file system', 'remount the file system that holds the Maildir read-write'],
};

/** Errors no retry will cure: the mailbox path itself is wrong. */
const PERMANENT: Readonly<Record<string, string>> = {
  ENOTDIR: 'a component of the path exists but is not a directory',
  EEXIST: 'a component of the path exists but is not a directory',
  EISDIR: 'the path is a directory',
  ENAMETOOLONG: 'the path is too long',
  ELOOP: 'too many levels of symbolic links',
};

async function classify(fs: MaildirFs, err: unknown): Promise<LocalResult> {
  if (err instanceof BodyError) {
    return {
      kind: 'deferred',
      reason: `cannot read the message body from the spool: ${describe(err.cause)}`,
    };
  }
  if (!(err instanceof StepError))
    return { kind: 'deferred', reason: `local delivery error: ${describe(err)}` };
  const code = errnoCode(err.cause) ?? 'unknown error';
  const transient = TRANSIENT[code];
  if (transient !== undefined) {
    return { kind: 'deferred', reason: `${err.message}: ${transient[0]} (${code}): ${transient[1]}` };
  }
  const permanent = PERMANENT[code];
  if (permanent !== undefined) {
    const culprit =
      code === 'ENOTDIR' || code === 'EEXIST' ? await firstNonDirectory(fs, err.path) : undefined;
    const detail = culprit === undefined ? permanent : `${culprit} exists but is not a directory`;
    return { kind: 'failed', reason: `${err.message}: ${detail} (${code}): the mailbox path is unusable` };
  }
  // Anything else (EMFILE, EAGAIN, ENOENT after a concurrent removal ...) may pass: retry later.
  return { kind: 'deferred', reason: `${err.message}: ${describe(err.cause)}` };
}

/** The first existing component of `target` that is not a directory, to name it in the reason. */
async function firstNonDirectory(fs: MaildirFs, target: string): Promise<string | undefined> {
  const absolute = path.resolve(target);
  const parts = absolute.split(path.sep).filter((p) => p !== '');
  let current = path.parse(absolute).root;
  for (const part of parts) {
    current = path.join(current, part);
    const st = await fs.stat(current).catch(() => undefined);
    if (st === undefined) return undefined;
    if (!st.isDirectory()) return current;
  }
  return undefined;
}

function describe(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
