/**
 * A delivery outcome as data (DESIGN.md rule 9): the reply code (RFC 5321 4.2), the enhanced
 * status code (RFC 3463), the text, who said it (Sterna itself or which remote host), at which
 * stage of the delivery, and a stable reason id from a closed list. The words of queue
 * listings, logs, bounces, delay warnings and operator hints are rendered from it, and choices
 * (DSN status, explanation, hint) are made on `reason`, `code` and `enhanced`, never by reading
 * the text back. Outcomes Sterna makes itself take their code, enhanced code and text from the
 * one reply table (smtp/replies.ts, the "outbound and queue" block), one entry per reason id.
 *
 * Stored in the spool's STATE records (deferred and failed recipients). Records written before
 * outcomes existed hold a "NNN X.Y.Z text" string: legacyOutcome() reads it once, at load.
 *
 * Trust: a remote outcome's text is the peer's reply word for word (untrusted data: logged,
 * stored, quoted in bounces after dsn.ts reduces it to printable text, never interpreted).
 */
import { reply, type ReplyId } from '../smtp/replies.js';

/** Where in a delivery the outcome arose. */
export type OutcomeStage =
  | 'connect'
  | 'tls'
  | 'greeting'
  | 'ehlo'
  | 'auth'
  | 'mail'
  | 'rcpt'
  | 'data'
  | 'end-of-data'
  | 'dns'
  | 'route'
  | 'queue'
  | 'local-delivery'
  /** A record from before outcomes were stored: where it arose is not known. */
  | 'unknown';

/** Who said it: Sterna itself, or the remote host (name as routed, and the address connected to). */
export type OutcomeOrigin = 'local' | { host: string; address: string };

/**
 * Why, as a stable id. 'remote-reply' is any reply of a remote server (its code and enhanced
 * code say more); 'legacy' a record from before outcomes were stored. Every other id is an
 * outcome Sterna makes itself, with its own entry in the reply table (LOCAL_REPLY below).
 */
export type OutcomeReason = 'remote-reply' | 'legacy' | LocalReason;

/** Reasons for outcomes Sterna makes itself, each with one reply-table entry. */
export type LocalReason = keyof typeof LOCAL_REPLY;

/** The reply-table entry of each local reason: code, enhanced code and text come from there. */
const LOCAL_REPLY = {
  'connection-failed': 'OUT_CONNECTION_FAILED',
  'connection-lost': 'OUT_CONNECTION_LOST',
  'lost-after-end-of-data': 'OUT_LOST_AFTER_END_OF_DATA',
  'tls-not-offered': 'OUT_TLS_NOT_OFFERED',
  'tls-failed': 'OUT_TLS_FAILED',
  'tls-certificate-unverified': 'OUT_TLS_CERT_UNVERIFIED',
  'auth-needs-tls': 'OUT_AUTH_NEEDS_TLS',
  'auth-not-offered': 'OUT_AUTH_NOT_OFFERED',
  'auth-password-unreadable': 'OUT_AUTH_PASSWORD_UNREADABLE',
  'size-exceeded': 'OUT_SIZE_EXCEEDED',
  'smtputf8-not-offered': 'OUT_SMTPUTF8_NOT_OFFERED',
  '8bitmime-not-offered': 'OUT_8BITMIME_NOT_OFFERED',
  'bad-envelope': 'OUT_BAD_ENVELOPE',
  'body-read-error': 'OUT_BODY_READ_ERROR',
  'null-mx': 'OUT_NULL_MX',
  nxdomain: 'OUT_NXDOMAIN',
  'no-address': 'OUT_NO_ADDRESS',
  loop: 'OUT_LOOP',
  'dns-failure': 'OUT_DNS_FAILURE',
  unreachable: 'OUT_MX_UNREACHABLE',
  'relay-unreachable': 'OUT_RELAY_UNREACHABLE',
  'backed-off': 'OUT_BACKED_OFF',
  'attempt-ended-early': 'OUT_ATTEMPT_ENDED_EARLY',
  expired: 'QUEUE_EXPIRED',
  'bounce-not-sent': 'QUEUE_BOUNCE_NOT_SPOOLED',
  'admin-bounce': 'QUEUE_ADMIN_BOUNCE',
  'local-failed': 'LOCAL_DELIVERY_FAILED',
  'local-deferred': 'LOCAL_DELIVERY_DEFERRED',
  'forward-not-queued': 'LOCAL_FORWARD_NOT_QUEUED',
} as const satisfies Record<string, ReplyId>;

export interface Outcome {
  /** RFC 5321 basic reply code, e.g. 550. */
  code: number;
  /** RFC 3463 enhanced status code, e.g. "5.1.1"; '' when a remote reply carried none. */
  enhanced: string;
  /**
   * Local: the table's text with its placeholders filled. Remote: the reply's lines joined by
   * one space, word for word (the peer's own enhanced code included). Legacy: the whole record.
   */
  text: string;
  origin: OutcomeOrigin;
  stage: OutcomeStage;
  reason: OutcomeReason;
  /** For 'expired' (and 'bounce-not-sent'): the outcome it wraps, the last real answer. */
  last?: Outcome;
}

/** An outcome Sterna makes itself, from the reply table entry of `reason`. */
export function localOutcome(
  reason: LocalReason,
  stage: OutcomeStage,
  vars: Record<string, string | number> = {},
  last?: Outcome,
): Outcome {
  const r = reply(LOCAL_REPLY[reason], vars);
  return {
    code: r.code,
    enhanced: r.enhanced ?? '',
    text: r.lines.join(' '),
    origin: 'local',
    stage,
    reason,
    ...(last !== undefined ? { last } : {}),
  };
}

/** A remote server's reply, word for word. */
export function remoteOutcome(
  r: { code: number; enhanced?: string; lines: readonly string[] },
  stage: OutcomeStage,
  origin: { host: string; address: string },
): Outcome {
  return {
    code: r.code,
    enhanced: r.enhanced ?? '',
    text: r.lines.join(' ').trimEnd(),
    origin,
    stage,
    reason: 'remote-reply',
  };
}

/**
 * A "lastError" / "error" string of an old spool record, read once at load: its reply code and
 * enhanced code when it starts with them (so DSN statuses stay right), the whole string as text.
 */
export function legacyOutcome(error: string): Outcome {
  const m = /^([245]\d\d) (?:([245]\.\d{1,3}\.\d{1,3}) )?/.exec(error);
  const code = m === null ? 451 : Number(m[1]);
  const enhanced = m?.[2] ?? (/\(4\.4\.7\)/.test(error) ? '4.4.7' : '');
  return { code, enhanced, text: error, origin: 'local', stage: 'unknown', reason: 'legacy' };
}

/**
 * The outcome as one line, as the queue listing, the logs and a bounce show it: local
 * "451 4.4.3 DNS lookup for x.test failed: timeout"; remote "550 5.1.1 <a@x.test>: no such
 * user" (the peer's words after its code); legacy the stored string as it was.
 */
export function renderOutcome(o: Outcome): string {
  if (o.reason === 'legacy') return o.text;
  if (o.origin !== 'local') return `${o.code} ${o.text}`.trimEnd();
  return `${o.code} ${o.enhanced} ${o.text}`.trimEnd();
}

/** The status for a DSN (RFC 3464 2.3.4): the enhanced code, else `fallback` (class from the code). */
export function outcomeStatus(o: Outcome): string {
  if (/^[245]\.\d{1,3}\.\d{1,3}$/.test(o.enhanced)) return o.enhanced;
  return `${Math.floor(o.code / 100) === 2 ? 2 : Math.floor(o.code / 100) === 4 ? 4 : 5}.0.0`;
}

/** The remote answer behind an outcome (itself, or the last answer an expiry wraps), if any. */
export function remoteAnswer(o: Outcome): Outcome | undefined {
  if (o.origin !== 'local') return o;
  return o.last === undefined ? undefined : remoteAnswer(o.last);
}

/** The spool's JSON for an outcome, checked field by field; null when it is not one. */
export function toOutcome(v: unknown): Outcome | null {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return null;
  const o: Record<string, unknown> = { ...v };
  if (typeof o['code'] !== 'number' || typeof o['enhanced'] !== 'string' || typeof o['text'] !== 'string') {
    return null;
  }
  const origin = toOrigin(o['origin']);
  const stage = o['stage'];
  const reason = o['reason'];
  if (origin === null || typeof stage !== 'string' || !isStage(stage)) return null;
  if (typeof reason !== 'string' || !isReason(reason)) return null;
  const last = o['last'] === undefined ? undefined : toOutcome(o['last']);
  if (last === null) return null;
  return {
    code: o['code'],
    enhanced: o['enhanced'],
    text: o['text'],
    origin,
    stage,
    reason,
    ...(last !== undefined ? { last } : {}),
  };
}

function toOrigin(v: unknown): OutcomeOrigin | null {
  if (v === 'local') return 'local';
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return null;
  const o: Record<string, unknown> = { ...v };
  const host = o['host'];
  const address = o['address'];
  return typeof host === 'string' && typeof address === 'string' ? { host, address } : null;
}

const STAGES: ReadonlySet<string> = new Set<OutcomeStage>([
  'connect',
  'tls',
  'greeting',
  'ehlo',
  'auth',
  'mail',
  'rcpt',
  'data',
  'end-of-data',
  'dns',
  'route',
  'queue',
  'local-delivery',
  'unknown',
]);

function isStage(s: string): s is OutcomeStage {
  return STAGES.has(s);
}

function isReason(s: string): s is OutcomeReason {
  return s === 'remote-reply' || s === 'legacy' || Object.hasOwn(LOCAL_REPLY, s);
}
