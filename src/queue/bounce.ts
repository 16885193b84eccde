/**
 * Bounces (RFC 3461, 3464, 6522): one failure DSN to the sender for the recipients of a message
 * that failed in a delivery pass and asked for it (NOTIFY), spooled as a new message from <>.
 * Never a bounce to the null sender (RFC 5321 4.5.5). The caller records the failures only after
 * this returns 'sent' or 'none', so a crash can repeat a bounce but never lose one.
 */
import type { Envelope, RecipientState } from '../message/envelope.js';
import type { Logger } from '../observability/log.js';
import { buildDsn, DsnError, shouldNotify, type DsnMessage, type DsnRecipient } from './dsn.js';
import type { Spool } from './spool.js';

export interface BounceContext {
  spool: Spool;
  log: Logger;
  /** Reporting-MTA and the bounce's Message-ID domain. */
  hostname: string;
  now: () => number;
}

/**
 * Spools one failure DSN (RFC 3461, 3464, 6522) to the sender for the recipients that failed
 * in this pass and asked for it (NOTIFY). Never a bounce to the null sender. Returns 'error'
 * when the bounce should have been sent but could not be spooled.
 */
export async function spoolBounce(
  ctx: BounceContext,
  qid: string,
  envelope: Envelope,
  failed: number[],
  states: ReadonlyMap<number, RecipientState>,
  mtaOf: ReadonlyMap<number, string>,
): Promise<'sent' | 'none' | 'error'> {
  const { log, spool, hostname } = ctx;
  const recipients: DsnRecipient[] = [];
  for (const index of failed) {
    const rcpt = envelope.recipients[index];
    const st = states.get(index);
    if (rcpt === undefined || st?.status !== 'failed') continue;
    if (envelope.sender === '') {
      log.warn(
        { qid, rcpt: rcpt.address, error: st.error },
        'failed recipient of a message from <>: no bounce',
      );
      continue;
    }
    if (!shouldNotify('failure', rcpt.params.notify)) {
      log.info({ qid, rcpt: rcpt.address }, 'failed recipient asked for no failure report (NOTIFY)');
      continue;
    }
    const mta = mtaOf.get(index);
    recipients.push({
      address: rcpt.address,
      ...(rcpt.params.orcpt !== undefined ? { orcpt: rcpt.params.orcpt } : {}),
      action: 'failed',
      status: statusOf(st.error),
      ...(mta !== undefined
        ? { remoteMta: `dns; ${mta}`, diagnostic: { type: 'smtp' as const, text: diagnosticOf(st.error) } }
        : {}),
      lastAttempt: st.at,
    });
  }
  if (recipients.length === 0) return 'none';
  let dsn: DsnMessage;
  try {
    dsn = await buildDsn({
      reportingMta: hostname,
      qid,
      ...(envelope.mailParams.envid !== undefined ? { envid: envelope.mailParams.envid } : {}),
      arrivalDate: envelope.receivedAt,
      originalSender: envelope.sender,
      recipients,
      ret: envelope.mailParams.ret ?? 'HDRS',
      originalMessage: spool.openBody(qid),
      now: ctx.now(),
      kind: 'failure',
      messageIdDomain: hostname,
    });
  } catch (err) {
    if (err instanceof DsnError) {
      // Our own inputs were refused (an address with control characters): nothing to retry.
      log.error({ qid, err }, 'bounce not built; the failures stand without one');
      return 'none';
    }
    log.error({ qid, err }, 'bounce not built; will retry');
    return 'error';
  }
  const writer = spool.begin();
  try {
    await writer.write(dsn.message);
    await writer.commit({
      sender: '',
      mailParams: dsn.mailParams,
      recipients: [{ address: dsn.recipient, params: {} }],
      client: { ip: '127.0.0.1', port: 0, helo: hostname },
      listener: 'smtp',
      receivedAt: ctx.now(),
    });
  } catch (err) {
    writer.abort();
    log.error({ qid, err }, 'bounce not spooled; will retry');
    return 'error';
  }
  log.info(
    { qid, bounce: writer.qid, to: dsn.recipient, rcpt: recipients.map((r) => r.address) },
    'bounce queued',
  );
  return 'sent';
}

/** RFC 3463 status for a failure: the reply's enhanced code, 4.4.7 for an expiry, else 5.0.0. */
function statusOf(error: string): string {
  if (error.startsWith('message expired')) return '4.4.7';
  const m = /^[245]\d\d ([245]\.\d{1,3}\.\d{1,3})\b/.exec(error);
  return m?.[1] ?? '5.0.0';
}

/** The remote reply for Diagnostic-Code: the error itself (or the last reply of an expiry). */
function diagnosticOf(error: string): string {
  const cut = error.indexOf('; last error: ');
  return cut === -1 ? error : error.slice(cut + '; last error: '.length);
}
