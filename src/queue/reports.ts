/**
 * Reports to the sender (RFC 3461, 3464, 6522), spooled as new messages from <>: the bounce
 * (recipients that failed in a delivery pass), the delay warning (recipients still deferred
 * after queue.delay_warning_ms, once each) and the success report (NOTIFY=SUCCESS: delivered
 * here, or relayed to a server that could not pass the request on). Each goes only to the
 * recipients that asked for it (NOTIFY) and never to the null sender (RFC 5321 4.5.5). The
 * caller records the recipients' new states only after this returns 'sent' or 'none', so a
 * crash can repeat a report but never lose one.
 */
import type { Envelope, RecipientState } from '../message/envelope.js';
import { remoteAnswer, renderOutcome, type Outcome } from '../message/outcome.js';
import { explainOutcome } from './dsn-explanations.js';
import type { Logger } from '../observability/log.js';
import { buildDsn, DsnError, shouldNotify, type DsnMessage, type DsnRecipient } from './dsn.js';
import { needsDelayWarning, type RetryPolicy } from './scheduler.js';
import type { Spool } from './spool.js';
import type { DkimSigning } from '../mailauth/dkim-sign.js';

export interface ReportContext {
  spool: Spool;
  log: Logger;
  /** Reporting-MTA and the report's Message-ID domain. */
  hostname: string;
  now: () => number;
  /** Signs the reports ([dkim] sign_own_mail); forwarded copies are never signed again. */
  dkim?: DkimSigning;
}

/** What a report says about one recipient, beyond its state. */
export interface ReportDetail {
  /** The remote host whose reply this is (Remote-MTA). */
  mta?: string;
  /** What was tried, in plain words. */
  tried?: string;
  /** Success reports: delivered here, or relayed to a server without DSN (RFC 3461 6.2.1). */
  action?: 'delivered' | 'relayed';
}

export type ReportKind = 'failure' | 'delay' | 'success';

/**
 * Spools one failure DSN to the sender for the recipients that failed in this pass and asked
 * for it (NOTIFY). Returns 'error' when the bounce should have been sent but could not be
 * spooled.
 */
export function spoolBounce(
  ctx: ReportContext,
  qid: string,
  envelope: Envelope,
  failed: number[],
  states: ReadonlyMap<number, RecipientState>,
  mtaOf: ReadonlyMap<number, string>,
  triedOf: ReadonlyMap<number, string> = new Map(),
): Promise<'sent' | 'none' | 'error'> {
  const details = new Map<number, ReportDetail>();
  for (const index of failed) {
    const mta = mtaOf.get(index);
    const tried = triedOf.get(index);
    details.set(index, {
      ...(mta !== undefined ? { mta } : {}),
      ...(tried !== undefined ? { tried } : {}),
    });
  }
  return spoolReport(ctx, qid, envelope, 'failure', failed, states, details);
}

/**
 * Spools one report of `kind` to the sender for the recipients in `indexes` whose state fits it
 * (failed / deferred / delivered) and who asked for it. `willRetryUntil` is when Sterna gives up
 * (delay warnings).
 */
export async function spoolReport(
  ctx: ReportContext,
  qid: string,
  envelope: Envelope,
  kind: ReportKind,
  indexes: readonly number[],
  states: ReadonlyMap<number, RecipientState>,
  details: ReadonlyMap<number, ReportDetail>,
  willRetryUntil?: number,
): Promise<'sent' | 'none' | 'error'> {
  const { log, spool, hostname } = ctx;
  const recipients: DsnRecipient[] = [];
  // In the order the sender gave them, whichever destination answered first.
  for (const index of [...indexes].sort((a, b) => a - b)) {
    const rcpt = envelope.recipients[index];
    const st = states.get(index);
    if (rcpt === undefined || st === undefined) continue;
    const entry = reportEntry(kind, st, details.get(index), willRetryUntil);
    if (entry === null) continue;
    if (envelope.sender === '') {
      if (kind === 'failure')
        log.warn(
          { qid, rcpt: rcpt.address, error: entry.error },
          'failed recipient of a message from <>: no bounce',
        );
      continue;
    }
    if (!shouldNotify(kind, rcpt.params.notify)) {
      log.info({ qid, rcpt: rcpt.address, kind }, 'recipient asked for no report of this kind (NOTIFY)');
      continue;
    }
    recipients.push({
      address: rcpt.address,
      ...(rcpt.params.orcpt !== undefined ? { orcpt: rcpt.params.orcpt } : {}),
      ...entry.recipient,
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
      kind,
      messageIdDomain: hostname,
    });
  } catch (err) {
    if (err instanceof DsnError) {
      // Our own inputs were refused (an address with control characters): nothing to retry.
      log.error({ qid, err, kind }, 'report not built; the states stand without one');
      return 'none';
    }
    log.error({ qid, err, kind }, 'report not built; will retry');
    return 'error';
  }
  return spoolDsn(ctx, qid, kind, dsn, recipients);
}

/**
 * Spools a built report from <> (signed as Sterna's own mail when [dkim] says so): 'sent', or
 * 'error' (logged) when it could not be stored. Also used for the bounce of a maildrop file
 * that a content filter refused (maildrop-pickup.ts).
 */
export async function spoolDsn(
  ctx: ReportContext,
  qid: string,
  kind: ReportKind,
  dsn: DsnMessage,
  recipients: readonly DsnRecipient[],
): Promise<'sent' | 'error'> {
  const { log, spool, hostname } = ctx;
  const spooled = spool.begin();
  const writer = ctx.dkim?.wrap(spooled, 'own-mail', log) ?? spooled;
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
    log.error({ qid, err, kind }, 'report not spooled; will retry');
    return 'error';
  }
  log.info(
    { qid, report: writer.qid, to: dsn.recipient, rcpt: recipients.map((r) => r.address), kind },
    LOG_TEXT[kind],
  );
  return 'sent';
}

const LOG_TEXT: Record<ReportKind, string> = {
  failure: 'bounce queued',
  delay: 'delay warning queued',
  success: 'success report queued',
};

/** The DSN fields for one recipient, or null when its state does not fit the report. */
function reportEntry(
  kind: ReportKind,
  st: RecipientState,
  detail: ReportDetail | undefined,
  willRetryUntil: number | undefined,
): { recipient: Omit<DsnRecipient, 'address' | 'orcpt'>; error: string } | null {
  const tried = detail?.tried !== undefined ? { tried: detail.tried } : {};
  switch (kind) {
    case 'failure': {
      if (st.status !== 'failed') return null;
      const mta = detail?.mta;
      return {
        error: renderOutcome(st.outcome),
        recipient: {
          action: 'failed',
          status: statusOf(st.outcome, '5.0.0'),
          explanation: explainOutcome(st.outcome),
          ...(mta !== undefined
            ? {
                remoteMta: `dns; ${mta}`,
                diagnostic: { type: 'smtp' as const, text: diagnosticOf(st.outcome) },
              }
            : {}),
          lastAttempt: st.at,
          ...tried,
        },
      };
    }
    case 'delay': {
      if (st.status !== 'deferred') return null;
      const mta = detail?.mta;
      return {
        error: renderOutcome(st.outcome),
        recipient: {
          action: 'delayed',
          status: statusOf(st.outcome, '4.0.0').replace(/^5/, '4'),
          explanation: explainOutcome(st.outcome),
          ...(mta !== undefined
            ? {
                remoteMta: `dns; ${mta}`,
                diagnostic: { type: 'smtp' as const, text: diagnosticOf(st.outcome) },
              }
            : {}),
          ...(willRetryUntil !== undefined ? { willRetryUntil } : {}),
          ...tried,
        },
      };
    }
    case 'success': {
      if (st.status !== 'delivered') return null;
      return {
        error: '',
        recipient: {
          action: detail?.action ?? 'delivered',
          status: '2.0.0',
          lastAttempt: st.at,
          ...(detail?.mta !== undefined ? { remoteMta: `dns; ${detail.mta}` } : {}),
          ...tried,
        },
      };
    }
    default: {
      const never: never = kind;
      throw new Error(`unhandled report kind ${String(never)}`);
    }
  }
}

/** RFC 3463 status of an outcome (RFC 3464 2.3.4): its enhanced code (4.4.7 for an expiry), else `fallback`. */
function statusOf(o: Outcome, fallback: string): string {
  return /^[245]\.\d{1,3}\.\d{1,3}$/.test(o.enhanced) ? o.enhanced : fallback;
}

/** The reply for Diagnostic-Code: the remote answer (also when an expiry wraps it), else the outcome itself. */
function diagnosticOf(o: Outcome): string {
  return renderOutcome(remoteAnswer(o) ?? o.last ?? o);
}

/**
 * The reports of a delivery pass other than bounces (RFC 3461): a delay warning, once, for
 * recipients still deferred after delay_warning_ms, and a success report for recipients
 * delivered in this pass that asked for one (NOTIFY=SUCCESS) and were delivered here or relayed
 * to a server without DSN. Each is spooled before the states that mark it sent are recorded
 * (`warned` is set in byIndex), so a crash may repeat a report but never lose one. `remote`: the
 * recipients that went to another server; `relayed`: those of them whose server had no DSN.
 * Returns whether a report was spooled, and the recipients newly marked as warned.
 */
export async function sendPassReports(
  ctx: ReportContext,
  retry: RetryPolicy | undefined,
  qid: string,
  envelope: Envelope,
  previous: readonly RecipientState[],
  byIndex: Map<number, RecipientState>,
  mtaOf: ReadonlyMap<number, string>,
  remote: ReadonlySet<number>,
  relayed: ReadonlySet<number>,
): Promise<{ sent: boolean; warned: number[] }> {
  let sent = false;
  const warned: number[] = [];
  const now = ctx.now();
  const late =
    retry === undefined
      ? []
      : [...byIndex]
          .filter(
            ([, st]) =>
              st.status === 'deferred' &&
              needsDelayWarning(envelope.receivedAt, now, st.warned === true, retry),
          )
          .map(([index]) => index);
  if (late.length > 0 && retry !== undefined) {
    const details = new Map<number, ReportDetail>(
      late.map((i): [number, ReportDetail] => {
        const mta = mtaOf.get(i);
        const tried = triedText(attemptsBefore(byIndex.get(i)), envelope.receivedAt, now, mta);
        return [i, { tried, ...(mta !== undefined ? { mta } : {}) }];
      }),
    );
    const until = envelope.receivedAt + retry.maxLifetimeMs;
    const r = await spoolReport(ctx, qid, envelope, 'delay', late, byIndex, details, until);
    sent ||= r === 'sent';
    // 'none' (nobody asked for it) counts as done too; after 'error' the next pass tries again.
    if (r !== 'error') {
      for (const i of late) {
        const st = byIndex.get(i);
        if (st?.status === 'deferred') byIndex.set(i, { ...st, warned: true });
        warned.push(i);
      }
    }
  }
  const delivered = [...byIndex]
    .filter(([i, st]) => st.status === 'delivered' && previous[i]?.status !== 'delivered')
    .map(([index]) => index)
    .filter((i) => envelope.recipients[i]?.params.notify?.includes('SUCCESS') === true)
    // Delivered to a DSN-capable next hop: NOTIFY went with it, the report is its business.
    .filter((i) => !remote.has(i) || relayed.has(i));
  if (delivered.length > 0) {
    const details = new Map<number, ReportDetail>(
      delivered.map((i): [number, ReportDetail] => {
        const mta = mtaOf.get(i);
        if (!relayed.has(i)) return [i, { action: 'delivered' }];
        return [i, { action: 'relayed', ...(mta !== undefined ? { mta } : {}) }];
      }),
    );
    const r = await spoolReport(ctx, qid, envelope, 'success', delivered, byIndex, details);
    sent ||= r === 'sent';
  }
  return { sent, warned };
}

/** Delivery attempts a recipient has had, by its state (0 when it never was deferred). */
export function attemptsBefore(st: RecipientState | undefined): number {
  return st?.status === 'deferred' ? st.attempts : 0;
}

/** What was tried, in plain words, for a report: "3 delivery attempts over 2.0 days, the last to mx.example.net". */
export function triedText(attempts: number, receivedAt: number, now: number, mta?: string): string {
  const hours = (now - receivedAt) / 3_600_000;
  const span =
    hours >= 48
      ? `over ${(hours / 24).toFixed(1)} days`
      : hours >= 1
        ? `over ${hours.toFixed(1)} hours`
        : 'within an hour';
  const n = Math.max(1, attempts);
  const what = `${n} delivery ${n === 1 ? 'attempt' : 'attempts'} ${span}`;
  return mta === undefined ? what : `${what}, the last to ${mta}`;
}
