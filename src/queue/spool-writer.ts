/**
 * The spool's message writer: one per message being received. It gathers body bytes into CHUNK
 * records of up to 64 KiB, then queues the last CHUNK and the COMMIT together and resolves once
 * the COMMIT is durable (DESIGN.md rule 3: the session sends 250 only after that).
 * Trust level: internal. Bodies are untrusted bytes, stored unchanged inside CHUNK payloads.
 */
import type { Envelope } from '../message/envelope.js';
import { SpoolError, toSpoolError } from './spool-errors.js';
import {
  encodeChunkPrefix,
  encodeCommit,
  HEADER_BYTES,
  PENDING,
  RecordType,
  type ChunkRef,
} from './spool-format.js';
import type { SpoolLog } from './spool-log.js';
import { MAX_BODY_BYTES } from './spool-recent-bodies.js';
import type { Pins } from './spool-pins.js';
import type { IndexEntry } from './spool-recovery.js';

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
   * prefix: octets known only at the end (the Authentication-Results field, src/mailauth/)
   * that the stored message starts with; see commit() below.
   */
  commit(envelope: Envelope, prefix?: Buffer): Promise<void>;
  /** Forgets the message (refused midway, disconnect). Its chunks become garbage. */
  abort(): void;
  /**
   * The bytes written so far, read back from the spool before the commit (content filters,
   * src/filters/). Gathered bytes are written out first; the list of chunks is taken now, so a
   * restart() after this call does not change what the returned iterable yields.
   */
  readBack(): Promise<AsyncIterable<Buffer>>;
  /**
   * Forgets the bytes written so far (their chunks become garbage, as after abort()); the next
   * writes are the whole message again. A filter's rewrite: the COMMIT lists only the new chunks,
   * so the spool keeps one copy of the message, the final one.
   */
  restart(): void;
}

/** What a MessageWriter needs from its spool. */
export interface WriterHost {
  readonly log: SpoolLog;
  /** The body bytes of CHUNK records, in order (the spool's read cache). */
  readChunks(chunks: readonly ChunkRef[]): AsyncIterable<Buffer>;
  readonly pins: Pins;
  isClosed(): boolean;
  /**
   * Makes the committed message live; the entry takes over the writer's pin. `body`: the whole
   * body as written (in the COMMIT's chunk order) when it was small enough to keep
   * (spool-recent-bodies.ts), else null; `commit`: the COMMIT payload as written.
   */
  adopt(entry: IndexEntry, body: readonly Buffer[] | null, commit: Buffer): void;
}

/** Body bytes gathered per CHUNK record. */
const CHUNK_TARGET_BYTES = 64 * 1024;

export class SpoolMessageWriter implements MessageWriter {
  readonly qid: string;
  readonly #host: WriterHost;
  readonly #tag: Buffer;
  #size = 0;
  #parts: Buffer[] = [];
  #partsBytes = 0;
  readonly #chunks: ChunkRef[] = [];
  /**
   * The parts of each CHUNK in #chunks (parallel to it) while the body is at most
   * MAX_BODY_BYTES, handed to the spool at commit so a delivery need not read them back; null
   * once the body grew past that.
   */
  #kept: Buffer[][] | null = [];
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

  /**
   * A prefix is written as one more CHUNK record after the body and listed FIRST in the COMMIT:
   * a message's body is its chunks in the COMMIT's list order (that was always the rule, and
   * relocation copies them in that order), so every reader (local delivery, outbound, forwarding,
   * DSNs, `sterna queue`) sees the prefix at the top with no change of format or of readers.
   */
  async commit(envelope: Envelope, prefix?: Buffer): Promise<void> {
    this.#checkOpen();
    if (this.#writing > 0) throw new Error(`message ${this.qid}: commit() called before write() resolved`);
    this.#state = 'committing';
    const log = this.#host.log;
    try {
      if (this.#outstanding.size > 0) await Promise.all(this.#outstanding);
      // From here to append() nothing awaits: the last chunk and the COMMIT are queued
      // together, so a failed write of the chunk also rejects the COMMIT behind it.
      if (this.#partsBytes > 0) void this.#flush();
      if (prefix !== undefined && prefix.length > 0) {
        this.#parts = [prefix];
        this.#partsBytes = prefix.length;
        this.#size += prefix.length;
        const before = this.#chunks.length;
        void this.#flush();
        if (this.#error !== null) throw this.#error;
        if (this.#chunks.length === before + 1) {
          this.#chunks.unshift(this.#chunks.pop()!);
          if (this.#kept !== null) this.#kept.unshift(this.#kept.pop()!);
        }
      }
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
      const body = this.#kept === null ? null : this.#kept.flat();
      this.#kept = null;
      this.#host.adopt(
        {
          qid: this.qid,
          receivedAt: envelope.receivedAt,
          size: this.#size,
          segment: rec.segment,
          offset: rec.offset,
          length: HEADER_BYTES + payload.length,
          pin: this.#pin,
          states: meta.states,
          damaged: null,
        },
        body,
        payload,
      );
    } catch (err) {
      this.#state = 'aborted';
      this.#unpin();
      throw toSpoolError(err, `committing message ${this.qid}`);
    }
  }

  abort(): void {
    if (this.#state !== 'open') return;
    this.#state = 'aborted';
    this.#kept = null;
    this.#parts = [];
    this.#partsBytes = 0;
    this.#unpin();
  }

  async readBack(): Promise<AsyncIterable<Buffer>> {
    this.#checkOpen();
    if (this.#writing > 0) throw new Error(`message ${this.qid}: readBack() called before write() resolved`);
    if (this.#partsBytes > 0) await this.#flush();
    if (this.#outstanding.size > 0) await Promise.all(this.#outstanding);
    this.#checkOpen();
    return this.#host.readChunks([...this.#chunks]);
  }

  restart(): void {
    this.#checkOpen();
    if (this.#writing > 0) throw new Error(`message ${this.qid}: restart() called before write() resolved`);
    // Chunks still being written stay in #outstanding: commit() waits for them, so a write error
    // is still seen. Their bytes are no longer part of the message.
    this.#parts = [];
    this.#partsBytes = 0;
    this.#chunks.length = 0;
    this.#kept = [];
    this.#size = 0;
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
    if (this.#kept !== null) {
      if (this.#size <= MAX_BODY_BYTES) this.#kept.push(parts);
      else this.#kept = null;
    }
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
