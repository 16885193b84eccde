/**
 * The queue manager: picks up spooled messages (new ones as they are committed, all pending
 * ones at start-up), works on at most maxActive at once, and runs one delivery pass per message
 * as plan → deliver → record: which recipients are due and where each goes (router.ts); local
 * ones to local-delivery.ts (Maildir, forwarding, discard), remote ones by domain to
 * outbound-queue.ts (a slot of the next hop, delivery/remote.ts, new states); then reports and
 * the new states, durably. Retries deferred recipients when due, and marks a message done when
 * every recipient is final. Never parses SMTP from clients, never decides policy.
 *
 * A message whose next hop is busy is parked by the outbound queue (destinations.ts): its pass
 * ends and gives its place in the active window back, and the queue hands it back when the next
 * hop has room, so a slow or dead domain cannot starve local delivery and other domains. Remote
 * results are always recorded durably: a lost record would mean a second delivery to a remote
 * server.
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
import type { MaildirOwnership } from '../delivery/local/maildir.js';
import type { OutboundOptions } from '../delivery/remote.js';
import type { Router } from '../delivery/router.js';
import type { RecipientState } from '../message/envelope.js';
import { localOutcome, renderOutcome } from '../message/outcome.js';
import type { Logger } from '../observability/log.js';
import type { MailEvents } from '../observability/mail-events.js';
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
import { attemptsBefore, sendPassReports, spoolBounce, triedText, type ReportContext } from './reports.js';
import { HeldSet } from './held.js';
import { LocalDelivery } from './local-delivery.js';
import { OutboundQueue, type RemoteItem } from './outbound-queue.js';
import { QueueView, type PageRequest, type QueueFilter, type QueuePage } from './queue-view.js';
import { nextDue, warnedOf } from './recipient-states.js';
import type { Spool } from './spool.js';
import type { DkimSigning } from '../mailauth/dkim-sign.js';
import { SpoolError } from './spool-errors.js';
import type { ForwardingServices } from './forward.js';

/** A place kept in a destination's waiting line for a handed-back message lapses after this. */
const STALE_RESERVATION_MS = 30_000;

export interface ManagerOptions {
  spool: Spool;
  router: Router;
  log: Logger;
  hostname: string;
  maildirRoot: string;
  /** Owner, group and modes of Maildir deliveries ([local_delivery] owner, group, dir_mode, file_mode). */
  maildirOwnership?: MaildirOwnership;
  /** Messages being worked on at once: the active window, each holding its envelope in memory. */
  maxActive: number;
  /** Local (Maildir) deliveries running at once, across all active messages. */
  localConcurrency: number;
  /** Maildir writer threads at most ([local_delivery] threads); default 1. */
  localThreads?: number;
  /** Delay before a deferred local recipient is tried again. */
  retryMs: number;
  outbound?: OutboundOptions;
  now?: () => number;
  /** Held messages (`sterna queue hold`); in memory only when not given. */
  held?: HeldSet;
  /** DKIM signing of Sterna's own reports (src/mailauth/dkim-sign.ts). */
  dkim?: DkimSigning;
  /** Metrics and recent events: every recipient's outcome of a pass. */
  events?: MailEvents;
  /** SRS and ARC sealing of forwarded copies ([forwarding], queue/forward.ts). */
  forwarding?: ForwardingServices;
}

/** A message as the spool gives it back for a pass. */
type SpooledMessage = Awaited<ReturnType<Spool['read']>>;

/** What a pass will do: the due local recipients, and the due remote ones by domain. */
interface PassPlan {
  local: { index: number; address: string; state: RecipientState }[];
  remote: Map<string, RemoteItem[]>;
}

/** What a pass did, for record(). */
interface PassResults {
  /** New states by recipient index. */
  byIndex: Map<number, RecipientState>;
  /** The MX host that answered for a recipient (Remote-MTA in a report). */
  mtaOf: Map<number, string>;
  /** Delivered to a next hop without DSN: a NOTIFY=SUCCESS request ends there ("relayed"). */
  relayed: Set<number>;
  /** States already written (remote groups of a message with several domains). */
  persisted: Set<number>;
  /** An alias was forwarded as a new message: a repeat would forward it twice. */
  forwarded: boolean;
}

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
  /** A pump is scheduled for the messages just committed (#enqueue 'soon'). */
  #pumpSoon = false;
  /** Maildir delivery, forwarding, discard: the local side of a pass. */
  readonly #local: LocalDelivery;
  /** Outbound delivery with its per-next-hop queues, when configured; else remote recipients stay pending. */
  readonly #outbound: OutboundQueue | null;
  readonly #held: HeldSet;
  /** The delivery pass running for each message in #running. */
  readonly #runs = new Map<string, Promise<void>>();
  /** Messages an administrative command is working on: no pass starts for them meanwhile. */
  readonly #admin = new Set<string>();
  /** Unparked while their pass was still running: they go again when it ends. */
  readonly #again = new Set<string>();
  /** Flushed messages: their next pass tries deferred recipients before their retry time. */
  readonly #forced = new Set<string>();
  /** Filtered pages of the queue for the admin API, with the envelope summaries they need. */
  readonly #view: QueueView;

  constructor(o: ManagerOptions) {
    this.#o = o;
    this.#now = o.now ?? Date.now;
    this.#held = o.held ?? HeldSet.memory();
    this.#local = new LocalDelivery({
      spool: o.spool,
      router: o.router,
      log: o.log,
      hostname: o.hostname,
      maildirRoot: o.maildirRoot,
      ...(o.maildirOwnership !== undefined ? { ownership: o.maildirOwnership } : {}),
      concurrency: o.localConcurrency,
      ...(o.localThreads !== undefined ? { threads: o.localThreads } : {}),
      retryMs: o.retryMs,
      ...(o.outbound !== undefined ? { retry: o.outbound.retry } : {}),
      ...(o.forwarding !== undefined ? { forwarding: o.forwarding } : {}),
      now: this.#now,
    });
    this.#outbound =
      o.outbound === undefined
        ? null
        : new OutboundQueue({
            outbound: o.outbound,
            log: o.log,
            hostname: o.hostname,
            body: (qid) => o.spool.openBody(qid),
            now: this.#now,
            onUnpark: (qid) => this.#unparked(qid),
          });
    this.#view = new QueueView({
      spool: o.spool,
      held: this.#held,
      isActive: (q) => this.isActive(q),
      now: this.#now,
    });
  }

  start(): void {
    this.#unsubscribe = this.#o.spool.onCommitted((qid) => {
      this.#fresh.add(qid);
      this.#enqueue(qid, 'soon');
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
    await this.#outbound?.close();
    await this.#local.close();
  }

  /**
   * The outbound queue of a next hop (a domain, or "relay LABEL"): deliveries running, messages
   * waiting for a slot, messages parked until it has room. For tests and monitoring.
   */
  nextHopQueue(nextHop: string): { active: number; waiting: number; parked: number } {
    return this.#outbound?.nextHopQueue(nextHop) ?? { active: 0, waiting: 0, parked: 0 };
  }

  /** Whether a delivery pass of the message runs now (the "active" state of the admin API). */
  isActive(qid: string): boolean {
    return this.#running.has(qid);
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
      // A pass already running read its flags before this flush: the message goes again after it.
      if (this.#running.has(id)) this.#again.add(id);
      else this.#enqueue(id);
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
      ...(this.#o.dkim !== undefined ? { dkim: this.#o.dkim } : {}),
    };
  }

  /** Every live message, oldest first, with sender, recipient states and whether it is held. */
  list(): Promise<QueueEntry[]> {
    return listQueue(this.#adminContext());
  }

  /** One page of the messages matching a filter, oldest first (queue-view.ts). */
  listPage(filter: QueueFilter, page: PageRequest): Promise<QueuePage> {
    return this.#view.page(filter, page);
  }

  /** Whether the message is held (`sterna queue hold`). */
  isHeld(qid: string): boolean {
    return this.#held.has(qid);
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
      this.#outbound?.forget(qid);
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
    this.#outbound?.forget(qid);
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
    this.#outbound?.kick(STALE_RESERVATION_MS);
  }

  /**
   * A parked message may try its next hop again. Its own pass may still be running (it parked,
   * and a slot came free before the pass ended): then it goes again once that pass ends.
   */
  #unparked(qid: string): void {
    if (this.#running.has(qid)) this.#again.add(qid);
    else this.#enqueue(qid);
  }

  /**
   * Makes a message ready for a delivery pass. 'soon' (a message just committed) starts the pass
   * once the callbacks now running are done, not inside them: the commit resolves in the
   * receiving session's chain of promises, and a pass started there would run its first steps
   * (reading the envelope, routing, writing to an outbound connection) before the session
   * writes its 250, adding them to the client's wait for every message. Commits that complete
   * together (one fsync) start in one pump. The message is in #ready meanwhile, so whenIdle()
   * waits for it.
   */
  #enqueue(qid: string, when: 'now' | 'soon' = 'now'): void {
    if (this.#stopped || this.#running.has(qid) || this.#admin.has(qid) || this.#held.has(qid)) return;
    this.#ready.add(qid);
    if (when === 'now') {
      this.#pump();
      return;
    }
    if (this.#pumpSoon) return;
    this.#pumpSoon = true;
    setImmediate(() => {
      this.#pumpSoon = false;
      this.#pump();
      this.#maybeIdle();
    });
  }

  /** Resolves the whenIdle() waiters when no pass runs and none waits (or the manager stopped). */
  #maybeIdle(): void {
    if (this.#running.size === 0 && (this.#ready.size === 0 || this.#stopped)) {
      const waiters = this.#idle;
      this.#idle = [];
      for (const w of waiters) w();
    }
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
          this.#maybeIdle();
        });
    }
  }

  /**
   * One delivery pass of a message: plan (which recipients are due, and where each goes), deliver
   * (local mailboxes, then every remote domain at once), record (bounces and reports spooled
   * first, then the recipients' new states, durably when a repeat would reach someone twice).
   */
  async #process(qid: string): Promise<void> {
    const fresh = this.#fresh.delete(qid);
    const forced = this.#forced.delete(qid);
    try {
      if (this.#held.has(qid)) return;
      const msg = await this.#o.spool.read(qid);
      this.#view.note(qid, msg.envelope);
      const plan = this.#plan(msg, forced);
      const pass = await this.#deliver(qid, msg, plan, fresh);
      // A remote group with no new states was parked (its next hop busy). A flushed message stays
      // flushed until it is handed back, or its deferred recipients would wait for their retry time.
      const parked = [...plan.remote.values()].some((items) =>
        items.some((it) => !pass.byIndex.has(it.index)),
      );
      if (forced && parked) this.#forced.add(qid);
      await this.#record(qid, msg, plan, pass);
    } finally {
      this.#outbound?.passEnded(qid);
    }
  }

  /** The recipients due in this pass: local ones, and remote ones grouped by domain. */
  #plan(msg: SpooledMessage, forced: boolean): PassPlan {
    const now = this.#now();
    const plan: PassPlan = { local: [], remote: new Map() };
    for (let index = 0; index < msg.envelope.recipients.length; index++) {
      const state = msg.states[index];
      const rcpt = msg.envelope.recipients[index];
      if (state === undefined || rcpt === undefined) continue;
      if (state.status === 'delivered' || state.status === 'failed') continue;
      if (state.status === 'deferred' && state.nextAttemptAt > now && !forced) continue;
      const route = this.#o.router.route(rcpt.address);
      if (route.kind !== 'remote') {
        plan.local.push({ index, address: rcpt.address, state });
        continue;
      }
      if (this.#outbound === null) continue; // no outbound transport: stays pending
      const domain = route.domain.toLowerCase();
      const group = plan.remote.get(domain) ?? [];
      group.push({ index, address: rcpt.address, params: rcpt.params, state });
      plan.remote.set(domain, group);
    }
    return plan;
  }

  /**
   * Delivers what the plan holds and collects the new states. Every domain is delivered
   * independently; with several, each group's results are written (durably) as soon as it
   * finishes, so a crash while another domain is slow cannot cause a second delivery to the
   * finished one. Failures wait for record(): they are written only once their bounce is spooled.
   */
  async #deliver(qid: string, msg: SpooledMessage, plan: PassPlan, fresh: boolean): Promise<PassResults> {
    const pass: PassResults = {
      byIndex: new Map(),
      mtaOf: new Map(),
      relayed: new Set(),
      persisted: new Set(),
      forwarded: false,
    };
    for (const item of plan.local) {
      const firstAttempt = item.state.status === 'pending' && fresh;
      const u = await this.#local.deliver(
        qid,
        item.index,
        item.address,
        msg.envelope,
        item.state,
        firstAttempt,
      );
      if (u === null) continue;
      pass.byIndex.set(u.index, u.state);
      if (u.forwarded === true) pass.forwarded = true;
    }
    const outbound = this.#outbound;
    if (outbound === null || plan.remote.size === 0) return pass;
    const persistEach = plan.remote.size > 1;
    const groups = await Promise.allSettled(
      [...plan.remote].map(async ([domain, items]) => {
        const results = await outbound.deliver(qid, msg.envelope, msg.size, domain, items);
        for (const r of results) {
          pass.byIndex.set(r.index, r.state);
          if (r.mta !== undefined) pass.mtaOf.set(r.index, r.mta);
          if (r.relayed === true) pass.relayed.add(r.index);
        }
        const early = results
          .filter((r) => r.state.status !== 'failed')
          .map(({ index, state }) => ({ index, state }));
        if (persistEach && early.length > 0) {
          await this.#o.spool.update(qid, early);
          for (const r of early) pass.persisted.add(r.index);
        }
      }),
    );
    // Every group has settled before a failure is reported, so no attempt runs on unrecorded.
    for (const g of groups) if (g.status === 'rejected') throw g.reason;
    return pass;
  }

  /**
   * Records a pass: the recipients that failed in it get their bounce spooled first (or stay
   * deferred when it cannot be), then delay warnings and success reports; then one DONE record
   * when every recipient is final, else STATE records for what changed, and the next due time.
   */
  async #record(qid: string, msg: SpooledMessage, plan: PassPlan, pass: PassResults): Promise<void> {
    const { spool, log } = this.#o;
    const { byIndex, mtaOf, persisted } = pass;
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
    const remoteIdx = new Set([...plan.remote.values()].flatMap((items) => items.map((it) => it.index)));
    for (const [i, st] of byIndex)
      this.#o.events?.delivery(
        qid,
        msg.envelope.recipients[i]?.address ?? '',
        remoteIdx.has(i),
        st,
        msg.envelope.receivedAt,
      );
    const { sent: reports, warned } = await sendPassReports(
      this.#reportContext(),
      this.#o.outbound?.retry,
      qid,
      msg.envelope,
      msg.states,
      byIndex,
      mtaOf,
      remoteIdx,
      pass.relayed,
    );
    for (const index of warned) persisted.delete(index); // its state changed: write it again
    const states = msg.states.map((s, i) => byIndex.get(i) ?? s);
    if (states.every((s) => s.status === 'delivered' || s.status === 'failed')) {
      // Every recipient is final: one DONE record says it all (the results are in the mail log),
      // so skip the STATE record and its sync. The DONE record need not force a sync of its own
      // either (spool.done: durable within a second, and a crash of Sterna alone loses nothing
      // written): if the machine crashes first, a local or discard delivery is redone harmlessly
      // (the Maildir copy is found again), and a remote one is sent again, the duplicate that
      // RFC 5321 6.1 prefers to a loss and that Postfix risks too (it does not sync the removal
      // of a delivered queue file). After a forwarded alias, a bounce or another report it
      // must: those put new messages in the queue, which a crash would put there twice.
      await spool.done(qid, bounce === 'sent' || reports || pass.forwarded ? {} : { durable: false });
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
    return {
      spool: this.#o.spool,
      log: this.#o.log,
      hostname: this.#o.hostname,
      now: this.#now,
      ...(this.#o.dkim !== undefined ? { dkim: this.#o.dkim } : {}),
    };
  }
}
