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
 * recipient states; envelopes and bodies are read back from disk on demand, but for the bounded
 * caches of COMMIT records (spool-read-cache.ts) and small bodies just committed
 * (spool-recent-bodies.ts).
 *
 * This file is the facade the rest of Sterna uses. The work is done beside it:
 * spool-writer.ts (a message being received), spool-log.ts (the append-only log and group
 * commit), spool-read-cache.ts (reading records back through shared handles),
 * spool-compaction.ts (deleting finished segments, copying live messages forward),
 * spool-recovery.ts (the scan at start-up), spool-format.ts (the bytes on disk),
 * spool-pins.ts (which segments are still needed), spool-lock.ts (one process per spool).
 * Trust level: internal. Bodies are untrusted bytes, stored and returned unchanged.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Envelope, RecipientState } from '../message/envelope.js';
import { newQueueId, noteQueueId } from './ids.js';
import { Compaction } from './spool-compaction.js';
import { errText, SpoolError, toSpoolError } from './spool-errors.js';
import {
  CORRUPT_DIR,
  decodeCommitEnvelope,
  decodeCommitMeta,
  encodeDone,
  encodeState,
  internState,
  RecordType,
  SEGMENTS_DIR,
  type Framing,
} from './spool-format.js';
import { acquireSpoolLock } from './spool-lock.js';
import { SpoolLog, syncDir } from './spool-log.js';
import { Pins } from './spool-pins.js';
import { SegmentReadCache } from './spool-read-cache.js';
import { RecentBodies } from './spool-recent-bodies.js';
import { recoverSpool, type IndexEntry, type RecoveryReport } from './spool-recovery.js';
import { SpoolMessageWriter, type MessageWriter, type WriterHost } from './spool-writer.js';

export { SpoolError, toSpoolError, type SpoolErrorCode } from './spool-errors.js';
export type { RecoveryReport } from './spool-recovery.js';
export type { MessageWriter } from './spool-writer.js';

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
  /** Called after each fdatasync of the log with its duration (metrics; tests and benchmarks count them). */
  onSync?: (seconds: number) => void;
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

const DEFAULT_COMPACT_AFTER_SEGMENTS = 4;

/**
 * A DONE record that did not wait for its sync (`done(qid, { durable: false })`) is durable at
 * most this long after it was written: by the next commit's sync under load, or else by one sync
 * of its own when this timer fires. Until then only a crash of the machine (not of Sterna: the
 * record is in the kernel's page cache) can lose it, and the cost is doing the delivery again.
 */
export const LAZY_DONE_SYNC_MS = 1000;

export class Spool {
  readonly #opts: SpoolOptions;
  readonly #now: () => number;
  readonly #log: SpoolLog;
  readonly #index: Map<string, IndexEntry>;
  readonly #pins = new Pins();
  readonly #reads: SegmentReadCache;
  /** Small bodies just committed, until their message finishes (spool-recent-bodies.ts). */
  readonly #recentBodies = new RecentBodies();
  readonly #compaction: Compaction;
  readonly #listeners = new Set<(qid: string) => void>();
  readonly #release: () => Promise<void>;
  readonly #host: WriterHost;
  #tag = 0;
  #closed = false;
  /** The pending sync for DONE records that did not wait for one (LAZY_DONE_SYNC_MS). */
  #lazySync: NodeJS.Timeout | undefined;

  private constructor(
    opts: SpoolOptions,
    log: SpoolLog,
    index: Map<string, IndexEntry>,
    segments: number[],
    framings: Map<number, Framing>,
    release: () => Promise<void>,
  ) {
    const segDir = join(opts.dir, SEGMENTS_DIR);
    this.#opts = opts;
    this.#now = opts.now ?? Date.now;
    this.#log = log;
    this.#index = index;
    this.#release = release;
    this.#reads = new SegmentReadCache(segDir, framings);
    for (const e of index.values()) this.#pins.add(e.pin);
    this.#compaction = new Compaction(
      {
        segDir,
        segmentBytes: opts.segmentBytes,
        fsync: opts.fsync,
        compactAfterSegments: opts.compactAfterSegments ?? DEFAULT_COMPACT_AFTER_SEGMENTS,
        logger: opts.logger,
        log,
        index,
        pins: this.#pins,
        reads: this.#reads,
        isClosed: () => this.#closed,
        nextTag: () => this.#nextTag(),
      },
      segments,
    );
    this.#host = {
      log,
      readChunks: (chunks) => this.#reads.readChunks(chunks),
      pins: this.#pins,
      isClosed: () => this.#closed,
      adopt: (entry, body, commit) => {
        this.#index.set(entry.qid, entry);
        // Its first delivery reads neither the COMMIT nor the body back through the thread pool.
        this.#reads.rememberCommit(entry.segment, entry.offset, commit);
        if (body !== null) this.#recentBodies.remember(entry.qid, body, entry.size);
        this.#compaction.noteLive(entry);
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
      const { segments, framings } = rec;
      const holder: { spool: Spool | null } = { spool: null };
      const log = await SpoolLog.create(segDir, rec.nextSegment, {
        segmentBytes: opts.segmentBytes,
        fsync: opts.fsync,
        now,
        onSync: opts.onSync,
        onSegmentCreated: (s, framing) => {
          framings.set(s, framing);
          if (holder.spool) holder.spool.#compaction.segmentCreated(s);
          else segments.push(s);
        },
      });
      const spool = new Spool(opts, log, rec.entries, segments, framings, release);
      holder.spool = spool;
      // No "spool opened" line here: the caller has the report (open()'s result) and logs it
      // with what it knows (server/app.ts); one line per spool, not two.
      await spool.#compaction.deleteDeadSegments();
      return { spool, report: rec.report };
    } catch (err) {
      await release();
      throw toSpoolError(err, `opening the spool ${opts.dir}`);
    }
  }

  /** Starts receiving a message. The queue id is assigned here. */
  begin(): MessageWriter {
    if (this.#closed) throw new SpoolError('CLOSED', 'the spool is closed');
    return new SpoolMessageWriter(newQueueId(this.#now()), this.#nextTag(), this.#host);
  }

  /** Live messages, oldest first (queue ids sort by arrival). */
  list(): SpooledMessageSummary[] {
    const out: SpooledMessageSummary[] = [];
    for (const e of this.#index.values()) {
      out.push({ qid: e.qid, receivedAt: e.receivedAt, size: e.size, states: [...e.states] });
    }
    return out.sort((a, b) => (a.qid < b.qid ? -1 : a.qid > b.qid ? 1 : 0));
  }

  /**
   * Live messages, oldest first, without copies: the index's own entries, to be read only
   * (update() replaces a message's states array, never changes it). For scans of the whole
   * queue that must stay cheap at 100,000 messages (admin pages, metrics at each scrape).
   */
  scan(): readonly Readonly<SpooledMessageSummary>[] {
    const out = [...this.#index.values()];
    // The index is in arrival order but for messages relocated or recovered out of order.
    for (let i = 1; i < out.length; i++) {
      if (out[i - 1]!.qid > out[i]!.qid) return out.sort((a, b) => (a.qid < b.qid ? -1 : 1));
    }
    return out;
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
      const payload = await this.#reads.readCommit(segment, offset, length);
      this.#keepCommitIfLive(qid, e, segment, offset);
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

  /**
   * Marks the message finished (all recipients final); resolves when durable. With
   * `durable: false` it resolves once written, and the record becomes durable within
   * LAZY_DONE_SYNC_MS: for work whose repetition after a machine crash is acceptable.
   */
  async done(qid: string, opts: { durable?: boolean } = {}): Promise<void> {
    const e = this.#entry(qid);
    const rec = this.#log.append(RecordType.Done, [encodeDone(qid)]);
    this.#index.delete(qid);
    this.#reads.forgetCommit(e.segment, e.offset);
    this.#recentBodies.forget(qid);
    this.#pins.remove(e.pin);
    this.#compaction.noteGone(e);
    // durable: false lets the record ride on the next sync anyone asks for (a commit, usually)
    // instead of forcing one of its own; #syncSoon bounds the wait when none comes. A crash of
    // Sterna alone loses nothing once the record is written; a crash of the machine before the
    // sync means the work is done again: a local delivery finds its Maildir copy, a discard
    // discards again, a relayed message is sent once more (the caller decides which is
    // acceptable).
    if (opts.durable === false) {
      await rec.written;
      this.#syncSoon();
    } else {
      await Promise.all([rec.written, this.#log.durable(rec.seq)]);
    }
    this.#compaction.maybeMaintain();
  }

  /** Makes everything appended so far durable within LAZY_DONE_SYNC_MS; free if a commit's sync got there first. */
  #syncSoon(): void {
    if (this.#lazySync !== undefined || this.#closed) return;
    this.#lazySync = setTimeout(() => {
      this.#lazySync = undefined;
      // A failed sync fails the log itself, and every later commit reports it.
      if (!this.#closed) this.#log.flush().catch(() => undefined);
    }, LAZY_DONE_SYNC_MS);
    this.#lazySync.unref();
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
    return this.#compaction.compact();
  }

  /** Waits for pending writes and syncs, closes the files and releases the lock. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#lazySync); // close() flushes the log anyway
    try {
      await this.#compaction.idle();
      this.#reads.dropAll();
      this.#recentBodies.clear();
      await this.#log.close();
    } finally {
      await this.#release();
    }
  }

  // --- internals ----------------------------------------------------------------------------

  #nextTag(): number {
    this.#tag = (this.#tag + 1) >>> 0;
    return this.#tag;
  }

  #entry(qid: string): IndexEntry {
    if (this.#closed) throw new SpoolError('CLOSED', 'the spool is closed');
    const e = this.#index.get(qid);
    if (!e) throw new SpoolError('NOT_FOUND', `no live message ${qid} in the spool`);
    return e;
  }

  async *#body(qid: string): AsyncGenerator<Buffer> {
    const e = this.#entry(qid);
    if (e.damaged) throw new SpoolError('CORRUPT', `message ${qid}: ${e.damaged}`);
    const { segment, offset, length, pin, size } = e;
    const kept = this.#recentBodies.get(qid);
    if (kept !== undefined) {
      yield* kept;
      return;
    }
    this.#pins.add(pin);
    try {
      const payload = await this.#reads.readCommit(segment, offset, length);
      this.#keepCommitIfLive(qid, e, segment, offset);
      const chunks = decodeCommitMeta(payload).chunks;
      let total = 0;
      for await (const piece of this.#reads.readChunks(chunks)) {
        total += piece.length;
        yield piece;
      }
      if (total !== size)
        throw new SpoolError('CORRUPT', `message ${qid}: body has ${total} bytes, expected ${size}`);
    } finally {
      this.#unpinReader(pin);
    }
  }

  /** A COMMIT read while its message finished or moved is not kept in the read cache. */
  #keepCommitIfLive(qid: string, e: IndexEntry, segment: number, offset: number): void {
    if (this.#index.get(qid) !== e || e.segment !== segment || e.offset !== offset)
      this.#reads.forgetCommit(segment, offset);
  }

  #unpinReader(pin: number): void {
    this.#pins.remove(pin);
    this.#compaction.maybeMaintain();
  }
}
