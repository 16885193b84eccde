/**
 * Parses the replies of an SMTP server (RFC 5321 4.2, 4.2.1; enhanced status codes RFC 2034 /
 * RFC 3463), incrementally and without I/O: the SMTP client pushes what the socket delivers and
 * gets back every reply completed so far. Used by delivery/smtp-client.ts.
 *
 * Grammar (RFC 5321 4.2):
 *   Reply-line = *( Reply-code "-" [ textstring ] CRLF ) Reply-code [ SP textstring ] CRLF
 * so every line begins with a three-digit code (first digit 2-5, second 0-5) followed by "-"
 * (more lines follow) or " " (last line); a last line may also be the bare code ("250").
 * All lines of one reply must carry the same code. Lines end with CRLF; a bare LF, or a CR
 * inside a line, is a protocol error unless `allowBareLf` is set (then LF alone also ends a line).
 *
 * Result: `lines` hold the text after "NNN-" / "NNN " exactly as sent (an enhanced code is left
 * in the text, so a DSN can quote the whole reply). `enhanced` is read from the first line when
 * it begins with class.subject.detail (RFC 3463: \d.\d{1,3}.\d{1,3}, followed by a space or the
 * end of the line) and its class digit equals the first digit of the reply code.
 *
 * Errors: the parser throws ReplyParseError (typed by `kind`) on the first violation; replies
 * completed earlier in the same push() are carried on the error (`parsed`) so none is lost. A
 * parser that has thrown stays failed: every later push() throws the same kind again. The client
 * treats any such error as a broken connection.
 *
 * Trust: parses untrusted server output. Memory is bounded by maxLineBytes (one partial line)
 * plus maxLines lines of the reply in progress. Text is decoded as UTF-8 (RFC 6531 allows UTF-8
 * replies); invalid sequences become U+FFFD; other control characters are passed through, so
 * whoever logs or quotes a reply must escape it.
 */

export interface ParsedReply {
  code: number;
  /** RFC 3463 enhanced status code from the first line, e.g. "5.1.1". */
  enhanced?: string;
  /** Text of each line after "NNN-" / "NNN ", as sent (may be ''). */
  lines: string[];
}

export type ReplyParseErrorKind =
  /** A line that does not begin with a valid reply code and separator. */
  | 'bad-line'
  /** A line of a multi-line reply carries a different code from the first. */
  | 'code-mismatch'
  /** A line longer than maxLineBytes, CRLF included. */
  | 'line-too-long'
  /** A multi-line reply with more than maxLines lines. */
  | 'too-many-lines'
  /** A line ended with a bare LF, or held a CR not followed by LF. */
  | 'bare-lf';

export class ReplyParseError extends Error {
  readonly kind: ReplyParseErrorKind;
  /** Replies completed by the same push() before the error. */
  readonly parsed: ParsedReply[];

  constructor(kind: ReplyParseErrorKind, message: string, parsed: ParsedReply[] = []) {
    super(message);
    this.name = 'ReplyParseError';
    this.kind = kind;
    this.parsed = parsed;
  }
}

export interface ReplyParserOptions {
  /** Longest accepted line, CRLF included. Default 4096 (RFC 5321 4.5.3.1.5 requires 512). */
  maxLineBytes?: number;
  /** Most lines in one reply. Default 1000. */
  maxLines?: number;
  /** Accept LF alone as a line ending (the CR before it is still removed). Default false. */
  allowBareLf?: boolean;
}

export const DEFAULT_MAX_REPLY_LINE_BYTES = 4096;
export const DEFAULT_MAX_REPLY_LINES = 1000;

const LF = 0x0a;
const CR = 0x0d;
/** RFC 5321 4.2: Reply-code = %x32-35 %x30-35 %x30-39; then "-", " " or nothing. */
const REPLY_LINE = /^([2-5][0-5][0-9])(?:([ -])([^]*))?$/;
/** RFC 3463 status-code at the start of the text. */
const ENHANCED = /^([245])\.(\d{1,3})\.(\d{1,3})(?: |$)/;

export class ReplyParser {
  readonly #maxLineBytes: number;
  readonly #maxLines: number;
  readonly #allowBareLf: boolean;
  /** Bytes of a line whose LF has not arrived yet. */
  #partial: Buffer[] = [];
  #partialBytes = 0;
  /** Code and lines of a multi-line reply in progress. */
  #code: number | null = null;
  #lines: string[] = [];
  #failed: ReplyParseError | null = null;

  constructor(opts: ReplyParserOptions = {}) {
    const maxLineBytes = opts.maxLineBytes ?? DEFAULT_MAX_REPLY_LINE_BYTES;
    const maxLines = opts.maxLines ?? DEFAULT_MAX_REPLY_LINES;
    if (!Number.isInteger(maxLineBytes) || maxLineBytes < 6) {
      throw new RangeError(`maxLineBytes must be an integer >= 6, got ${maxLineBytes}`);
    }
    if (!Number.isInteger(maxLines) || maxLines < 1) {
      throw new RangeError(`maxLines must be an integer >= 1, got ${maxLines}`);
    }
    this.#maxLineBytes = maxLineBytes;
    this.#maxLines = maxLines;
    this.#allowBareLf = opts.allowBareLf === true;
  }

  /** True when no partial line and no unfinished multi-line reply is held. */
  get idle(): boolean {
    return this.#partialBytes === 0 && this.#code === null;
  }

  /** The error that stopped the parser, if any. */
  get error(): ReplyParseError | null {
    return this.#failed;
  }

  /** Feeds bytes; returns the replies they complete, in order. Throws ReplyParseError. */
  push(chunk: Buffer): ParsedReply[] {
    if (this.#failed !== null) {
      throw new ReplyParseError(this.#failed.kind, this.#failed.message);
    }
    const out: ParsedReply[] = [];
    try {
      let start = 0;
      while (start < chunk.length) {
        const lf = chunk.indexOf(LF, start);
        if (lf === -1) {
          const rest = chunk.subarray(start);
          // The line will need at least one more byte (its LF): too long already?
          if (this.#partialBytes + rest.length >= this.#maxLineBytes) this.#tooLong();
          this.#partial.push(rest);
          this.#partialBytes += rest.length;
          break;
        }
        const piece = chunk.subarray(start, lf);
        start = lf + 1;
        let line = piece;
        if (this.#partialBytes > 0) {
          line = Buffer.concat([...this.#partial, piece]);
          this.#partial = [];
          this.#partialBytes = 0;
        }
        if (line.length + 1 > this.#maxLineBytes) this.#tooLong();
        const reply = this.#line(line);
        if (reply !== null) out.push(reply);
      }
    } catch (err) {
      if (err instanceof ReplyParseError) {
        this.#failed = err;
        this.#partial = [];
        this.#partialBytes = 0;
        this.#lines = [];
        throw new ReplyParseError(err.kind, err.message, out);
      }
      throw err;
    }
    return out;
  }

  #tooLong(): never {
    throw new ReplyParseError(
      'line-too-long',
      `reply line longer than ${this.#maxLineBytes} octets (RFC 5321 4.5.3.1.5)`,
    );
  }

  /** One line without its LF; returns the reply it completes, if any. */
  #line(raw: Buffer): ParsedReply | null {
    let content = raw;
    if (content.length > 0 && content[content.length - 1] === CR) {
      content = content.subarray(0, -1);
    } else if (!this.#allowBareLf) {
      throw new ReplyParseError('bare-lf', 'reply line ended with a bare LF; SMTP lines end with CRLF');
    }
    if (content.includes(CR)) {
      throw new ReplyParseError('bare-lf', 'reply line holds a CR not followed by LF');
    }
    const m = REPLY_LINE.exec(content.toString('utf8'));
    if (m === null) {
      throw new ReplyParseError(
        'bad-line',
        'reply line does not begin with a three-digit code and "-" or " " (RFC 5321 4.2)',
      );
    }
    const code = Number(m[1]);
    if (this.#code !== null && code !== this.#code) {
      throw new ReplyParseError(
        'code-mismatch',
        `multi-line reply changes its code from ${this.#code} to ${code} (RFC 5321 4.2.1)`,
      );
    }
    this.#lines.push(m[3] ?? '');
    if (m[2] === '-') {
      // A continuation line promises one more line: refuse as soon as that cannot fit.
      if (this.#lines.length >= this.#maxLines) {
        throw new ReplyParseError('too-many-lines', `reply longer than ${this.#maxLines} lines`);
      }
      this.#code = code;
      return null;
    }
    const lines = this.#lines;
    this.#code = null;
    this.#lines = [];
    const reply: ParsedReply = { code, lines };
    const enh = ENHANCED.exec(lines[0] ?? '');
    if (enh !== null && enh[1] === String(code).charAt(0)) {
      reply.enhanced = enh[0].trimEnd();
    }
    return reply;
  }
}
