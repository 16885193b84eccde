/**
 * Dot-stuffing for a body sent with DATA (RFC 5321 4.5.2, 4.1.1.4): the mirror of the DATA
 * decoder (data-decoder.ts) on the sending side, used by the outbound client.
 *
 * What it guarantees, whatever octets the spool holds (a message received before the body rules
 * covered BDAT, a file written by another path, a damaged record): the peer can never read an
 * end of data before the one we send, nor a line that another server could take as one.
 * - Every line ending on the wire is CRLF. A bare LF, or a CR not followed by LF, is sent as CRLF:
 *   the same line break the DATA decoder's 'normalize' mode makes of it, so a relayed body reads
 *   the same at the peer as it would here, and no "\n.\n", "\r.\r" or similar reaches a server
 *   that might end the data there (the SMTP-smuggling family, CVE-2023-51764/51765/51766).
 * - Every line that starts with "." gets one more "." (a line starts at the beginning of the body
 *   and after each CRLF we send), so CRLF "." CRLF never appears inside the body.
 * - end() adds a CRLF when the body does not end with a line break, then ".\r\n".
 * Decoding our output with DataDecoder gives back the body with its line endings made CRLF
 * (dot-stuffer.test.ts checks this at every split point). Other octets (8-bit, NUL) pass
 * unchanged; line length is the receiving side's rule, not this module's.
 *
 * Memory and copying: keeps only whether the last chunk ended a line or in a CR; a chunk that
 * needs no change (CRLF endings only, no line-initial dot) is returned as it is, without a copy.
 *
 * Trust: the body comes from our own spool, but is handled as arbitrary octets.
 */

const LF = 0x0a;
const CR = 0x0d;
const DOT_OCTET = 0x2e;

const DOT = Buffer.from('.');
const LF_ONLY = Buffer.from('\n');
const CR_ONLY = Buffer.from('\r');
const CRLF = Buffer.from('\r\n');
const DOT_CRLF = Buffer.from('.\r\n');

export class DotStuffer {
  /** The next octet starts a line (the body's start, or after a line ending already sent). */
  #atLineStart = true;
  /** The last chunk ended in a CR (already sent): a LF next completes it, anything else gets one inserted. */
  #pendingCR = false;

  /** The stuffed form of `chunk`; the same buffer when nothing needs changing. */
  push(chunk: Buffer): Buffer {
    const n = chunk.length;
    if (n === 0) return chunk;
    const pieces: Buffer[] = [];
    let from = 0;
    /** Sends chunk[from, at) then `extra`; the octets from `at` on are still to be sent. */
    const insert = (at: number, extra: Buffer): void => {
      if (at > from) pieces.push(chunk.subarray(from, at));
      pieces.push(extra);
      from = at;
    };
    let i = 0;
    if (this.#pendingCR) {
      this.#pendingCR = false;
      if (chunk[0] === LF)
        i = 1; // the CRLF was only split between two chunks
      else insert(0, LF_ONLY); // a lone CR: complete it to CRLF
      this.#atLineStart = true;
    }
    // Cached positions of the next CR and LF; stale when below i, n when there is none.
    let nextCR = -1;
    let nextLF = -1;
    while (i < n) {
      if (this.#atLineStart) {
        this.#atLineStart = false;
        if (chunk[i] === DOT_OCTET) insert(i, DOT); // RFC 5321 4.5.2
      }
      if (nextCR < i) nextCR = positionOf(chunk, CR, i);
      if (nextLF < i) nextLF = positionOf(chunk, LF, i);
      const p = nextCR < nextLF ? nextCR : nextLF;
      if (p === n) break;
      if (chunk[p] === LF) {
        insert(p, CR_ONLY); // a bare LF: send CRLF
        i = p + 1;
      } else if (p + 1 === n) {
        this.#pendingCR = true; // the CR is sent now; the next chunk says whether its LF follows
        i = n;
        break;
      } else if (chunk[p + 1] === LF) {
        i = p + 2; // a real CRLF
      } else {
        insert(p + 1, LF_ONLY); // a lone CR: send CRLF
        i = p + 1;
      }
      this.#atLineStart = true;
    }
    if (pieces.length === 0) return chunk;
    if (from < n) pieces.push(chunk.subarray(from));
    return Buffer.concat(pieces);
  }

  /** The bytes that end the data: what completes the last line if it has no ending, then ".\r\n". */
  end(): Buffer {
    if (this.#pendingCR) {
      this.#pendingCR = false;
      return Buffer.concat([LF_ONLY, DOT_CRLF]);
    }
    if (this.#atLineStart) return DOT_CRLF; // an empty body, or one that ends with a line break
    return Buffer.concat([CRLF, DOT_CRLF]);
  }
}

/** First position of `byte` in `buf` at or after `from`, or buf.length if none. */
function positionOf(buf: Buffer, byte: number, from: number): number {
  const at = buf.indexOf(byte, from);
  return at === -1 ? buf.length : at;
}
