/**
 * The queue manager: picks up spooled messages (new ones as they are committed, all pending
 * ones at start-up), routes each recipient, hands local ones to Maildir delivery with bounded
 * concurrency, records per-recipient results durably, retries deferred recipients, and marks
 * a message done when every recipient is final. Never parses SMTP from clients, never decides
 * policy.
 *
 * Outbound (recipients in other domains): a message's remote recipients are grouped by domain
 * and handed to delivery/remote.ts (route, MX hosts in order, connections reused across
 * messages). Per recipient, 2xx is delivered, 4xx or a DNS failure that may clear up is
 * deferred (retry times from scheduler.ts, RFC 5321 4.5.4.1), 5xx is failed; a recipient still
 * deferred max_lifetime after arrival fails. Remote results are always recorded durably: a
 * lost record would mean a second delivery to a remote server. Local aliases with targets in
 * other domains are forwarded as a new message (forward.ts).
 *
 * Reports (reports.ts; RFC 3461, 3464, 6522): the recipients that fail in a pass get one
 * failure DSN to the sender, those still deferred after delay_warning_ms one delay warning,
 * those delivered with NOTIFY=SUCCESS a success report (each as NOTIFY asks, never to the null
 * sender, RFC 5321 4.5.5), spooled as a new message from <> before the states are recorded, so
 * a crash can repeat a report but never lose one.
 *
 * Administration (admin.ts, `sterna queue`): a held message (held.ts) is never started; hold,
 * release, delete and bounce first wait for a delivery pass of that message to end and keep
 * new ones from starting meanwhile, so the operator and the manager never both act on it.
 * Trust: remote replies and DNS answers are untrusted data, only stored, logged
 * and quoted in bounces (dsn.ts reduces them to printable text).
 */
import {
  deliverToMaildir,
  deliveryHeaders,
  maildirPathFor,
  maildirUniqueName,
} from '../delivery/local/maildir.js';
import { operatorHint } from '../delivery/operator-hints.js';
import { nextHop, RemoteDelivery, type OutboundOptions, type RemoteResult } from '../delivery/remote.js';
import type { Router } from '../delivery/router.js';
import type { Envelope, RecipientState, RcptParams } from '../message/envelope.js';
import { localOutcome, renderOutcome, type Outcome } from '../message/outcome.js';
import type { Logger } from '../observability/log.js';
import {
  bounceMessage,
  deleteMessage,
  isDeferredQueued,
  listQueue,
  showMessage,
  type AdminContext,
  type QueueEntry,
  type QueueMessageDetail,
} from './admin.js';
import { forwardAlias } from './forward.js';
import { attemptsBefore, sendPassReports, spoolBounce, triedText, type ReportContext } from './reports.js';
import { DestinationQueues } from './destinations.js';
import { HeldSet } from './held.js';
import { isExpired, nextAttemptAt } from './scheduler.js';
import type { Spool } from './spool.js';
import { SpoolError } from './spool-errors.js';

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
  outbound?: OutboundOptions;
  now?: () => number;
  /** Held messages (`sterna queue hold`); in memory only when not given. */
  held?: HeldSet;
}

/** A remote recipient waiting for its domain's attempt. */
interface RemoteItem {
  index: number;
  address: string;
  params: RcptParams;
  state: RecipientState;
}

/** A remote recipient's new state, and the MX host that refused it, if one did. */
interface RemoteOutcome {
  index: number;
  state: RecipientState;
  mta?: string;
  /** Delivered to a next hop that could not take the DSN request on (RFC 3461 6.2.1 "relayed"). */
  relayed?: true;
}

type LocalUpdate = { index: number; state: RecipientState } | null;

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
  /** Outbound delivery, when configured; without it remote recipients stay pending. */
  readonly #remote: RemoteDelivery | null;
  /** Slots, waiting lines, parked messages and back-off per next hop (with outbound only). */
  readonly #destinations: DestinationQueues<Outcome> | null;
  readonly #held: HeldSet;
  /** The delivery pass running for each message in #running. */
  readonly #runs = new Map<string, Promise<void>>();
  /** Messages an administrative command is working on: no pass starts for them meanwhile. */
  readonly #admin = new Set<string>();
  /** Unparked while their pass was still running: they go again when it ends. */
  readonly #again = new Set<string>();
  /** Flushed messages: their next pass tries deferred recipients before their retry time. */
  readonly #forced = new Set<string>();

  constructor(o: ManagerOptions) {
    this.#o = o;
    this.#now = o.now ?? Date.now;
    this.#held = o.held ?? HeldSet.memory();
    this.#remote =
      o.outbound === undefined
        ? null
        : new RemoteDelivery({
            outbound: o.outbound,
            log: o.log,
            hostname: o.hostname,
            body: (qid) => o.spool.openBody(qid),
            now: this.#now,
          });
    this.#destinations =
      o.outbound === undefined
        ? null
        : new DestinationQueues<Outcome>({
            total: o.outbound.concurrencyTotal,
            perDestination: o.outbound.concurrencyPerDestination,
            // As many messages may wait for a destination as may be delivered to it at once;
            // more are parked, so a slow destination cannot fill the active window.
            waitingPerDestination: o.outbound.concurrencyPerDestination,
            now: this.#now,
            random: o.outbound.random ?? Math.random,
            backoffBaseMs: o.outbound.retry.firstRetryMs,
            backoffMaxMs: o.outbound.retry.maxBackoffMs,
            onUnpark: (qid) => this.#unparked(qid),
            blockedError: (destination) => localOutcome('backed-off', 'connect', { destination }),
          });
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
    await this.#remote?.close();
  }

  /**
   * The outbound queue of a next hop (a domain, or "relay LABEL"): deliveries running, messages
   * waiting for a slot, messages parked until it has room. For tests and monitoring.
   */
  nextHopQueue(nextHop: string): { active: number; waiting: number; parked: number } {
    const d = this.#destinations;
    if (d === null) return { active: 0, waiting: 0, parked: 0 };
    return { active: d.active(nextHop), waiting: d.waiting(nextHop), parked: d.parked(nextHop) };
  }

  /** Resolves when no delivery is running or waiting (tests and shutdown). */
  whenIdle(): Promise<void> {
    if (this.#running.size === 0 && (this.#ready.size === 0 || this.#stopped)) return Promise.resolve();
    return new Promise((resolve) => this.#idle.push(resolve));
  }

  /**
   * Try messages again now (queue flush), deferred recipients included: one message, the
   * messages with a recipient still to deliver in `domain`, or every waiting message. Held
   * messages are left alone. Returns the queue ids handed to a worker.
   */
  async flush(target: { qid?: string; domain?: string } = {}): Promise<string[]> {
    const waiting = this.#o.spool
      .list()
      .filter((m) => m.states.some((s) => s.status === 'pending' || s.status === 'deferred'))
      .map((m) => m.qid);
    let ids: string[];
    if (target.qid !== undefined) ids = waiting.filter((id) => id === target.qid);
    else if (target.domain !== undefined) ids = await this.#idsForDomain(waiting, target.domain);
    else ids = waiting;
    const out: string[] = [];
    for (const id of ids) {
      if (this.#held.has(id) || this.#admin.has(id) || this.#stopped) continue;
      this.#due.delete(id);
      this.#forced.add(id);
      this.#enqueue(id);
      out.push(id);
    }
    return out;
  }

  /** The messages among `ids` with a recipient not yet final in `domain`. */
  async #idsForDomain(ids: readonly string[], domain: string): Promise<string[]> {
    const want = domain.toLowerCase();
    const out: string[] = [];
    for (const qid of ids) {
      let msg;
      try {
        msg = await this.#o.spool.read(qid);
      } catch {
        continue; // finished meanwhile
      }
      const hit = msg.envelope.recipients.some((r, i) => {
        const st = msg.states[i]?.status;
        const at = r.address.lastIndexOf('@');
        return (st === 'pending' || st === 'deferred') && r.address.slice(at + 1).toLowerCase() === want;
      });
      if (hit) out.push(qid);
    }
    return out;
  }

  #adminContext(): AdminContext {
    return {
      spool: this.#o.spool,
      held: this.#held,
      log: this.#o.log,
      hostname: this.#o.hostname,
      now: this.#now,
    };
  }

  /** Every live message, oldest first, with sender, recipient states and whether it is held. */
  list(): Promise<QueueEntry[]> {
    return listQueue(this.#adminContext());
  }

  /** One message's envelope, recipient states and header section. */
  show(qid: string): Promise<QueueMessageDetail> {
    return showMessage(this.#adminContext(), qid);
  }

  /** Keeps the message from being delivered until release(). Returns false if already held. */
  hold(qid: string): Promise<boolean> {
    return this.#withMessage(qid, async () => {
      await this.#o.spool.read(qid); // NOT_FOUND for an unknown id
      const added = await this.#held.add(qid);
      this.#due.delete(qid);
      this.#ready.delete(qid);
      this.#destinations?.forget(qid);
      this.#o.log.warn({ qid }, 'queue: message held by the administrator');
      return added;
    });
  }

  /** Lets a held message be delivered again, at its recipients' retry times. */
  async release(qid: string): Promise<boolean> {
    const removed = await this.#withMessage(qid, async () => {
      const msg = await this.#o.spool.read(qid);
      const was = await this.#held.remove(qid);
      const next = nextDue(msg.states);
      if (next !== null) this.#due.set(qid, next);
      this.#o.log.info({ qid }, 'queue: message released by the administrator');
      return was;
    });
    this.#sweep();
    return removed;
  }

  /** Removes the message without delivering it further or bouncing it. */
  delete(qid: string): Promise<void> {
    return this.#withMessage(qid, async () => {
      await deleteMessage(this.#adminContext(), qid);
      this.#forget(qid);
    });
  }

  /**
   * `delete --failed`: removes every message of the deferred queue (not held, no recipient
   * pending, at least one deferred; admin.ts isDeferredQueued), each as delete() does, once no
   * delivery pass of it runs. A message that finished, or no longer qualifies, by then is left
   * alone. No bounce is sent. Returns the deleted queue ids, oldest first.
   */
  async deleteDeferred(): Promise<string[]> {
    // Checked again once the message is ours: it may have been delivered or held meanwhile.
    const qualifies = (qid: string, states: readonly RecipientState[]): boolean =>
      isDeferredQueued(states, this.#held.has(qid));
    const ids = this.#o.spool
      .list()
      .filter((m) => qualifies(m.qid, m.states))
      .map((m) => m.qid);
    const deleted = new Set<string>();
    let next = 0;
    // A few at a time: each waits for its own delivery pass and reads its envelope (a file handle).
    const worker = async (): Promise<void> => {
      for (let qid = ids[next++]; qid !== undefined; qid = ids[next++]) {
        const id = qid;
        await this.#withMessage(id, async () => {
          let states: RecipientState[];
          try {
            states = (await this.#o.spool.read(id)).states;
          } catch (err) {
            if (err instanceof SpoolError && err.code === 'NOT_FOUND') return; // finished meanwhile
            throw err;
          }
          if (!qualifies(id, states)) return;
          await deleteMessage(this.#adminContext(), id);
          this.#forget(id);
          deleted.add(id);
        });
      }
    };
    await Promise.all(Array.from({ length: Math.min(8, ids.length) }, worker));
    return ids.filter((id) => deleted.has(id));
  }

  /** Fails every remaining recipient, with a bounce to the sender, and removes the message. */
  bounce(qid: string): Promise<{ bounced: boolean }> {
    return this.#withMessage(qid, async () => {
      const r = await bounceMessage(this.#adminContext(), qid);
      this.#forget(qid);
      return r;
    });
  }

  /** Drops what the manager remembers about a message that left the spool. */
  #forget(qid: string): void {
    this.#destinations?.forget(qid);
    this.#again.delete(qid);
    this.#due.delete(qid);
    this.#fresh.delete(qid);
    this.#forced.delete(qid);
  }

  /** Runs fn once no delivery pass of qid runs, keeping new passes from starting meanwhile. */
  async #withMessage<T>(qid: string, fn: () => Promise<T>): Promise<T> {
    for (;;) {
      const run = this.#runs.get(qid);
      if (run === undefined && !this.#admin.has(qid)) break;
      if (run !== undefined) await run.catch(() => undefined);
      else await new Promise((resolve) => setTimeout(resolve, 10));
    }
    this.#admin.add(qid);
    this.#ready.delete(qid);
    try {
      return await fn();
    } finally {
      this.#admin.delete(qid);
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

  /**
   * A parked message may try its next hop again. Its own pass may still be running (it parked,
   * and a slot came free before the pass ended): then it goes again once that pass ends.
   */
  #unparked(qid: string): void {
    if (this.#running.has(qid)) this.#again.add(qid);
    else this.#enqueue(qid);
  }

  #enqueue(qid: string): void {
    if (this.#stopped || this.#running.has(qid) || this.#admin.has(qid) || this.#held.has(qid)) return;
    this.#ready.add(qid);
    this.#pump();
  }

  #pump(): void {
    while (!this.#stopped && this.#running.size < this.#o.maxActive && this.#ready.size > 0) {
      const qid = this.#ready.values().next().value as string; // non-empty: size checked above
      this.#ready.delete(qid);
      this.#running.add(qid);
      const run = this.#process(qid);
      this.#runs.set(qid, run);
      void run
        .catch((err: unknown) => {
          this.#o.log.error({ qid, err }, 'delivery run failed; will retry');
          this.#due.set(qid, this.#now() + this.#o.retryMs);
        })
        .finally(() => {
          this.#running.delete(qid);
          this.#runs.delete(qid);
          if (this.#again.delete(qid)) this.#enqueue(qid);
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
    const forced = this.#forced.delete(qid);
    if (this.#held.has(qid)) return;
    const msg = await spool.read(qid);
    const now = this.#now();
    const outcomes: LocalUpdate[] = [];
    const remote = new Map<string, RemoteItem[]>();
    for (let index = 0; index < msg.envelope.recipients.length; index++) {
      const state = msg.states[index];
      const rcpt = msg.envelope.recipients[index];
      if (state === undefined || rcpt === undefined) continue;
      if (state.status === 'delivered' || state.status === 'failed') continue;
      if (state.status === 'deferred' && state.nextAttemptAt > now && !forced) continue;
      const route = this.#o.router.route(rcpt.address);
      if (route.kind === 'remote') {
        if (this.#o.outbound === undefined) continue; // no outbound transport: stays pending
        const domain = route.domain.toLowerCase();
        const group = remote.get(domain) ?? [];
        group.push({ index, address: rcpt.address, params: rcpt.params, state });
        remote.set(domain, group);
        continue;
      }
      const firstAttempt = state.status === 'pending' && fresh;
      outcomes.push(await this.#deliverOne(qid, index, rcpt.address, msg.envelope, state, firstAttempt));
    }
    const updates = outcomes.filter((o): o is NonNullable<LocalUpdate> => o !== null);
    // A forwarded alias, like a remote delivery, must not be redone after a crash.
    const forwardedNow = updates.some(
      (u) => u.state.status === 'delivered' && u.state.detail?.includes('forwarded as') === true,
    );
    const byIndex = new Map(updates.map((u) => [u.index, u.state]));
    // Every domain is delivered independently. With several, each group's results are written
    // (durably) as soon as it finishes, so a crash while another domain is slow cannot cause a
    // second delivery to the finished one.
    // Failures wait for the end of the pass: they are recorded only once their bounce is spooled.
    const persistEach = remote.size > 1;
    const persisted = new Set<number>();
    const mtaOf = new Map<number, string>();
    const relayedNow = new Set<number>();
    const groups = await Promise.allSettled(
      [...remote].map(async ([domain, items]) => {
        const results = await this.#deliverRemote(qid, msg.envelope, msg.size, domain, items);
        for (const r of results) {
          byIndex.set(r.index, r.state);
          if (r.mta !== undefined) mtaOf.set(r.index, r.mta);
          if (r.relayed === true) relayedNow.add(r.index);
        }
        const early = results
          .filter((r) => r.state.status !== 'failed')
          .map(({ index, state }) => ({ index, state }));
        if (persistEach && early.length > 0) {
          await spool.update(qid, early);
          for (const r of early) persisted.add(r.index);
        }
      }),
    );
    // Every group has settled before a failure is reported, so no attempt runs on unrecorded.
    for (const g of groups) if (g.status === 'rejected') throw g.reason;
    // Recipients that failed in this pass (only non-final ones were tried): bounce them first.
    const failedNow = [...byIndex].filter(([, st]) => st.status === 'failed').map(([index]) => index);
    const bounce =
      failedNow.length > 0
        ? await spoolBounce(
            this.#reportContext(),
            qid,
            msg.envelope,
            failedNow,
            byIndex,
            mtaOf,
            new Map(
              failedNow.map((i) => [
                i,
                triedText(
                  attemptsBefore(msg.states[i]) + 1,
                  msg.envelope.receivedAt,
                  this.#now(),
                  mtaOf.get(i),
                ),
              ]),
            ),
          )
        : 'none';
    if (bounce === 'error') {
      // The bounce could not be spooled: defer those recipients, to be tried (and bounced)
      // again on a later pass, rather than record a failure whose bounce is lost.
      const retryAt = this.#now() + this.#o.retryMs;
      for (const index of failedNow) {
        const previous = msg.states[index];
        const st = byIndex.get(index);
        const failure = st?.status === 'failed' ? st.outcome : undefined;
        byIndex.set(index, {
          status: 'deferred',
          attempts: previous?.status === 'deferred' ? previous.attempts : 0,
          nextAttemptAt: retryAt,
          outcome: localOutcome(
            'bounce-not-sent',
            'queue',
            { error: failure === undefined ? 'failed' : renderOutcome(failure) },
            failure,
          ),
          ...(previous !== undefined ? warnedOf(previous) : {}),
        });
      }
    }
    const remoteIdx = new Set([...remote.values()].flatMap((items) => items.map((it) => it.index)));
    const { sent: reports, warned } = await sendPassReports(
      this.#reportContext(),
      this.#o.outbound?.retry,
      qid,
      msg.envelope,
      msg.states,
      byIndex,
      mtaOf,
      remoteIdx,
      relayedNow,
    );
    for (const index of warned) persisted.delete(index); // its state changed: write it again
    const states = msg.states.map((s, i) => byIndex.get(i) ?? s);
    if (states.every((s) => s.status === 'delivered' || s.status === 'failed')) {
      // Every recipient is final: one DONE record says it all (the results are in the mail log),
      // so skip the STATE record and its sync. Redoing a local or discard delivery after a crash
      // is harmless (the Maildir copy is found again), so then the DONE record need not force a
      // sync; after a remote delivery, a forwarded alias, a bounce or another report it must, or
      // a crash would send it again.
      await spool.done(
        qid,
        remote.size > 0 || bounce === 'sent' || reports || forwardedNow ? {} : { durable: false },
      );
      log.info({ qid }, 'message finished: every recipient delivered or failed');
      return;
    }
    const pendingWrites = [...byIndex]
      .filter(([index]) => !persisted.has(index))
      .map(([index, state]) => ({ index, state }));
    if (pendingWrites.length > 0) await spool.update(qid, pendingWrites);
    const next = nextDue(states);
    if (next !== null && next > this.#now()) this.#due.set(qid, next);
  }

  #reportContext(): ReportContext {
    return { spool: this.#o.spool, log: this.#o.log, hostname: this.#o.hostname, now: this.#now };
  }

  /**
   * One outbound attempt for a message's recipients in one domain, as new recipient states: a
   * slot of the domain's next hop first (destinations.ts). A backed-off next hop defers them at
   * once, without connecting; a parked message gets no new states now (it is handed back to the
   * manager when the next hop has room, and its recipients stay as they were).
   */
  async #deliverRemote(
    qid: string,
    envelope: Envelope,
    size: number,
    domain: string,
    items: RemoteItem[],
  ): Promise<RemoteOutcome[]> {
    if (this.#remote === null || this.#destinations === null) return [];
    const hop = nextHop(domain, this.#o.outbound?.relays);
    const admission = await this.#destinations.acquire(hop, qid);
    if (admission.kind === 'parked') {
      this.#o.log.debug({ qid, domain, nexthop: hop }, 'outbound: next hop busy; message parked');
      return [];
    }
    if (admission.kind === 'backed-off') {
      const { until, error: outcome } = admission;
      this.#o.log.info(
        { qid, domain, nexthop: hop, until: new Date(until).toISOString(), reply: renderOutcome(outcome) },
        'outbound: destination backed off; not tried',
      );
      const results = new Map<number, RemoteResult>(
        items.map((item) => [item.index, { kind: 'deferred', outcome, notBefore: until }]),
      );
      return this.#remoteOutcomes(qid, envelope, domain, items, results);
    }
    let attempt;
    try {
      attempt = await this.#remote.deliver(qid, envelope, size, domain, items);
      // Before the slot is handed on: a waiter must see the back-off this attempt earned.
      if (attempt.health.kind === 'up') this.#destinations.succeeded(hop);
      else if (attempt.health.kind === 'down') this.#destinations.failed(hop, attempt.health.outcome);
    } finally {
      admission.release();
    }
    return this.#remoteOutcomes(qid, envelope, domain, items, attempt.results);
  }

  /** The recipients' new states from an attempt's results, each logged. */
  #remoteOutcomes(
    qid: string,
    envelope: Envelope,
    domain: string,
    items: RemoteItem[],
    results: ReadonlyMap<number, RemoteResult>,
  ): RemoteOutcome[] {
    const { log } = this.#o;
    return items.map((item) => {
      const r: RemoteResult = results.get(item.index) ?? {
        kind: 'deferred',
        outcome: localOutcome('attempt-ended-early', 'connect'),
      };
      const state = this.#remoteState(envelope, item.state, r);
      // delay: seconds since arrival, as Postfix's delay= (the whole story of a message by its qid).
      const delay = Math.round((this.#now() - envelope.receivedAt) / 100) / 10;
      const fields = { qid, rcpt: item.address, domain, status: state.status, delay };
      // fix: what the administrator can do about it, when something specific applies.
      if (state.status === 'deferred') {
        const fix = operatorHint(state.outcome);
        log.warn(
          {
            ...fields,
            reason: state.outcome.reason,
            stage: state.outcome.stage,
            reply: renderOutcome(state.outcome),
            nextAttemptAt: new Date(state.nextAttemptAt).toISOString(),
            ...(fix !== undefined ? { fix } : {}),
          },
          'outbound: deferred',
        );
      } else if (state.status === 'failed') {
        const fix = r.kind === 'delivered' ? undefined : operatorHint(r.outcome);
        log.error(
          {
            ...fields,
            reason: state.outcome.reason,
            stage: state.outcome.stage,
            reply: renderOutcome(state.outcome),
            ...(fix !== undefined ? { fix } : {}),
          },
          'outbound: failed',
        );
      } else log.info(fields, 'outbound: delivered');
      const mta = r.mta;
      return {
        index: item.index,
        state,
        ...(mta !== undefined ? { mta } : {}),
        ...(r.kind === 'delivered' && r.relayed ? { relayed: true as const } : {}),
      };
    });
  }

  /** RFC 5321 4.5.4.1: the outcome of a recipient given up on (4.4.7), or null while the message may wait. */
  #expired(envelope: Envelope, last: Outcome): Outcome | null {
    const retry = this.#o.outbound?.retry;
    const now = this.#now();
    if (retry === undefined || !isExpired(envelope.receivedAt, now, retry)) return null;
    const days = ((now - envelope.receivedAt) / 86_400_000).toFixed(1);
    return localOutcome('expired', 'queue', { days, last: renderOutcome(last) }, last);
  }

  /** The recipient's new state after an outbound attempt; a deferral past the lifetime fails. */
  #remoteState(envelope: Envelope, previous: RecipientState, r: RemoteResult): RecipientState {
    const now = this.#now();
    const out = this.#o.outbound;
    if (r.kind === 'delivered') return { status: 'delivered', at: now, detail: r.detail };
    if (r.kind === 'failed' || out === undefined) return { status: 'failed', at: now, outcome: r.outcome };
    const expired = this.#expired(envelope, r.outcome);
    if (expired !== null) return { status: 'failed', at: now, outcome: expired };
    // A recipient not tried (its destination backed off) keeps its count of attempts.
    const tried = r.notBefore === undefined ? 1 : 0;
    const attempts = (previous.status === 'deferred' ? previous.attempts : 0) + tried;
    const scheduled = nextAttemptAt(attempts, now, out.retry, out.random ?? Math.random);
    return {
      status: 'deferred',
      attempts,
      nextAttemptAt: Math.max(scheduled, r.notBefore ?? 0),
      outcome: r.outcome,
      ...warnedOf(previous),
    };
  }

  /** A local recipient's next state after a temporary failure: tried again after retryMs. */
  #localDeferral(previous: RecipientState, outcome: Outcome): RecipientState {
    return {
      status: 'deferred',
      attempts: previous.status === 'deferred' ? previous.attempts + 1 : 1,
      nextAttemptAt: this.#now() + this.#o.retryMs,
      outcome,
      ...warnedOf(previous),
    };
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
    envelope: Envelope,
    state: RecipientState,
    firstAttempt: boolean,
  ): Promise<LocalUpdate> {
    const { sender } = envelope;
    const { log, spool, router } = this.#o;
    const route = router.route(address);
    if (route.kind === 'remote') return null; // handled by #deliverRemote
    if (route.kind === 'discard') {
      log.info({ qid, rcpt: address }, 'discarded (transport "discard")');
      return { index, state: { status: 'delivered', at: this.#now(), detail: 'discarded' } };
    }
    if (route.kind === 'failed') {
      log.error({ qid, rcpt: address, reason: route.reason }, 'recipient failed');
      const outcome = localOutcome('local-failed', 'route', { reason: route.reason });
      return { index, state: { status: 'failed', at: this.#now(), outcome } };
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
          return {
            index,
            state: {
              status: 'failed',
              at: this.#now(),
              outcome: localOutcome('local-failed', 'local-delivery', { reason: result.reason }),
            },
          };
        default: {
          const never: never = result;
          throw new Error(`unhandled result ${JSON.stringify(never)}`);
        }
      }
    }
    if (reasons.length > 0) {
      const deferral = localOutcome('local-deferred', 'local-delivery', { reason: reasons.join('; ') });
      const expired = this.#expired(envelope, deferral);
      if (expired !== null) {
        log.error({ qid, rcpt: address, reason: renderOutcome(expired) }, 'delivery failed: message expired');
        return { index, state: { status: 'failed', at: this.#now(), outcome: expired } };
      }
      return { index, state: this.#localDeferral(state, deferral) };
    }
    if (route.remote.length > 0) {
      const forwarded = await forwardAlias(this.#reportContext(), qid, envelope, index, route.remote);
      if (forwarded === null) {
        const outcome = localOutcome('forward-not-queued', 'local-delivery', {
          targets: route.remote.join(', '),
        });
        return { index, state: this.#localDeferral(state, outcome) };
      }
      const detail = `${route.mailboxes.length > 0 ? 'local; ' : ''}forwarded as ${forwarded}`;
      return { index, state: { status: 'delivered', at: this.#now(), detail } };
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

/** The delay-warning mark of a previous state, to carry into the next deferred state. */
function warnedOf(previous: RecipientState): { warned?: true } {
  return previous.status === 'deferred' && previous.warned === true ? { warned: true } : {};
}
