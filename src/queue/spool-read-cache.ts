/**
 * Reads records back from the spool's segments: a COMMIT (for the envelope and the chunk list)
 * and the CHUNKs of a body, each checked against its CRC before use.
 *
 * Concurrent readers share one read-only handle per segment: a delivery reads its COMMIT twice
 * and its CHUNKs once, and opening the file for each read cost more than the read. Each record
 * is checked with the framing (mark, salted CRC) of the segment it lies in. At most
 * MAX_READ_HANDLES stay open while unused (least recently used closed first); a deleted
 * segment's handle is closed once its last reader is done.
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

  /** Drops every handle (the spool closes). */
  dropAll(): void {
    for (const segment of [...this.#handles.keys()]) this.drop(segment);
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
