/**
 * The one table of every reply Sterna sends: RFC 5321 code, RFC 3463 enhanced code, text.
 * No reply text is written anywhere else; code asks for a reply by its id and may fill the
 * {placeholders}. docs/replies.md lists this table, and a test (replies-used.test.ts) checks
 * that every entry is used somewhere in src/, so the table lists only what Sterna can send.
 */

export interface Reply {
  code: number;
  /** RFC 3463 enhanced status code, e.g. "5.7.1"; absent only for the greeting and EHLO lines. */
  enhanced?: string;
  /** One or more lines of text. */
  lines: string[];
  /** The server closes the connection after sending this reply. */
  close?: boolean;
}

interface ReplySpec {
  code: number;
  enhanced?: string;
  text: string;
  close?: boolean;
}

export const REPLIES = {
  // Connection
  GREETING: { code: 220, text: '{hostname} {banner}' },
  CLOSING: { code: 221, enhanced: '2.0.0', text: '{hostname} closing connection', close: true },
  SHUTTING_DOWN: {
    code: 421,
    enhanced: '4.3.2',
    text: '{hostname} service shutting down, try again later',
    close: true,
  },
  TOO_MANY_CONNECTIONS: {
    code: 421,
    enhanced: '4.7.0',
    text: '{hostname} too many connections, try again later',
    close: true,
  },
  TOO_MANY_CONNECTIONS_FROM_IP: {
    code: 421,
    enhanced: '4.7.0',
    text: '{hostname} too many connections from your network, try again later',
    close: true,
  },
  TIMEOUT: { code: 421, enhanced: '4.4.2', text: '{hostname} timeout, closing connection', close: true },
  TOO_MANY_ERRORS: {
    code: 421,
    enhanced: '4.7.0',
    text: '{hostname} too many errors in this session, closing connection',
    close: true,
  },

  // Generic
  NOOP_OK: { code: 250, enhanced: '2.0.0', text: 'Ok' },
  RESET_OK: { code: 250, enhanced: '2.0.0', text: 'Ok, transaction reset' },
  HELP: {
    code: 214,
    enhanced: '2.0.0',
    text: 'Commands: HELO EHLO MAIL RCPT DATA BDAT RSET VRFY NOOP HELP QUIT STARTTLS AUTH; see RFC 5321',
  },
  HELO_OK: { code: 250, text: '{hostname} Hello {helo} [{ip}]' },
  VRFY_AMBIGUOUS: {
    code: 252,
    enhanced: '2.5.2',
    text: 'Cannot verify the user, but will accept the message and attempt delivery',
  },
  VRFY_OK: { code: 250, enhanced: '2.1.5', text: '<{address}>' },
  VRFY_UNKNOWN: { code: 550, enhanced: '5.1.1', text: '<{address}>: no such mailbox here' },
  EXPN_DISABLED: { code: 502, enhanced: '5.5.1', text: 'EXPN is not available' },

  // Syntax and sequence
  UNKNOWN_COMMAND: { code: 500, enhanced: '5.5.1', text: 'Command not recognized' },
  LINE_TOO_LONG: { code: 500, enhanced: '5.5.2', text: 'Line too long: the limit is {limit} octets' },
  BARE_LF_COMMAND: {
    code: 500,
    enhanced: '5.5.2',
    text: 'Line ended with a bare LF or CR; SMTP lines end with CRLF (RFC 5321 2.3.8)',
  },
  NUL_IN_COMMAND: { code: 500, enhanced: '5.5.2', text: 'NUL character in command' },
  HTTP_COMMAND: {
    code: 554,
    enhanced: '5.7.0',
    text: 'This is an SMTP server, not an HTTP server',
    close: true,
  },
  SYNTAX_ERROR: { code: 501, enhanced: '5.5.2', text: 'Syntax error: {detail}' },
  SYNTAX_ERROR_PARAMS: { code: 501, enhanced: '5.5.4', text: 'Syntax error in parameters: {detail}' },
  BAD_ADDRESS: { code: 553, enhanced: '5.1.3', text: 'Bad address syntax: {detail}' },
  BAD_SENDER_ADDRESS: { code: 553, enhanced: '5.1.7', text: 'Bad sender address syntax: {detail}' },
  UNKNOWN_PARAMETER: {
    code: 555,
    enhanced: '5.5.4',
    text: 'Parameter {param} is not recognized or not implemented',
  },
  BAD_SEQUENCE: { code: 503, enhanced: '5.5.1', text: 'Bad sequence of commands: {detail}' },
  SMTPUTF8_REQUIRED: {
    code: 553,
    enhanced: '5.6.7',
    text: 'Address is not ASCII; MAIL FROM must carry the SMTPUTF8 parameter (RFC 6531)',
  },

  // MAIL
  SENDER_OK: { code: 250, enhanced: '2.1.0', text: 'Sender <{address}> ok' },
  MESSAGE_TOO_BIG_DECLARED: {
    code: 552,
    enhanced: '5.3.4',
    text: 'Message size exceeds the limit of {limit} octets',
  },
  AUTH_REQUIRED: {
    code: 530,
    enhanced: '5.7.0',
    text: 'Authentication required: this port accepts mail only from authenticated users',
  },
  SENDER_NOT_OWNED: {
    code: 553,
    enhanced: '5.7.1',
    text: 'Sender address <{address}> is not owned by the authenticated user {user}',
  },

  // RCPT
  RECIPIENT_OK: { code: 250, enhanced: '2.1.5', text: 'Recipient <{address}> ok' },
  NO_SUCH_USER: {
    code: 550,
    enhanced: '5.1.1',
    text: 'Recipient <{address}> unknown: no such mailbox here',
  },
  // SRS bounce addresses (src/mailauth/srs.ts): refused as unknown, as Postfix with postsrsd does.
  SRS_INVALID: {
    code: 550,
    enhanced: '5.1.1',
    text: 'Recipient <{address}> unknown: not a valid SRS address of this server (forged or damaged)',
  },
  SRS_EXPIRED: {
    code: 550,
    enhanced: '5.1.1',
    text: 'Recipient <{address}> unknown: this SRS address expired (older than {days} days)',
  },
  RECIPIENT_UNVERIFIED: {
    code: 450,
    enhanced: '4.4.3',
    text: 'Recipient <{address}> cannot be verified now: the mailbox server is unavailable; try again later',
  },
  RELAY_DENIED: {
    code: 554,
    enhanced: '5.7.1',
    text: 'Relay access denied: <{address}> is not a local domain; authenticate to send to other domains',
  },
  TOO_MANY_RECIPIENTS: {
    code: 452,
    enhanced: '4.5.3',
    text: 'Too many recipients: the limit is {limit} per message',
  },
  RECIPIENT_LOOKUP_FAILED: {
    code: 451,
    enhanced: '4.3.0',
    text: 'Temporary failure looking up the recipient; try again later',
  },

  // DATA / BDAT
  START_DATA: { code: 354, text: 'End data with <CR><LF>.<CR><LF>' },
  NO_VALID_RECIPIENTS: { code: 554, enhanced: '5.5.1', text: 'No valid recipients' },
  QUEUED: { code: 250, enhanced: '2.0.0', text: 'Ok: queued as {qid}' },
  BDAT_CHUNK_OK: { code: 250, enhanced: '2.0.0', text: 'Ok: {size} octets received' },
  MESSAGE_TOO_BIG: {
    code: 552,
    enhanced: '5.3.4',
    text: 'Message size exceeds the limit of {limit} octets',
  },
  BARE_LF_DATA: {
    code: 550,
    enhanced: '5.6.11',
    text: 'Message contains a bare LF or CR; lines must end with CRLF (RFC 5321 2.3.8), message refused',
  },
  NUL_IN_DATA: { code: 550, enhanced: '5.6.0', text: 'Message contains a NUL character, message refused' },
  TEXT_LINE_TOO_LONG: {
    code: 550,
    enhanced: '5.6.0',
    text: 'Message has a line longer than {limit} octets (RFC 5321 4.5.3.1.6), message refused',
  },
  BDAT_AFTER_DATA_MIX: {
    code: 503,
    enhanced: '5.5.1',
    text: 'Bad sequence of commands: DATA after BDAT in one transaction',
  },
  TOO_MANY_HOPS: {
    code: 554,
    enhanced: '5.4.6',
    text: 'Too many Received headers ({count}): mail loop suspected',
  },
  SPOOL_FULL: {
    code: 452,
    enhanced: '4.3.1',
    text: 'Insufficient system storage: the message was not queued, try again later',
  },
  SPOOL_ERROR: {
    code: 451,
    enhanced: '4.3.0',
    text: 'Local error while queueing the message: not queued, try again later',
  },

  // Mail authentication at end of data (src/mailauth/, docs/mail-auth.md)
  // Content filters at the end of data (src/filters/, docs/filters.md). {text} is the filter's
  // own words, cleaned to one safe line; a milter's custom reply keeps its code and enhanced code.
  FILTER_REJECT: { code: 550, enhanced: '5.7.1', text: '{text}' },
  FILTER_REJECT_DEFAULT: {
    code: 550,
    enhanced: '5.7.1',
    text: 'Message refused by the content filter {filter}',
  },
  FILTER_TEMPFAIL: { code: 451, enhanced: '4.7.1', text: '{text}' },
  FILTER_TEMPFAIL_DEFAULT: {
    code: 451,
    enhanced: '4.7.1',
    text: 'Message deferred by the content filter {filter}; try again later',
  },
  FILTER_UNAVAILABLE: {
    code: 451,
    enhanced: '4.3.0',
    text: 'Message could not be checked: content filter {filter} unavailable; try again later',
  },
  FILTER_EDIT_FAILED: {
    code: 451,
    enhanced: '4.3.0',
    text: "Local error applying the content filter's changes to the message; try again later",
  },
  DMARC_REJECT: {
    code: 550,
    enhanced: '5.7.1',
    text: 'Message refused: it fails DMARC for {domain} and the domain asks receivers to {policy} such mail ({detail})',
  },
  SPF_REJECT: {
    code: 550,
    enhanced: '5.7.23',
    text: 'Message refused: SPF fail, {domain} does not allow {ip} to send its mail{explanation}',
  },
  SPF_TEMPERROR: {
    code: 451,
    enhanced: '4.7.24',
    text: 'SPF for {domain} could not be checked (DNS failure); try again later',
  },
  AUTH_CHECK_TEMPERROR: {
    code: 451,
    enhanced: '4.7.0',
    text: 'DMARC for {domain} could not be checked (DNS failure); try again later',
  },

  // TLS
  READY_TO_START_TLS: { code: 220, enhanced: '2.0.0', text: 'Ready to start TLS' },
  TLS_NOT_AVAILABLE: { code: 454, enhanced: '4.7.0', text: 'TLS not available' },
  TLS_ALREADY_ACTIVE: { code: 503, enhanced: '5.5.1', text: 'Bad sequence of commands: TLS already active' },

  // AUTH (RFC 4954)
  AUTH_OK: { code: 235, enhanced: '2.7.0', text: 'Authentication successful' },
  AUTH_CHALLENGE: { code: 334, text: '{challenge}' },
  AUTH_FAILED: { code: 535, enhanced: '5.7.8', text: 'Authentication credentials invalid' },
  AUTH_CANCELLED: { code: 501, enhanced: '5.0.0', text: 'Authentication cancelled' },
  AUTH_BAD_BASE64: { code: 501, enhanced: '5.5.2', text: 'Cannot decode base64 response' },
  AUTH_MECHANISM_UNKNOWN: {
    code: 504,
    enhanced: '5.5.4',
    text: 'Unrecognized authentication mechanism; available: {mechanisms}',
  },
  AUTH_NEEDS_TLS: {
    code: 538,
    enhanced: '5.7.11',
    text: 'Encryption required for requested authentication mechanism: use STARTTLS first',
  },
  AUTH_NOT_AVAILABLE: { code: 503, enhanced: '5.5.1', text: 'AUTH is not available on this port' },
  AUTH_ALREADY: { code: 503, enhanced: '5.5.1', text: 'Bad sequence of commands: already authenticated' },
  AUTH_IN_TRANSACTION: {
    code: 503,
    enhanced: '5.5.1',
    text: 'Bad sequence of commands: AUTH is not permitted during a mail transaction',
  },
  AUTH_LOCKED_OUT: {
    code: 454,
    enhanced: '4.7.0',
    text: 'Too many failed authentication attempts from your network; try again later',
  },
  AUTH_TEMP_FAILURE: {
    code: 454,
    enhanced: '4.7.0',
    text: 'Temporary authentication failure; try again later',
  },

  // ---------------------------------------------------------------------------------------------
  // Outbound and queue: outcomes Sterna makes itself about a delivery (never sent on the wire
  // to a client; stored, logged and quoted in bounces). One entry per reason id of
  // message/outcome.ts (LOCAL_REPLY).
  OUT_CONNECTION_FAILED: { code: 451, enhanced: '4.4.1', text: '{detail}' },
  OUT_CONNECTION_LOST: { code: 421, enhanced: '4.4.2', text: 'Connection with {peer} lost {when}: {reason}' },
  OUT_LOST_AFTER_END_OF_DATA: {
    code: 451,
    enhanced: '4.4.2',
    text: 'Lost connection with {peer} {when}: {reason} -- message may be delivered twice',
  },
  OUT_TLS_NOT_OFFERED: {
    code: 454,
    enhanced: '4.7.4',
    text: 'TLS is required for {peer}, but it does not offer STARTTLS; not sent in clear',
  },
  OUT_TLS_FAILED: { code: 454, enhanced: '4.7.5', text: 'TLS handshake with {peer} failed: {reason}' },
  OUT_TLS_CERT_UNVERIFIED: {
    code: 454,
    enhanced: '4.7.5',
    text: 'The certificate of {peer} failed verification: {reason}; nothing sent (no AUTH, no mail)',
  },
  OUT_AUTH_NEEDS_TLS: {
    code: 454,
    enhanced: '4.7.11',
    text: 'Authentication to {peer} is configured, but the connection is not encrypted; credentials not sent',
  },
  OUT_AUTH_NOT_OFFERED: {
    code: 454,
    enhanced: '4.7.0',
    text: 'Authentication to {peer} is configured, but it offers neither AUTH PLAIN nor AUTH LOGIN',
  },
  OUT_AUTH_PASSWORD_UNREADABLE: {
    code: 451,
    enhanced: '4.3.0',
    text: 'cannot read the AUTH password for {peer}: {reason}',
  },
  OUT_SIZE_EXCEEDED: {
    code: 552,
    enhanced: '5.3.4',
    text: 'Message size {size} exceeds the limit of {limit} octets announced by {peer}',
  },
  OUT_SMTPUTF8_NOT_OFFERED: {
    code: 553,
    enhanced: '5.6.7',
    text: '{peer} does not support SMTPUTF8, which this message needs (RFC 6531 3.5)',
  },
  OUT_8BITMIME_NOT_OFFERED: {
    code: 554,
    enhanced: '5.6.3',
    text: '{peer} does not accept 8-bit mail (no 8BITMIME), and this message is DKIM-signed: converting it to 7 bit would break its signature, so it was not sent (RFC 6152 3)',
  },
  OUT_BAD_ENVELOPE: {
    code: 553,
    enhanced: '5.1.3',
    text: 'Envelope address or parameter holds CR, LF or NUL; not sent',
  },
  OUT_BODY_READ_ERROR: {
    code: 451,
    enhanced: '4.3.0',
    text: 'Local error reading the message while sending it: {reason}',
  },
  OUT_NULL_MX: { code: 556, enhanced: '5.1.10', text: '{domain} does not accept mail (null MX, RFC 7505)' },
  OUT_NXDOMAIN: { code: 550, enhanced: '5.1.2', text: '{domain} does not exist (DNS: no such domain)' },
  OUT_NO_ADDRESS: { code: 550, enhanced: '5.4.4', text: 'unable to route to {domain}: {reason}' },
  OUT_LOOP: { code: 550, enhanced: '5.4.6', text: 'mail for {domain} loops back to myself' },
  OUT_DNS_FAILURE: { code: 451, enhanced: '4.4.3', text: 'DNS lookup for {domain} failed: {reason}' },
  OUT_MX_UNREACHABLE: { code: 451, enhanced: '4.4.1', text: 'no MX host of {domain} could be reached' },
  OUT_RELAY_UNREACHABLE: {
    code: 451,
    enhanced: '4.4.1',
    text: 'relay {relay} for {domain} could not be reached',
  },
  OUT_BACKED_OFF: { code: 451, enhanced: '4.4.1', text: '{destination} is failing; backed off' },
  OUT_ATTEMPT_ENDED_EARLY: { code: 451, enhanced: '4.3.0', text: 'outbound attempt ended early' },
  QUEUE_EXPIRED: {
    code: 451,
    enhanced: '4.4.7',
    text: 'message expired after {days} days in the queue; last error: {last}',
  },
  QUEUE_BOUNCE_NOT_SPOOLED: { code: 451, enhanced: '4.3.0', text: '{error} (bounce not sent yet)' },
  QUEUE_ADMIN_BOUNCE: {
    code: 550,
    enhanced: '5.7.0',
    text: 'returned to the sender by the mail administrator',
  },
  LOCAL_DELIVERY_FAILED: { code: 550, enhanced: '5.0.0', text: '{reason}' },
  LOCAL_DELIVERY_DEFERRED: { code: 451, enhanced: '4.3.0', text: '{reason}' },
  LOCAL_FORWARD_NOT_QUEUED: {
    code: 451,
    enhanced: '4.3.0',
    text: 'forwarding to {targets} not queued yet (spool error)',
  },

  // Policy (src/policy/, docs/abuse.md): lists, DNSBL, greylisting, early talkers, rate limits
  CLIENT_DENIED: { code: 554, enhanced: '5.7.1', text: '{hostname} {reason}' },
  REFUSED_AT_CONNECT: {
    code: 503,
    enhanced: '5.7.1',
    text: 'Bad sequence of commands: this connection was refused at the greeting; send QUIT',
  },
  POLICY_DENIED: { code: 550, enhanced: '5.7.1', text: '{reason}' },
  DNSBL_CLIENT_LISTED: {
    code: 554,
    enhanced: '5.7.1',
    text: 'Service unavailable; client [{ip}] blocked using {zone}',
  },
  DNSBL_SENDER_LISTED: {
    code: 554,
    enhanced: '5.7.1',
    text: 'Service unavailable; sender domain {domain} blocked using {zone}',
  },
  GREYLISTED: {
    code: 451,
    enhanced: '4.7.1',
    text: 'Greylisted: first mail from your network for this sender and recipient; please try again in {seconds} seconds',
  },
  EARLY_TALKER: {
    code: 554,
    enhanced: '5.5.1',
    text: '{hostname} protocol error: you sent before my greeting',
    close: true,
  },
  IMPROPER_PIPELINING: {
    code: 554,
    enhanced: '5.5.1',
    text: '{hostname} protocol error: commands sent ahead of replies without PIPELINING (RFC 2920)',
    close: true,
  },
  RATE_LIMIT_CONNECTIONS: {
    code: 421,
    enhanced: '4.7.0',
    text: '{hostname} too many connections from your network ({limit} per minute, rate_limits.{name}); try again in {seconds} seconds',
    close: true,
  },
  RATE_LIMIT_MESSAGES: {
    code: 450,
    enhanced: '4.7.1',
    text: 'Too many messages from {scope} {subject} ({limit} per hour, rate_limits.{name}); try again in {seconds} seconds',
  },
  RATE_LIMIT_RECIPIENTS: {
    code: 450,
    enhanced: '4.7.1',
    text: 'Too many recipients from {scope} {subject} ({limit} per hour, rate_limits.{name}); try again in {seconds} seconds',
  },
  POLICY_STATE_UNAVAILABLE: {
    code: 451,
    enhanced: '4.3.0',
    text: 'Policy check temporarily unavailable; please try again later',
  },
  POLICY_STATE_UNAVAILABLE_CONNECT: {
    code: 421,
    enhanced: '4.3.0',
    text: '{hostname} policy check temporarily unavailable; please try again later',
    close: true,
  },
} as const satisfies Record<string, ReplySpec>;

export type ReplyId = keyof typeof REPLIES;

/** Builds a reply from the table, filling {name} placeholders from vars. */
export function reply(id: ReplyId, vars: Record<string, string | number> = {}): Reply {
  const spec: ReplySpec = REPLIES[id];
  const text = fillTemplate(id, spec.text, vars);
  const built: Reply = { code: spec.code, lines: [text] };
  if (spec.enhanced !== undefined) built.enhanced = spec.enhanced;
  if (spec.close === true) built.close = true;
  return built;
}

/**
 * Each reply text split once at its {name} placeholders: literal, name, literal, … (odd indexes
 * are names). Several replies are built for every message; a regular expression per reply was
 * a measurable share of the time a message takes.
 */
const templates = new Map<ReplyId, readonly string[]>();

/** `text` with every {name} that `vars` holds replaced by its value; unknown names stay as written. */
function fillTemplate(id: ReplyId, text: string, vars: Record<string, string | number>): string {
  let parts = templates.get(id);
  if (parts === undefined) {
    parts = text.split(/\{(\w+)\}/);
    templates.set(id, parts);
  }
  if (parts.length === 1) return text;
  let out = parts[0] ?? '';
  for (let i = 1; i < parts.length; i += 2) {
    const name = parts[i] ?? '';
    const value = vars[name];
    out += (value === undefined ? `{${name}}` : String(value)) + (parts[i + 1] ?? '');
  }
  return out;
}

/** A multi-line reply (EHLO) built from lines that are not in the table: keywords, not prose. */
export function ehloReply(lines: string[]): Reply {
  return { code: 250, lines };
}

/** Serialises a reply to the wire: "250-..." continuation lines, "250 ..." last, CRLF endings. */
export function formatReply(r: Reply): string {
  const prefix = r.enhanced === undefined ? '' : `${r.enhanced} `;
  const lines = r.lines.length === 0 ? [''] : r.lines;
  let out = '';
  for (let i = 0; i < lines.length; i++) {
    const sep = i === lines.length - 1 ? ' ' : '-';
    out += `${r.code}${sep}${prefix}${lines[i] ?? ''}\r\n`;
  }
  return out;
}
