/**
 * The queue's outbound side for one delivery pass: a message's recipients in one domain get a
 * slot of the domain's next hop (destinations.ts: bounded slots and waiting line, parking,
 * back-off), are handed to delivery/remote.ts, and come back as new recipient states: 2xx
 * delivered, 4xx deferred to the next retry time (scheduler.ts, RFC 5321 4.5.4.1), 5xx failed, a
 * deferral past the message's lifetime failed (4.4.7). Every result is logged with the queue id
 * and, where one applies, what the administrator can do (operator-hints.ts). Trust: remote
 * replies are untrusted data, only stored, logged and quoted.
 */
import { operatorHint } from '../delivery/operator-hints.js';
import {
  nextHop,
  RemoteDelivery,
  type OutboundOptions,
  type RemoteRecipient,
  type RemoteResult,
} from '../delivery/remote.js';
import type { Envelope, RecipientState } from '../message/envelope.js';
import { localOutcome, renderOutcome, type Outcome } from '../message/outcome.js';
import type { Logger } from '../observability/log.js';
import { DestinationQueues } from './destinations.js';
import { expiredOutcome, warnedOf } from './recipient-states.js';
import { nextAttemptAt } from './scheduler.js';

export interface OutboundQueueOptions {
  outbound: OutboundOptions;
  log: Logger;
  /** Our name in EHLO. */
  hostname: string;
  /** The message body, streamed from the spool, fresh on each call. */
  body: (qid: string) => AsyncIterable<Buffer>;
  now: () => number;
  /** A parked message may try its next hop again. */
  onUnpark: (qid: string) => void;
}

/** A remote recipient waiting for its domain's attempt, with its state before it. */
export interface RemoteItem extends RemoteRecipient {
  state: RecipientState;
}

/** A remote recipient's new state, and the MX host that answered for it, if one did. */
export interface RemoteOutcome {
  index: number;
  state: RecipientState;
  mta?: string;
  /** Delivered to a next hop that could not take the DSN request on (RFC 3461 6.2.1 "relayed"). */
  relayed?: true;
}

export class OutboundQueue {
  readonly #o: OutboundQueueOptions;
  readonly #now: () => number;
  readonly #remote: RemoteDelivery;
  /** Slots, waiting lines, parked messages and back-off per next hop. */
  readonly #destinations: DestinationQueues<Outcome>;

  constructor(o: OutboundQueueOptions) {
    this.#o = o;
    this.#now = o.now;
    this.#remote = new RemoteDelivery({
      outbound: o.outbound,
      log: o.log,
      hostname: o.hostname,
      body: o.body,
      now: o.now,
    });
    this.#destinations = new DestinationQueues<Outcome>({
      total: o.outbound.concurrencyTotal,
      perDestination: o.outbound.concurrencyPerDestination,
      // As many messages may wait for a destination as may be delivered to it at once; more are
      // parked, so a slow destination cannot fill the manager's active window.
      waitingPerDestination: o.outbound.concurrencyPerDestination,
      now: o.now,
      random: o.outbound.random ?? Math.random,
      backoffBaseMs: o.outbound.retry.firstRetryMs,
      backoffMaxMs: o.outbound.retry.maxBackoffMs,
      onUnpark: o.onUnpark,
      blockedError: (destination) => localOutcome('backed-off', 'connect', { destination }),
    });
  }

  /** A next hop's queue: deliveries running, messages waiting for a slot, messages parked. */
  nextHopQueue(hop: string): { active: number; waiting: number; parked: number } {
    const d = this.#destinations;
    return { active: d.active(hop), waiting: d.waiting(hop), parked: d.parked(hop) };
  }

  /** Forgets a parked message (held, deleted or bounced by the administrator). */
  forget(qid: string): void {
    this.#destinations.forget(qid);
  }

  /** Safety net (destinations.ts kick): stale reserved places go, parked messages with room are handed back. */
  kick(staleMs: number): void {
    this.#destinations.kick(staleMs);
  }

  /** A delivery pass of qid ended: a waiting-line place it was handed back with and did not use goes to another. */
  passEnded(qid: string): void {
    this.#destinations.passEnded(qid);
  }

  /** Closes the connections kept for reuse (shutdown, after the last delivery). */
  close(): Promise<void> {
    return this.#remote.close();
  }

  /**
   * One outbound attempt for a message's recipients in one domain, as new recipient states: a
   * slot of the domain's next hop first (destinations.ts). A backed-off next hop defers them at
   * once, without connecting; a parked message gets no new states now (it is handed back to the
   * manager when the next hop has room, and its recipients stay as they were).
   */
  async deliver(
    qid: string,
    envelope: Envelope,
    size: number,
    domain: string,
    items: RemoteItem[],
  ): Promise<RemoteOutcome[]> {
    const hop = nextHop(domain, this.#o.outbound.relays);
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

  /** The recipient's new state after an outbound attempt; a deferral past the lifetime fails. */
  #remoteState(envelope: Envelope, previous: RecipientState, r: RemoteResult): RecipientState {
    const now = this.#now();
    const out = this.#o.outbound;
    if (r.kind === 'delivered') return { status: 'delivered', at: now, detail: r.detail };
    if (r.kind === 'failed') return { status: 'failed', at: now, outcome: r.outcome };
    const expired = expiredOutcome(envelope, r.outcome, out.retry, now);
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
}
