/**
 * Where the server reports what happens to mail, beside its log lines: connections, replies,
 * messages accepted and refused, delivery attempts, spool syncs. One MailEvents per running
 * server feeds its metrics (metrics.ts) and its ring of recent events (recent.ts). The calls
 * are made where the mail log is written: the session's events (server/app.ts), the connection's
 * replies (server/connection.ts), the queue manager's recorded outcomes (queue/manager.ts).
 * Trust: internal; see recent.ts for what the events carry.
 */
import type { RecipientState } from '../message/envelope.js';
import { renderOutcome } from '../message/outcome.js';
import { REPLIES, type Reply } from '../smtp/replies.js';
import type { MailEvent, RecentEvents } from './recent.js';
import { MailTimeSeries } from './timeseries.js';
import type { SessionOutcome, SternaMetrics } from './metrics.js';

/** What one connection reports; one small object per connection. */
export interface ConnectionObserver {
  reply(r: Reply): void;
  tlsEstablished(version: string): void;
  /** The reply to a message's end (final dot, last BDAT chunk) and the time it took. */
  endOfData(r: Reply, seconds: number): void;
  ended(outcome: SessionOutcome): void;
}

/** The context of a session event: its listener and client address. */
export interface SessionContext {
  listener: string;
  ip: string;
}

function str(v: unknown): string {
  return typeof v === 'string' ? v : '';
}

class ConnectionEvents implements ConnectionObserver {
  readonly #events: MailEvents;
  readonly #ctx: SessionContext;

  constructor(events: MailEvents, ctx: SessionContext) {
    this.#events = events;
    this.#ctx = ctx;
  }

  reply(r: Reply): void {
    this.#events.metrics.reply(r.code, r.enhanced);
  }

  tlsEstablished(version: string): void {
    this.#events.metrics.tlsInbound(version);
  }

  endOfData(r: Reply, seconds: number): void {
    if (r.code === 250) return this.#events.metrics.eodReplied(seconds);
    this.#events.metrics.refused('data', r.enhanced);
    this.#events.refusal('data', r, this.#ctx);
  }

  ended(outcome: SessionOutcome): void {
    this.#events.metrics.sessionEnded(outcome);
  }
}

export class MailEvents {
  readonly metrics: SternaMetrics;
  readonly recent: RecentEvents;
  /** The last hour's counts for the dashboard's charts (timeseries.ts), fed with the ring. */
  readonly series: MailTimeSeries;
  readonly #now: () => number;

  constructor(metrics: SternaMetrics, recent: RecentEvents, now: () => number = Date.now) {
    this.metrics = metrics;
    this.recent = recent;
    this.series = new MailTimeSeries(now);
    this.#now = now;
  }

  #record(e: MailEvent): void {
    this.recent.add(e);
    this.series.add(e);
  }

  /** A connection accepted: counted, and its observer. */
  connection(ctx: SessionContext): ConnectionObserver {
    this.metrics.connection(ctx.listener);
    return new ConnectionEvents(this, ctx);
  }

  /** A connection refused at connect (limits, draining) with this reply. */
  connectionRefused(ctx: SessionContext, r: Reply): void {
    this.metrics.connection(ctx.listener);
    this.metrics.sessionEnded('refused');
    this.refusal('connect', r, ctx);
  }

  /** A refusal into the ring. */
  refusal(
    stage: 'connect' | 'sender' | 'rcpt' | 'data',
    r: Reply,
    ctx: SessionContext,
    extra: { sender?: string; recipient?: string } = {},
  ): void {
    this.#record({
      kind: 'refusal',
      at: this.#now(),
      stage,
      code: r.code,
      enhanced: r.enhanced ?? '',
      text: r.lines.join(' '),
      listener: ctx.listener,
      ip: ctx.ip,
      ...extra,
    });
  }

  /** A session event, as the session logs it (smtp/session.ts hooks.event). */
  session(name: string, fields: Record<string, unknown>, context: () => SessionContext): void {
    switch (name) {
      case 'queued': {
        const size = typeof fields['size'] === 'number' ? fields['size'] : 0;
        this.metrics.messageAccepted(size);
        const rcpts = fields['rcpts'];
        this.#record({
          kind: 'queued',
          at: this.#now(),
          qid: str(fields['qid']),
          sender: str(fields['sender']),
          recipients: Array.isArray(rcpts) ? rcpts.map(str) : [],
          size,
          ...context(),
        });
        return;
      }
      case 'rcpt-refused': {
        const code = typeof fields['code'] === 'number' ? fields['code'] : 550;
        const enhanced = str(fields['enhanced']);
        this.metrics.refused('rcpt', enhanced);
        this.refusal('rcpt', { code, enhanced, lines: [] }, context(), { recipient: str(fields['rcpt']) });
        return;
      }
      case 'sender-refused': {
        const spec = REPLIES.SENDER_NOT_OWNED;
        this.metrics.refused('sender', spec.enhanced);
        this.refusal('sender', { code: spec.code, enhanced: spec.enhanced, lines: [] }, context(), {
          sender: str(fields['sender']),
        });
        return;
      }
      case 'auth':
        if (fields['result'] === 'failed') this.metrics.authFailed('failed');
        else if (fields['result'] === 'temporary-failure') this.metrics.authFailed('temporary-failure');
        else if (fields['result'] === 'locked-out') this.metrics.authLockedOut();
        return;
      case 'auth-locked-out':
        this.metrics.authLockedOut();
        return;
      default:
        return;
    }
  }

  /** A recipient's new state after a delivery pass (queue/manager.ts), before it is recorded. */
  delivery(qid: string, recipient: string, remote: boolean, state: RecipientState, receivedAt: number): void {
    if (state.status === 'pending') return;
    const destination = remote ? recipient.slice(recipient.lastIndexOf('@') + 1).toLowerCase() : 'local';
    const now = this.#now();
    const delaySeconds = Math.max(0, (now - receivedAt) / 1000);
    this.metrics.deliveryAttempt(
      state.status,
      destination,
      state.status === 'delivered' ? delaySeconds : undefined,
    );
    this.#record({
      kind: 'delivery',
      at: now,
      qid,
      recipient,
      destination,
      result: state.status,
      detail: state.status === 'delivered' ? (state.detail ?? '') : renderOutcome(state.outcome),
      ...(state.status !== 'delivered' ? { reason: state.outcome.reason } : {}),
      delaySeconds: Math.round(delaySeconds * 10) / 10,
    });
  }
}
