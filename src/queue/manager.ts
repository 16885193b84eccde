/**
 * The queue manager: picks up spooled messages (new ones as they are committed, all pending
 * ones at start-up), routes each recipient, hands local ones to Maildir delivery with bounded
 * concurrency, records per-recipient results durably, retries deferred recipients, and marks
 * a message done when every recipient is final. Never parses SMTP from clients, never decides
 * policy. Recipients for other domains stay pending for the outbound transport.
 */
import {
  deliverToMaildir,
  deliveryHeaders,
  maildirPathFor,
  maildirUniqueName,
} from '../delivery/local/maildir.js';
import type { Router } from '../delivery/router.js';
import type { RecipientState } from '../message/envelope.js';
import type { Logger } from '../observability/log.js';
import type { Spool } from './spool.js';

export interface ManagerOptions {
  spool: Spool;
  router: Router;
  log: Logger;
  hostname: string;
  maildirRoot: string;
  /** Messages being worked on at once: the active window, each holding its envelope in memory. */
  maxActive: number;
  /** Local (Maildir) deliveries running at once, across all active messages. */
  localConcurrency: number;
  /** Delay before a deferred local recipient is tried again. */
  retryMs: number;
  now?: () => number;
}

type Outcome = { index: number; state: RecipientState } | null;

export class QueueManager {
  readonly #o: ManagerOptions;
  readonly #now: () => number;
  /** Queue ids waiting for a worker, in arrival order; a Set so a message is never queued twice. */
  readonly #ready = new Set<string>();
  readonly #running = new Set<string>();
  /** Committed since start: no earlier delivery attempt can have left a copy anywhere. */
  readonly #fresh = new Set<string>();
  /** Deferred messages and when they are due again. */
  readonly #due = new Map<string, number>();
  #timer: NodeJS.Timeout | null = null;
  #unsubscribe: (() => void) | null = null;
  #stopped = false;
  #idle: (() => void)[] = [];
  #localRunning = 0;
  readonly #localWaiting: (() => void)[] = [];

  constructor(o: ManagerOptions) {
    this.#o = o;
    this.#now = o.now ?? Date.now;
  }

  start(): void {
    this.#unsubscribe = this.#o.spool.onCommitted((qid) => {
      this.#fresh.add(qid);
      this.#enqueue(qid);
    });
    const now = this.#now();
    for (const m of this.#o.spool.list()) {
      const next = nextDue(m.states);
      if (next === null) continue;
      if (next <= now) this.#enqueue(m.qid);
      else this.#due.set(m.qid, next);
    }
    this.#timer = setInterval(() => this.#sweep(), 1000);
    this.#timer.unref();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.#unsubscribe?.();
    if (this.#timer !== null) clearInterval(this.#timer);
    await this.whenIdle();
  }

  /** Resolves when no delivery is running or waiting (tests and shutdown). */
  whenIdle(): Promise<void> {
    if (this.#running.size === 0 && (this.#ready.size === 0 || this.#stopped)) return Promise.resolve();
    return new Promise((resolve) => this.#idle.push(resolve));
  }

  /** Try a message again now (queue flush). */
  flush(qid?: string): void {
    const ids = qid === undefined ? [...this.#due.keys()] : [qid];
    for (const id of ids) {
      this.#due.delete(id);
      this.#enqueue(id);
    }
  }

  #sweep(): void {
    const now = this.#now();
    for (const [qid, at] of this.#due) {
      if (at <= now) {
        this.#due.delete(qid);
        this.#enqueue(qid);
      }
    }
  }

  #enqueue(qid: string): void {
    if (this.#stopped || this.#running.has(qid)) return;
    this.#ready.add(qid);
    this.#pump();
  }

  #pump(): void {
    while (!this.#stopped && this.#running.size < this.#o.maxActive && this.#ready.size > 0) {
      const qid = this.#ready.values().next().value as string; // non-empty: size checked above
      this.#ready.delete(qid);
      this.#running.add(qid);
      void this.#process(qid)
        .catch((err: unknown) => {
          this.#o.log.error({ qid, err }, 'delivery run failed; will retry');
          this.#due.set(qid, this.#now() + this.#o.retryMs);
        })
        .finally(() => {
          this.#running.delete(qid);
          this.#pump();
          if (this.#running.size === 0 && (this.#ready.size === 0 || this.#stopped)) {
            const waiters = this.#idle;
            this.#idle = [];
            for (const w of waiters) w();
          }
        });
    }
  }

  async #process(qid: string): Promise<void> {
    const { spool, log } = this.#o;
    const fresh = this.#fresh.delete(qid);
    const msg = await spool.read(qid);
    const now = this.#now();
    const outcomes: Outcome[] = [];
    for (let index = 0; index < msg.envelope.recipients.length; index++) {
      const state = msg.states[index];
      const rcpt = msg.envelope.recipients[index];
      if (state === undefined || rcpt === undefined) continue;
      if (state.status === 'delivered' || state.status === 'failed') continue;
      if (state.status === 'deferred' && state.nextAttemptAt > now) continue;
      const firstAttempt = state.status === 'pending' && fresh;
      outcomes.push(
        await this.#deliverOne(qid, index, rcpt.address, msg.envelope.sender, state, firstAttempt),
      );
    }
    const updates = outcomes.filter((o): o is NonNullable<Outcome> => o !== null);
    const byIndex = new Map(updates.map((u) => [u.index, u.state]));
    const states = msg.states.map((s, i) => byIndex.get(i) ?? s);
    if (states.every((s) => s.status === 'delivered' || s.status === 'failed')) {
      // Every recipient is final: one DONE record says it all (the results are in the mail log),
      // so skip the STATE record and its sync.
      // Only local and discard transports exist so far: redoing either after a crash is
      // harmless (the Maildir copy is found again), so the DONE record need not force a sync.
      await spool.done(qid, { durable: false });
      log.info({ qid }, 'message finished: every recipient delivered or failed');
      return;
    }
    if (updates.length > 0) await spool.update(qid, updates);
    const next = nextDue(states);
    if (next !== null && next > this.#now()) this.#due.set(qid, next);
  }

  /** Runs fn when fewer than localConcurrency Maildir deliveries are running. */
  async #withLocalSlot<T>(fn: () => Promise<T>): Promise<T> {
    while (this.#localRunning >= this.#o.localConcurrency) {
      await new Promise<void>((resolve) => this.#localWaiting.push(resolve));
    }
    this.#localRunning++;
    try {
      return await fn();
    } finally {
      this.#localRunning--;
      this.#localWaiting.shift()?.();
    }
  }

  async #deliverOne(
    qid: string,
    index: number,
    address: string,
    sender: string,
    state: RecipientState,
    firstAttempt: boolean,
  ): Promise<Outcome> {
    const { log, spool, router } = this.#o;
    const route = router.route(address);
    if (route.kind === 'remote') return null; // outbound delivery is not built yet: stays pending
    if (route.kind === 'discard') {
      log.info({ qid, rcpt: address }, 'discarded (transport "discard")');
      return { index, state: { status: 'delivered', at: this.#now(), detail: 'discarded' } };
    }
    if (route.kind === 'failed') {
      log.error({ qid, rcpt: address, reason: route.reason }, 'recipient failed');
      return { index, state: { status: 'failed', at: this.#now(), error: route.reason } };
    }
    const reasons: string[] = [];
    for (const mailbox of route.mailboxes) {
      const at = mailbox.lastIndexOf('@');
      const maildir = maildirPathFor(this.#o.maildirRoot, {
        local: mailbox.slice(0, at).toLowerCase(),
        domain: mailbox.slice(at + 1),
      });
      const result = await this.#withLocalSlot(() =>
        deliverToMaildir(
          {
            maildir,
            uniqueName: maildirUniqueName(qid, index, this.#o.hostname),
            prepend: deliveryHeaders({ sender, recipient: mailbox }),
            body: spool.openBody(qid),
          },
          // Several mailboxes may share a Maildir name only across messages, never within one:
          // skip the existence check on a first attempt (the fast path), keep it on every retry.
          { checkExisting: !firstAttempt },
        ),
      );
      switch (result.kind) {
        case 'delivered':
          log.info(
            { qid, rcpt: address, mailbox, path: result.path, duplicate: result.duplicate },
            'delivered',
          );
          break;
        case 'deferred':
          log.warn({ qid, rcpt: address, mailbox, reason: result.reason }, 'delivery deferred');
          reasons.push(result.reason);
          break;
        case 'failed':
          log.error({ qid, rcpt: address, mailbox, reason: result.reason }, 'delivery failed');
          return { index, state: { status: 'failed', at: this.#now(), error: result.reason } };
        default: {
          const never: never = result;
          throw new Error(`unhandled result ${JSON.stringify(never)}`);
        }
      }
    }
    if (reasons.length > 0) {
      const attempts = state.status === 'deferred' ? state.attempts + 1 : 1;
      return {
        index,
        state: {
          status: 'deferred',
          attempts,
          nextAttemptAt: this.#now() + this.#o.retryMs,
          lastError: reasons.join('; '),
        },
      };
    }
    if (route.remote.length > 0) {
      log.info(
        { qid, rcpt: address, remote: route.remote },
        'alias targets in other domains wait for outbound',
      );
      return null;
    }
    return { index, state: { status: 'delivered', at: this.#now(), detail: 'local' } };
  }
}

/** When a message next needs work: now for pending recipients, the earliest retry for deferred ones. */
function nextDue(states: readonly RecipientState[]): number | null {
  let next: number | null = null;
  for (const s of states) {
    if (s.status === 'pending') return 0;
    if (s.status === 'deferred') next = next === null ? s.nextAttemptAt : Math.min(next, s.nextAttemptAt);
  }
  return next;
}
