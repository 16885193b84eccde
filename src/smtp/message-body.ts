/**
 * The path of a message body from the data decoder to the spool: prepends the trace header,
 * inspects the header section (Received count for loop detection, RFC 5321 6.3; Message-ID,
 * Date and From presence, to add them on submission, RFC 6409 8.1-8.3) and streams everything else
 * through. Memory is bounded: at most maxHeaderBuffer octets are held, and only on submission.
 * No I/O of its own: it writes to an injected sink.
 *
 * A client's first line that begins with a space or tab would read as a continuation of the
 * last field we prepend (RFC 5322 2.2.3: unfolding joins a line that begins with WSP to the
 * field before it), so a client could append text to our own Received (or Date) field. As
 * Postfix's smtpd does (it writes an empty record before such a first line), we insert an empty
 * line after our fields: it ends the header section (RFC 5322 2.1), and the client's lines,
 * unchanged, become the start of the body. The message is accepted, as a Postfix-class server
 * accepts it; nothing the client sent is lost or altered.
 *
 * Two optional stages (mail authentication, src/mailauth/): a field filter that removes chosen
 * header fields before anything else sees them (forged Authentication-Results, RFC 8601 5),
 * and an observer that receives the client's octets as stored, without our trace prefix (the
 * DKIM/ARC verifier, which streams them: nothing is buffered here for it).
 */
import type { FieldFilter } from './field-filter.js';

export interface BodySink {
  write(chunk: Buffer): Promise<void>;
}

export interface HeaderFacts {
  receivedCount: number;
  hasMessageId: boolean;
  hasDate: boolean;
  /** A From field (RFC 5322 3.6.2), which `sterna sendmail` adds when missing. */
  hasFrom: boolean;
}

export interface MessageBodyOptions {
  /** Trace header(s), written first. */
  prefix: string;
  /** When set, called once the header section is known, to add missing headers (submission). */
  addMissing?: (facts: HeaderFacts) => string;
  /** Header octets held while waiting for the end of the header section (default 64 KiB). */
  maxHeaderBuffer?: number;
  /** Removes header fields before anything else sees them. */
  fieldFilter?: FieldFilter;
  /** Receives the client's octets after the filter (awaited: it may apply backpressure). */
  observer?: BodySink;
}

/** Longest field name kept for comparison; the names we look for are shorter. */
const NAME_BYTES = 16;

const SP = 0x20;
const HTAB = 0x09;

/**
 * Where the scanner stands in the current header line: reading the field name, in optional
 * white space after it (RFC 5322 4.5.3 obs-optional), past the colon, or on a line that cannot
 * be a header field (which ends the header section).
 */
type LineState = 'start' | 'name' | 'name-wsp' | 'value' | 'continuation' | 'not-header';

/** RFC 5322 3.6.8 ftext: printable US-ASCII except ":". */
function isFtext(byte: number): boolean {
  return byte >= 33 && byte <= 126 && byte !== 58;
}

export class MessageBody {
  readonly #sink: BodySink;
  readonly #opts: MessageBodyOptions;
  readonly #maxHeaderBuffer: number;
  #inHeaders = true;
  #line: LineState = 'start';
  /** The current line's field name so far (at most NAME_BYTES + 1 characters). */
  #name = '';
  /** A field has been seen in this header section (so a line starting with white space folds it). */
  #sawField = false;
  #facts: HeaderFacts = { receivedCount: 0, hasMessageId: false, hasDate: false, hasFrom: false };
  #held: Buffer[] = [];
  #heldBytes = 0;
  #flushed = false;
  /** The client's first octet, once seen (-1 before). */
  #firstByte = -1;

  constructor(sink: BodySink, opts: MessageBodyOptions) {
    this.#sink = sink;
    this.#opts = opts;
    this.#maxHeaderBuffer = opts.maxHeaderBuffer ?? 64 * 1024;
  }

  get facts(): HeaderFacts {
    return this.#facts;
  }

  /** Writes a chunk of the decoded body. Await it: it carries the sink's backpressure. */
  async write(chunk: Buffer): Promise<void> {
    const filter = this.#opts.fieldFilter;
    if (filter === undefined) return this.#write(chunk);
    for (const part of filter.push(chunk)) await this.#write(part);
  }

  async #write(chunk: Buffer): Promise<void> {
    if (chunk.length === 0) return;
    if (this.#opts.observer !== undefined) await this.#opts.observer.write(chunk);
    if (this.#firstByte === -1) this.#firstByte = chunk[0]!;
    if (this.#inHeaders) this.#scan(chunk);
    if (this.#flushed) {
      await this.#sink.write(chunk);
      return;
    }
    if (this.#opts.addMissing === undefined) {
      await this.#flush(chunk);
      return;
    }
    this.#held.push(chunk);
    this.#heldBytes += chunk.length;
    if (!this.#inHeaders || this.#heldBytes >= this.#maxHeaderBuffer) await this.#flush();
  }

  /** Ends the body: flushes anything held (a message that is all headers, or empty). */
  async end(): Promise<HeaderFacts> {
    for (const part of this.#opts.fieldFilter?.end() ?? []) await this.#write(part);
    if (!this.#flushed) await this.#flush();
    return this.#facts;
  }

  async #flush(extra?: Buffer): Promise<void> {
    this.#flushed = true;
    const additions = this.#opts.addMissing?.(this.#facts) ?? '';
    // RFC 5322 2.2.3: a first line starting with WSP must not fold into our fields (see above).
    const separator = this.#firstByte === SP || this.#firstByte === HTAB ? '\r\n' : '';
    const parts = [Buffer.from(this.#opts.prefix + additions + separator, 'utf8'), ...this.#held];
    if (extra !== undefined) parts.push(extra);
    this.#held = [];
    this.#heldBytes = 0;
    await this.#sink.write(Buffer.concat(parts));
  }

  /**
   * Scans header lines, a byte at a time so that a line split across chunks is read the same.
   * The section ends at the empty line, or at the first line that is not a header field
   * (RFC 5322 2.2: field-name, optional white space, ":"; or a folded continuation line).
   */
  #scan(chunk: Buffer): void {
    for (let i = 0; i < chunk.length && this.#inHeaders; i++) {
      const byte = chunk[i]!;
      if (byte === 0x0a) {
        this.#endLine();
        continue;
      }
      if (byte === 0x0d) continue; // the decoder guarantees CR only before LF
      switch (this.#line) {
        case 'start':
          if (byte === SP || byte === HTAB) {
            // A folded continuation; as the very first line it continues no field (and #flush
            // puts an empty line before it).
            this.#line = this.#sawField ? 'continuation' : 'not-header';
          } else if (isFtext(byte)) {
            this.#line = 'name';
            this.#name = String.fromCharCode(byte);
          } else {
            this.#line = 'not-header';
          }
          break;
        case 'name':
          if (byte === 0x3a) this.#fieldNamed();
          else if (byte === 0x20 || byte === 0x09) this.#line = 'name-wsp';
          else if (isFtext(byte)) {
            if (this.#name.length <= NAME_BYTES) this.#name += String.fromCharCode(byte);
          } else this.#line = 'not-header';
          break;
        case 'name-wsp':
          if (byte === 0x3a) this.#fieldNamed();
          else if (byte !== 0x20 && byte !== 0x09) this.#line = 'not-header';
          break;
        case 'value':
        case 'continuation':
        case 'not-header':
          break;
        default: {
          const never: never = this.#line;
          throw new Error(`unhandled line state ${String(never)}`);
        }
      }
      if (this.#line === 'not-header') this.#inHeaders = false;
    }
  }

  #fieldNamed(): void {
    this.#line = 'value';
    this.#sawField = true;
    const name = this.#name.toLowerCase();
    if (name === 'received') this.#facts.receivedCount++;
    else if (name === 'message-id') this.#facts.hasMessageId = true;
    else if (name === 'date') this.#facts.hasDate = true;
    else if (name === 'from') this.#facts.hasFrom = true;
  }

  #endLine(): void {
    const state = this.#line;
    this.#line = 'start';
    this.#name = '';
    // An empty line ends the section (RFC 5322 2.1); so does a line that never reached its colon.
    if (state === 'start' || state === 'name' || state === 'name-wsp') this.#inHeaders = false;
  }
}
