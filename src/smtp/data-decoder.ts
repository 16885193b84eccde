/**
 * Decodes a message body as it arrives, incrementally and without I/O, and applies the one set
 * of body rules to both ways a body comes in:
 * - DATA (RFC 5321 4.1.1.4, 4.5.2), class DataDecoder: finds the end-of-data mark and removes
 *   transparency dots, then applies the rules below;
 * - BDAT (RFC 3030), class BdatDecoder: the chunks' octets, framed by ChunkReader, have no end
 *   mark and no transparency dots; one decoder lives for the whole message, across chunks, so a
 *   line (or a CR and its LF) split between two chunks reads as one; end() closes the body after
 *   the LAST chunk.
 * Both run the same state machine (BodyDecoder), so the rules cannot drift apart: a check that
 * guards DATA guards BDAT too (DESIGN rule 10).
 *
 * End of data (DATA only; the SMTP-smuggling defence, CVE-2023-51764/51765/51766): the message
 * ends only at CR LF "." CR LF as real octets on the wire. The 354 counts as a preceding CRLF, so
 * ".\r\n" alone is an empty message. A "." line ends the message only if the line ending before
 * it and its own line ending are both real CRLF: "\n.\n", "\r.\r", "\n.\r\n", "\r\n.\n",
 * "\r\n.\r", "\r.\r\n", "\r\n.\r\r\n" and ".\n" at the start never end it, in either mode.
 *
 * Bare line endings (a LF not preceded by CR, or a CR not followed by LF), DATA and BDAT alike:
 * - 'reject': the first one sets error 'bare-lf'.
 * - 'normalize': each becomes CRLF in the body (so "A\r\r\n" is the line "A" then an empty line).
 *   A "." line that cannot end the message because of a bare ending is kept in the body as the
 *   literal line "." (it is not unstuffed to an empty line), so the smuggled text after it stays
 *   visibly inside the body; a relaying client dot-stuffs it again on output (dot-stuffer.ts).
 *   A BDAT body that ends in a lone CR gets its LF; a last line without any ending is kept so.
 *
 * Dot-unstuffing (DATA only): every other line beginning with "." loses that first dot (RFC 5321
 * 4.5.2).
 *
 * Limits, errors and output: a text line may hold maxLineBytes octets including its CRLF, not
 * counting the transparency dot (RFC 5321 4.5.3.1.6); a longer one sets 'line-too-long'. A NUL
 * octet sets 'nul'. More than maxMessageBytes decoded octets (CRLFs included) sets 'too-big'; the
 * body then holds exactly the first maxMessageBytes octets. Only the first error is kept; after
 * it no body is produced, but the DATA decoder keeps scanning for the end of data so the session
 * replies once, at the end (RFC 5321 4.1.1.4, 4.2.5). The caller discards the body of a message
 * with an error.
 *
 * Memory: across pushes the decoder keeps only its state (position in the line, a pending CR or
 * dot, counters); body chunks are subarrays of the pushed buffers, or small fresh buffers for
 * inserted CRLFs; the caller may keep them, and must not modify a chunk after pushing it.
 *
 * Trust: parses untrusted client input.
 */

export type DataError = 'too-big' | 'bare-lf' | 'line-too-long' | 'nul';

/** The body rules, the same for DATA and BDAT (limits.message_bytes, limits.text_line_bytes, smtp.bare_line_endings). */
export interface DataDecoderOptions {
  /** Largest decoded body, CRLFs included. */
  maxMessageBytes: number;
  /** Longest text line including its CRLF, not counting a transparency dot (RFC 5321: 1000). */
  maxLineBytes: number;
  bareLineEndings: 'reject' | 'normalize';
}

export interface DataDecoderResult {
  /** Decoded (dot-unstuffed) body bytes produced by this push, CRLF line endings; may be empty. */
  body: Buffer[];
  /** True when the end-of-data sequence CRLF.CRLF was seen; `rest` then holds the bytes after it. */
  done: boolean;
  /** Present when `done`: the bytes that followed the end of data (pipelined commands). */
  rest?: Buffer;
}

const NUL = 0x00;
const LF = 0x0a;
const CR = 0x0d;
const DOT = 0x2e;

/**
 * Where the decoder stands between two octets:
 * bol    at the start of a line
 * dot    after a "." at the start of a line (not yet emitted: stuffing dot or end mark; DATA only)
 * dot-cr after "." CR at the start of a line (DATA only)
 * text   inside a line
 * cr     inside a line, after a CR (not yet emitted: CRLF or lone CR)
 * done   after the end of data (DATA) or end() (BDAT)
 */
type DecoderState = 'bol' | 'dot' | 'dot-cr' | 'text' | 'cr' | 'done';

function crlf(): Buffer {
  return Buffer.from([CR, LF]);
}

function literalDotLine(): Buffer {
  return Buffer.from([DOT, CR, LF]);
}

/** First position of `byte` in `buf` at or after `from`, or buf.length if none. */
function positionOf(buf: Buffer, byte: number, from: number): number {
  const at = buf.indexOf(byte, from);
  return at === -1 ? buf.length : at;
}

/**
 * The shared state machine. `transparency` is true for DATA (dot handling and the end mark),
 * false for BDAT (every octet is content; the caller frames the chunks and calls finish()).
 */
class BodyDecoder {
  readonly #transparency: boolean;
  readonly #maxMessageBytes: number;
  /** Longest line content, without its CRLF. */
  readonly #maxContent: number;
  readonly #normalize: boolean;
  #state: DecoderState = 'bol';
  /** The line starting at the current 'bol' follows a real CRLF (or the 354): a "." may end data. */
  #eligible = true;
  /** Content octets of the current line so far (a stuffing dot excluded). */
  #lineLength = 0;
  #size = 0;
  #error: DataError | null = null;

  // Output of the push in progress: [#runStart, #runEnd) of #chunk is accepted and not yet in #body.
  #body: Buffer[] = [];
  #chunk: Buffer = Buffer.alloc(0);
  #runStart = 0;
  #runEnd = 0;

  constructor(opts: DataDecoderOptions, transparency: boolean) {
    this.#transparency = transparency;
    if (!Number.isInteger(opts.maxLineBytes) || opts.maxLineBytes < 3) {
      throw new RangeError(`maxLineBytes must be an integer >= 3, got ${opts.maxLineBytes}`);
    }
    if (!Number.isInteger(opts.maxMessageBytes) || opts.maxMessageBytes < 0) {
      throw new RangeError(`maxMessageBytes must be an integer >= 0, got ${opts.maxMessageBytes}`);
    }
    this.#maxMessageBytes = opts.maxMessageBytes;
    this.#maxContent = opts.maxLineBytes - 2;
    this.#normalize = opts.bareLineEndings === 'normalize';
  }

  /** The first error seen, if any. */
  get error(): DataError | null {
    return this.#error;
  }

  /** Decoded body octets produced so far; never more than maxMessageBytes, frozen at the first error. */
  get size(): number {
    return this.#size;
  }

  /** True once the end of data has been seen (DATA), or the body was finished (BDAT). */
  get done(): boolean {
    return this.#state === 'done';
  }

  /**
   * Decodes `chunk`. After the end of data, further pushes return the whole chunk as `rest`.
   * Without transparency `done` stays false: only finish() ends the body.
   */
  push(chunk: Buffer): DataDecoderResult {
    if (this.#state === 'done') return { body: [], done: true, rest: chunk };
    this.#body = [];
    this.#chunk = chunk;
    this.#runStart = 0;
    this.#runEnd = 0;
    const len = chunk.length;
    // Cached positions of the next CR, LF and NUL; stale when below i, `len` when there is none.
    let nextCR = -1;
    let nextLF = -1;
    let nextNUL = -1;
    let i = 0;
    while (i < len) {
      switch (this.#state) {
        case 'text': {
          const out = this.#error === null;
          if (nextCR < i) nextCR = positionOf(chunk, CR, i);
          if (nextLF < i) nextLF = positionOf(chunk, LF, i);
          let p = nextCR < nextLF ? nextCR : nextLF;
          if (out) {
            if (nextNUL < i) nextNUL = positionOf(chunk, NUL, i);
            if (nextNUL < p) p = nextNUL;
            // The common line: content, then CR LF, all in this chunk and within the length
            // limit. Taken in one step, straight to the next line's text unless that begins with
            // a dot; the same octets and states as the steps below, with fewer of them.
            if (
              p === nextCR &&
              nextLF === p + 1 &&
              nextLF < len &&
              p - i <= this.#maxContent - this.#lineLength
            ) {
              this.#accept(i, nextLF + 1);
              this.#lineStart(true);
              i = nextLF + 1;
              if (i < len && !(this.#transparency && chunk[i] === DOT)) this.#state = 'text';
              break;
            }
            if (p > i) this.#acceptContent(i, p);
          }
          if (p === len) {
            i = len;
            break;
          }
          const b = chunk[p];
          i = p + 1;
          if (b === CR) {
            this.#state = 'cr';
          } else if (b === LF) {
            this.#bareEnding();
          } else {
            this.#fail('nul');
          }
          break;
        }
        case 'cr':
          if (chunk[i] === LF) {
            if (this.#error === null) {
              // The CR is at i - 1 unless it ended the previous chunk.
              if (i > 0) this.#accept(i - 1, i + 1);
              else this.#acceptFresh(crlf());
            }
            this.#lineStart(true);
            i += 1;
          } else {
            this.#bareEnding(); // lone CR; the octet at i starts the next line
          }
          break;
        case 'bol':
          if (this.#transparency && chunk[i] === DOT) {
            this.#state = 'dot';
            i += 1;
          } else {
            this.#state = 'text';
          }
          break;
        case 'dot': {
          const b = chunk[i];
          if (b === CR) {
            this.#state = 'dot-cr';
            i += 1;
          } else if (b === LF) {
            this.#bareDotLine();
            i += 1;
          } else {
            // RFC 5321 4.5.2: drop the transparency dot; the rest is ordinary line content.
            this.#state = 'text';
          }
          break;
        }
        case 'dot-cr':
          if (chunk[i] === LF) {
            if (this.#eligible) {
              // RFC 5321 4.1.1.4: CRLF "." CRLF, all real octets: the end of the mail data.
              this.#state = 'done';
              this.#flush();
              return { body: this.#body, done: true, rest: chunk.subarray(i + 1) };
            }
            // ".\r\n" after a bare ending: not an end; kept literally (see the module comment).
            // In 'reject' mode the bare ending already set the error.
            if (this.#error === null) this.#acceptFresh(literalDotLine());
            this.#lineStart(true);
            i += 1;
          } else {
            this.#bareDotLine(); // "." then a lone CR; the octet at i starts the next line
          }
          break;
        // No 'done' case: push() returns as soon as it finds the end of data.
      }
    }
    this.#flush();
    return { body: this.#body, done: false };
  }

  /**
   * Ends a body that has no end mark (BDAT LAST): a CR left pending at the very end is a lone CR.
   * Returns the last body octets (at most a CRLF).
   */
  protected finish(): Buffer[] {
    if (this.#state === 'done') return [];
    this.#body = [];
    this.#chunk = Buffer.alloc(0);
    this.#runStart = 0;
    this.#runEnd = 0;
    if (this.#state === 'cr') this.#bareEnding();
    this.#state = 'done';
    this.#flush();
    return this.#body;
  }

  /** Content octets [from, to) of the current line, free of CR, LF and NUL; checks the line length. */
  #acceptContent(from: number, to: number): void {
    const room = this.#maxContent - this.#lineLength;
    if (to - from > room) {
      this.#accept(from, from + room);
      this.#fail('line-too-long'); // no-op if the size limit was hit first
      return;
    }
    this.#accept(from, to);
    this.#lineLength += to - from;
  }

  /** A bare LF, or a lone CR, ends the current line. */
  #bareEnding(): void {
    if (this.#error === null) {
      if (this.#normalize) this.#acceptFresh(crlf());
      else this.#fail('bare-lf');
    }
    this.#lineStart(false);
  }

  /** The line "." ended by a bare LF or lone CR: never an end of data. */
  #bareDotLine(): void {
    if (this.#error === null) {
      if (this.#normalize) this.#acceptFresh(literalDotLine());
      else this.#fail('bare-lf');
    }
    this.#lineStart(false);
  }

  #lineStart(afterRealCrlf: boolean): void {
    this.#state = 'bol';
    this.#eligible = afterRealCrlf;
    this.#lineLength = 0;
  }

  /** Adds [from, to) of the current chunk to the body, up to the size limit. */
  #accept(from: number, to: number): void {
    const room = this.#maxMessageBytes - this.#size;
    const end = to - from > room ? from + room : to;
    if (end > from) {
      if (this.#runEnd === from && this.#runEnd > this.#runStart) {
        this.#runEnd = end;
      } else {
        this.#flush();
        this.#runStart = from;
        this.#runEnd = end;
      }
      this.#size += end - from;
    }
    if (end < to) this.#fail('too-big');
  }

  /** Adds a freshly allocated buffer to the body, up to the size limit. */
  #acceptFresh(bytes: Buffer): void {
    const room = this.#maxMessageBytes - this.#size;
    const n = bytes.length > room ? room : bytes.length;
    if (n > 0) {
      this.#flush();
      this.#body.push(n === bytes.length ? bytes : bytes.subarray(0, n));
      this.#size += n;
    }
    if (n < bytes.length) this.#fail('too-big');
  }

  #flush(): void {
    if (this.#runEnd > this.#runStart) {
      this.#body.push(this.#chunk.subarray(this.#runStart, this.#runEnd));
      this.#runStart = this.#runEnd;
    }
  }

  /** Records the first error; output stops, scanning for the end of data goes on. */
  #fail(error: DataError): void {
    if (this.#error !== null) return;
    this.#error = error;
    this.#flush();
  }
}

/** The DATA body decoder: transparency dots, the end-of-data mark, then the body rules. */
export class DataDecoder extends BodyDecoder {
  constructor(opts: DataDecoderOptions) {
    super(opts, true);
  }
}

/**
 * The BDAT body decoder, one per message, fed every chunk's octets in order (ChunkReader frames
 * them); applies the body rules across chunk boundaries. Call end() after the LAST chunk.
 */
export class BdatDecoder extends BodyDecoder {
  constructor(opts: DataDecoderOptions) {
    super(opts, false);
  }

  /** Decodes the next octets of a chunk; returns the body octets they produce (maybe none). */
  write(chunk: Buffer): Buffer[] {
    return this.push(chunk).body;
  }

  /** The LAST chunk is complete: returns the final body octets; error and size are then final. */
  end(): Buffer[] {
    return this.finish();
  }
}

/**
 * Reads one BDAT chunk (RFC 3030 2): exactly `size` octets, with no dot handling; it only frames
 * them (the body rules are BdatDecoder's). Bytes beyond the chunk are returned as `rest`.
 */
export class ChunkReader {
  #remaining: number;

  constructor(size: number) {
    if (!Number.isSafeInteger(size) || size < 0) {
      throw new RangeError(`BDAT chunk size must be a non-negative integer, got ${size}`);
    }
    this.#remaining = size;
  }

  /** Octets of the chunk not yet received. */
  get remaining(): number {
    return this.#remaining;
  }

  /** True once all `size` octets have been received. */
  get done(): boolean {
    return this.#remaining === 0;
  }

  /** Takes the chunk's octets from `chunk`; once complete, the bytes after it are `rest`. */
  push(chunk: Buffer): { body: Buffer; done: boolean; rest?: Buffer } {
    if (chunk.length < this.#remaining) {
      this.#remaining -= chunk.length;
      return { body: chunk, done: false };
    }
    const body = chunk.subarray(0, this.#remaining);
    const rest = chunk.subarray(this.#remaining);
    this.#remaining = 0;
    return { body, done: true, rest };
  }
}
