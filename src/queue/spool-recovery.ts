/**
 * Spool recovery: rebuilds the index of live messages by scanning every segment in order.
 *
 * - Each record's header and CRC are checked. Later records win: STATE changes a message's
 *   recipient states, DONE removes it, a COMMIT or RELOCATE with a known qid replaces its
 *   location and states. CHUNKs no COMMIT names (a message never acknowledged) are ignored.
 * - A segment's HEADER record (offset 0, plain framing) gives its format and, in format 2, the
 *   salt every other record of it is framed with; format-1 segments (no salt) are still read.
 *   A segment whose HEADER is unreadable has no record that can be trusted.
 * - Damage at the end of the LAST segment (a record torn by a crash) is cut off; the removed
 *   bytes are saved in corrupt/ first. Damage anywhere else is skipped: the scan searches the
 *   next valid record (the segment's mark + a CRC seeded with its salt) and goes on, so records
 *   after the damage are recovered; the segment stays in use and a copy is saved in corrupt/
 *   for inspection. A segment without a single valid record is moved to corrupt/. Bytes of a
 *   message body cannot pass for a record in a format-2 segment: they do not know the salt.
 * - A segment in a format newer than this version knows stops the start (fail closed).
 * - A live message whose body lies (partly) in damaged bytes or in a missing segment is kept
 *   and flagged: read() still returns its envelope, openBody() fails with CORRUPT, so the queue
 *   manager can bounce it. Every such case is in the report; nothing is dropped silently.
 * Trust level: reads files that only Sterna writes, but treats them as possibly damaged.
 */
import { copyFile, open, readdir, rename, truncate, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { RecipientState } from '../message/envelope.js';
import { errText, SpoolError } from './spool-errors.js';
import { syncDir } from './spool-log.js';
import {
  CHUNK_PREFIX_BYTES,
  CORRUPT_DIR,
  crcMatches,
  decodeCommitMeta,
  decodeDone,
  decodeHeaderPayload,
  decodeState,
  HEADER_BYTES,
  internState,
  parseHeader,
  parseSegmentFileName,
  PLAIN_FRAMING,
  RecordType,
  recordTypeName,
  SEGMENTS_DIR,
  segmentFileName,
  UnknownFormatError,
  type ChunkRef,
  type Framing,
} from './spool-format.js';

export interface RecoveryReport {
  /** Live messages found. */
  messages: number;
  /** Segment files kept in use. */
  segments: number;
  /** Bytes cut from the end of the last segment (a record torn by a crash). */
  truncatedBytes: number;
  /** Every damage found, with what was done about it. */
  corrupt: { file: string; reason: string }[];
}

/** What the spool keeps in memory per live message. */
export interface IndexEntry {
  qid: string;
  receivedAt: number;
  size: number;
  /** Location of the COMMIT or RELOCATE record (segment, offset, total record length). */
  segment: number;
  offset: number;
  length: number;
  /** Oldest segment holding any of this message's records: it and later ones must stay. */
  pin: number;
  states: RecipientState[];
  /** Why the body cannot be read, when recovery found it damaged. */
  damaged: string | null;
}

export interface RecoveryResult {
  entries: Map<string, IndexEntry>;
  /** Segments kept, ascending. */
  segments: number[];
  /** How the records of each kept segment are framed (from its HEADER). */
  framings: Map<number, Framing>;
  /** Number for the next segment file. */
  nextSegment: number;
  /** Greatest queue id seen, '' if none. */
  newestQid: string;
  report: RecoveryReport;
}

export interface RecoveryLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

const WINDOW_BYTES = 4 * 1024 * 1024;

/** Reads a file through a window, so scanning a large segment needs bounded memory. */
class SegmentReader {
  readonly #fh: FileHandle;
  readonly size: number;
  #buf: Buffer = Buffer.alloc(0);
  #start = 0;

  constructor(fh: FileHandle, size: number) {
    this.#fh = fh;
    this.size = size;
  }

  /** Bytes [pos, pos+n), or null when that passes the end of the file. */
  async view(pos: number, n: number): Promise<Buffer | null> {
    if (pos + n > this.size) return null;
    const rel = pos - this.#start;
    if (rel >= 0 && rel + n <= this.#buf.length) return this.#buf.subarray(rel, rel + n);
    const len = Math.min(Math.max(WINDOW_BYTES, n), this.size - pos);
    const buf = Buffer.allocUnsafe(len);
    let done = 0;
    while (done < len) {
      const { bytesRead } = await this.#fh.read(buf, done, len - done, pos + done);
      if (bytesRead === 0) throw new Error('file shrank while being scanned');
      done += bytesRead;
    }
    this.#buf = buf;
    this.#start = pos;
    return buf.subarray(0, n);
  }

  /** The valid record of this framing at `pos`, or why there is none. */
  async recordAt(pos: number, framing: Framing): Promise<{ type: number; payload: Buffer } | string> {
    const h = await this.view(pos, HEADER_BYTES);
    if (!h) return 'incomplete record header at the end of the file';
    const parsed = parseHeader(h, 0, framing);
    if (typeof parsed === 'string') return parsed;
    if (pos + HEADER_BYTES + parsed.length > this.size) return 'record extends past the end of the file';
    const rec = await this.view(pos, HEADER_BYTES + parsed.length);
    if (!rec) return 'record extends past the end of the file';
    if (!crcMatches(rec, framing)) return 'CRC mismatch';
    return { type: parsed.type, payload: rec.subarray(HEADER_BYTES) };
  }

  /** Offset of the next valid record of this framing at or after `from`, or the file size. */
  async resync(from: number, framing: Framing): Promise<number> {
    const mark = Buffer.allocUnsafe(4);
    mark.writeUInt32BE(framing.mark, 0);
    let pos = from;
    while (pos + HEADER_BYTES <= this.size) {
      const w = await this.view(pos, Math.min(WINDOW_BYTES, this.size - pos));
      if (!w) break;
      const idx = w.indexOf(mark);
      if (idx < 0) {
        if (w.length <= mark.length) break;
        pos += w.length - (mark.length - 1);
        continue;
      }
      const candidate = pos + idx;
      if (typeof (await this.recordAt(candidate, framing)) !== 'string') return candidate;
      pos = candidate + 1;
    }
    return this.size;
  }
}

interface Damage {
  start: number;
  end: number;
  reason: string;
}

interface SegmentScan {
  size: number;
  records: number;
  damage: Damage[];
  /** From the HEADER record; null when it is unreadable (then records is 0). */
  header: { segment: number; framing: Framing } | null;
}

type RecordHandler = (type: number, payload: Buffer, offset: number) => void;

/**
 * Scans one segment: its HEADER at offset 0 (plain framing) gives the framing of the rest.
 * Throws UnknownFormatError for a segment of a later format.
 */
async function scanSegment(path: string, onRecord: RecordHandler): Promise<SegmentScan> {
  const fh = await open(path, 'r');
  try {
    const { size } = await fh.stat();
    const r = new SegmentReader(fh, size);
    const damage: Damage[] = [];
    const first = await r.recordAt(0, PLAIN_FRAMING);
    let why = typeof first === 'string' ? first : null;
    let header: SegmentScan['header'] = null;
    if (typeof first !== 'string') {
      if (first.type !== RecordType.Header)
        why = `${recordTypeName(first.type)} record where the HEADER belongs`;
      else {
        try {
          header = decodeHeaderPayload(first.payload);
        } catch (err) {
          if (err instanceof UnknownFormatError) throw err;
          why = errText(err);
        }
      }
    }
    if (typeof first === 'string' || header === null) {
      // Without the HEADER the salt is unknown, and no other record of the file can be trusted.
      return {
        size,
        records: 0,
        damage: size > 0 ? [{ start: 0, end: size, reason: `no HEADER record: ${why ?? ''}` }] : [],
        header: null,
      };
    }
    const framing = header.framing;
    let records = 1;
    let pos = HEADER_BYTES + first.payload.length;
    while (pos < size) {
      const rec = await r.recordAt(pos, framing);
      if (typeof rec === 'string') {
        const next = await r.resync(pos + 1, framing);
        damage.push({ start: pos, end: next, reason: rec });
        pos = next;
        continue;
      }
      onRecord(rec.type, rec.payload, pos);
      records++;
      pos += HEADER_BYTES + rec.payload.length;
    }
    return { size, records, damage, header };
  } finally {
    await fh.close();
  }
}

/** Scans the spool under `dir` (segments/ and corrupt/ must exist) and repairs what it must. */
export async function recoverSpool(
  dir: string,
  now: () => number,
  logger?: RecoveryLogger,
): Promise<RecoveryResult> {
  const segDir = join(dir, SEGMENTS_DIR);
  const corruptDir = join(dir, CORRUPT_DIR);
  const report: RecoveryReport = { messages: 0, segments: 0, truncatedBytes: 0, corrupt: [] };
  const problem = (file: string, reason: string): void => {
    report.corrupt.push({ file, reason });
    logger?.warn({ file, reason }, 'spool recovery: damage found');
  };

  const numbers: number[] = [];
  for (const name of await readdir(segDir)) {
    const n = parseSegmentFileName(name);
    if (n === null) problem(join(SEGMENTS_DIR, name), 'not a segment file name; ignored');
    else numbers.push(n);
  }
  numbers.sort((a, b) => a - b);

  const entries = new Map<string, IndexEntry>();
  const chunkRefs = new Map<string, ChunkRef[]>();
  const kept = new Map<number, { validEnd: number; damage: Damage[] }>();
  const framings = new Map<number, Framing>();
  let newestQid = '';
  let dirChanged = false;
  const stamp = now();

  for (const [i, segment] of numbers.entries()) {
    const name = segmentFileName(segment);
    const path = join(segDir, name);
    const rel = join(SEGMENTS_DIR, name);
    const isLast = i === numbers.length - 1;
    const onRecord: RecordHandler = (type, payload, offset) => {
      try {
        applyRecord(type, payload, offset);
      } catch (err) {
        problem(
          rel,
          `${recordTypeName(type)} record at offset ${offset} is malformed (${errText(err)}); ignored`,
        );
      }
    };
    const applyRecord = (type: number, payload: Buffer, offset: number): void => {
      switch (type) {
        case RecordType.Header:
          // The only HEADER Sterna writes is the one at offset 0, read by scanSegment.
          problem(rel, `HEADER record at offset ${offset}, not at the start; ignored`);
          break;
        case RecordType.Commit:
        case RecordType.Relocate: {
          const meta = decodeCommitMeta(payload);
          const length = HEADER_BYTES + payload.length;
          const states = meta.states.map(internState);
          const old = entries.get(meta.qid);
          if (old) {
            Object.assign(old, {
              size: meta.size,
              receivedAt: meta.receivedAt,
              segment,
              offset,
              length,
              states,
            });
          } else {
            entries.set(meta.qid, {
              qid: meta.qid,
              receivedAt: meta.receivedAt,
              size: meta.size,
              segment,
              offset,
              length,
              pin: segment,
              states,
              damaged: null,
            });
          }
          chunkRefs.set(meta.qid, meta.chunks);
          if (meta.qid > newestQid) newestQid = meta.qid;
          break;
        }
        case RecordType.State: {
          const s = decodeState(payload);
          const e = entries.get(s.qid);
          if (!e) break;
          for (const u of s.updates) {
            if (Number.isInteger(u.index) && u.index >= 0 && u.index < e.states.length) {
              e.states[u.index] = internState(u.state);
            }
          }
          break;
        }
        case RecordType.Done: {
          const qid = decodeDone(payload);
          entries.delete(qid);
          chunkRefs.delete(qid);
          break;
        }
        default:
          break;
      }
    };
    let scan: SegmentScan;
    try {
      scan = await scanSegment(path, onRecord);
    } catch (err) {
      if (!(err instanceof UnknownFormatError)) throw err;
      // Fail closed: a newer Sterna wrote this spool; guessing at its records could lose mail.
      throw new SpoolError('EIO', `${rel}: ${err.message}; start that version, or move the spool aside`, {
        cause: err,
      });
    }
    if (scan.header && scan.header.segment !== segment) {
      problem(rel, `HEADER names segment ${scan.header.segment}; the file name wins`);
    }

    if (scan.records === 0) {
      if (scan.size === 0) {
        await unlink(path);
      } else if (isLast) {
        await saveTail(path, 0, scan.size, join(corruptDir, `${name}.${stamp}.tail-0`));
        await unlink(path);
        report.truncatedBytes += scan.size;
        logger?.info(
          { file: rel, bytes: scan.size },
          'spool recovery: removed a segment holding only a torn record',
        );
      } else {
        await rename(path, join(corruptDir, `${name}.${stamp}`));
        await syncDir(corruptDir);
        problem(
          rel,
          `no valid record in ${scan.size} bytes (${scan.damage[0]?.reason ?? 'unknown'}); moved to corrupt/`,
        );
      }
      dirChanged = true;
      continue;
    }

    let validEnd = scan.size;
    const tail = scan.damage[scan.damage.length - 1];
    if (isLast && tail && tail.end === scan.size) {
      // A crash tore the last record(s): cut them off, keeping a copy of the bytes removed.
      await saveTail(path, tail.start, scan.size, join(corruptDir, `${name}.${stamp}.tail-${tail.start}`));
      await truncate(path, tail.start);
      const fh = await open(path, 'r+');
      try {
        await fh.sync();
      } finally {
        await fh.close();
      }
      report.truncatedBytes += scan.size - tail.start;
      logger?.info(
        { file: rel, offset: tail.start, bytes: scan.size - tail.start, reason: tail.reason },
        'spool recovery: cut a torn record from the end of the log',
      );
      scan.damage.pop();
      validEnd = tail.start;
    }
    if (scan.damage.length > 0) {
      const copy = `${name}.${stamp}.copy`;
      await copyFile(path, join(corruptDir, copy));
      await syncDir(corruptDir);
      for (const d of scan.damage) {
        problem(
          rel,
          `bytes ${d.start}-${d.end} unreadable (${d.reason}); records before and after them were recovered, a copy of the file is corrupt/${copy}`,
        );
      }
    }
    kept.set(segment, { validEnd, damage: scan.damage });
    if (scan.header) framings.set(segment, scan.header.framing);
  }
  if (dirChanged) await syncDir(segDir);

  // Check that every live message's body is still there, and find the oldest segment it needs.
  for (const e of entries.values()) {
    let pin = e.segment;
    for (const [seg, off, len] of chunkRefs.get(e.qid) ?? []) {
      if (seg < pin) pin = seg;
      if (e.damaged) continue;
      const info = kept.get(seg);
      const end = off + HEADER_BYTES + CHUNK_PREFIX_BYTES + len;
      let why: string | null = null;
      if (!info) why = 'is missing';
      else if (end > info.validEnd) why = 'ends past the valid end of the file';
      else if (info.damage.some((d) => off < d.end && end > d.start)) why = 'lies in unreadable bytes';
      if (why) {
        e.damaged = `body bytes at offset ${off} of segment ${segmentFileName(seg)} ${why}`;
        problem(
          join(SEGMENTS_DIR, segmentFileName(seg)),
          `message ${e.qid}: ${e.damaged}; kept so it can be bounced, its body cannot be read`,
        );
      }
    }
    e.pin = pin;
  }

  const segments = [...kept.keys()].sort((a, b) => a - b);
  report.messages = entries.size;
  report.segments = segments.length;
  return {
    entries,
    segments,
    framings,
    nextSegment: (numbers[numbers.length - 1] ?? 0) + 1,
    newestQid,
    report,
  };
}

/** Copies bytes [start, end) of `path` to `dest` before they are cut off. */
async function saveTail(path: string, start: number, end: number, dest: string): Promise<void> {
  const src = await open(path, 'r');
  try {
    const out = await open(dest, 'wx');
    try {
      const buf = Buffer.allocUnsafe(Math.min(WINDOW_BYTES, end - start));
      for (let pos = start; pos < end;) {
        const n = Math.min(buf.length, end - pos);
        const { bytesRead } = await src.read(buf, 0, n, pos);
        if (bytesRead === 0) break;
        await out.write(buf, 0, bytesRead);
        pos += bytesRead;
      }
      await out.sync();
    } finally {
      await out.close();
    }
  } finally {
    await src.close();
  }
  await syncDir(join(dest, '..'));
}
