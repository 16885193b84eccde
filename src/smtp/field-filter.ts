/**
 * Removes chosen fields from the header section of a message as it streams by (RFC 5322 2.2:
 * a field is its first line plus any continuation lines that begin with white space). Used to
 * drop the Authentication-Results fields that claim Sterna's own authserv-id (RFC 8601 5)
 * before anything reads or stores the message. Pure: bytes in, bytes out, no I/O.
 *
 * Only fields with the given name are held back, each until its end is seen (the next line
 * that is not a continuation); every other byte passes at once. Memory is bounded: a held field,
 * or a line without its end, never grows past maxHold octets; a held field that reaches it is
 * decided on the part seen so far (the deciding token is at its start) and the rest of it
 * follows that decision. The header section ends where message-body.ts ends it: at the empty
 * line, or at the first line that cannot be a header field; after that, chunks pass unchanged.
 * Trust level: the input is untrusted client data.
 */

const LF = 0x0a;
const SP = 0x20;
const HTAB = 0x09;
const COLON = 0x3a;

export interface FieldFilterOptions {
  /** Lower-case field name whose fields are held and judged. */
  name: string;
  /** Given the whole field (or its first maxHold octets), true to remove it. */
  drop(field: string): boolean;
  /** Most octets held at once. */
  maxHold: number;
}

type FieldFate = 'none' | 'pass' | 'held' | 'drop';

export class FieldFilter {
  readonly #opts: FieldFilterOptions;
  #inHeaders = true;
  #line: Buffer[] = [];
  #lineBytes = 0;
  /** The current line was already classified (it outgrew maxHold before its LF). */
  #midLine = false;
  #fate: FieldFate = 'none';
  #held: Buffer[] = [];
  #heldBytes = 0;
  #sawField = false;
  /** Fields removed so far. */
  dropped = 0;

  constructor(opts: FieldFilterOptions) {
    this.#opts = opts;
  }

  /** Filters one chunk; returns the octets to pass on, in order. */
  push(chunk: Buffer): Buffer[] {
    if (!this.#inHeaders) return [chunk];
    const out: Buffer[] = [];
    let pos = 0;
    while (pos < chunk.length && this.#inHeaders) {
      const lf = chunk.indexOf(LF, pos);
      const end = lf < 0 ? chunk.length : lf + 1;
      const piece = chunk.subarray(pos, end);
      pos = end;
      if (this.#midLine) {
        this.#follow(piece, out);
        if (lf >= 0) this.#midLine = false;
        continue;
      }
      this.#line.push(piece);
      this.#lineBytes += piece.length;
      if (lf >= 0 || this.#lineBytes >= this.#opts.maxHold) {
        const line = Buffer.concat(this.#line);
        this.#line = [];
        this.#lineBytes = 0;
        if (lf < 0) this.#midLine = true;
        this.#classify(line, out);
      }
    }
    if (pos < chunk.length) out.push(chunk.subarray(pos));
    return out;
  }

  /** The end of the message: returns whatever is still held (a last line without its LF). */
  end(): Buffer[] {
    const out: Buffer[] = [];
    if (this.#lineBytes > 0) {
      const line = Buffer.concat(this.#line);
      this.#line = [];
      this.#lineBytes = 0;
      this.#classify(line, out);
    }
    this.#endField(out);
    return out;
  }

  /** A line (or the first maxHold octets of one) at the start of a line. */
  #classify(line: Buffer, out: Buffer[]): void {
    const first = line[0];
    if (first === LF || (first === 0x0d && line[1] === LF)) {
      // RFC 5322 2.1: the empty line ends the header section.
      this.#endField(out);
      this.#inHeaders = false;
      out.push(line);
      return;
    }
    if (first === SP || first === HTAB) {
      if (!this.#sawField) {
        this.#inHeaders = false;
        out.push(line);
        return;
      }
      this.#follow(line, out);
      return;
    }
    const name = fieldName(line);
    this.#endField(out);
    if (name === null) {
      // Not a header field: the header section ends here (as message-body.ts decides).
      this.#inHeaders = false;
      out.push(line);
      return;
    }
    this.#sawField = true;
    if (name.toLowerCase() === this.#opts.name) {
      this.#fate = 'held';
      this.#held = [];
      this.#heldBytes = 0;
    } else {
      this.#fate = 'pass';
    }
    this.#follow(line, out);
  }

  /** Octets of the current field. */
  #follow(piece: Buffer, out: Buffer[]): void {
    switch (this.#fate) {
      case 'none':
      case 'pass':
        out.push(piece);
        return;
      case 'drop':
        return;
      case 'held':
        this.#held.push(piece);
        this.#heldBytes += piece.length;
        if (this.#heldBytes >= this.#opts.maxHold) this.#decide(out);
        return;
      default: {
        const never: never = this.#fate;
        throw new Error(`unhandled field fate ${String(never)}`);
      }
    }
  }

  /** Judges the held field: drops it, or passes what was held (and the rest of the field). */
  #decide(out: Buffer[]): void {
    const held = Buffer.concat(this.#held);
    this.#held = [];
    this.#heldBytes = 0;
    if (this.#opts.drop(held.toString('utf8'))) {
      this.dropped++;
      this.#fate = 'drop';
    } else {
      this.#fate = 'pass';
      out.push(held);
    }
  }

  #endField(out: Buffer[]): void {
    if (this.#fate === 'held') this.#decide(out);
    this.#fate = 'none';
  }
}

/** RFC 5322 2.2 / 4.5.3: field-name (printable US-ASCII but ":"), optional WSP, ":". */
function fieldName(line: Buffer): string | null {
  let i = 0;
  while (i < line.length) {
    const b = line[i]!;
    if (b === COLON || b === SP || b === HTAB) break;
    if (b < 33 || b > 126) return null;
    i++;
  }
  if (i === 0) return null;
  let j = i;
  while (j < line.length && (line[j] === SP || line[j] === HTAB)) j++;
  if (line[j] !== COLON) return null;
  return line.toString('latin1', 0, i);
}
