/**
 * Reads records back from the spool's segments: a COMMIT (for the envelope and the chunk list)
 * and the CHUNKs of a body, each checked against its CRC before use.
 *
 * Concurrent readers share one read-only handle per segment: a delivery reads its COMMIT (from
 * the cache below after the first time) and its CHUNKs, and opening the file for each read cost
 * more than the read. Each record
 * is checked with the framing (mark, salted CRC) of the segment it lies in. At most
 * MAX_READ_HANDLES stay open while unused (least recently used closed first); a deleted
 * segment's handle is closed once its last reader is done.
 *
 * Live messages' COMMIT records, once read, are kept checked in a bounded cache: a delivery pass
 * reads its message's COMMIT for the envelope and again for the body's chunk list, and a message
 * handed back after waiting for a busy destination reads it once more; each read went through the
 * thread pool. A record never changes where it lies (segments are append-only, their numbers never
 * reused), so an entry is keyed by its place and is never stale. The spool forgets an entry when
 * its message finishes or is relocated. A full cache takes no new entries rather than evicting:
 * deliveries read their messages roughly in the order they first read them, and with more
 * messages than places, least-recently-used eviction would drop each entry just before its reuse.
 * Trust level: internal; the files are Sterna's own but a record is used only after its CRC checks.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { errText, isErrno, SpoolError, toSpoolError } from './spool-errors.js';
import {
  checkRecord,
  CHUNK_PREFIX_BYTES,
  HEADER_BYTES,
  RecordType,
  segmentFileName,
  type ChunkRef,
  type Framing,
} from './spool-format.js';

/** Read handles kept open while unused, across segments. */
const MAX_READ_HANDLES = 16;

/** COMMIT records kept checked in memory, at most this many … */
const MAX_CACHED_COMMITS = 16_384;
/** … and at most this many bytes in all (one record at most a sixteenth of it). */
const MAX_CACHED_COMMIT_BYTES = 16 * 1024 * 1024;

/** A segment's shared read handle and how many reads use it now. */
interface ReadHandle {
  fh: Promise<FileHandle>;
  users: number;
  /** The segment was deleted (or the spool closed): close once the last user is done. */
  dropped: boolean;
}

export class SegmentReadCache {
  readonly #segDir: string;
  /** Read handles by segment, least recently used first. */
  readonly #handles = new Map<number, ReadHandle>();
  /** The framing of every segment in use, from recovery and from the log as it creates them. */
  readonly #framings: Map<number, Framing>;
  /** Checked COMMIT payloads of live messages by place ("segment/offset"). */
  readonly #commits = new Map<string, Buffer>();
  #commitBytes = 0;

  constructor(segDir: string, framings: Map<number, Framing>) {
    this.#segDir = segDir;
    this.#framings = framings;
  }

  /** The payload of the record of one of `types` at `offset` (whole record `length` bytes). */
  async readRecord(
    segment: number,
    offset: number,
    length: number,
    types: readonly RecordType[],
  ): Promise<Buffer> {
    const framing = this.#framings.get(segment);
    if (framing === undefined) {
      throw new SpoolError('CORRUPT', `segment ${segmentFileName(segment)} is missing or unreadable`);
    }
    const buf = Buffer.allocUnsafe(length);
    const handle = this.#acquire(segment);
    try {
      const file = await handle.fh;
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
      this.#release(segment, handle);
    }
    try {
      return checkRecord(buf, types, framing);
    } catch (err) {
      throw new SpoolError('CORRUPT', `${segmentFileName(segment)} offset ${offset}: ${errText(err)}`, {
        cause: err,
      });
    }
  }

  /** The payload of the COMMIT (or RELOCATE) record at `offset`, from the cache once read. */
  async readCommit(segment: number, offset: number, length: number): Promise<Buffer> {
    const key = `${segment}/${offset}`;
    const cached = this.#commits.get(key);
    if (cached !== undefined) return cached;
    const payload = await this.readRecord(segment, offset, length, [RecordType.Commit, RecordType.Relocate]);
    this.rememberCommit(segment, offset, payload);
    return payload;
  }

  /**
   * Keeps the COMMIT payload of a live message at `offset`, if the cache has room: after a read,
   * or as the writer wrote it (the same bytes a read would give once the record is durable).
   */
  rememberCommit(segment: number, offset: number, payload: Buffer): void {
    const key = `${segment}/${offset}`;
    const fits =
      this.#commits.size < MAX_CACHED_COMMITS &&
      payload.length <= MAX_CACHED_COMMIT_BYTES / 16 &&
      this.#commitBytes + payload.length <= MAX_CACHED_COMMIT_BYTES;
    if (fits && !this.#commits.has(key)) {
      this.#commits.set(key, payload);
      this.#commitBytes += payload.length;
    }
  }

  /** The message whose COMMIT lies at `offset` finished or moved: its cached record goes. */
  forgetCommit(segment: number, offset: number): void {
    const key = `${segment}/${offset}`;
    const cached = this.#commits.get(key);
    if (cached === undefined) return;
    this.#commits.delete(key);
    this.#commitBytes -= cached.length;
  }

  /** The body bytes of the CHUNK records `chunks` names, in order. */
  async *readChunks(chunks: readonly ChunkRef[]): AsyncGenerator<Buffer> {
    for (const [segment, offset, length] of chunks) {
      const payload = await this.readRecord(segment, offset, HEADER_BYTES + CHUNK_PREFIX_BYTES + length, [
        RecordType.Chunk,
      ]);
      yield payload.subarray(CHUNK_PREFIX_BYTES);
    }
  }

  /** Forgets a segment (it is deleted): its handle is closed now, or by its last user. */
  drop(segment: number): void {
    this.#framings.delete(segment);
    const r = this.#handles.get(segment);
    if (r === undefined) return;
    this.#handles.delete(segment);
    r.dropped = true;
    if (r.users === 0) closeHandle(r);
  }

  /** Drops every handle and cached record (the spool closes). */
  dropAll(): void {
    for (const segment of [...this.#handles.keys()]) this.drop(segment);
    this.#commits.clear();
    this.#commitBytes = 0;
  }

  async #openSegment(segment: number): Promise<FileHandle> {
    try {
      return await open(join(this.#segDir, segmentFileName(segment)), 'r');
    } catch (err) {
      if (isErrno(err, 'ENOENT')) {
        throw new SpoolError('CORRUPT', `segment ${segmentFileName(segment)} is missing`, { cause: err });
      }
      throw toSpoolError(err, `opening ${segmentFileName(segment)}`);
    }
  }

  /** The shared read handle of a segment, opened on first use; pair with #release. */
  #acquire(segment: number): ReadHandle {
    let r = this.#handles.get(segment);
    if (r === undefined) {
      const opened = this.#openSegment(segment);
      r = { fh: opened, users: 0, dropped: false };
      const entry = r;
      // A failed open is not kept: the next reader tries again (and reports its own error).
      opened.catch(() => {
        if (this.#handles.get(segment) === entry) this.#handles.delete(segment);
      });
    } else {
      this.#handles.delete(segment); // re-inserted below: most recently used last
    }
    this.#handles.set(segment, r);
    r.users++;
    return r;
  }

  /** Ends one use of a read handle; closes the unused ones beyond the limit, and dropped ones. */
  #release(segment: number, r: ReadHandle): void {
    r.users--;
    if (r.dropped && r.users === 0) closeHandle(r);
    for (const [seg, other] of this.#handles) {
      if (this.#handles.size <= MAX_READ_HANDLES) break;
      if (other.users > 0 || seg === segment) continue;
      this.#handles.delete(seg);
      closeHandle(other);
    }
  }
}

function closeHandle(r: ReadHandle): void {
  r.fh.then((fh) => fh.close()).catch(() => undefined);
}
