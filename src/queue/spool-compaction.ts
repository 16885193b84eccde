/**
 * Keeping the spool small: deletes the segments nothing needs any more, oldest first, and
 * compacts (copies live messages forward out of old segments) when most of the full segments'
 * bytes are dead (docs/spool.md, "Deleting segments and compaction").
 *
 * - A segment is deleted only after an fdatasync made every DONE and RELOCATE appended so far
 *   durable, and strictly oldest first, so a DONE can never disappear while its COMMIT stays.
 * - A relocated message's index entry moves to the copy only once its RELOCATE is durable.
 * - Maintenance tasks run one at a time, after each other, off the request path.
 * Trust level: internal; deletes files only under the spool's segments/ directory.
 */
import { unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { isErrno } from './spool-errors.js';
import {
  commitEnvelopeBytes,
  decodeCommitMeta,
  encodeChunkPrefix,
  encodeCommit,
  HEADER_BYTES,
  RecordType,
  segmentFileName,
  type ChunkRef,
} from './spool-format.js';
import { syncDir, type SpoolLog } from './spool-log.js';
import type { Pins } from './spool-pins.js';
import type { SegmentReadCache } from './spool-read-cache.js';
import type { IndexEntry } from './spool-recovery.js';

export interface CompactionLogger {
  info(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

/** What compaction needs from its spool. */
export interface CompactionHost {
  readonly segDir: string;
  readonly segmentBytes: number;
  readonly fsync: boolean;
  /** Full segments before compaction is considered. */
  readonly compactAfterSegments: number;
  readonly logger: CompactionLogger | undefined;
  readonly log: SpoolLog;
  readonly index: Map<string, IndexEntry>;
  readonly pins: Pins;
  readonly reads: SegmentReadCache;
  isClosed(): boolean;
  /** A fresh writer tag for the CHUNKs of a copy. */
  nextTag(): number;
}

export class Compaction {
  readonly #host: CompactionHost;
  /** Segment files in use, ascending. */
  readonly #segments: number[];
  /** Bytes of live messages (body and COMMIT record), to judge whether compaction pays. */
  #liveBytes = 0;
  #chain: Promise<unknown> = Promise.resolve();
  #maintenanceQueued = false;

  constructor(host: CompactionHost, segments: number[]) {
    this.#host = host;
    this.#segments = segments;
    for (const e of host.index.values()) this.noteLive(e);
  }

  /** A message became live, or was moved (its COMMIT record's size counts). */
  noteLive(e: IndexEntry): void {
    this.#liveBytes += e.size + e.length;
  }

  /** A live message was done. */
  noteGone(e: IndexEntry): void {
    this.#liveBytes -= e.size + e.length;
  }

  /** The log created a segment file. */
  segmentCreated(segment: number): void {
    this.#segments.push(segment);
    this.maybeMaintain();
  }

  /** Relocates the messages holding the oldest segment, then deletes what nothing needs. */
  compact(): Promise<{ relocated: number; deletedSegments: number }> {
    return this.#exclusive(async () => {
      const relocated = await this.#compactOldest();
      const deletedSegments = await this.#deleteDeadSegments();
      return { relocated, deletedSegments };
    });
  }

  /** Deletes the segments nothing needs (after recovery, for instance). */
  deleteDeadSegments(): Promise<number> {
    return this.#exclusive(() => this.#deleteDeadSegments());
  }

  /** Resolves once every queued maintenance task has ended. */
  async idle(): Promise<void> {
    await this.#chain;
  }

  /** Queues a maintenance run when a segment can go or compaction would pay. */
  maybeMaintain(): void {
    if (this.#host.isClosed() || this.#maintenanceQueued) return;
    const oldest = this.#segments[0];
    if (!(oldest !== undefined && oldest < this.#deletableBound()) && !this.#shouldCompact()) return;
    this.#maintenanceQueued = true;
    this.#exclusive(async () => {
      this.#maintenanceQueued = false;
      if (this.#host.isClosed()) return;
      await this.#deleteDeadSegments();
      if (this.#shouldCompact()) {
        await this.#compactOldest();
        await this.#deleteDeadSegments();
      }
    }).catch((err: unknown) => {
      this.#host.logger?.error({ err }, 'spool maintenance failed');
    });
  }

  /** Runs `fn` after every earlier maintenance task, one at a time. */
  #exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#chain.then(fn);
    this.#chain = run.catch(() => undefined);
    return run;
  }

  /** Segments older than this hold nothing anyone needs. */
  #deletableBound(): number {
    return Math.min(this.#host.pins.min(), this.#host.log.writeSegment);
  }

  #shouldCompact(): boolean {
    const writing = this.#host.log.writeSegment;
    const full = this.#segments.filter((s) => s < writing).length;
    if (full < this.#host.compactAfterSegments) return false;
    if (this.#host.pins.min() >= writing) return false;
    // Mostly live data: moving it would only rewrite it. Deleting needs it done first.
    return this.#liveBytes * 2 < full * this.#host.segmentBytes;
  }

  /** Deletes, oldest first, the segments that no live message, writer or reader needs. */
  async #deleteDeadSegments(): Promise<number> {
    const host = this.#host;
    const before = this.#deletableBound();
    const oldest = this.#segments[0];
    if (oldest === undefined || oldest >= before) return 0;
    // Make every DONE and RELOCATE appended so far durable before removing what they replace.
    await host.log.flush();
    const bound = Math.min(before, this.#deletableBound());
    const deleted: number[] = [];
    while (this.#segments.length > 0 && this.#segments[0]! < bound) {
      const s = this.#segments[0]!;
      host.reads.drop(s);
      try {
        await unlink(join(host.segDir, segmentFileName(s)));
      } catch (err) {
        if (!isErrno(err, 'ENOENT')) {
          host.logger?.error(
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
      if (host.fsync) await syncDir(host.segDir);
      host.logger?.info({ segments: deleted.map(segmentFileName) }, 'spool: deleted finished segments');
    }
    return deleted.length;
  }

  /** Relocates every live message pinning the oldest pinned segment. Returns how many moved. */
  async #compactOldest(): Promise<number> {
    const host = this.#host;
    const target = host.pins.min();
    if (target >= host.log.writeSegment) return 0;
    const victims = [...host.index.values()].filter((e) => e.pin <= target && !e.damaged);
    let moved = 0;
    for (const e of victims) {
      if (host.isClosed()) break;
      if (await this.#relocate(e)) moved++;
    }
    if (moved > 0) {
      host.logger?.info(
        { segment: segmentFileName(target), messages: moved },
        'spool: relocated live messages',
      );
    }
    return moved;
  }

  /** Copies one live message (body, envelope, current states) to the end of the log. */
  async #relocate(e: IndexEntry): Promise<boolean> {
    const { log, index, pins, reads } = this.#host;
    const payload = await reads.readRecord(e.segment, e.offset, e.length, [
      RecordType.Commit,
      RecordType.Relocate,
    ]);
    const meta = decodeCommitMeta(payload);
    const envelopeBytes = commitEnvelopeBytes(payload);
    const tag = encodeChunkPrefix(this.#host.nextTag());
    const chunks: ChunkRef[] = [];
    let first: number | null = null;
    for await (const piece of reads.readChunks(meta.chunks)) {
      const rec = log.append(RecordType.Chunk, [tag, piece]);
      first ??= rec.segment;
      chunks.push([rec.segment, rec.offset, piece.length]);
      await rec.written;
    }
    // Done or replaced meanwhile: the copied chunks are garbage, nothing else to undo.
    if (index.get(e.qid) !== e) return false;
    const body = encodeCommit(
      { qid: e.qid, size: e.size, receivedAt: e.receivedAt, states: e.states, chunks },
      envelopeBytes,
    );
    const rec = log.append(RecordType.Relocate, [body]);
    await Promise.all([rec.written, log.durable(rec.seq)]);
    if (index.get(e.qid) !== e) return false;
    // Durable now: point the index at the copy; the old segment may then be deleted.
    pins.remove(e.pin);
    this.#liveBytes -= e.length;
    reads.forgetCommit(e.segment, e.offset);
    e.segment = rec.segment;
    e.offset = rec.offset;
    e.length = HEADER_BYTES + body.length;
    e.pin = first ?? rec.segment;
    this.#liveBytes += e.length;
    pins.add(e.pin);
    return true;
  }
}
