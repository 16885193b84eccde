/**
 * The spool's append-only log writer with group commit.
 *
 * - append() reserves the record's place (segment, offset) synchronously, so a COMMIT can
 *   name the chunks appended just before it, and queues the bytes. One pump writes queued
 *   records in order, many at a time with one positional writev: inline (on this thread) up to
 *   INLINE_WRITE_MAX_BYTES, through the thread pool above it or after a slow inline write.
 * - durable(seq) resolves once an fdatasync that started after record `seq` was written has
 *   completed. Only one fdatasync runs at a time; waiters that arrive meanwhile are served by
 *   the next one, so under load one fdatasync covers every message that finished together.
 * - A segment that would grow past segmentBytes is closed: fdatasync, close, then the next file
 *   is created (O_EXCL), its HEADER record (with the segment's fresh random salt) written and
 *   fdatasynced, and the segments directory fsynced. Records in older segments are therefore
 *   always durable, and no record is ever written to a segment whose salt is not.
 * - Every record is framed with the salt of the segment it goes to (spool-format.ts), so a
 *   message body cannot hold bytes that recovery would take for a record.
 * - A failed write (ENOSPC...) truncates the file back to where the failed batch began and
 *   rejects that batch and everything queued behind it; later appends work again. A failed
 *   fdatasync is fatal (the kernel may have dropped the dirty pages): every later call fails
 *   until the spool is reopened, which rescans the files.
 * Trust level: internal; writes only under the spool directory.
 */
import { open, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFully, writeFullySync } from '../io/write-fully.js';
import { SpoolError, toSpoolError } from './spool-errors.js';
import {
  encodeHeader,
  encodeHeaderPayload,
  HEADER_BYTES,
  newSalt,
  RecordType,
  saltedFraming,
  segmentFileName,
  type Framing,
} from './spool-format.js';

export interface Appended {
  segment: number;
  offset: number;
  /** Position in the log's append order, for durable(). */
  seq: number;
  /** Resolves when the bytes were handed to the kernel. */
  written: Promise<void>;
}

interface RecordItem {
  kind: 'record';
  segment: number;
  offset: number;
  bytes: number;
  buffers: Buffer[];
  seq: number;
  resolve: () => void;
  reject: (err: SpoolError) => void;
}

interface RotateItem {
  kind: 'rotate';
  segment: number;
  header: Buffer[];
  framing: Framing;
  /** End of the previous segment's records, where appends resume if the new file cannot be made. */
  prevEnd: number;
}

type Item = RecordItem | RotateItem;

interface Waiter {
  seq: number;
  resolve: () => void;
  reject: (err: SpoolError) => void;
}

export interface SpoolLogOptions {
  segmentBytes: number;
  fsync: boolean;
  now: () => number;
  /** Called after every fdatasync of a segment with its duration (metrics, tests, benchmarks). */
  onSync?: ((seconds: number) => void) | undefined;
  /** Called when a new segment file exists, with the framing of its records. */
  onSegmentCreated?: ((segment: number, framing: Framing) => void) | undefined;
  /** Batches up to this many bytes are written inline (default INLINE_WRITE_MAX_BYTES; 0: never). */
  inlineWriteMaxBytes?: number;
  /** A monotonic clock in ms, for timing inline writes (default performance.now). */
  clock?: () => number;
}

/** Records per writev; libuv handles more buffers, but the batch also bounds latency. */
const MAX_BATCH_RECORDS = 256;
const MAX_BATCH_BYTES = 4 * 1024 * 1024;
/**
 * A batch up to this size is written inline: one pwritev on the event loop's thread instead of a
 * round trip through libuv's thread pool. Into the page cache that takes microseconds, where the
 * round trip costs about 25 µs of CPU in the two threads and their wake-ups (measured; one in
 * every message's path). Alternating A/B runs, new connection per message: 4-13 % more messages
 * a second on every row (docs/spool.md, "Writing inline").
 */
export const INLINE_WRITE_MAX_BYTES = 256 * 1024;
/**
 * An inline write slower than this (a stalled disk, the kernel throttling dirty pages) held up
 * every session of this process: the writes go back to the thread pool for INLINE_PAUSE_MS.
 */
export const INLINE_WRITE_SLOW_MS = 10;
export const INLINE_PAUSE_MS = 10_000;

export class SpoolLog {
  readonly #dir: string;
  readonly #opts: SpoolLogOptions;
  #fh: FileHandle;
  #segment: number;
  #resSegment: number;
  #resOffset: number;
  /** Framing of the segment appends go to, and of the file being written. */
  #resFraming: Framing;
  #fileFraming: Framing;
  /** Size of the HEADER record of the segment appends go to: a segment holding only it is empty. */
  #resHeaderBytes: number;
  /** Size of the HEADER record of the file being written. */
  #fileHeaderBytes: number;
  #queue: Item[] = [];
  #pumping: Promise<void> | null = null;
  #appendedSeq = 0;
  #writtenSeq = 0;
  #durableSeq = 0;
  #waiters: Waiter[] = [];
  #syncing: Promise<void> | null = null;
  #rotating = false;
  #failed: SpoolError | null = null;
  #closed = false;
  /** Until when (opts.clock) batches go through the thread pool after a slow inline write. */
  #inlineAfter = 0;
  readonly #inlineMax: number;
  readonly #clock: () => number;

  private constructor(
    dir: string,
    fh: FileHandle,
    segment: number,
    offset: number,
    framing: Framing,
    opts: SpoolLogOptions,
  ) {
    this.#dir = dir;
    this.#resFraming = framing;
    this.#fileFraming = framing;
    this.#fh = fh;
    this.#segment = segment;
    this.#resSegment = segment;
    this.#resOffset = offset;
    this.#resHeaderBytes = offset;
    this.#fileHeaderBytes = offset;
    this.#opts = opts;
    this.#inlineMax = opts.inlineWriteMaxBytes ?? INLINE_WRITE_MAX_BYTES;
    this.#clock = opts.clock ?? (() => performance.now());
  }

  /** Creates segment `segment` (which must not exist) in `dir` and returns a log writing to it. */
  static async create(dir: string, segment: number, opts: SpoolLogOptions): Promise<SpoolLog> {
    const { header, framing } = headerRecord(segment, opts.now());
    const fh = await createSegmentFile(dir, segment, header, opts.fsync);
    opts.onSegmentCreated?.(segment, framing);
    return new SpoolLog(dir, fh, segment, byteLength(header), framing, opts);
  }

  /** The segment new records go to. */
  get appendSegment(): number {
    return this.#resSegment;
  }

  /** The segment file being written; every older segment is complete and durable. */
  get writeSegment(): number {
    return this.#segment;
  }

  /** Sequence number of the last record appended (the target for flush-like waits). */
  get lastSeq(): number {
    return this.#appendedSeq;
  }

  /**
   * Queues one record of `type` whose payload is the concatenation of `parts`. Throws a
   * SpoolError when the log is closed or has failed. The parts must not change until written.
   */
  append(type: RecordType, parts: Buffer[]): Appended {
    if (this.#failed) throw this.#failed;
    if (this.#closed) throw new SpoolError('CLOSED', 'the spool is closed');
    const bytes = HEADER_BYTES + byteLength(parts);
    // A record larger than a whole segment still goes in, alone, into a fresh segment.
    if (this.#resOffset + bytes > this.#opts.segmentBytes && this.#resOffset > this.#resHeaderBytes) {
      const segment = this.#resSegment + 1;
      const { header: h, framing } = headerRecord(segment, this.#opts.now());
      this.#queue.push({ kind: 'rotate', segment, header: h, framing, prevEnd: this.#resOffset });
      this.#resSegment = segment;
      this.#resOffset = byteLength(h);
      this.#resHeaderBytes = this.#resOffset;
      this.#resFraming = framing;
    }
    // Framed for the segment it is reserved in: a record never moves to another segment.
    const buffers = [encodeHeader(type, parts, this.#resFraming), ...parts];
    const seq = ++this.#appendedSeq;
    const segment = this.#resSegment;
    const offset = this.#resOffset;
    this.#resOffset += bytes;
    let resolve!: () => void;
    let reject!: (err: SpoolError) => void;
    const written = new Promise<void>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    // Callers await `written` or a durable() that fails the same way; never an unhandled rejection.
    written.catch(() => undefined);
    this.#queue.push({ kind: 'record', segment, offset, bytes, buffers, seq, resolve, reject });
    this.#pumping ??= this.#pump();
    return { segment, offset, seq, written };
  }

  /** Resolves once record `seq` (and everything before it) is on stable storage. */
  durable(seq: number): Promise<void> {
    if (this.#failed) return Promise.reject(this.#failed);
    if (seq <= this.#durableSeq) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      this.#waiters.push({ seq, resolve, reject });
      this.#kickSync();
    });
  }

  /** Resolves once everything appended so far is durable. */
  flush(): Promise<void> {
    return this.durable(this.#appendedSeq);
  }

  /** Waits for pending writes and syncs, then closes the file. */
  async close(): Promise<void> {
    if (this.#closed) return;
    try {
      // Records appended while we wait are flushed too, so no durable() waiter is left behind.
      while (!this.#failed && this.#durableSeq < this.#appendedSeq) await this.flush();
    } finally {
      this.#closed = true;
      while (this.#pumping) await this.#pumping;
      while (this.#syncing) await this.#syncing;
      await this.#fh.close();
    }
  }

  async #pump(): Promise<void> {
    try {
      // Start after the code that appended runs to its end: a message's last CHUNK and its
      // COMMIT are appended in one synchronous run (spool-writer.ts commit()), and so go out in
      // one pwritev instead of two writes one after the other through the thread pool.
      await Promise.resolve();
      while (this.#queue.length > 0 && !this.#failed) {
        const first = this.#queue[0]!;
        if (first.kind === 'rotate') {
          this.#queue.shift();
          await this.#rotate(first);
          continue;
        }
        const batch: RecordItem[] = [];
        const buffers: Buffer[] = [];
        let bytes = 0;
        for (;;) {
          const next = this.#queue[0];
          if (
            !next ||
            next.kind !== 'record' ||
            batch.length >= MAX_BATCH_RECORDS ||
            bytes >= MAX_BATCH_BYTES
          )
            break;
          this.#queue.shift();
          batch.push(next);
          for (const b of next.buffers) buffers.push(b);
          bytes += next.bytes;
        }
        const start = batch[0]!.offset;
        try {
          if (bytes <= this.#inlineMax && this.#clock() >= this.#inlineAfter)
            this.#writeInline(buffers, start);
          else await writeFully(this.#fh, buffers, start);
        } catch (err) {
          await this.#writeFailed(batch, start, toSpoolError(err, 'writing the spool log'));
          continue;
        }
        this.#writtenSeq = batch[batch.length - 1]!.seq;
        for (const item of batch) item.resolve();
        this.#kickSync();
      }
    } finally {
      this.#pumping = null;
    }
  }

  #writeInline(buffers: readonly Buffer[], start: number): void {
    const t0 = this.#clock();
    writeFullySync(this.#fh.fd, buffers, start);
    const t1 = this.#clock();
    if (t1 - t0 > INLINE_WRITE_SLOW_MS) this.#inlineAfter = t1 + INLINE_PAUSE_MS;
  }

  /** Whether the next small batch will be written inline (false for a while after a slow one). */
  get writesInline(): boolean {
    return this.#inlineMax > 0 && this.#clock() >= this.#inlineAfter;
  }

  async #writeFailed(batch: RecordItem[], start: number, err: SpoolError): Promise<void> {
    const rejected: RecordItem[] = [...batch];
    for (const item of this.#queue.splice(0)) if (item.kind === 'record') rejected.push(item);
    this.#resSegment = this.#segment;
    this.#resOffset = start;
    this.#resHeaderBytes = this.#fileHeaderBytes;
    this.#resFraming = this.#fileFraming;
    // Nothing queued remains: syncs waiting for these records have nothing more to wait for.
    this.#writtenSeq = this.#appendedSeq;
    try {
      await this.#fh.truncate(start);
    } catch (truncErr) {
      this.#fail(toSpoolError(truncErr, 'truncating the spool log after a failed write'));
    }
    for (const item of rejected) item.reject(err);
    this.#kickSync();
  }

  async #rotate(item: RotateItem): Promise<void> {
    this.#rotating = true;
    try {
      while (this.#syncing) await this.#syncing;
      if (this.#failed) return;
      const old = this.#fh;
      const target = this.#writtenSeq;
      try {
        if (this.#opts.fsync) {
          const t0 = performance.now();
          await old.datasync();
          this.#opts.onSync?.((performance.now() - t0) / 1000);
        }
      } catch (err) {
        this.#fail(toSpoolError(err, 'syncing a full spool segment'));
        return;
      }
      this.#durableSeq = Math.max(this.#durableSeq, target);
      let fh: FileHandle;
      try {
        fh = await createSegmentFile(this.#dir, item.segment, item.header, this.#opts.fsync);
      } catch (err) {
        // The old file stays current; records reserved in the new segment are rejected.
        const e = toSpoolError(err, 'creating a spool segment');
        const rejected = this.#queue.splice(0).filter((i): i is RecordItem => i.kind === 'record');
        this.#resSegment = this.#segment;
        this.#resOffset = item.prevEnd;
        this.#resHeaderBytes = this.#fileHeaderBytes;
        this.#resFraming = this.#fileFraming;
        this.#writtenSeq = this.#appendedSeq;
        for (const r of rejected) r.reject(e);
        return;
      }
      this.#fh = fh;
      this.#segment = item.segment;
      this.#fileHeaderBytes = byteLength(item.header);
      this.#fileFraming = item.framing;
      await old.close().catch(() => undefined);
      this.#opts.onSegmentCreated?.(item.segment, item.framing);
    } finally {
      this.#rotating = false;
      this.#resolveWaiters();
      this.#kickSync();
    }
  }

  #kickSync(): void {
    if (!this.#opts.fsync) {
      this.#durableSeq = this.#writtenSeq;
      this.#resolveWaiters();
      return;
    }
    this.#resolveWaiters();
    if (this.#syncing || this.#rotating || this.#failed) return;
    // Start an fdatasync only when it serves a waiter: one whose record is already written.
    const target = this.#writtenSeq;
    if (!this.#waiters.some((w) => w.seq <= target && w.seq > this.#durableSeq)) return;
    const fh = this.#fh;
    this.#syncing = (async () => {
      try {
        const t0 = performance.now();
        await fh.datasync();
        this.#opts.onSync?.((performance.now() - t0) / 1000);
        this.#durableSeq = Math.max(this.#durableSeq, target);
      } catch (err) {
        this.#fail(toSpoolError(err, 'syncing the spool log'));
      } finally {
        this.#syncing = null;
      }
      this.#kickSync();
    })();
  }

  #resolveWaiters(): void {
    if (this.#waiters.length === 0) return;
    const keep: Waiter[] = [];
    for (const w of this.#waiters) {
      if (w.seq <= this.#durableSeq) w.resolve();
      else keep.push(w);
    }
    this.#waiters = keep;
  }

  #fail(err: SpoolError): void {
    if (this.#failed) return;
    this.#failed = new SpoolError(err.code, `${err.message}; the spool refuses writes until it is reopened`, {
      cause: err,
    });
    for (const item of this.#queue.splice(0)) if (item.kind === 'record') item.reject(this.#failed);
    for (const w of this.#waiters.splice(0)) w.reject(this.#failed);
  }
}

/** A new segment's HEADER record (plain framing, so readers can find it) and its salted framing. */
function headerRecord(segment: number, now: number): { header: Buffer[]; framing: Framing } {
  const salt = newSalt();
  const payload = encodeHeaderPayload(segment, now, salt);
  return { header: [encodeHeader(RecordType.Header, [payload]), payload], framing: saltedFraming(salt) };
}

function byteLength(buffers: readonly Buffer[]): number {
  let n = 0;
  for (const b of buffers) n += b.length;
  return n;
}

/**
 * Creates a segment file exclusively, writes its HEADER record and makes both durable: the
 * file's data (the salt every later record of it is checked with), then its name.
 */
async function createSegmentFile(
  dir: string,
  segment: number,
  header: Buffer[],
  fsync: boolean,
): Promise<FileHandle> {
  const path = join(dir, segmentFileName(segment));
  const fh = await open(path, 'wx');
  try {
    await writeFully(fh, header, 0);
    if (fsync) {
      await fh.datasync();
      await syncDir(dir);
    }
  } catch (err) {
    await fh.close().catch(() => undefined);
    await unlink(path).catch(() => undefined);
    throw err;
  }
  return fh;
}

/** fsync on a directory: makes the creation, rename or removal of its entries durable. */
export async function syncDir(dir: string): Promise<void> {
  const d = await open(dir, 'r');
  try {
    await d.sync();
  } finally {
    await d.close();
  }
}
