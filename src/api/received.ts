/**
 * The Received header (RFC 5321 4.4) for a message posted to the HTTP submission API. RFC 3848
 * registers "with" keywords for SMTP and LMTP only (ESMTPA, ESMTPSA ...); no keyword names HTTP,
 * so Sterna writes the atom "HTTP" or "HTTPS" (RFC 5321 4.4 Attdl-Protocol: an atom) rather
 * than claim ESMTPA for a message that never crossed SMTP, and names the authenticated user and
 * the API key's public id in a comment, as Postfix names an authenticated sender. Pure.
 */
import { formatRfc5322Date } from '../message/headers.js';

/** No CR/LF or comment delimiters from a value we put in a comment; bounded. */
function commentSafe(s: string): string {
  return s.replace(/[\x00-\x1f\x7f()\\]/g, '?').slice(0, 255);
}

export function apiReceivedHeader(f: {
  clientIp: string;
  byHost: string;
  tls: boolean;
  user: string;
  keyId: string;
  qid: string;
  singleRecipient?: string;
  date: number;
}): string {
  const literal = f.clientIp.includes(':') ? `IPv6:${f.clientIp}` : f.clientIp;
  let h = `Received: from [${literal}] (HTTP API client)\r\n`;
  h += `\tby ${f.byHost} (Sterna) with ${f.tls ? 'HTTPS' : 'HTTP'} id ${f.qid}\r\n`;
  h += `\t(authenticated user ${commentSafe(f.user)}, API key ${commentSafe(f.keyId)})`;
  if (f.singleRecipient !== undefined) h += `\r\n\tfor <${commentSafe(f.singleRecipient)}>`;
  h += `;\r\n\t${formatRfc5322Date(f.date)}\r\n`;
  return h;
}
