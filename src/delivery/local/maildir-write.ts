/**
 * The file-system half of Maildir delivery, in synchronous calls: what the Maildir writer thread
 * runs (maildir-thread.ts), and what tests run in-process with injected errors.
 *
 * A delivery is written under tmp/, fsynced, renamed into new/, and new/ is fsynced, so a
 * message is either absent or complete in new/ (the Maildir protocol,
 * cr.yp.to/proto/maildir.html). The writer takes requests in batches, the ones that arrived
 * while it was busy, and works through a batch in phases: every file opened and written, then
 * every file fsynced (at the same time, on libuv's pool), then each renamed, then one fsync of
 * each new/ directory for all the renames into it (group commit). A delivery is answered only after the fsync of its new/ that followed
 * its rename. Exactly once: the file name is stable for a (message, recipient), so a retry
 * finds the copy an earlier attempt left (`checkExisting`). docs/local-delivery.md explains why.
 *
 * Trust: runs with Sterna's rights; the requests come from Sterna's own delivery code, and the
 * local part in a Maildir path was made safe for the file system by maildirPathFor().
 */
import * as nodeFs from 'node:fs';
import path from 'node:path';

/** The outcome of delivering one message to one mailbox. */
export type LocalResult =
  | { kind: 'delivered'; path: string; duplicate: boolean }
  | { kind: 'deferred'; reason: string }
  | { kind: 'failed'; reason: string };

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

export const DEFAULT_OWNERSHIP: MaildirOwnership = { uid: -1, gid: -1, dirMode: 0o700, fileMode: 0o600 };

/** One delivery: one message into one Maildir. */
export interface MaildirJob {
  /** Maildir directory of the mailbox (created with tmp/ new/ cur/ if missing). */
  maildir: string;
  /** The file's name in tmp/ and new/, the same on every attempt (maildirUniqueName()). */
  uniqueName: string;
  /** Look for a copy an earlier attempt left (new/<name>, cur/<name>:2,<flags>) before writing. */
  checkExisting: boolean;
  ownership: MaildirOwnership;
}

/**
 * What the writer is asked to do. A delivery is a `begin`, then a `more` for each further part
 * of the body until one with `end`; or an `abort` when the body cannot be read. `id` names the
 * delivery across its requests.
 */
export type WriterRequest =
  | { kind: 'begin'; id: number; job: MaildirJob; data: Uint8Array | null; end: boolean }
  | { kind: 'more'; id: number; data: Uint8Array; end: boolean }
  | { kind: 'abort'; id: number };

/** The answer to one request: the delivery's result, or null when the writer waits for more body. */
export interface WriterReply {
  id: number;
  result: LocalResult | null;
}

/**
 * The file-system calls delivery makes (node:fs satisfies it); injectable so tests can produce
 * errors root cannot get.
 */
export interface MaildirSyncFs {
  openSync(file: string, flags: string, mode?: number): number;
  writeSync(fd: number, data: Uint8Array, offset: number, length: number): number;
  /** The fsyncs of a batch's files and directories, run at the same time (libuv's pool). */
  fsyncAsync(fd: number): Promise<void>;
  fsyncSync(fd: number): void;
  closeSync(fd: number): void;
  renameSync(from: string, to: string): void;
  mkdirSync(dir: string, opts: { recursive?: boolean; mode: number }): string | undefined;
  statSync(file: string, opts: { throwIfNoEntry: false }): nodeFs.Stats | undefined;
  readdirSync(dir: string): string[];
  unlinkSync(file: string): void;
  chownSync(file: string, uid: number, gid: number): void;
  fchmodSync(fd: number, mode: number): void;
  fchownSync(fd: number, uid: number, gid: number): void;
}

/** node:fs, with fsyncAsync on libuv's thread pool. */
export const NODE_MAILDIR_FS: MaildirSyncFs = {
  openSync: nodeFs.openSync,
  writeSync: nodeFs.writeSync,
  fsyncAsync: (fd) =>
    new Promise((resolve, reject) => nodeFs.fsync(fd, (err) => (err === null ? resolve() : reject(err)))),
  fsyncSync: nodeFs.fsyncSync,
  closeSync: nodeFs.closeSync,
  renameSync: nodeFs.renameSync,
  mkdirSync: nodeFs.mkdirSync,
  statSync: nodeFs.statSync,
  readdirSync: nodeFs.readdirSync,
  unlinkSync: nodeFs.unlinkSync,
  chownSync: nodeFs.chownSync,
  fchmodSync: nodeFs.fchmodSync,
  fchownSync: nodeFs.fchownSync,
};

/** NAME_MAX is 255; leave room for the ":2,<flags>" an IMAP server appends in cur/. */
const MAX_UNIQUE_NAME_BYTES = 200;

/** A file open in tmp/, between the request that opened it and its rename. */
interface OpenFile {
  id: number;
  fd: number;
  tmpFile: string;
  newDir: string;
  newFile: string;
  job: MaildirJob;
}

/** Writes deliveries into Maildirs; holds the files whose body is still coming. */
export class MaildirWriter {
  readonly #fs: MaildirSyncFs;
  readonly #open = new Map<number, OpenFile>();
  #dirSyncs = 0;

  constructor(fs: MaildirSyncFs = NODE_MAILDIR_FS) {
    this.#fs = fs;
  }

  /** fsyncs of new/ directories so far (tests, benchmarks: how well they were shared). */
  get dirSyncs(): number {
    return this.#dirSyncs;
  }

  /**
   * Carries out a batch of requests; one reply per request, in no particular order. The other
   * steps are synchronous calls; the fsyncs of the batch's files, and then of its directories,
   * run at the same time, so their waits for the disk overlap.
   */
  async run(batch: readonly WriterRequest[]): Promise<WriterReply[]> {
    const replies: WriterReply[] = [];
    const written: OpenFile[] = [];
    for (const req of batch) {
      const file = this.#receive(req, replies);
      if (file !== null) written.push(file);
    }
    const fsynced = await Promise.all(written.map((f) => this.#syncAndClose(f, replies)));
    const renamed = new Map<string, OpenFile[]>();
    written.forEach((f, i) => {
      if (fsynced[i] !== true || !this.#rename(f, replies)) return;
      const group = renamed.get(f.newDir);
      if (group === undefined) renamed.set(f.newDir, [f]);
      else group.push(f);
    });
    await Promise.all(
      [...renamed].map(async ([newDir, files]) => {
        const result = await this.#syncNewDir(newDir);
        for (const f of files)
          replies.push({
            id: f.id,
            result: result ?? { kind: 'delivered', path: f.newFile, duplicate: false },
          });
      }),
    );
    return replies;
  }

  /** fsync of a new/ after the renames into it: null, or the result of every delivery it covers. */
  async #syncNewDir(newDir: string): Promise<LocalResult | null> {
    this.#dirSyncs++;
    let fd: number;
    try {
      fd = this.#fs.openSync(newDir, 'r');
    } catch (err) {
      return classify(this.#fs, new StepError('fsync directory', newDir, err));
    }
    try {
      await this.#fs.fsyncAsync(fd);
      return null;
    } catch (err) {
      // The files are in new/; each retry finds its copy and reports a duplicate.
      return classify(this.#fs, new StepError('fsync directory', newDir, err));
    } finally {
      closeQuietly(this.#fs, fd);
    }
  }

  /** Opens or continues a file and writes the request's data; the file once its body is complete. */
  #receive(req: WriterRequest, replies: WriterReply[]): OpenFile | null {
    if (req.kind === 'begin') return this.#begin(req.id, req.job, req.data, req.end, replies);
    const file = this.#open.get(req.id);
    if (file === undefined) {
      // A request for a delivery this writer does not hold: a thread that was replaced.
      replies.push({
        id: req.id,
        result: { kind: 'deferred', reason: 'the Maildir writer lost this delivery' },
      });
      return null;
    }
    if (req.kind === 'abort') {
      this.#open.delete(req.id);
      this.#discard(file);
      replies.push({ id: req.id, result: null });
      return null;
    }
    try {
      step('write', file.tmpFile, () => writeAll(this.#fs, file.fd, req.data));
    } catch (err) {
      this.#open.delete(req.id);
      this.#discard(file);
      replies.push({ id: req.id, result: classify(this.#fs, err) });
      return null;
    }
    if (!req.end) {
      replies.push({ id: req.id, result: null });
      return null;
    }
    this.#open.delete(req.id);
    return file;
  }

  #begin(
    id: number,
    job: MaildirJob,
    data: Uint8Array | null,
    end: boolean,
    replies: WriterReply[],
  ): OpenFile | null {
    const nameProblem = uniqueNameProblem(job.uniqueName);
    if (nameProblem !== undefined) {
      const reason = `invalid Maildir file name ${JSON.stringify(job.uniqueName)}: ${nameProblem}`;
      replies.push({ id, result: { kind: 'failed', reason } });
      return null;
    }
    if (job.maildir === '') {
      replies.push({ id, result: { kind: 'failed', reason: 'invalid mailbox: empty Maildir path' } });
      return null;
    }
    const newDir = path.join(job.maildir, 'new');
    const tmpFile = path.join(job.maildir, 'tmp', job.uniqueName);
    let file: OpenFile | null = null;
    try {
      if (job.checkExisting) {
        const found = findExisting(this.#fs, job.maildir, job.uniqueName);
        if (found !== undefined) {
          replies.push({ id, result: { kind: 'delivered', path: found, duplicate: true } });
          return null;
        }
      }
      const fd = openTmp(this.#fs, job.maildir, tmpFile, job.ownership);
      file = { id, fd, tmpFile, newDir, newFile: path.join(newDir, job.uniqueName), job };
      const opened = file;
      if (data !== null) step('write', tmpFile, () => writeAll(this.#fs, opened.fd, data));
    } catch (err) {
      if (file !== null) this.#discard(file);
      replies.push({ id, result: classify(this.#fs, err) });
      return null;
    }
    if (end) return file;
    this.#open.set(id, file);
    replies.push({ id, result: null });
    return null;
  }

  /** fsync and close; false (and the reply sent) when that failed. */
  async #syncAndClose(f: OpenFile, replies: WriterReply[]): Promise<boolean> {
    try {
      await this.#fs.fsyncAsync(f.fd);
    } catch (err) {
      this.#discard(f);
      replies.push({ id: f.id, result: classify(this.#fs, new StepError('fsync', f.tmpFile, err)) });
      return false;
    }
    closeQuietly(this.#fs, f.fd);
    return true;
  }

  /** Moves tmp/<name> to new/<name>; false (and the reply sent) when that failed. */
  #rename(f: OpenFile, replies: WriterReply[]): boolean {
    const fs = this.#fs;
    try {
      // rename() replaces an existing new/<name> atomically, so even without the check there is one file.
      step('move the message into', f.newDir, () => {
        try {
          fs.renameSync(f.tmpFile, f.newFile);
        } catch (err) {
          // A Maildir left half-made (tmp/ without new/, from an older layout or a hand-made
          // directory): complete it, which is safe to repeat, and move the file once more.
          if (errnoCode(err) !== 'ENOENT') throw err;
          createMaildir(fs, f.job.maildir, f.job.ownership);
          fs.renameSync(f.tmpFile, f.newFile);
        }
      });
      return true;
    } catch (err) {
      unlinkQuietly(fs, f.tmpFile);
      replies.push({ id: f.id, result: classify(fs, err) });
      return false;
    }
  }

  /** Closes and removes a tmp/ file that will not be delivered. */
  #discard(f: OpenFile): void {
    closeQuietly(this.#fs, f.fd);
    unlinkQuietly(this.#fs, f.tmpFile);
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

function step<T>(verb: string, target: string, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof StepError) throw err;
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

/** Writes all of `data` at the file's offset, continuing after short writes. */
function writeAll(fs: MaildirSyncFs, fd: number, data: Uint8Array): void {
  for (let done = 0; done < data.length;) {
    const n = fs.writeSync(fd, data, done, data.length - done);
    if (n <= 0) throw Object.assign(new Error('write made no progress'), { code: 'EIO' });
    done += n;
  }
}

/** new/<name>, or cur/<name> or cur/<name>:<info> after an IMAP server saw it; undefined if none. */
function findExisting(fs: MaildirSyncFs, maildir: string, name: string): string | undefined {
  const inNew = path.join(maildir, 'new', name);
  const st = step('look for an earlier delivery in', inNew, () =>
    fs.statSync(inNew, { throwIfNoEntry: false }),
  );
  if (st?.isFile() === true) return inNew;
  // The rare path: only a crash between rename and recording the result gets here with a copy.
  const curDir = path.join(maildir, 'cur');
  const entries = step('look for an earlier delivery in', curDir, () =>
    unlessCode(() => fs.readdirSync(curDir), 'ENOENT', []),
  );
  const found = entries.find((entry) => entry === name || entry.startsWith(`${name}:`));
  return found === undefined ? undefined : path.join(curDir, found);
}

/** Opens tmp/<name> for writing, creating the Maildir (and its parents) first if it is missing. */
function openTmp(fs: MaildirSyncFs, maildir: string, tmpFile: string, own: MaildirOwnership): number {
  const open = (): number => {
    const fd = fs.openSync(tmpFile, 'w', own.fileMode); // O_WRONLY|O_CREAT|O_TRUNC
    try {
      // The umask may have taken bits off the mode; the owner is set before any byte is written.
      if (own.fileMode !== DEFAULT_OWNERSHIP.fileMode) fs.fchmodSync(fd, own.fileMode);
      if (own.uid !== -1 || own.gid !== -1) fs.fchownSync(fd, own.uid, own.gid);
    } catch (err) {
      closeQuietly(fs, fd);
      unlinkQuietly(fs, tmpFile);
      throw err;
    }
    return fd;
  };
  try {
    return open();
  } catch (err) {
    if (errnoCode(err) !== 'ENOENT') throw new StepError('write', tmpFile, err);
  }
  createMaildir(fs, maildir, own);
  return step('write', tmpFile, open);
}

/** Gives a directory delivery just created its configured owner and mode. */
function ownDir(fs: MaildirSyncFs, dir: string, own: MaildirOwnership): void {
  if (own.dirMode !== DEFAULT_OWNERSHIP.dirMode) {
    step('set the mode of', dir, () => {
      const fd = fs.openSync(dir, 'r');
      try {
        fs.fchmodSync(fd, own.dirMode);
      } finally {
        closeQuietly(fs, fd);
      }
    });
  }
  if (own.uid !== -1 || own.gid !== -1)
    step('change the owner of', dir, () => fs.chownSync(dir, own.uid, own.gid));
}

/** Creates <maildir>/{tmp,new,cur} and makes every new directory entry durable. */
function createMaildir(fs: MaildirSyncFs, maildir: string, own: MaildirOwnership): void {
  const first = step('create directory', maildir, () =>
    fs.mkdirSync(maildir, { recursive: true, mode: own.dirMode }),
  );
  // Every directory mkdir made (the domain's too) gets the owner and mode: the IMAP server's
  // mail user must be able to reach and own the Maildir.
  if (first !== undefined) {
    for (let dir = maildir; ; dir = path.dirname(dir)) {
      ownDir(fs, dir, own);
      if (path.resolve(dir) === path.resolve(first) || dir === path.dirname(dir)) break;
    }
  }
  // new/ and cur/ before tmp/: a delivery that finds tmp/ assumes the Maildir is whole, so tmp/
  // must be the last to appear (a concurrent delivery, or a crash between two mkdirs).
  for (const sub of ['new', 'cur', 'tmp']) {
    const dir = path.join(maildir, sub);
    const made = step('create directory', dir, () =>
      unlessCode(
        () => {
          fs.mkdirSync(dir, { mode: own.dirMode });
          return true;
        },
        'EEXIST',
        false,
      ),
    );
    if (made) ownDir(fs, dir, own);
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
  for (const dir of toSync) step('fsync directory', dir, () => syncDir(fs, dir));
}

function syncDir(fs: MaildirSyncFs, dir: string): void {
  const fd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    closeQuietly(fs, fd);
  }
}

function closeQuietly(fs: MaildirSyncFs, fd: number): void {
  try {
    fs.closeSync(fd);
  } catch {
    // Nothing more to do with this descriptor; the outcome is decided elsewhere.
  }
}

function unlinkQuietly(fs: MaildirSyncFs, file: string): void {
  try {
    fs.unlinkSync(file);
  } catch {
    // Already gone, or it cannot be removed: a leftover in tmp/ is harmless (the next attempt truncates it).
  }
}

/** `fn()`, or `fallback` if it fails with errno `code`. */
function unlessCode<T, F>(fn: () => T, code: string, fallback: F): T | F {
  try {
    return fn();
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

function classify(fs: MaildirSyncFs, err: unknown): LocalResult {
  if (!(err instanceof StepError))
    return { kind: 'deferred', reason: `local delivery error: ${describe(err)}` };
  const code = errnoCode(err.cause) ?? 'unknown error';
  const transient = TRANSIENT[code];
  if (transient !== undefined) {
    return { kind: 'deferred', reason: `${err.message}: ${transient[0]} (${code}): ${transient[1]}` };
  }
  const permanent = PERMANENT[code];
  if (permanent !== undefined) {
    const culprit = code === 'ENOTDIR' || code === 'EEXIST' ? firstNonDirectory(fs, err.path) : undefined;
    const detail = culprit === undefined ? permanent : `${culprit} exists but is not a directory`;
    return { kind: 'failed', reason: `${err.message}: ${detail} (${code}): the mailbox path is unusable` };
  }
  // Anything else (EMFILE, EAGAIN, ENOENT after a concurrent removal ...) may pass: retry later.
  return { kind: 'deferred', reason: `${err.message}: ${describe(err.cause)}` };
}

/** The first existing component of `target` that is not a directory, to name it in the reason. */
function firstNonDirectory(fs: MaildirSyncFs, target: string): string | undefined {
  const absolute = path.resolve(target);
  const parts = absolute.split(path.sep).filter((p) => p !== '');
  let current = path.parse(absolute).root;
  for (const part of parts) {
    current = path.join(current, part);
    let st: nodeFs.Stats | undefined;
    try {
      st = fs.statSync(current, { throwIfNoEntry: false });
    } catch {
      return undefined;
    }
    if (st === undefined) return undefined;
    if (!st.isDirectory()) return current;
  }
  return undefined;
}

export function describe(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
