/**
 * The message `sterna sendmail` reads from stdin, before it goes into the maildrop:
 * - DotEnd: without -i, a line holding only "." ends the input (the traditional sendmail rule;
 *   no other dot is removed, as with Postfix's sendmail).
 * - HeaderSplitter: holds the header section (bounded) until its end is known, so that -t can
 *   take the recipients from To, Cc and Bcc (or Resent-To, Resent-Cc and Resent-Bcc when the
 *   message is being resent, RFC 5322 3.6.6) and the Bcc fields can be removed. A first line
 *   that is not a header field ends the section; an empty line is then inserted before it, so
 *   the header fields the server adds do not run into the text (as Postfix's cleanup does).
 * The body rules (CRLF, NUL, line and message length) are the DATA decoder's, applied before
 * the splitter (smtp/data-decoder.ts). Pure: no I/O. Trust: the bytes are the local user's.
 */
import { addressList } from './sendmail-addresses.js';

const LF = 0x0a;
const CR = 0x0d;
const DOT = 0x2e;

/** Cuts the input at the first line that holds only "." (ended by LF or CRLF, or by the end). */
export class DotEnd {
  #lineStart = true;
  #held: Buffer = Buffer.alloc(0);
  #ended = false;

  get ended(): boolean {
    return this.#ended;
  }

  /** Returns the bytes before the terminating line (all of them while none was seen). */
  push(input: Buffer): Buffer {
    if (this.#ended) return Buffer.alloc(0);
    const chunk = this.#held.length > 0 ? Buffer.concat([this.#held, input]) : input;
    this.#held = Buffer.alloc(0);
    let i = 0;
    while (i < chunk.length) {
      if (this.#lineStart && chunk[i] === DOT) {
        const a = chunk[i + 1];
        const b = chunk[i + 2];
        if (a === LF || (a === CR && b === LF)) {
          this.#ended = true;
          return chunk.subarray(0, i);
        }
        if (a === undefined || (a === CR && b === undefined)) {
          // "." or ".\r" at the end of what we have: wait for the next bytes.
          this.#held = chunk.subarray(i);
          return chunk.subarray(0, i);
        }
      }
      const lf = chunk.indexOf(LF, i);
      if (lf === -1) {
        this.#lineStart = false;
        break;
      }
      i = lf + 1;
      this.#lineStart = true;
    }
    return chunk;
  }

  /** End of input: a held "." (or ".\r") is a terminating line without its line ending. */
  end(): Buffer {
    if (this.#held.length > 0) this.#ended = true;
    this.#held = Buffer.alloc(0);
    return Buffer.alloc(0);
  }
}

/** The largest header section held; a longer one ends there (the rest is passed on as is). */
export const MAX_HEADER_BYTES = 1024 * 1024;

export interface HeaderResult {
  /** The header section to write: Bcc removed, an empty line added when needed. */
  header: Buffer;
  /** Addresses from To, Cc and Bcc (or their Resent- forms), in order. */
  recipients: string[];
}

/** RFC 5322 2.2 field-name then ":", optional white space before the colon (obs). */
const FIELD_RE = /^([!-9;-~]+)[ \t]*:/;

/**
 * Holds CRLF-normalised octets until the header section's end is known. push() returns null
 * while it is still held, then the result once; later octets are the caller's to pass on.
 */
export class HeaderSplitter {
  readonly #extract: boolean;
  #held: Buffer[] = [];
  #heldBytes = 0;
  #result: { result: HeaderResult; rest: Buffer } | null = null;

  constructor(opts: { extractRecipients: boolean }) {
    this.#extract = opts.extractRecipients;
  }

  /** Feeds octets; once the section is complete, returns it and the octets after it. */
  push(chunk: Buffer): { result: HeaderResult; rest: Buffer } | null {
    if (this.#result !== null) return { result: this.#result.result, rest: chunk };
    this.#held.push(chunk);
    this.#heldBytes += chunk.length;
    const all = Buffer.concat(this.#held);
    this.#held = [all];
    const end = headerEnd(all, this.#heldBytes >= MAX_HEADER_BYTES);
    if (end === null) return null;
    this.#result = { result: this.#build(all.subarray(0, end)), rest: all.subarray(end) };
    return this.#result;
  }

  /** End of input: the whole of what is held is the header section. */
  end(): { result: HeaderResult; rest: Buffer } {
    if (this.#result !== null) return { result: this.#result.result, rest: Buffer.alloc(0) };
    const all = Buffer.concat(this.#held);
    const end = headerEnd(all, true) ?? all.length;
    this.#result = { result: this.#build(all.subarray(0, end)), rest: all.subarray(end) };
    return this.#result;
  }

  #build(section: Buffer): HeaderResult {
    const fields = splitFields(section.toString('latin1'));
    const named = (n: string): string[] =>
      fields.filter((f) => f.name === n).map((f) => Buffer.from(f.value, 'latin1').toString('utf8'));
    let recipients: string[] = [];
    if (this.#extract) {
      const resent = ['resent-to', 'resent-cc', 'resent-bcc'].flatMap(named);
      const plain = ['to', 'cc', 'bcc'].flatMap(named);
      recipients = (resent.length > 0 ? resent : plain).flatMap((v) => addressList(v.replace(/\r\n/g, '')));
    }
    // Bcc recipients must not see each other, nor be seen (RFC 5322 3.6.3).
    let kept = fields
      .filter((f) => f.name !== 'bcc' && f.name !== 'resent-bcc')
      .map((f) => f.raw)
      .join('');
    // A last field without a line ending (end of input) gets one; then the empty line that
    // ends the section, whether the input had it or the section ended at a line of text.
    if (kept !== '' && !kept.endsWith('\r\n')) kept += '\r\n';
    return { header: Buffer.from(`${kept}\r\n`, 'latin1'), recipients };
  }
}

/**
 * Where the header section ends in `buf`: after its empty line, or before the first line that
 * is not a field. null while undecided; with `final`, an undecided end is the end of what is
 * there.
 */
function headerEnd(buf: Buffer, final: boolean): number | null {
  let pos = 0;
  let sawField = false;
  while (pos < buf.length) {
    const lf = buf.indexOf(LF, pos);
    if (lf === -1) break;
    const line = buf.toString('latin1', pos, lf - 1);
    if (line === '') return lf + 1;
    if ((line.startsWith(' ') || line.startsWith('\t')) && sawField) {
      // a folded continuation
    } else if (FIELD_RE.test(line)) {
      sawField = true;
    } else {
      return pos;
    }
    pos = lf + 1;
  }
  if (!final) return null;
  const tail = buf.toString('latin1', pos);
  // The last line has no line ending (the decoder keeps it so): a field, or the text's start.
  return tail !== '' && FIELD_RE.test(tail) ? buf.length : pos;
}

interface Field {
  /** Lower-case name. */
  name: string;
  /** The value after the colon, continuation lines included. */
  value: string;
  /** The field's octets (latin1), with its line endings. */
  raw: string;
}

function splitFields(section: string): Field[] {
  const fields: Field[] = [];
  for (const line of section.split(/(?<=\r\n)/)) {
    if (line === '\r\n') continue; // the empty line that ends the section: written by #build
    const last = fields.at(-1);
    if ((line.startsWith(' ') || line.startsWith('\t')) && last !== undefined) {
      last.value += line;
      last.raw += line;
      continue;
    }
    const m = FIELD_RE.exec(line);
    fields.push({
      name: (m?.[1] ?? '').toLowerCase(),
      value: m === null ? line : line.slice(m[0].length),
      raw: line,
    });
  }
  return fields;
}
