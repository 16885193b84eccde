/**
 * The durable spool: message bodies, envelopes and recipient states in an append-only log of
 * segment files with group commit (docs/spool.md has the format and the reasons).
 *
 * DESIGN.md rule 3: MessageWriter.commit() resolves only after an fdatasync covering the
 * message's COMMIT record, its body chunks (which precede it in the log) and, when the log
 * moved to a new segment meanwhile, the older segment (synced before it was closed). The
 * session sends "250 Ok: queued as ID" after that. One fdatasync serves every record written
 * before it started, so concurrent sessions share the cost.
 *
 * Memory: per live message the index keeps ids, sizes, the COMMIT record's location and the
 * recipient states; envelopes and bodies are read back from disk on demand.
 * Trust level: internal. Bodies are untrusted bytes, stored and returned unchanged.
 */
import { mkdir, open, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { Envelope, RecipientState } from '../message/envelope.js';
import { newQueueId, noteQueueId } from './ids.js';
import { SpoolError, toSpoolError } from './spool-errors.js';
import {
  checkRecord,
  CHUNK_PREFIX_BYTES,
  commitEnvelopeBytes,
  CORRUPT_DIR,
  decodeCommitEnvelope,
  decodeCommitMeta,
  encodeChunkPrefix,
  encodeCommit,
  encodeDone,
  encodeState,
  HEADER_BYTES,
  internState,
  PENDING,
  RecordType,
  SEGMENTS_DIR,
  segmentFileName,
  type ChunkRef,
} from './spool-format.js';
import { acquireSpoolLock } from './spool-lock.js';
import { SpoolLog, syncDir } from './spool-log.js';
import { recoverSpool, type IndexEntry, type RecoveryReport } from './spool-recovery.js';

export { SpoolError, toSpoolError, type SpoolErrorCode } from './spool-errors.js';
export type { RecoveryReport } from './spool-recovery.js';

export interface SpoolLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface SpoolOptions {
  dir: string;
  /** A segment file is closed and a new one started once it would grow past this size. */
  segmentBytes: number;
  /** fdatasync before acknowledging. Only a benchmark of the protocol alone turns this off. */
  fsync: boolean;
  now?: () => number;
  logger?: SpoolLogger;
  /**
   * Compaction is considered once this many full segments exist and less than half of their
   * bytes belong to live messages; it then moves the live messages out of the oldest one.
   * Default 4.
   */
  compactAfterSegments?: number;
  /** Called after each fdatasync of the log (tests and benchmarks count them). */
  onSync?: () => void;
}

export interface SpooledMessageSummary {
  qid: string;
  receivedAt: number;
  size: number;
  states: RecipientState[];
}

export interface StoredMessage {
  qid: string;
  envelope: Envelope;
  states: RecipientState[];
  size: number;
}

export interface MessageWriter {
  readonly qid: string;
  /**
   * Appends body bytes (already decoded). Resolves when they are buffered or handed to the
   * kernel; callers await it for backpressure. Small writes are copied and gathered into
   * records of up to 64 KiB.
   */
  write(chunk: Buffer): Promise<void>;
  /** Bytes written so far. */
  readonly size: number;
  /**
   * Writes the COMMIT record and resolves once it is durable. States start as pending, one per
   * envelope recipient. After it resolves the message is live and onCommitted listeners ran.
   */
  commit(envelope: Envelope): Promise<void>;
  /** Forgets the message (refused midway, disconnect). Its chunks become garbage. */
  abort(): void;
}

/** Body bytes gathered per CHUNK record. */
const CHUNK_TARGET_BYTES = 64 * 1024;
const DEFAULT_COMPACT_AFTER_SEGMENTS = 4;

/** Counts holders per segment: a segment at or after the smallest held one must not be deleted. */
class Pins {
  readonly #counts = new Map<number, number>();

  add(segment: number): void {
    this.#counts.set(segment, (this.#counts.get(segment) ?? 0) + 1);
  }

  remove(segment: number): void {
    const n = (this.#counts.get(segment) ?? 0) - 1;
    if (n > 0) this.#counts.set(segment, n);
    else this.#counts.delete(segment);
  }

  /** The oldest pinned segment, Infinity when none. */
  min(): number {
    let m = Infinity;
    for (const s of this.#counts.keys()) if (s < m) m = s;
    return m;
  }
}

/** What a MessageWriter needs from its spool. */
interface WriterHost {
  readonly log: SpoolLog;
  readonly pins: Pins;
  isClosed(): boolean;
  /** Makes the committed message live; the entry takes over the writer's pin. */
  adopt(entry: IndexEntry): void;
}

class SpoolMessageWriter implements MessageWriter {
  readonly qid: string;
  readonly #host: WriterHost;
  readonly #tag: Buffer;
  #size = 0;
  #parts: Buffer[] = [];
  #partsBytes = 0;
  readonly #chunks: ChunkRef[] = [];
  readonly #outstanding = new Set<Promise<void>>();
  #state: 'open' | 'committing' | 'committed' | 'aborted' = 'open';
  /** write() calls in progress: commit() must not start under one. */
  #writing = 0;
  #error: SpoolError | null = null;
  #pin: number | null = null;

  constructor(qid: string, tag: number, host: WriterHost) {
    this.qid = qid;
    this.#tag = encodeChunkPrefix(tag);
    this.#host = host;
  }

  get size(): number {
    return this.#size;
  }

  async write(chunk: Buffer): Promise<void> {
    this.#checkOpen();
    this.#writing++;
    try {
      let off = 0;
      while (off < chunk.length) {
        if (this.#state !== 'open') throw new SpoolError('CLOSED', `message ${this.qid} was aborted`);
        const take = Math.min(chunk.length - off, CHUNK_TARGET_BYTES - this.#partsBytes);
        // A copy: the caller may reuse its buffer as soon as this resolves.
        this.#parts.push(Buffer.from(chunk.subarray(off, off + take)));
        this.#partsBytes += take;
        this.#size += take;
        off += take;
        if (this.#partsBytes >= CHUNK_TARGET_BYTES) await this.#flush();
      }
    } finally {
      this.#writing--;
    }
  }

  async commit(envelope: Envelope): Promise<void> {
    this.#checkOpen();
    if (this.#writing > 0) throw new Error(`message ${this.qid}: commit() called before write() resolved`);
    this.#state = 'committing';
    const log = this.#host.log;
    try {
      if (this.#outstanding.size > 0) await Promise.all(this.#outstanding);
      // From here to append() nothing awaits: the last chunk and the COMMIT are queued
      // together, so a failed write of the chunk also rejects the COMMIT behind it.
      if (this.#partsBytes > 0) void this.#flush();
      const meta = {
        qid: this.qid,
        size: this.#size,
        receivedAt: envelope.receivedAt,
        states: envelope.recipients.map(() => PENDING),
        chunks: this.#chunks,
      };
      const payload = encodeCommit(meta, Buffer.from(JSON.stringify(envelope)));
      const rec = log.append(RecordType.Commit, [payload]);
      if (this.#pin === null) {
        this.#pin = rec.segment;
        this.#host.pins.add(rec.segment);
      }
      await Promise.all([...this.#outstanding, rec.written, log.durable(rec.seq)]);
      this.#state = 'committed';
      this.#host.adopt({
        qid: this.qid,
        receivedAt: envelope.receivedAt,
        size: this.#size,
        segment: rec.segment,
        offset: rec.offset,
        length: HEADER_BYTES + payload.length,
        pin: this.#pin,
        states: meta.states,
        damaged: null,
      });
    } catch (err) {
      this.#state = 'aborted';
      this.#unpin();
      throw toSpoolError(err, `committing message ${this.qid}`);
    }
  }

  abort(): void {
    if (this.#state !== 'open') return;
    this.#state = 'aborted';
    this.#parts = [];
    this.#partsBytes = 0;
    this.#unpin();
  }

  #checkOpen(): void {
    if (this.#error) throw this.#error;
    if (this.#state !== 'open')
      throw new SpoolError('CLOSED', `message ${this.qid} was already committed or aborted`);
    if (this.#host.isClosed()) throw new SpoolError('CLOSED', 'the spool is closed');
  }

  #unpin(): void {
    if (this.#pin !== null) this.#host.pins.remove(this.#pin);
    this.#pin = null;
  }

  /** Queues the gathered bytes as one CHUNK record; resolves when written. */
  #flush(): Promise<void> {
    const parts = this.#parts;
    const bytes = this.#partsBytes;
    this.#parts = [];
    this.#partsBytes = 0;
    let rec;
    try {
      rec = this.#host.log.append(RecordType.Chunk, [this.#tag, ...parts]);
    } catch (err) {
      this.#error = toSpoolError(err, `writing message ${this.qid}`);
      return Promise.reject(this.#error);
    }
    if (this.#pin === null) {
      this.#pin = rec.segment;
      this.#host.pins.add(rec.segment);
    }
    this.#chunks.push([rec.segment, rec.offset, bytes]);
    const p = rec.written.then(
      () => {
        this.#outstanding.delete(p);
      },
      (err: unknown) => {
        this.#outstanding.delete(p);
        this.#error = toSpoolError(err, `writing message ${this.qid}`);
        throw this.#error;
      },
    );
    p.catch(() => undefined);
    this.#outstanding.add(p);
    return p;
  }
}

export class Spool {
  readonly #segDir: string;
  readonly #opts: SpoolOptions;
  readonly #now: () => number;
  readonly #log: SpoolLog;
  readonly #index: Map<string, IndexEntry>;
  readonly #segments: number[];
  readonly #pins = new Pins();
  readonly #listeners = new Set<(qid: string) => void>();
  readonly #release: () => Promise<void>;
  readonly #host: WriterHost;
  #liveBytes = 0;
  #tag = 0;
  #closed = false;
  #chain: Promise<unknown> = Promise.resolve();
  #maintenanceQueued = false;
  /**
   * Read handles by segment, shared by concurrent readers so a delivery does not open and close
   * a segment for its envelope and again for its body. At most MAX_READ_HANDLES stay open
   * while unused (least recently used closed first); a deleted segment's handle is closed.
   */
  readonly #readers = new Map<number, SegmentReader>();

  private constructor(
    opts: SpoolOptions,
    log: SpoolLog,
    index: Map<string, IndexEntry>,
    segments: number[],
    release: () => Promise<void>,
  ) {
    this.#segDir = join(opts.dir, SEGMENTS_DIR);
    this.#opts = opts;
    this.#now = opts.now ?? Date.now;
    this.#log = log;
    this.#index = index;
    this.#segments = segments;
    this.#release = release;
    for (const e of index.values()) {
      this.#pins.add(e.pin);
      this.#liveBytes += e.size + e.length;
    }
    this.#host = {
      log,
      pins: this.#pins,
      isClosed: () => this.#closed,
      adopt: (entry) => {
        this.#index.set(entry.qid, entry);
        this.#liveBytes += entry.size + entry.length;
        for (const fn of this.#listeners) {
          try {
            fn(entry.qid);
          } catch (err) {
            this.#opts.logger?.error({ qid: entry.qid, err }, 'spool: a committed-message listener threw');
          }
        }
      },
    };
  }

  /** Opens (creating if needed) the spool in opts.dir, recovering what a crash left. */
  static async open(opts: SpoolOptions): Promise<{ spool: Spool; report: RecoveryReport }> {
    if (!(opts.segmentBytes > 0)) throw new RangeError('segmentBytes must be positive');
    const now = opts.now ?? Date.now;
    const segDir = join(opts.dir, SEGMENTS_DIR);
    try {
      await mkdir(segDir, { recursive: true });
      await mkdir(join(opts.dir, CORRUPT_DIR), { recursive: true });
      if (opts.fsync) await syncDir(opts.dir);
    } catch (err) {
      throw toSpoolError(err, `creating the spool directory ${opts.dir}`);
    }
    const release = await acquireSpoolLock(opts.dir);
    try {
      const rec = await recoverSpool(opts.dir, now, opts.logger);
      noteQueueId(rec.newestQid);
      const segments = rec.segments;
      const holder: { spool: Spool | null } = { spool: null };
      const log = await SpoolLog.create(segDir, rec.nextSegment, {
        segmentBytes: opts.segmentBytes,
        fsync: opts.fsync,
        now,
        onSync: opts.onSync,
        onSegmentCreated: (s) => {
          segments.push(s);
          if (holder.spool) holder.spool.#maybeMaintain();
        },
      });
      const spool = new Spool(opts, log, rec.entries, segments, release);
      holder.spool = spool;
      opts.logger?.info({ dir: opts.dir, ...rec.report, corrupt: rec.report.corrupt.length }, 'spool opened');
      await spool.#exclusive(() => spool.#deleteDeadSegments());
      return { spool, report: rec.report };
    } catch (err) {
      await release();
      throw toSpoolError(err, `opening the spool ${opts.dir}`);
    }
  }

  /** Starts receiving a message. The queue id is assigned here. */
  begin(): MessageWriter {
    if (this.#closed) throw new SpoolError('CLOSED', 'the spool is closed');
    this.#tag = (this.#tag + 1) >>> 0;
    return new SpoolMessageWriter(newQueueId(this.#now()), this.#tag, this.#host);
  }

  /** Live messages, oldest first (queue ids sort by arrival). */
  list(): SpooledMessageSummary[] {
    const out: SpooledMessageSummary[] = [];
    for (const e of this.#index.values()) {
      out.push({ qid: e.qid, receivedAt: e.receivedAt, size: e.size, states: [...e.states] });
    }
    return out.sort((a, b) => (a.qid < b.qid ? -1 : a.qid > b.qid ? 1 : 0));
  }

  /** Number of live messages. */
  get size(): number {
    return this.#index.size;
  }

  /** The envelope (read from disk) and current states of a live message. */
  async read(qid: string): Promise<StoredMessage> {
    const e = this.#entry(qid);
    const { segment, offset, length, pin } = e;
    this.#pins.add(pin);
    try {
      const payload = await this.#readRecord(segment, offset, length, [
        RecordType.Commit,
        RecordType.Relocate,
      ]);
      let envelope: Envelope;
      try {
        envelope = decodeCommitEnvelope(payload);
      } catch (err) {
        throw new SpoolError('CORRUPT', `message ${qid}: ${errText(err)}`, { cause: err });
      }
      return { qid, envelope, states: [...e.states], size: e.size };
    } finally {
      this.#unpinReader(pin);
    }
  }

  /**
   * Streams the body from disk, at most 64 KiB per piece for bodies written in small pieces.
   * Fails on first iteration with NOT_FOUND, or CORRUPT when the body is damaged.
   */
  openBody(qid: string): AsyncIterable<Buffer> {
    return this.#body(qid);
  }

  /** Records recipient state changes; resolves when durable. */
  async update(qid: string, updates: { index: number; state: RecipientState }[]): Promise<void> {
    const e = this.#entry(qid);
    const states = [...e.states];
    for (const u of updates) {
      if (!Number.isInteger(u.index) || u.index < 0 || u.index >= states.length) {
        throw new RangeError(`message ${qid} has no recipient number ${u.index}`);
      }
      states[u.index] = internState(u.state);
    }
    const rec = this.#log.append(RecordType.State, [encodeState(qid, updates)]);
    e.states = states;
    await Promise.all([rec.written, this.#log.durable(rec.seq)]);
  }

  /** Marks the message finished (all recipients final); resolves when durable (unless durable: false). */
  async done(qid: string, opts: { durable?: boolean } = {}): Promise<void> {
    const e = this.#entry(qid);
    const rec = this.#log.append(RecordType.Done, [encodeDone(qid)]);
    this.#index.delete(qid);
    this.#pins.remove(e.pin);
    this.#liveBytes -= e.size + e.length;
    // durable: false lets the record ride on the next sync anyone asks for (a commit, usually)
    // instead of forcing one of its own. Safe when redoing the work after a crash is harmless:
    // local delivery finds its Maildir copy, a discard discards again.
    await (opts.durable === false ? rec.written : Promise.all([rec.written, this.#log.durable(rec.seq)]));
    this.#maybeMaintain();
  }

  /** Calls fn(qid) after each durable commit. Returns the function that unsubscribes. */
  onCommitted(fn: (qid: string) => void): () => void {
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }

  /**
   * Moves the live messages out of the oldest segment still in use into the current one, then
   * deletes the segments nothing needs any more. Runs automatically (see compactAfterSegments).
   */
  compact(): Promise<{ relocated: number; deletedSegments: number }> {
    if (this.#closed) return Promise.reject(new SpoolError('CLOSED', 'the spool is closed'));
    return this.#exclusive(async () => {
      const relocated = await this.#compactOldest();
      const deletedSegments = await this.#deleteDeadSegments();
      return { relocated, deletedSegments };
    });
  }

  /** Waits for pending writes and syncs, closes the files and releases the lock. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    try {
      await this.#chain;
      for (const segment of [...this.#readers.keys()]) this.#dropReader(segment);
      await this.#log.close();
    } finally {
      await this.#release();
    }
  }

  // --- internals ----------------------------------------------------------------------------

  #entry(qid: string): IndexEntry {
    if (this.#closed) throw new SpoolError('CLOSED', 'the spool is closed');
    const e = this.#index.get(qid);
    if (!e) throw new SpoolError('NOT_FOUND', `no live message ${qid} in the spool`);
    return e;
  }

  #segmentPath(segment: number): string {
    return join(this.#segDir, segmentFileName(segment));
  }

  async #readRecord(
    segment: number,
    offset: number,
    length: number,
    types: readonly RecordType[],
  ): Promise<Buffer> {
    const buf = Buffer.allocUnsafe(length);
    const reader = this.#reader(segment);
    try {
      const file = await reader.fh;
      let done = 0;
      while (done < length) {
        const { bytesRead } = await file.read(buf, done, length - done, offset + done);
        if (bytesRead === 0) break;
        done += bytesRead;
      }
      if (done < length) {
        throw new SpoolError(
          'CORRUPT',
          `${segmentFileName(segment)} ends before the record at offset ${offset}`,
        );
      }
    } catch (err) {
      throw toSpoolError(err, `reading ${segmentFileName(segment)}`);
    } finally {
      this.#doneReading(segment, reader);
    }
    try {
      return checkRecord(buf, types);
    } catch (err) {
      throw new SpoolError('CORRUPT', `${segmentFileName(segment)} offset ${offset}: ${errText(err)}`, {
        cause: err,
      });
    }
  }

  async #openSegment(segment: number): Promise<FileHandle> {
    try {
      return await open(this.#segmentPath(segment), 'r');
    } catch (err) {
      if (isErrno(err, 'ENOENT')) {
        throw new SpoolError('CORRUPT', `segment ${segmentFileName(segment)} is missing`, { cause: err });
      }
      throw toSpoolError(err, `opening ${segmentFileName(segment)}`);
    }
  }

  async *#body(qid: string): AsyncGenerator<Buffer> {
    const e = this.#entry(qid);
    if (e.damaged) throw new SpoolError('CORRUPT', `message ${qid}: ${e.damaged}`);
    const { segment, offset, length, pin, size } = e;
    this.#pins.add(pin);
    try {
      const payload = await this.#readRecord(segment, offset, length, [
        RecordType.Commit,
        RecordType.Relocate,
      ]);
      const chunks = decodeCommitMeta(payload).chunks;
      let total = 0;
      for await (const piece of this.#readChunks(chunks)) {
        total += piece.length;
        yield piece;
      }
      if (total !== size)
        throw new SpoolError('CORRUPT', `message ${qid}: body has ${total} bytes, expected ${size}`);
    } finally {
      this.#unpinReader(pin);
    }
  }

  async *#readChunks(chunks: readonly ChunkRef[]): AsyncGenerator<Buffer> {
    for (const [segment, offset, length] of chunks) {
      const payload = await this.#readRecord(segment, offset, HEADER_BYTES + CHUNK_PREFIX_BYTES + length, [
        RecordType.Chunk,
      ]);
      yield payload.subarray(CHUNK_PREFIX_BYTES);
    }
  }

  /** The shared read handle of a segment, opened on first use; pair with #doneReading. */
  #reader(segment: number): SegmentReader {
    let r = this.#readers.get(segment);
    if (r === undefined) {
      const opened = this.#openSegment(segment);
      r = { fh: opened, users: 0, dropped: false };
      const entry = r;
      // A failed open is not kept: the next reader tries again (and reports its own error).
      opened.catch(() => {
        if (this.#readers.get(segment) === entry) this.#readers.delete(segment);
      });
    } else {
      this.#readers.delete(segment); // re-inserted below: most recently used last
    }
    this.#readers.set(segment, r);
    r.users++;
    return r;
  }

  /** Ends one use of a read handle; closes the unused ones beyond the limit, and dropped ones. */
  #doneReading(segment: number, r: SegmentReader): void {
    r.users--;
    if (r.dropped && r.users === 0) closeReader(r);
    for (const [seg, other] of this.#readers) {
      if (this.#readers.size <= MAX_READ_HANDLES) break;
      if (other.users > 0 || seg === segment) continue;
      this.#readers.delete(seg);
      closeReader(other);
    }
  }

  /** Forgets a segment's read handle (the segment is deleted): closed now, or by its last user. */
  #dropReader(segment: number): void {
    const r = this.#readers.get(segment);
    if (r === undefined) return;
    this.#readers.delete(segment);
    r.dropped = true;
    if (r.users === 0) closeReader(r);
  }

  #unpinReader(pin: number): void {
    this.#pins.remove(pin);
    this.#maybeMaintain();
  }

  /** Runs `fn` after every earlier maintenance task, one at a time. */
  #exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#chain.then(fn);
    this.#chain = run.catch(() => undefined);
    return run;
  }

  /** Segments older than this hold nothing anyone needs. */
  #deletableBound(): number {
    return Math.min(this.#pins.min(), this.#log.writeSegment);
  }

  #maybeMaintain(): void {
    if (this.#closed || this.#maintenanceQueued) return;
    const oldest = this.#segments[0];
    if (!(oldest !== undefined && oldest < this.#deletableBound()) && !this.#shouldCompact()) return;
    this.#maintenanceQueued = true;
    this.#exclusive(async () => {
      this.#maintenanceQueued = false;
      if (this.#closed) return;
      await this.#deleteDeadSegments();
      if (this.#shouldCompact()) {
        await this.#compactOldest();
        await this.#deleteDeadSegments();
      }
    }).catch((err: unknown) => {
      this.#opts.logger?.error({ err }, 'spool maintenance failed');
    });
  }

  #shouldCompact(): boolean {
    const threshold = this.#opts.compactAfterSegments ?? DEFAULT_COMPACT_AFTER_SEGMENTS;
    const writing = this.#log.writeSegment;
    const full = this.#segments.filter((s) => s < writing).length;
    if (full < threshold) return false;
    if (this.#pins.min() >= writing) return false;
    // Mostly live data: moving it would only rewrite it. Deleting needs it done first.
    return this.#liveBytes * 2 < full * this.#opts.segmentBytes;
  }

  /** Deletes, oldest first, the segments that no live message, writer or reader needs. */
  async #deleteDeadSegments(): Promise<number> {
    const before = this.#deletableBound();
    const oldest = this.#segments[0];
    if (oldest === undefined || oldest >= before) return 0;
    // Make every DONE and RELOCATE appended so far durable before removing what they replace.
    await this.#log.flush();
    const bound = Math.min(before, this.#deletableBound());
    const deleted: number[] = [];
    while (this.#segments.length > 0 && this.#segments[0]! < bound) {
      const s = this.#segments[0]!;
      this.#dropReader(s);
      try {
        await unlink(this.#segmentPath(s));
      } catch (err) {
        if (!isErrno(err, 'ENOENT')) {
          this.#opts.logger?.error(
            { err, segment: segmentFileName(s) },
            'spool: could not delete a finished segment',
          );
          break;
        }
      }
      this.#segments.shift();
      deleted.push(s);
    }
    if (deleted.length > 0) {
      if (this.#opts.fsync) await syncDir(this.#segDir);
      this.#opts.logger?.info({ segments: deleted.map(segmentFileName) }, 'spool: deleted finished segments');
    }
    return deleted.length;
  }

  /** Relocates every live message pinning the oldest pinned segment. Returns how many moved. */
  async #compactOldest(): Promise<number> {
    const target = this.#pins.min();
    if (target >= this.#log.writeSegment) return 0;
    const victims = [...this.#index.values()].filter((e) => e.pin <= target && !e.damaged);
    let moved = 0;
    for (const e of victims) {
      if (this.#closed) break;
      if (await this.#relocate(e)) moved++;
    }
    if (moved > 0) {
      this.#opts.logger?.info(
        { segment: segmentFileName(target), messages: moved },
        'spool: relocated live messages',
      );
    }
    return moved;
  }

  /** Copies one live message (body, envelope, current states) to the end of the log. */
  async #relocate(e: IndexEntry): Promise<boolean> {
    const log = this.#log;
    const payload = await this.#readRecord(e.segment, e.offset, e.length, [
      RecordType.Commit,
      RecordType.Relocate,
    ]);
    const meta = decodeCommitMeta(payload);
    const envelopeBytes = commitEnvelopeBytes(payload);
    this.#tag = (this.#tag + 1) >>> 0;
    const tag = encodeChunkPrefix(this.#tag);
    const chunks: ChunkRef[] = [];
    let first: number | null = null;
    for await (const piece of this.#readChunks(meta.chunks)) {
      const rec = log.append(RecordType.Chunk, [tag, piece]);
      first ??= rec.segment;
      chunks.push([rec.segment, rec.offset, piece.length]);
      await rec.written;
    }
    // Done or replaced meanwhile: the copied chunks are garbage, nothing else to undo.
    if (this.#index.get(e.qid) !== e) return false;
    const body = encodeCommit(
      { qid: e.qid, size: e.size, receivedAt: e.receivedAt, states: e.states, chunks },
      envelopeBytes,
    );
    const rec = log.append(RecordType.Relocate, [body]);
    await Promise.all([rec.written, log.durable(rec.seq)]);
    if (this.#index.get(e.qid) !== e) return false;
    // Durable now: point the index at the copy; the old segment may then be deleted.
    this.#pins.remove(e.pin);
    this.#liveBytes -= e.length;
    e.segment = rec.segment;
    e.offset = rec.offset;
    e.length = HEADER_BYTES + body.length;
    e.pin = first ?? rec.segment;
    this.#liveBytes += e.length;
    this.#pins.add(e.pin);
    return true;
  }
}

function isErrno(err: unknown, code: string): boolean {
  return typeof err === 'object' && err !== null && 'code' in err && err.code === code;
}

function errText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Read handles kept open while unused, across segments. */
const MAX_READ_HANDLES = 16;

/** A segment's shared read handle and how many reads use it now. */
interface SegmentReader {
  fh: Promise<FileHandle>;
  users: number;
  /** The segment was deleted (or the spool closed): close once the last user is done. */
  dropped: boolean;
}

function closeReader(r: SegmentReader): void {
  r.fh.then((fh) => fh.close()).catch(() => undefined);
}
