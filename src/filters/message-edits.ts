/**
 * Applies content filters' edits to a stored message (RFC 5322 2.2 fields, 2.1 the empty line
 * that ends the header section): fields appended, inserted, changed or deleted, the body
 * replaced. The message is read back from the spool and the new form streamed out; only the
 * header section is held in memory (bounded by maxHeaderBytes; past it the edit fails and the
 * filter's failure mode applies). The body streams through unless it is replaced.
 * Trust level: the message is untrusted input; the edits come from trusted filters and their
 * names and values were cleaned (verdict.ts) before they get here.
 */
import type { MessageEdit } from './verdict.js';

/** One field as stored: its name (lower-cased for matching) and its octets, CRLF included. */
interface Field {
  key: string;
  raw: Buffer;
}

const CRLF = Buffer.from('\r\n');
const END = Buffer.from('\r\n\r\n');

export class HeaderTooLargeError extends Error {}

/** Whether any edit needs the stored message rewritten (a prepend alone does not). */
export function needsRewrite(edits: readonly MessageEdit[]): boolean {
  return edits.some((e) => e.op !== 'prepend');
}

/** `Name: value\r\n`, with the value's own leading white space kept when it has some. */
export function formatField(name: string, value: string): string {
  const sep = value === '' || value.startsWith(' ') || value.startsWith('\t') ? '' : ' ';
  return `${name}:${sep}${value}\r\n`;
}

/** Splits a header section (without the empty line) into fields. */
function splitFields(header: Buffer): Field[] {
  const fields: Field[] = [];
  let start = 0;
  while (start < header.length) {
    // A field runs to the CRLF that is not followed by white space (RFC 5322 2.2.3 folding).
    let end = start;
    for (;;) {
      const nl = header.indexOf(CRLF, end);
      if (nl < 0) {
        end = header.length;
        break;
      }
      end = nl + 2;
      const next = header[end];
      if (next !== 0x20 && next !== 0x09) break;
    }
    const raw = header.subarray(start, end);
    const colon = raw.indexOf(0x3a);
    const key = colon > 0 ? raw.subarray(0, colon).toString('latin1').trimEnd().toLowerCase() : '';
    fields.push({ key, raw });
    start = end;
  }
  return fields;
}

function applyEdits(fields: Field[], edits: readonly MessageEdit[]): Field[] {
  let out = fields;
  for (const e of edits) {
    switch (e.op) {
      case 'prepend':
      case 'body':
        break;
      case 'append':
        out = [...out, { key: e.name.toLowerCase(), raw: Buffer.from(formatField(e.name, e.value), 'utf8') }];
        break;
      case 'insert': {
        const at = Math.max(0, Math.min(e.index, out.length));
        const f = { key: e.name.toLowerCase(), raw: Buffer.from(formatField(e.name, e.value), 'utf8') };
        out = [...out.slice(0, at), f, ...out.slice(at)];
        break;
      }
      case 'change': {
        const key = e.name.toLowerCase();
        let seen = 0;
        const next: Field[] = [];
        for (const f of out) {
          if (f.key === key) seen++;
          if (f.key !== key || (e.index !== 0 && seen !== e.index)) {
            next.push(f);
            continue;
          }
          // The field keeps its name as stored (its case), with the new value.
          const stored = f.raw.subarray(0, f.raw.indexOf(0x3a)).toString('latin1').trimEnd();
          if (e.value !== null) next.push({ key, raw: Buffer.from(formatField(stored, e.value), 'utf8') });
        }
        // SMFIR_CHGHEADER on a field that is not there adds it (as sendmail and Postfix do).
        if (e.value !== null && e.index <= 1 && seen === 0)
          next.push({ key, raw: Buffer.from(formatField(e.name, e.value), 'utf8') });
        out = next;
        break;
      }
      default: {
        const never: never = e;
        throw new Error(`unhandled edit ${JSON.stringify(never)}`);
      }
    }
  }
  return out;
}

/**
 * The message `stored` with `edits` applied (prepends excepted: they go in the commit's prefix),
 * or null when they change nothing (rspamd asks on every message to remove an X-Spam field that
 * is seldom there: no rewrite then). The header section is read here; the returned iterable
 * yields the new header section, the empty line, then the body (the stored one, streamed on, or
 * the replacement). A message without an empty line has no body; a replacement gives it one.
 */
export async function planRewrite(
  stored: AsyncIterable<Buffer>,
  edits: readonly MessageEdit[],
  maxHeaderBytes: number,
): Promise<AsyncIterable<Buffer> | null> {
  const it = stored[Symbol.asyncIterator]();
  let held = Buffer.alloc(0);
  let headerEnd = -1;
  let exhausted = false;
  while (headerEnd < 0) {
    const step = await it.next();
    if (step.done === true) {
      exhausted = true;
      break;
    }
    held = Buffer.concat([held, step.value]);
    const at = held.indexOf(END);
    if (at >= 0) headerEnd = at;
    else if (held.length > maxHeaderBytes) {
      await it.return?.();
      throw new HeaderTooLargeError(`header section over ${maxHeaderBytes} octets`);
    }
  }
  // The header section as stored: every field with its CRLF.
  const header = headerEnd >= 0 ? held.subarray(0, headerEnd + 2) : held;
  const rest = headerEnd >= 0 ? held.subarray(headerEnd + 4) : Buffer.alloc(0);
  const before = splitFields(header);
  const fields = applyEdits(before, edits);
  const body = edits.reduce<Buffer | null>((b, e) => (e.op === 'body' ? e.body : b), null);
  const same = fields.length === before.length && fields.every((f, i) => f.raw === before[i]?.raw);
  if (body === null && same) {
    await it.return?.();
    return null;
  }
  return (async function* (): AsyncGenerator<Buffer> {
    for (const f of fields) yield f.raw;
    if (body !== null) {
      yield CRLF;
      yield body;
      await it.return?.();
      return;
    }
    if (headerEnd < 0) return;
    yield CRLF;
    if (rest.length > 0) yield rest;
    if (exhausted) return;
    for (;;) {
      const step = await it.next();
      if (step.done === true) return;
      yield step.value;
    }
  })();
}
