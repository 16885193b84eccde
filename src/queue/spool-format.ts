/**
 * The spool's on-disk record format (docs/spool.md describes it for operators).
 *
 * A segment file is a sequence of records. Each record is a 13-byte header followed by its
 * payload; integers are big-endian:
 *
 *   offset 0  u32  mark: the segment's mark (format 2), or the magic 0x5354524E "STRN"
 *   offset 4  u32  CRC-32 (ISO-HDLC, as zlib and gzip) of the segment's salt, then of bytes
 *                  8 .. end of payload (format 2); of bytes 8 .. end of payload alone (format 1)
 *   offset 8  u8   type (RecordType)
 *   offset 9  u32  payload length
 *
 * The first record of every segment is its HEADER, always framed with the magic and a plain
 * CRC-32 so a reader can find it; its JSON payload gives the format, and in format 2 a random
 * 16-byte salt. Every later record of a format-2 segment opens with the salt's first 4 bytes
 * and its CRC is seeded with the whole salt, so a record cannot be forged by content: a
 * message body that embeds bytes shaped like a record does not know the salt (2^-64 per try),
 * and recovery's search for the next record after damage never takes it for one. Format-1
 * segments (written before the salt) are still read with the magic and the plain CRC.
 *
 * The CRC also covers the type and length, so a flipped bit there is detected too; it sits
 * before them so that the bytes it covers are contiguous (one CRC pass per record at recovery).
 * Payloads are JSON (readable with `strings`), except CHUNK: u32 writer tag + raw body bytes.
 * Trust level: the files are written by Sterna only; a record is used only after its CRC checks.
 */
import { randomBytes } from 'node:crypto';
import * as zlib from 'node:zlib';
import type { Envelope, RecipientState } from '../message/envelope.js';
import { legacyOutcome, toOutcome } from '../message/outcome.js';

export const RECORD_MAGIC = 0x5354524e;
export const HEADER_BYTES = 13;
/** A record larger than this is treated as damage when scanning. */
export const MAX_PAYLOAD_BYTES = 256 * 1024 * 1024;
/** CHUNK payload prefix: the writer tag (u32). */
export const CHUNK_PREFIX_BYTES = 4;
/** Version written in every new segment's HEADER record. */
export const FORMAT_VERSION = 2;
/** Bytes of random salt per format-2 segment. */
export const SALT_BYTES = 16;

export const RecordType = {
  Header: 1,
  Chunk: 2,
  Commit: 3,
  State: 4,
  Done: 5,
  Relocate: 6,
} as const;
export type RecordType = (typeof RecordType)[keyof typeof RecordType];

const TYPE_NAMES: Record<number, string> = {
  1: 'HEADER',
  2: 'CHUNK',
  3: 'COMMIT',
  4: 'STATE',
  5: 'DONE',
  6: 'RELOCATE',
};

export function recordTypeName(type: number): string {
  return TYPE_NAMES[type] ?? `unknown(${type})`;
}

export function isRecordType(type: number): type is RecordType {
  return type >= 1 && type <= 6;
}

// --- CRC-32 -------------------------------------------------------------------------------

let crcTable: Uint32Array | undefined;

/** Table-driven CRC-32 for Node releases before 20.15, which lack zlib.crc32. */
export function crc32Portable(data: Uint8Array, prev: number): number {
  if (!crcTable) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let crc = (prev ^ 0xffffffff) >>> 0;
  for (const byte of data) crc = crcTable[(crc ^ byte) & 0xff]! ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

/** CRC-32 of `data`, continuing from `prev` (the CRC of the bytes before it). */
export const crc32: (data: Uint8Array, prev?: number) => number =
  typeof zlib.crc32 === 'function'
    ? (data, prev = 0) => zlib.crc32(data, prev)
    : (data, prev = 0) => crc32Portable(data, prev);

// --- records ------------------------------------------------------------------------------

function totalLength(parts: readonly Buffer[]): number {
  let n = 0;
  for (const p of parts) n += p.length;
  return n;
}

// --- framing: how one segment's records are told apart from other bytes ----------------------

/** How the records of one segment are framed. */
export interface Framing {
  /** The u32 that opens every record. */
  readonly mark: number;
  /** Where every record's CRC-32 starts: the CRC of the segment's salt, 0 for none. */
  readonly seed: number;
}

/** The HEADER record of every segment, and every record of a format-1 segment. */
export const PLAIN_FRAMING: Framing = Object.freeze({ mark: RECORD_MAGIC, seed: 0 });

/** The framing of a format-2 segment: its salt's first 4 bytes as mark, the salt's CRC as seed. */
export function saltedFraming(salt: Buffer): Framing {
  if (salt.length !== SALT_BYTES)
    throw new Error(`a segment salt has ${SALT_BYTES} bytes, not ${salt.length}`);
  return Object.freeze({ mark: salt.readUInt32BE(0), seed: crc32(salt) });
}

/**
 * A fresh random salt for a new segment. Its mark never equals the magic, so in a format-2
 * segment only the HEADER opens with "STRN".
 */
export function newSalt(): Buffer {
  for (;;) {
    const salt = randomBytes(SALT_BYTES);
    if (salt.readUInt32BE(0) !== RECORD_MAGIC) return salt;
  }
}

// --- records ------------------------------------------------------------------------------

/** CRC of a record: the framing's seed, then type and length bytes of the header, then the payload parts. */
export function recordCrc(
  header: Buffer,
  parts: readonly Buffer[],
  framing: Framing = PLAIN_FRAMING,
): number {
  let crc = crc32(header.subarray(8, HEADER_BYTES), framing.seed);
  for (const p of parts) crc = crc32(p, crc);
  return crc;
}

/**
 * The header for a record whose payload is the concatenation of `parts`, framed for its
 * segment (the plain framing is the HEADER record's, and format 1's).
 */
export function encodeHeader(
  type: RecordType,
  parts: readonly Buffer[],
  framing: Framing = PLAIN_FRAMING,
): Buffer {
  const header = Buffer.allocUnsafe(HEADER_BYTES);
  header.writeUInt32BE(framing.mark, 0);
  header.writeUInt8(type, 8);
  header.writeUInt32BE(totalLength(parts), 9);
  header.writeUInt32BE(recordCrc(header, parts, framing), 4);
  return header;
}

export interface RecordHeader {
  type: number;
  length: number;
  crc: number;
}

/** Parses a header; returns a reason string when it cannot be a record header of this framing. */
export function parseHeader(buf: Buffer, at = 0, framing: Framing = PLAIN_FRAMING): RecordHeader | string {
  if (buf.length - at < HEADER_BYTES) return 'incomplete header';
  if (buf.readUInt32BE(at) !== framing.mark) return 'bad magic';
  const type = buf.readUInt8(at + 8);
  if (!isRecordType(type)) return `unknown record type ${type}`;
  const length = buf.readUInt32BE(at + 9);
  if (length > MAX_PAYLOAD_BYTES) return `implausible length ${length}`;
  return { type, length, crc: buf.readUInt32BE(at + 4) };
}

/** True when `record` (a whole record: header and payload) matches the CRC in its header. */
export function crcMatches(record: Buffer, framing: Framing = PLAIN_FRAMING): boolean {
  return crc32(record.subarray(8), framing.seed) === record.readUInt32BE(4);
}

/**
 * Checks a whole record read back from disk (header + payload in one buffer) and returns its
 * payload. Throws a reason string's Error when it is not a valid record of the expected type.
 */
export function checkRecord(
  buf: Buffer,
  expected: RecordType | readonly RecordType[],
  framing: Framing = PLAIN_FRAMING,
): Buffer {
  const h = parseHeader(buf, 0, framing);
  if (typeof h === 'string') throw new Error(h);
  const types: readonly number[] = typeof expected === 'number' ? [expected] : expected;
  if (!types.includes(h.type))
    throw new Error(`expected ${types.map(recordTypeName).join('/')}, found ${recordTypeName(h.type)}`);
  if (buf.length !== HEADER_BYTES + h.length)
    throw new Error(`record length ${h.length} does not match the index`);
  if (!crcMatches(buf, framing)) throw new Error('CRC mismatch');
  return buf.subarray(HEADER_BYTES);
}

// --- payloads -----------------------------------------------------------------------------

/** Where a piece of a message body lies: segment number, record offset, body byte count. */
export type ChunkRef = [segment: number, offset: number, length: number];

/** The part of a COMMIT or RELOCATE payload read at recovery (the envelope is not). */
export interface CommitMeta {
  qid: string;
  size: number;
  receivedAt: number;
  states: RecipientState[];
  chunks: ChunkRef[];
}

export interface StateUpdate {
  index: number;
  state: RecipientState;
}

/** Every state object for 'pending' is this one: 100,000 queued messages share it. */
export const PENDING: RecipientState = Object.freeze({ status: 'pending' });

/** A format-2 HEADER payload: format, segment number, creation time and the salt in hex. */
export function encodeHeaderPayload(segment: number, createdAt: number, salt: Buffer): Buffer {
  return Buffer.from(
    JSON.stringify({ format: FORMAT_VERSION, segment, createdAt, salt: salt.toString('hex') }),
  );
}

export interface SegmentHeader {
  format: number;
  segment: number;
  /** How the segment's other records are framed. */
  framing: Framing;
}

/** Thrown for a segment written in a format this version does not know (a newer Sterna's). */
export class UnknownFormatError extends Error {
  override readonly name = 'UnknownFormatError';
}

/** Decodes a HEADER payload (format 1 or 2). Throws UnknownFormatError for a later format. */
export function decodeHeaderPayload(payload: Buffer): SegmentHeader {
  const v = parseJson(payload);
  if (!isObject(v) || typeof v.format !== 'number' || typeof v.segment !== 'number') {
    throw new Error('malformed HEADER payload');
  }
  switch (v.format) {
    case 1:
      return { format: 1, segment: v.segment, framing: PLAIN_FRAMING };
    case 2: {
      if (typeof v.salt !== 'string' || !/^[0-9a-f]+$/.test(v.salt) || v.salt.length !== SALT_BYTES * 2) {
        throw new Error('malformed HEADER salt');
      }
      return { format: 2, segment: v.segment, framing: saltedFraming(Buffer.from(v.salt, 'hex')) };
    }
    default:
      throw new UnknownFormatError(
        `spool format ${v.format} is newer than this version of Sterna reads (formats 1 and 2)`,
      );
  }
}

export function encodeChunkPrefix(tag: number): Buffer {
  const b = Buffer.allocUnsafe(CHUNK_PREFIX_BYTES);
  b.writeUInt32BE(tag >>> 0, 0);
  return b;
}

/** COMMIT/RELOCATE payload: u32 meta length, meta JSON, envelope JSON (already encoded). */
export function encodeCommit(meta: CommitMeta, envelopeJson: Buffer): Buffer {
  const m = Buffer.from(JSON.stringify(meta));
  const out = Buffer.allocUnsafe(4 + m.length + envelopeJson.length);
  out.writeUInt32BE(m.length, 0);
  m.copy(out, 4);
  envelopeJson.copy(out, 4 + m.length);
  return out;
}

function commitMetaLength(payload: Buffer): number {
  if (payload.length < 4) throw new Error('COMMIT payload too short');
  const n = payload.readUInt32BE(0);
  if (4 + n > payload.length) throw new Error('COMMIT meta length out of range');
  return n;
}

export function decodeCommitMeta(payload: Buffer): CommitMeta {
  const n = commitMetaLength(payload);
  const v = parseJson(payload.subarray(4, 4 + n));
  if (
    !isObject(v) ||
    typeof v.qid !== 'string' ||
    typeof v.size !== 'number' ||
    typeof v.receivedAt !== 'number' ||
    !Array.isArray(v.states) ||
    !Array.isArray(v.chunks)
  ) {
    throw new Error('malformed COMMIT meta');
  }
  const states: RecipientState[] = [];
  for (const s of v.states as unknown[]) states.push(toRecipientState(s));
  const chunks: ChunkRef[] = [];
  for (const c of v.chunks as unknown[]) {
    if (!Array.isArray(c) || c.length !== 3 || !c.every((x) => typeof x === 'number')) {
      throw new Error('malformed chunk reference');
    }
    chunks.push([c[0] as number, c[1] as number, c[2] as number]);
  }
  return { qid: v.qid, size: v.size, receivedAt: v.receivedAt, states, chunks };
}

/** The envelope JSON bytes of a COMMIT/RELOCATE payload (copied as is by relocation). */
export function commitEnvelopeBytes(payload: Buffer): Buffer {
  return payload.subarray(4 + commitMetaLength(payload));
}

export function decodeCommitEnvelope(payload: Buffer): Envelope {
  const v = parseJson(commitEnvelopeBytes(payload));
  if (!isObject(v) || typeof v.sender !== 'string' || !Array.isArray(v.recipients)) {
    throw new Error('malformed envelope');
  }
  // The record passed its CRC and was written by encodeCommit from an Envelope.
  return v as unknown as Envelope;
}

export function encodeState(qid: string, updates: readonly StateUpdate[]): Buffer {
  return Buffer.from(JSON.stringify({ qid, updates }));
}

export function decodeState(payload: Buffer): { qid: string; updates: StateUpdate[] } {
  const v = parseJson(payload);
  if (!isObject(v) || typeof v.qid !== 'string' || !Array.isArray(v.updates)) {
    throw new Error('malformed STATE payload');
  }
  const updates: StateUpdate[] = [];
  for (const u of v.updates as unknown[]) {
    if (!isObject(u) || typeof u.index !== 'number') throw new Error('malformed STATE update');
    updates.push({ index: u.index, state: toRecipientState(u.state) });
  }
  return { qid: v.qid, updates };
}

export function encodeDone(qid: string): Buffer {
  return Buffer.from(JSON.stringify({ qid }));
}

export function decodeDone(payload: Buffer): string {
  const v = parseJson(payload);
  if (!isObject(v) || typeof v.qid !== 'string') throw new Error('malformed DONE payload');
  return v.qid;
}

// --- helpers ------------------------------------------------------------------------------

function parseJson(b: Buffer): unknown {
  return JSON.parse(b.toString('utf8')) as unknown;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function toRecipientState(v: unknown): RecipientState {
  if (!isObject(v)) throw new Error('malformed recipient state');
  switch (v.status) {
    case 'pending':
      return PENDING;
    case 'delivered':
      if (typeof v.at !== 'number') break;
      return typeof v.detail === 'string'
        ? { status: 'delivered', at: v.at, detail: v.detail }
        : { status: 'delivered', at: v.at };
    case 'deferred': {
      // Records from before outcomes were stored hold a "lastError" string: read once here.
      const outcome =
        typeof v.lastError === 'string' && v.outcome === undefined
          ? legacyOutcome(v.lastError)
          : toOutcome(v.outcome);
      if (typeof v.attempts !== 'number' || typeof v.nextAttemptAt !== 'number' || outcome === null) break;
      return {
        status: 'deferred',
        attempts: v.attempts,
        nextAttemptAt: v.nextAttemptAt,
        outcome,
        ...(v.warned === true ? { warned: true as const } : {}),
      };
    }
    case 'failed': {
      // Likewise an "error" string in a record from before outcomes.
      const outcome =
        typeof v.error === 'string' && v.outcome === undefined
          ? legacyOutcome(v.error)
          : toOutcome(v.outcome);
      if (typeof v.at !== 'number' || outcome === null) break;
      return { status: 'failed', at: v.at, outcome };
    }
    default:
      break;
  }
  throw new Error('malformed recipient state');
}

/** Interns 'pending' states so the index does not hold one object per pending recipient. */
export function internState(s: RecipientState): RecipientState {
  return s.status === 'pending' ? PENDING : s;
}

// --- file names ---------------------------------------------------------------------------

export const SEGMENTS_DIR = 'segments';
export const CORRUPT_DIR = 'corrupt';
const SEGMENT_RE = /^(\d{10})\.log$/;

export function segmentFileName(segment: number): string {
  return `${String(segment).padStart(10, '0')}.log`;
}

export function parseSegmentFileName(name: string): number | null {
  const m = SEGMENT_RE.exec(name);
  return m ? Number(m[1]) : null;
}
