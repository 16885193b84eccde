/**
 * A small parser for the delivery status notifications Sterna sends (RFC 3464
 * message/delivery-status, or RFC 6533 message/global-delivery-status, inside an RFC 6522
 * multipart/report): the top-level header, the human-readable part, the per-message and
 * per-recipient fields, and the returned original. Only tests read DSNs, so it lives here, not
 * in src/ (issue 8: "the DSN parser belongs to the test helpers"). It is strict: a malformed or
 * repeated field, or a message that is not a delivery report, throws. Trust: test code only;
 * it reads what Sterna wrote.
 */
import assert from 'node:assert/strict';
import { waitForMessages } from './maildir.js';

export interface ParsedDsn {
  /** Top-level header fields, names lower-cased, values unfolded. */
  headers: Record<string, string>;
  /** The report-type parameter of multipart/report. */
  reportType: string;
  /** The human-readable first part, decoded as UTF-8. */
  humanText: string;
  /** The content type of the second part (message/delivery-status or its global variant). */
  statusType: string;
  /** Per-message fields of the delivery-status part, names lower-cased. */
  perMessage: Record<string, string>;
  /** Per-recipient field groups, in order, names lower-cased. */
  recipients: Record<string, string>[];
  /** The third part, when present. */
  returned: { contentType: string; content: Buffer } | null;
}

/** Parses "Name: value" lines (unfolding first); throws on a malformed or repeated field. */
function parseFieldBlock(block: string): Record<string, string> {
  const out: Record<string, string> = {};
  const unfolded = block.replace(/\r\n(?=[ \t])/g, '');
  for (const line of unfolded.split('\r\n')) {
    if (line === '') continue;
    const colon = line.indexOf(':');
    if (colon <= 0) throw new Error(`DSN parse: not a field: ${JSON.stringify(line.slice(0, 80))}`);
    const name = line.slice(0, colon).trim().toLowerCase();
    if (Object.hasOwn(out, name)) throw new Error(`DSN parse: field ${name} repeated`);
    out[name] = line.slice(colon + 1).replace(/^[ \t]+/, '');
  }
  return out;
}

function mediaType(contentType: string): string {
  return (contentType.split(';')[0] ?? '').trim().toLowerCase();
}

function param(contentType: string, name: string): string | undefined {
  const re = new RegExp(`;\\s*${name}=(?:"([^"]*)"|([^;\\s]+))`, 'i');
  const m = re.exec(contentType);
  return m === null ? undefined : (m[1] ?? m[2]);
}

/**
 * Parses a DSN as buildDsn writes it (and the usual shape of others): the top-level header,
 * the three parts of multipart/report, the delivery-status fields. Throws when the message
 * is not a delivery status report. Octets are handled as latin1 internally so offsets stay
 * exact; text is decoded as UTF-8 at the end.
 */
export function parseDsn(message: Buffer): ParsedDsn {
  const raw = message.toString('latin1');
  const utf8 = (s: string): string => Buffer.from(s, 'latin1').toString('utf8');
  const split = raw.indexOf('\r\n\r\n');
  if (split === -1) throw new Error('DSN parse: no end of header');
  const headers = parseFieldBlock(utf8(raw.slice(0, split + 2)));
  const contentType = headers['content-type'] ?? '';
  if (mediaType(contentType) !== 'multipart/report') throw new Error('DSN parse: not multipart/report');
  const boundary = param(contentType, 'boundary');
  const reportType = param(contentType, 'report-type');
  if (boundary === undefined || reportType === undefined) {
    throw new Error('DSN parse: multipart/report without boundary or report-type');
  }
  // Every delimiter is CRLF "--" boundary; the body's first line may be one with no CRLF before it.
  const body = `\r\n${raw.slice(split + 4)}`;
  const pieces = body.split(`\r\n--${boundary}`);
  const parts: { headers: Record<string, string>; content: string }[] = [];
  let closed = false;
  for (const piece of pieces.slice(1)) {
    if (piece.startsWith('--')) {
      closed = true;
      break;
    }
    const rest = piece.replace(/^[ \t]*\r\n/, '');
    const end = rest.startsWith('\r\n') ? 0 : rest.indexOf('\r\n\r\n');
    if (end === -1) throw new Error('DSN parse: part without header end');
    parts.push({
      headers: parseFieldBlock(utf8(rest.slice(0, end + 2))),
      content: rest.slice(end === 0 ? 2 : end + 4),
    });
  }
  if (!closed) throw new Error('DSN parse: no closing boundary');
  const [human, status, third] = parts;
  if (human === undefined || status === undefined) throw new Error('DSN parse: fewer than two parts');
  const statusType = mediaType(status.headers['content-type'] ?? '');
  if (statusType !== 'message/delivery-status' && statusType !== 'message/global-delivery-status') {
    throw new Error(`DSN parse: second part is ${statusType}, not a delivery status`);
  }
  const groups = utf8(status.content)
    .replace(/(\r\n)+$/, '')
    .split(/\r\n\r\n/);
  const [perMessage, ...recipients] = groups.map(parseFieldBlock);
  return {
    headers,
    reportType,
    humanText: utf8(human.content),
    statusType,
    perMessage: perMessage ?? {},
    recipients,
    returned:
      third === undefined
        ? null
        : {
            contentType: mediaType(third.headers['content-type'] ?? ''),
            content: Buffer.from(third.content, 'latin1'),
          },
  };
}

/**
 * Waits for the bounce of message `qid` in the Maildir of `local`@`domain`, which held `before`
 * messages: one more must arrive, it must name `qid` (X-Sterna-Queue-ID) and come from <>
 * (RFC 5321 4.5.5). Returns it parsed.
 */
export async function waitForBounce(
  dataDir: string,
  mailbox: { domain: string; local: string },
  before: number,
  qid: string,
): Promise<ParsedDsn> {
  const msgs = await waitForMessages(dataDir, mailbox.domain, mailbox.local, before + 1);
  assert.equal(msgs.length, before + 1);
  const raw = msgs.find((m) => m.toString('latin1').includes(`X-Sterna-Queue-ID: ${qid}`));
  assert.ok(raw !== undefined, 'the bounce names the original queue id');
  assert.match(raw.toString('latin1'), /^Return-Path: <>\r\n/);
  return parseDsn(raw);
}
