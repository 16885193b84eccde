/**
 * Delivery status notifications, the builder: the bounce, the delay warning and the success
 * report that go back to a message's sender. What a status means in plain words is in
 * dsn-explanations.ts; the parser the tests use is test/helpers/dsn-parser.ts.
 *
 * Follows RFC 3461 (NOTIFY, RET, ENVID and ORCPT semantics; 6.3 which fields a DSN must
 * carry), RFC 3464 (message/delivery-status), RFC 6522 (multipart/report), RFC 3463 (status
 * codes, explained in plain words by dsn-explanations.ts), RFC 3834 (Auto-Submitted), RFC 6533
 * (message/global-delivery-status, message/global, message/global-headers when addresses or
 * the original header are UTF-8), RFC 5322 (at most 998 octets a line, CRLF).
 *
 * Trust level: the original message and the remote server's reply are untrusted. The original
 * is returned only when it can travel as a MIME part unchanged (CRLF lines of at most 998
 * octets, no NUL) and within a size limit, otherwise only its header section, otherwise
 * nothing; the remote reply is reduced to one line of printable ASCII. Our own inputs
 * (addresses, host names) are checked for control characters and refused, never sent on.
 * A DSN is never addressed to the null sender: buildDsn throws (RFC 5321 4.5.5).
 */
import type { MailParams, NotifyValue } from '../message/envelope.js';
import { formatRfc5322Date } from '../message/headers.js';
import { explainStatus, type StatusExplanation } from './dsn-explanations.js';

export interface DsnRecipient {
  /** The final recipient: the address Sterna tried to deliver to. */
  address: string;
  /** The ORCPT parameter, xtext already decoded (RFC 3461 4.2). */
  orcpt?: { type: string; address: string };
  action: 'failed' | 'delayed' | 'delivered' | 'relayed' | 'expanded';
  /** RFC 3463 status, e.g. "5.1.1". */
  status: string;
  /** e.g. "dns; mx.example.com". */
  remoteMta?: string;
  /** The remote server's reply as received, e.g. "550 5.1.1 <x@y>: user unknown". */
  diagnostic?: { type: 'smtp'; text: string };
  lastAttempt?: number;
  /** For "delayed": when Sterna will give up. */
  willRetryUntil?: number;
  /** What was tried, in plain words, e.g. "delivery to mx1.example.com [192.0.2.1] on 3 attempts over 2 days". */
  tried?: string;
  /** What it means and what to do (dsn-explanations.ts explainOutcome); default: from the status. */
  explanation?: StatusExplanation;
}

export interface DsnInput {
  /** Our host name, for Reporting-MTA and the From address. */
  reportingMta: string;
  /** The original message's queue id, shown in the human-readable part and as X-Sterna-Queue-ID. */
  qid: string;
  /** ENVID from MAIL, xtext already decoded: becomes Original-Envelope-Id (RFC 3461 6.3). */
  envid?: string;
  arrivalDate: number;
  /** Where the DSN goes: the original reverse-path. Never '' (buildDsn throws). */
  originalSender: string;
  recipients: DsnRecipient[];
  /** RET from MAIL (the caller applies the default, HDRS). */
  ret: 'FULL' | 'HDRS';
  /** The original message as stored; with HDRS, or for a report that is not a failure, only its header section is read. */
  originalMessage: AsyncIterable<Buffer> | Buffer;
  now: number;
  kind: 'failure' | 'delay' | 'success';
  /** Domain of the DSN's own Message-ID. */
  messageIdDomain: string;
  /** Above this size the original is returned as its header section only. Default 1 MiB. */
  maxReturnBytes?: number;
}

export interface DsnMessage {
  /** A DSN is always sent from the null reverse-path <> (RFC 5321 4.5.5). */
  envelopeSender: '';
  recipient: string;
  message: Buffer;
  /** MAIL parameters the DSN needs: BODY=8BITMIME when it has 8-bit octets, SMTPUTF8 when UTF-8 headers or addresses. */
  mailParams: MailParams;
}

export type DsnErrorCode = 'DSN_NULL_SENDER' | 'DSN_BAD_INPUT';

/** A DSN that must not or cannot be built; `code` says which. */
export class DsnError extends Error {
  readonly code: DsnErrorCode;
  constructor(code: DsnErrorCode, message: string) {
    super(message);
    this.name = 'DsnError';
    this.code = code;
  }
}

/** RFC 5322 2.1.1: a line is at most 998 octets, CRLF excluded. */
const MAX_LINE_OCTETS = 998;
/** Where folding and wrapping aim (RFC 5322 2.1.1 "SHOULD be no more than 78"). */
const FOLD_COLUMN = 78;
const WRAP_COLUMN = 76;
const DEFAULT_MAX_RETURN_BYTES = 1024 * 1024;
const STATUS_RE = /^([245])\.(\d{1,3})\.(\d{1,3})$/;
const CONTROL_RE = /[\x00-\x1f\x7f-\x9f]/;
const ENCODER = new TextEncoder();

const SUBJECTS = {
  failure: 'Undelivered Mail Returned to Sender',
  delay: 'Delayed Mail (still being retried)',
  success: 'Successful Mail Delivery Report',
} as const;

// ---------------------------------------------------------------------------------------------
// NOTIFY

/**
 * RFC 3461 4.1: whether the sender asked for this kind of report for a recipient. Without
 * NOTIFY (or with an empty list) the default is FAILURE and DELAY; NEVER asks for none.
 */
export function shouldNotify(kind: DsnInput['kind'], notify?: NotifyValue[]): boolean {
  if (notify === undefined || notify.length === 0) return kind !== 'success';
  if (notify.includes('NEVER')) return false;
  switch (kind) {
    case 'failure':
      return notify.includes('FAILURE');
    case 'delay':
      return notify.includes('DELAY');
    case 'success':
      return notify.includes('SUCCESS');
    default:
      return assertNever(kind);
  }
}

function assertNever(x: never): never {
  throw new Error(`unexpected value ${String(x)}`);
}

// ---------------------------------------------------------------------------------------------
// Reading the original message

interface Original {
  /** The octets read: the whole message, or its beginning. */
  bytes: Buffer;
  /** True when `bytes` is the whole message. */
  complete: boolean;
  /** Length of the header section (with its last CRLF, without the blank line), or -1 if not found in `bytes`. */
  headerEnd: number;
}

/**
 * Finds the end of the header section as octets arrive: the first CRLF CRLF, or a CRLF at the
 * very start (an empty header section). Matching starts as if a CRLF preceded the message.
 */
class HeaderEndFinder {
  #matched = 2;
  #offset = 0;
  /** Feeds a chunk; returns the header length once found, else -1. */
  feed(chunk: Buffer): number {
    for (let i = 0; i < chunk.length; i++) {
      const b = chunk[i]!;
      const want = this.#matched % 2 === 0 ? 0x0d : 0x0a;
      if (b === want) this.#matched++;
      else this.#matched = b === 0x0d ? 1 : 0;
      if (this.#matched === 4) return this.#offset + i + 1 - 2;
    }
    this.#offset += chunk.length;
    return -1;
  }
}

async function readOriginal(
  source: AsyncIterable<Buffer> | Buffer,
  headersOnly: boolean,
  limit: number,
): Promise<Original> {
  if (Buffer.isBuffer(source)) {
    const bytes = source.length > limit ? source.subarray(0, limit + 1) : source;
    return { bytes, complete: source.length <= limit, headerEnd: new HeaderEndFinder().feed(bytes) };
  }
  const chunks: Buffer[] = [];
  const finder = new HeaderEndFinder();
  let total = 0;
  let headerEnd = -1;
  let complete = true;
  // Leaving the loop early calls the iterator's return(), which closes a file stream.
  for await (const chunk of source) {
    chunks.push(chunk);
    total += chunk.length;
    if (headerEnd === -1) headerEnd = finder.feed(chunk);
    if ((headersOnly && headerEnd !== -1) || total > limit) {
      complete = false;
      break;
    }
  }
  return { bytes: Buffer.concat(chunks, total), complete, headerEnd };
}

/** Whether octets can travel unchanged as MIME content: CRLF lines of at most 998 octets, no NUL. */
function isLineSafe(buf: Buffer): boolean {
  let lineLength = 0;
  for (let i = 0; i < buf.length; i++) {
    const b = buf[i]!;
    if (b === 0x0d) {
      if (buf[i + 1] !== 0x0a) return false;
      i++;
      lineLength = 0;
    } else if (b === 0x0a || b === 0x00) {
      return false;
    } else if (++lineLength > MAX_LINE_OCTETS) {
      return false;
    }
  }
  return true;
}

function has8bit(buf: Buffer | string): boolean {
  if (typeof buf === 'string') return /[^\x00-\x7f]/.test(buf);
  for (const b of buf) if (b >= 0x80) return true;
  return false;
}

function withFinalCrlf(buf: Buffer): Buffer {
  if (buf.length === 0 || (buf[buf.length - 2] === 0x0d && buf[buf.length - 1] === 0x0a)) return buf;
  return Buffer.concat([buf, Buffer.from('\r\n')]);
}

type Returned =
  { what: 'full' | 'headers'; content: Buffer; note: string } | { what: 'none'; content: null; note: string };

/**
 * Chooses what of the original to return (RFC 3461 4.3): the whole message only in a failure
 * report with RET=FULL, within the size limit and when it can travel unchanged; otherwise its
 * header section; otherwise nothing (RFC 6522 makes the third part optional).
 */
function chooseReturned(original: Original, wantFull: boolean, ret: 'FULL' | 'HDRS'): Returned {
  const { bytes, complete } = original;
  let reason: string;
  if (wantFull) {
    if (complete && isLineSafe(bytes)) {
      return {
        what: 'full',
        content: withFinalCrlf(bytes),
        note: 'A copy of your message is attached below.',
      };
    }
    reason = complete
      ? 'it has lines a report cannot carry unchanged'
      : 'it is larger than the mail system returns';
  } else {
    reason =
      ret === 'HDRS'
        ? 'the whole message is returned only when the sender asks for it, with RET=FULL'
        : 'only failure reports return the whole message';
  }
  const headerEnd = original.headerEnd !== -1 ? original.headerEnd : complete ? bytes.length : -1;
  if (headerEnd !== -1) {
    const header = withFinalCrlf(bytes.subarray(0, headerEnd));
    if (isLineSafe(header)) {
      return {
        what: 'headers',
        content: header,
        note: `The header of your message is attached below; its body is not returned (${reason}).`,
      };
    }
  }
  return {
    what: 'none',
    content: null,
    note: 'Your message is not attached: its header could not be carried in this report unchanged.',
  };
}

// ---------------------------------------------------------------------------------------------
// Building

/** Refuses our own values that would break a header line: control characters, or empty. */
function checkField(name: string, value: string): string {
  if (value === '' || CONTROL_RE.test(value)) {
    throw new DsnError('DSN_BAD_INPUT', `DSN ${name} is empty or contains control characters`);
  }
  return value;
}

/** Free text we did not write: one line, control characters replaced. */
function oneLine(s: string): string {
  return s
    .replace(/\r\n|[\r\n]/g, ' ')
    .replace(/[\x00-\x1f\x7f-\x9f]/g, '?')
    .trim();
}

/** The remote reply: one line of printable ASCII (an SMTP reply is ASCII, RFC 5321 4.2). */
function remoteText(s: string): string {
  return oneLine(s).replace(/[^\x20-\x7e]/g, '?');
}

/**
 * Folds a header-style field (RFC 5322 2.2.3) before spaces so lines stay near 78 octets;
 * unfolding (removing each CRLF) gives the value back exactly. A run of text longer than a
 * line allows, with no space to fold at, is cut (it cannot be carried otherwise).
 */
function foldField(name: string, value: string): string {
  const words = value.split(' ');
  const lines: string[] = [];
  let line = `${name}:`;
  let first = true;
  for (const raw of words) {
    let word = raw;
    // Room for the longest field name we write.
    const max = MAX_LINE_OCTETS - 40;
    if (ENCODER.encode(word).length > max) word = truncateUtf8(word, max);
    const piece = ` ${word}`;
    if (!first && word !== '' && octets(line) + octets(piece) > FOLD_COLUMN) {
      lines.push(line);
      line = piece;
    } else {
      line += piece;
    }
    first = false;
  }
  lines.push(line);
  return lines.join('\r\n') + '\r\n';
}

function octets(s: string): number {
  return ENCODER.encode(s).length;
}

function truncateUtf8(s: string, max: number): string {
  let out = '';
  let n = 0;
  for (const ch of s) {
    const size = octets(ch);
    if (n + size > max) break;
    out += ch;
    n += size;
  }
  return out;
}

/** Wraps plain text at about 76 columns, with an indent for continuation lines. */
function wrap(text: string, indent = '', firstIndent = indent): string[] {
  const out: string[] = [];
  let line = firstIndent;
  let empty = true;
  for (const raw of text.split(' ')) {
    if (raw === '') continue;
    const word = octets(raw) > MAX_LINE_OCTETS - 80 ? truncateUtf8(raw, MAX_LINE_OCTETS - 80) : raw;
    if (!empty && octets(line) + 1 + octets(word) > WRAP_COLUMN) {
      out.push(line);
      line = indent + word;
    } else {
      line += (empty ? '' : ' ') + word;
    }
    empty = false;
  }
  out.push(line);
  return out;
}

function plural(n: number, one: string, many: string): string {
  return n === 1 ? one : many;
}

function resultText(r: DsnRecipient): string {
  switch (r.action) {
    case 'failed':
      return r.status.startsWith('4.')
        ? `not delivered: the mail system gave up after retrying (status ${r.status})`
        : `not delivered: permanent failure (status ${r.status})`;
    case 'delayed':
      return r.willRetryUntil === undefined
        ? `not delivered yet, still trying (status ${r.status})`
        : `not delivered yet, still trying until ${formatRfc5322Date(r.willRetryUntil)} (status ${r.status})`;
    case 'delivered':
      return `delivered (status ${r.status})`;
    case 'relayed':
      return `handed on to a mail server that does not send delivery reports; you may hear no more (status ${r.status})`;
    case 'expanded':
      return `delivered to a mailing list or alias, which sent it on to its members (status ${r.status})`;
    default:
      return assertNever(r.action);
  }
}

function humanText(input: DsnInput, returned: Returned): string {
  const n = input.recipients.length;
  const whom = plural(n, 'the recipient below', `the ${n} recipients below`);
  const lines: string[] = [`This is the mail system at ${input.reportingMta}.`, ''];
  switch (input.kind) {
    case 'failure':
      lines.push(
        ...wrap(
          `Your message could not be delivered to ${whom}. The mail system has stopped trying; ` +
            `each recipient below says what happened and what you can do.`,
        ),
      );
      break;
    case 'delay': {
      const until = input.recipients
        .map((r) => r.willRetryUntil)
        .filter((t): t is number => t !== undefined)
        .reduce<number | undefined>((a, b) => (a === undefined || b > a ? b : a), undefined);
      const when = until === undefined ? 'for a while yet' : `until ${formatRfc5322Date(until)}`;
      lines.push(
        ...wrap(
          `Your message has not yet been delivered to ${whom}. This is only a warning: the mail ` +
            `system is still trying, and will keep trying ${when}. You do not need to do anything ` +
            `now. If it still cannot be delivered by then, you will get another message.`,
        ),
      );
      break;
    }
    case 'success':
      lines.push(...wrap(`You asked to be told about the delivery of your message to ${whom}. Here it is.`));
      break;
    default:
      assertNever(input.kind);
  }
  lines.push('', 'Your message:', `    Queue id: ${input.qid}`);
  lines.push(`    Received: ${formatRfc5322Date(input.arrivalDate)}`);
  if (input.envid !== undefined) lines.push(`    Your reference (ENVID): ${input.envid}`);
  for (const r of input.recipients) {
    lines.push('');
    let head = `<${r.address}>`;
    if (r.orcpt !== undefined && r.orcpt.address !== r.address) {
      head += ` (originally addressed to ${oneLine(r.orcpt.address)})`;
    }
    lines.push(...wrap(head));
    lines.push(...wrap(`Result: ${resultText(r)}.`, '        ', '    '));
    if (r.tried !== undefined && oneLine(r.tried) !== '') {
      lines.push(...wrap(`What was tried: ${oneLine(r.tried)}.`, '        ', '    '));
    }
    if (r.diagnostic !== undefined) {
      // The reply exactly as received, unwrapped, so it can be searched for and quoted. Without
      // a Remote-MTA the reply is Sterna's own (a content filter refusing a sendmail submission):
      // "What was tried" names who gave it.
      lines.push(r.remoteMta !== undefined ? '    The remote server replied:' : '    The reply was:');
      lines.push(`        ${truncateUtf8(remoteText(r.diagnostic.text), MAX_LINE_OCTETS - 8)}`);
    }
    if (r.action === 'failed' || r.action === 'delayed') {
      const e = r.explanation ?? explainStatus(r.status, r.diagnostic?.text);
      lines.push(...wrap(`What it most likely means: ${e.meaning}`, '        ', '    '));
      const advice =
        r.action === 'delayed' ? 'Nothing yet: the mail system keeps trying on its own.' : e.advice;
      lines.push(...wrap(`What you can do: ${advice}`, '        ', '    '));
    }
  }
  lines.push('', ...wrap(returned.note), '');
  return lines.join('\r\n');
}

function deliveryStatus(input: DsnInput, global: boolean): string {
  let s = foldField('Reporting-MTA', `dns; ${input.reportingMta}`);
  if (input.envid !== undefined) s += foldField('Original-Envelope-Id', input.envid);
  s += foldField('X-Sterna-Queue-ID', input.qid);
  s += foldField('Arrival-Date', formatRfc5322Date(input.arrivalDate));
  for (const r of input.recipients) {
    s += '\r\n';
    if (r.orcpt !== undefined) s += foldField('Original-Recipient', `${r.orcpt.type};${r.orcpt.address}`);
    // RFC 6533 3: a UTF-8 address is of type "utf-8", written as is in the global variant.
    const type = global && has8bit(r.address) ? 'utf-8' : 'rfc822';
    s += foldField('Final-Recipient', `${type}; ${r.address}`);
    s += foldField('Action', r.action);
    s += foldField('Status', r.status);
    if (r.remoteMta !== undefined) s += foldField('Remote-MTA', r.remoteMta);
    if (r.diagnostic !== undefined) {
      s += foldField('Diagnostic-Code', `${r.diagnostic.type}; ${remoteText(r.diagnostic.text)}`);
    }
    if (r.lastAttempt !== undefined) s += foldField('Last-Attempt-Date', formatRfc5322Date(r.lastAttempt));
    if (r.action === 'delayed' && r.willRetryUntil !== undefined) {
      s += foldField('Will-Retry-Until', formatRfc5322Date(r.willRetryUntil));
    }
  }
  return s;
}

function validate(input: DsnInput): void {
  if (input.originalSender === '') {
    throw new DsnError('DSN_NULL_SENDER', 'a DSN is never sent to the null sender <> (RFC 5321 4.5.5)');
  }
  checkField('originalSender', input.originalSender);
  checkField('reportingMta', input.reportingMta);
  checkField('messageIdDomain', input.messageIdDomain);
  checkField('qid', input.qid);
  if (input.envid !== undefined) checkField('envid', input.envid);
  if (input.recipients.length === 0)
    throw new DsnError('DSN_BAD_INPUT', 'a DSN needs at least one recipient');
  for (const r of input.recipients) {
    checkField('recipient address', r.address);
    if (!STATUS_RE.test(r.status)) {
      throw new DsnError('DSN_BAD_INPUT', `DSN status "${oneLine(r.status)}" is not an RFC 3463 code`);
    }
    if (r.remoteMta !== undefined) checkField('Remote-MTA', r.remoteMta);
    if (r.orcpt !== undefined) {
      checkField('ORCPT type', r.orcpt.type);
      checkField('ORCPT address', r.orcpt.address);
    }
  }
}

/**
 * Builds a DSN (RFC 3464 inside RFC 6522 multipart/report) for the original sender, to be
 * sent from the null reverse-path. Throws DsnError DSN_NULL_SENDER for the null sender
 * (never bounce a bounce) and DSN_BAD_INPUT for malformed inputs. Reads the original message
 * once: only its header section unless the whole of it is returned.
 */
export async function buildDsn(input: DsnInput): Promise<DsnMessage> {
  validate(input);
  // RFC 3461 4.3: RET=FULL returns the whole message in a "failed" DSN; other reports carry the header.
  const wantFull = input.kind === 'failure' && input.ret === 'FULL';
  const limit = input.maxReturnBytes ?? DEFAULT_MAX_RETURN_BYTES;
  const original = await readOriginal(input.originalMessage, !wantFull, limit);
  const returned = chooseReturned(original, wantFull, input.ret);

  const returnedHeader8bit =
    returned.content !== null &&
    has8bit(
      returned.what === 'full' && original.headerEnd !== -1
        ? returned.content.subarray(0, original.headerEnd)
        : returned.content,
    );
  // RFC 6533: UTF-8 addresses or a UTF-8 original header call for the "global" types.
  const global =
    returnedHeader8bit ||
    has8bit(input.originalSender) ||
    input.recipients.some((r) => has8bit(r.address) || (r.orcpt !== undefined && has8bit(r.orcpt.address)));

  const text = humanText(input, returned);
  const status = deliveryStatus(input, global);
  const statusType = global ? 'message/global-delivery-status' : 'message/delivery-status';
  const parts: { headers: string; body: Buffer }[] = [
    {
      headers: has8bit(text)
        ? 'Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n'
        : 'Content-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n',
      body: Buffer.from(text, 'utf8'),
    },
    {
      headers: `Content-Type: ${statusType}\r\n${has8bit(status) ? 'Content-Transfer-Encoding: 8bit\r\n' : ''}`,
      body: Buffer.from(status, 'utf8'),
    },
  ];
  if (returned.content !== null) {
    const isGlobal = returnedHeader8bit;
    const type =
      returned.what === 'full'
        ? isGlobal
          ? 'message/global'
          : 'message/rfc822'
        : isGlobal
          ? 'message/global-headers'
          : 'text/rfc822-headers';
    const cte = has8bit(returned.content) ? 'Content-Transfer-Encoding: 8bit\r\n' : '';
    parts.push({ headers: `Content-Type: ${type}\r\n${cte}`, body: returned.content });
  }

  const boundary = chooseBoundary(
    input,
    parts.map((p) => p.body),
  );
  const eightBit = parts.some((p) => has8bit(p.body));
  const reportType = global ? 'global-delivery-status' : 'delivery-status';
  let head = '';
  head += foldField('From', `Mail Delivery System <MAILER-DAEMON@${input.reportingMta}>`);
  head += foldField('To', `<${input.originalSender}>`);
  head += foldField('Subject', SUBJECTS[input.kind]);
  head += foldField('Date', formatRfc5322Date(input.now));
  head += foldField(
    'Message-ID',
    `<${input.qid}.${input.kind}.${input.now.toString(36)}@${input.messageIdDomain}>`,
  );
  head += foldField('Auto-Submitted', 'auto-replied');
  head += foldField('MIME-Version', '1.0');
  head += foldField('Content-Type', `multipart/report; report-type=${reportType}; boundary="${boundary}"`);
  if (eightBit) head += 'Content-Transfer-Encoding: 8bit\r\n';
  head += '\r\n';

  const out: Buffer[] = [
    Buffer.from(head, 'utf8'),
    Buffer.from('This is a MIME-encapsulated delivery status notification.\r\n', 'utf8'),
  ];
  for (const p of parts) {
    out.push(Buffer.from(`\r\n--${boundary}\r\n${p.headers}\r\n`, 'utf8'), p.body);
  }
  out.push(Buffer.from(`\r\n--${boundary}--\r\n`, 'utf8'));

  const mailParams: MailParams = {};
  if (eightBit) mailParams.body = '8BITMIME';
  if (global) mailParams.smtputf8 = true;
  return {
    envelopeSender: '',
    recipient: input.originalSender,
    message: Buffer.concat(out),
    mailParams,
  };
}

/**
 * A boundary made from the queue id and time, so output is reproducible; lengthened until no
 * part contains it (RFC 2046 5.1.1), so a crafted original cannot end a part early.
 */
function chooseBoundary(input: DsnInput, bodies: Buffer[]): string {
  const safeQid = input.qid.replace(/[^A-Za-z0-9]/g, '');
  let boundary = `=_sterna_${safeQid}_${input.now.toString(36)}`;
  for (let n = 1; bodies.some((b) => b.includes(`--${boundary}`)); n++) boundary += `_${n}`;
  return boundary;
}
