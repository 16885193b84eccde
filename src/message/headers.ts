/**
 * Header helpers: RFC 5322 dates, Message-ID generation, the RFC 5321 4.4 Received trace
 * header with RFC 3848 / 6531 "with" protocol names. Pure functions.
 */
import type { TlsInfo } from './envelope.js';

const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'] as const;
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'] as const;

const pad = (n: number): string => String(n).padStart(2, '0');

/** RFC 5322 3.3 date-time in UTC, e.g. "Sun, 29 Nov 2026 19:53:29 +0000". */
export function formatRfc5322Date(ms: number): string {
  const d = new Date(ms);
  return (
    `${DAYS[d.getUTCDay()] ?? 'Sun'}, ${d.getUTCDate()} ${MONTHS[d.getUTCMonth()] ?? 'Jan'} ${d.getUTCFullYear()} ` +
    `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())} +0000`
  );
}

/** A Message-ID value built from the queue id, unique because queue ids are. */
export function messageIdFor(qid: string, hostname: string): string {
  return `<${qid}@${hostname}>`;
}

/** RFC 3848 / RFC 6531 4.3 "with" keywords. */
export function withProtocol(opts: {
  esmtp: boolean;
  tls: boolean;
  auth: boolean;
  smtputf8: boolean;
}): string {
  if (!opts.esmtp) return 'SMTP';
  const suffix = `${opts.tls ? 'S' : ''}${opts.auth ? 'A' : ''}`;
  return opts.smtputf8 ? `UTF8SMTP${suffix}` : `ESMTP${suffix}`;
}

export interface ReceivedFields {
  helo: string;
  clientIp: string;
  clientHostname?: string;
  byHost: string;
  protocol: string;
  qid: string;
  tls?: TlsInfo;
  /** The AUTH identity of a submission, shown as Postfix shows it: "(Authenticated sender: ...)". */
  authUser?: string;
  /** Named in "for" only when the message has exactly one recipient (privacy). */
  singleRecipient?: string;
  date: number;
}

/** Sanitises a client-supplied name for a header comment: no CR/LF, no parentheses, bounded. */
function headerSafe(s: string): string {
  return s.replace(/[\x00-\x1f\x7f()\\]/g, '?').slice(0, 255);
}

/**
 * The HELO/EHLO name for "from": only what a domain (ASCII or U-labels, RFC 6531) or an address
 * literal is made of; anything else becomes "?", so a hostile name cannot open a quoted string,
 * a comment or an angle address, or put a ";" before the date, and the header stays parseable.
 */
function heloSafe(s: string): string {
  return s.replace(/[^\p{L}\p{M}\p{N}.\-:[\]_]/gu, '?').slice(0, 255);
}

/** The Received header, folded, CRLF-terminated (RFC 5321 4.4). */
export function receivedHeader(f: ReceivedFields): string {
  const literal = f.clientIp.includes(':') ? `IPv6:${f.clientIp}` : f.clientIp;
  const rdns = f.clientHostname === undefined ? '' : `${headerSafe(f.clientHostname)} `;
  let h = `Received: from ${heloSafe(f.helo) || 'unknown'} (${rdns}[${literal}])\r\n`;
  if (f.authUser !== undefined) h += `\t(Authenticated sender: ${headerSafe(f.authUser)})\r\n`;
  h += `\tby ${f.byHost} (Sterna) with ${f.protocol} id ${f.qid}`;
  if (f.tls !== undefined) {
    h += `\r\n\t(version=${headerSafe(f.tls.version)} cipher=${headerSafe(f.tls.cipher)})`;
  }
  if (f.singleRecipient !== undefined) h += `\r\n\tfor <${headerSafe(f.singleRecipient)}>`;
  h += `;\r\n\t${formatRfc5322Date(f.date)}\r\n`;
  return h;
}

/**
 * The Received header for a message a local user handed to `sterna sendmail` (picked up from
 * the maildrop): no network peer, so no "from" clause; the user comes from the kernel's record
 * (the maildrop file's owner), as Postfix's pickup writes "(Postfix, from userid N)".
 */
export function localReceivedHeader(f: {
  login: string;
  uid: number;
  byHost: string;
  qid: string;
  date: number;
}): string {
  return (
    `Received: by ${f.byHost} (Sterna, from local user ${headerSafe(f.login)} uid ${f.uid})\r\n` +
    `\tid ${f.qid};\r\n\t${formatRfc5322Date(f.date)}\r\n`
  );
}
