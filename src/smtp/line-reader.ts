/**
 * Splits the bytes of an SMTP session in command mode into command lines (RFC 5321 2.3.8,
 * 4.1.1, 4.5.3.1.4), incrementally and without I/O. The connection shell appends what the
 * socket delivers and pulls one event at a time with next(), so that it can stop after DATA,
 * BDAT or STARTTLS and take the bytes that follow with takeRemainder().
 *
 * Line endings, by the `bareLineEndings` policy:
 * - 'reject' (the default): a line is everything up to an LF. It is delivered only if the LF
 *   is preceded by a CR and the line holds no other CR. A line ended by a bare LF, or holding
 *   a lone CR, becomes one { kind: 'bare-lf' } event and is dropped whole.
 * - 'normalize': CRLF, a bare LF, and a lone CR followed by any byte other than LF each end a
 *   line (so "A\r\r\n" is the line "A" then an empty line). A CR that is the last byte received
 *   so far waits for the next byte before it is classified.
 *
 * Length: a line is too long when its content plus two (its CRLF, whatever ending it really
 * had) exceeds maxLineBytes. The reader reports { kind: 'too-long' } as soon as it knows, at the
 * latest when maxLineBytes bytes of the line are held, then discards bytes up to and including
 * the next line ending (as the policy above defines it) and carries on. A partial line held
 * between calls is therefore always shorter than maxLineBytes.
 *
 * NUL and other octets are passed through inside lines; the session judges them.
 *
 * Buffers: lines are subarrays of the received chunks or of an internal buffer that is never
 * written again once a line in it has been handed out, so callers may keep them (and must not
 * modify a chunk after appending it). Small appends grow the internal buffer by doubling;
 * searches resume where the last one stopped.
 *
 * Trust: parses untrusted client input; memory per reader is bounded by maxLineBytes plus the
 * chunk being processed.
 */

/** One result of splitting: a complete line, or a line refused and dropped. */
export type LineEvent =
  /** One command line, without its line ending. */
  | { kind: 'line'; line: Buffer }
  /** A line exceeded maxLineBytes (including CRLF); it is dropped. */
  | { kind: 'too-long' }
  /** 'reject' policy: the line ended with a bare LF or held a lone CR; it is dropped. */
  | { kind: 'bare-lf' };

export interface LineReaderOptions {
  /** Longest accepted line including its CRLF (RFC 5321 4.5.3.1.4: at least 512). */
  maxLineBytes: number;
  bareLineEndings: 'reject' | 'normalize';
}

const LF = 0x0a;
const CR = 0x0d;
const EMPTY = Buffer.alloc(0);
/** Smallest internal buffer allocated when bytes must be copied. */
const MIN_CAPACITY = 256;

export class LineReader {
  readonly #maxLineBytes: number;
  readonly #normalize: boolean;
  /** Holds the unread bytes in [#start, #end). */
  #buf: Buffer = EMPTY;
  /** #buf was allocated here, so bytes past #end may be written; otherwise it is a caller's chunk. */
  #owned = false;
  #start = 0;
  #end = 0;
  /** No line ending begins in [#start, #scan): the next search starts at #scan. */
  #scan = 0;
  /** Dropping the rest of a too-long line, up to and including its line ending. */
  #discarding = false;
  /** Set by #findEnding: length of the line ending found (1 or 2). */
  #endingLength = 0;

  constructor(opts: LineReaderOptions) {
    if (!Number.isInteger(opts.maxLineBytes) || opts.maxLineBytes < 3) {
      throw new RangeError(`maxLineBytes must be an integer >= 3, got ${opts.maxLineBytes}`);
    }
    this.#maxLineBytes = opts.maxLineBytes;
    this.#normalize = opts.bareLineEndings === 'normalize';
  }

  /** Bytes currently buffered (not yet returned as part of an event). */
  get buffered(): number {
    return this.#end - this.#start;
  }

  /** Adds bytes to the buffer without splitting them; call next() to read events. */
  append(chunk: Buffer): void {
    const n = chunk.length;
    if (n === 0) return;
    if (this.#start === this.#end) {
      // Nothing held: read straight from the caller's chunk, no copy.
      this.#buf = chunk;
      this.#owned = false;
      this.#start = 0;
      this.#end = n;
      this.#scan = 0;
      return;
    }
    if (this.#owned && this.#buf.length - this.#end >= n) {
      chunk.copy(this.#buf, this.#end);
      this.#end += n;
      return;
    }
    const held = this.#end - this.#start;
    this.#moveTo(Buffer.allocUnsafe(Math.max(held + n, 2 * held, MIN_CAPACITY)));
    chunk.copy(this.#buf, held);
    this.#end = held + n;
  }

  /**
   * Returns the next event completed by the buffered bytes, or null when no complete line
   * is buffered. Consumes the bytes of the event.
   */
  next(): LineEvent | null {
    for (;;) {
      const lineStart = this.#start;
      const at = this.#findEnding();
      if (at === -1) {
        if (this.#discarding) {
          this.#start = this.#scan;
        } else if (this.#end - this.#start >= this.#maxLineBytes) {
          // RFC 5321 4.5.3.1.4: the line cannot fit whatever follows; report now and stop holding it.
          this.#discarding = true;
          this.#start = this.#scan;
          this.#settle();
          return { kind: 'too-long' };
        }
        this.#settle();
        return null;
      }
      this.#start = at + this.#endingLength;
      this.#scan = this.#start;
      if (this.#discarding) {
        this.#discarding = false;
        continue;
      }
      return this.#classify(lineStart, at);
    }
  }

  /** Appends `chunk` and returns every event now complete, in order. */
  push(chunk: Buffer): LineEvent[] {
    this.append(chunk);
    const events: LineEvent[] = [];
    for (let event = this.next(); event !== null; event = this.next()) events.push(event);
    return events;
  }

  /**
   * Returns and clears the buffered bytes that are not yet part of a complete line, and ends any
   * discarding of a too-long line. The shell hands these bytes to the DATA/BDAT decoder, or drops
   * them after STARTTLS (RFC 3207 4: nothing sent before the TLS handshake may be used).
   */
  takeRemainder(): Buffer {
    const rest = this.#start === this.#end ? EMPTY : this.#buf.subarray(this.#start, this.#end);
    this.#buf = EMPTY;
    this.#owned = false;
    this.#start = 0;
    this.#end = 0;
    this.#scan = 0;
    this.#discarding = false;
    return rest;
  }

  /** The event for the line [lineStart, at) whose ending starts at `at`. */
  #classify(lineStart: number, at: number): LineEvent {
    const buf = this.#buf;
    if (this.#normalize) {
      if (at - lineStart + 2 > this.#maxLineBytes) return { kind: 'too-long' };
      return { kind: 'line', line: buf.subarray(lineStart, at) };
    }
    // 'reject': `at` is the LF; a valid line ends with CR LF and holds no other CR.
    const crlf = at > lineStart && buf[at - 1] === CR;
    const contentEnd = crlf ? at - 1 : at;
    if (contentEnd - lineStart + 2 > this.#maxLineBytes) return { kind: 'too-long' };
    const line = buf.subarray(lineStart, contentEnd);
    if (!crlf || line.indexOf(CR) !== -1) return { kind: 'bare-lf' };
    return { kind: 'line', line };
  }

  /**
   * Finds the next line ending at or after #scan. Returns its position and sets #endingLength,
   * or returns -1 and advances #scan past the bytes known not to start an ending.
   */
  #findEnding(): number {
    const scan = this.#scan;
    const end = this.#end;
    // Bounded views: an owned buffer holds stale bytes past #end.
    const region = this.#buf.subarray(scan, end);
    const lf = region.indexOf(LF);
    if (!this.#normalize) {
      if (lf === -1) {
        this.#scan = end;
        return -1;
      }
      this.#endingLength = 1;
      return scan + lf;
    }
    const cr = (lf === -1 ? region : region.subarray(0, lf)).indexOf(CR);
    if (cr !== -1) {
      const at = scan + cr;
      if (at + 1 === end) {
        // A CR as the last byte: CRLF or lone CR is decided by the next byte.
        this.#scan = at;
        return -1;
      }
      this.#endingLength = this.#buf[at + 1] === LF ? 2 : 1;
      return at;
    }
    if (lf === -1) {
      this.#scan = end;
      return -1;
    }
    this.#endingLength = 1;
    return scan + lf;
  }

  /** Moves the unread bytes to the start of `target`, which becomes the owned buffer. */
  #moveTo(target: Buffer): void {
    this.#buf.copy(target, 0, this.#start, this.#end);
    this.#scan -= this.#start;
    this.#end -= this.#start;
    this.#start = 0;
    this.#buf = target;
    this.#owned = true;
  }

  /**
   * Called when next() runs out of complete lines: releases the buffer when empty, and copies a
   * partial line out of a larger buffer so an idle session does not pin a whole chunk.
   */
  #settle(): void {
    if (this.#start === this.#end) {
      this.#buf = EMPTY;
      this.#owned = false;
      this.#start = 0;
      this.#end = 0;
      this.#scan = 0;
    } else if (this.#start > 0) {
      const held = this.#end - this.#start;
      this.#moveTo(Buffer.allocUnsafe(Math.max(2 * held, MIN_CAPACITY)));
    }
  }
}
