/**
 * One line of Sterna's JSON log (src/observability/log.ts; pino: level, time, msg and fields)
 * as `sterna log` shows it: a short sentence per event of a message's life (connected, MAIL and
 * RCPT (logged at debug level only), accepted, each delivery attempt with its peer and reply,
 * delivered, deferred, failed, bounce queued, removed). An event this table does not know is
 * shown as its message and its fields. Trust: log lines are Sterna's own, but they quote what
 * clients and peers sent (addresses, replies); they are printed as text with control characters
 * replaced.
 */

/** A parsed log line: its fields, with `msg` and `time` as strings ('' when absent). */
export interface LogLine {
  time: string;
  msg: string;
  fields: Readonly<Record<string, unknown>>;
}

function str(v: unknown): string {
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  if (Array.isArray(v)) return v.map(str).join(', ');
  return v === undefined || v === null ? '' : JSON.stringify(v);
}

/** Text safe for a terminal: control characters (from a client's or peer's text) as "?". */
export function printable(text: string): string {
  return text.replace(/[\u0000-\u001f\u007f-\u009f]/g, '?');
}

/** Fields every line carries, or that the story shows elsewhere. */
const PLAIN = new Set(['level', 'time', 'app', 'msg', 'qid', 'sid', 'listener', 'ip', 'pid', 'hostname']);

function rest(f: Readonly<Record<string, unknown>>, skip: readonly string[] = []): string {
  const parts = Object.entries(f)
    .filter(([k]) => !PLAIN.has(k) && !skip.includes(k))
    .map(([k, v]) => `${k}=${str(v)}`);
  return parts.length > 0 ? ` (${parts.join(', ')})` : '';
}

function tlsText(f: Readonly<Record<string, unknown>>): string {
  const tls = str(f['tls']);
  if (tls === '' || tls === 'none') return 'no TLS';
  return `${tls}${f['tlsVerified'] === true ? ', certificate verified' : ''}`;
}

const withFix = (text: string, f: Readonly<Record<string, unknown>>): string =>
  f['fix'] !== undefined ? `${text}; fix: ${str(f['fix'])}` : text;

/** The sentence for one event. */
export function describe(line: LogLine): string {
  const f = line.fields;
  const s = (k: string): string => str(f[k]);
  switch (line.msg) {
    case 'connected':
      return `connected from ${s('ip')} to the ${s('listener')} listener (session ${s('sid')})`;
    case 'TLS established':
      return `TLS established: ${s('tls')} ${s('cipher')}`.trimEnd();
    case 'auth':
      return `AUTH ${s('mechanism')}: ${s('result')}${f['user'] !== undefined ? ` as ${s('user')}` : ''}`;
    case 'mail':
      return `MAIL FROM:<${s('sender')}>`;
    case 'rcpt':
      return `RCPT TO:<${s('rcpt')}>`;
    case 'rcpt-refused':
      return `RCPT TO:<${s('rcpt')}> refused: ${s('code')} ${s('enhanced')}`;
    case 'sender-refused':
      return `MAIL FROM:<${s('sender')}> refused: not a sender ${s('user')} may use`;
    case 'queued': {
      const via =
        f['api_key'] !== undefined
          ? ` (HTTP API, user ${s('user')})`
          : f['maildrop'] !== undefined
            ? ` (sendmail, user ${s('user')})`
            : '';
      return `accepted: ${s('size')} bytes from <${s('sender')}> for ${s('rcpts')}${via}`;
    }
    case 'rejected':
      return `refused at the end of data: ${s('reason')}${f['code'] !== undefined ? ` (${s('code')} ${s('enhanced')})` : ''}`;
    case 'outbound attempt':
      return `attempt for ${s('rcpt')} at ${s('mx')} [${s('address')}], ${tlsText(f)}${f['reused'] === true ? ', reused connection' : ''}: ${s('reply')}`;
    case 'outbound: delivered':
      return `delivered to ${s('rcpt')} (${s('delay')} s after arrival)`;
    case 'outbound: deferred':
      return withFix(`deferred ${s('rcpt')}: ${s('reply')}; next attempt at ${s('nextAttemptAt')}`, f);
    case 'outbound: failed':
      return withFix(`failed ${s('rcpt')}: ${s('reply')}`, f);
    case 'outbound: destination backed off; not tried':
      return `not tried: ${s('domain')} is backed off until ${s('until')}: ${s('reply')}`;
    case 'delivered':
      return `delivered to ${s('rcpt')} in mailbox ${s('mailbox')}${f['duplicate'] === true ? ' (already there: not written twice)' : ''}`;
    case 'delivery deferred':
      return `deferred ${s('rcpt')} (mailbox ${s('mailbox')}): ${s('reason')}`;
    case 'delivery failed':
      return `failed ${s('rcpt')} (mailbox ${s('mailbox')}): ${s('reason')}`;
    case 'delivery failed: message expired':
      return `failed ${s('rcpt')}: the message expired: ${s('reason')}`;
    case 'recipient failed':
      return `failed ${s('rcpt')}: ${s('reason')}`;
    case 'discarded (transport "discard")':
      return `discarded ${s('rcpt')} (transport "discard")`;
    case 'bounce queued':
      return `bounce queued as ${s('report')} to <${s('to')}> for ${s('rcpt')}`;
    case 'delay warning queued':
      return `delay warning queued as ${s('report')} to <${s('to')}> for ${s('rcpt')}`;
    case 'success report queued':
      return `success report queued as ${s('report')} to <${s('to')}> for ${s('rcpt')}`;
    case 'alias forwarded to other domains':
      return `${s('rcpt')} forwarded as ${s('forwarded')} to ${s('to')}`;
    case 'message finished: every recipient delivered or failed':
      return 'removed from the queue: every recipient delivered or failed';
    default:
      return `${line.msg}${rest(f)}`;
  }
}

/** The queue ids a line links to: a report's, a forwarded copy's. */
export function linkedQids(line: LogLine): string[] {
  const out: string[] = [];
  for (const k of ['report', 'forwarded']) {
    const v = line.fields[k];
    if (typeof v === 'string' && v !== '') out.push(v);
  }
  return out;
}
