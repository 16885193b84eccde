/**
 * Per-destination queues for outbound delivery: who may deliver to a next hop now, who waits
 * for a slot, and who is set aside until the destination has room. A destination is a next hop
 * (a recipient domain, or a relay that several domains share).
 *
 * The queue manager asks for a slot before it hands a message's recipients for a destination to
 * delivery. Each destination has at most `perDestination` deliveries running and, behind them,
 * at most `waitingPerDestination` messages waiting for a slot; all destinations together run at
 * most `total`. A message that finds its destination's waiting line full is *parked*: it gives
 * back its place in the manager's active window at once, holds no memory here but its queue id,
 * and is handed back (`onUnpark`) when the destination frees a slot or is backed off. A message
 * handed back holds a *reserved* place in the waiting line until its next pass asks for a slot
 * (or ends without asking: `passEnded`), so one freed place wakes one parked message, not a crowd
 * that mostly parks again (each futile pass re-reads the envelope from the spool). So a slow
 * or dead destination occupies at most perDestination + waitingPerDestination messages of the
 * active window, and local delivery and other domains go on (Postfix's qmgr keeps per-destination
 * queues inside its bounded active queue for the same reason).
 *
 * Back-off (dead destination detection, kept apart from the concurrency limit as Postfix's
 * SCHEDULER_README advises): a destination that failed as a whole (no route, no host answering)
 * is blocked for a doubling time (scheduler.ts DestinationBackoff); while blocked, messages for it
 * are answered at once with the block's end and the destination's last error, without
 * connecting, and every parked message is handed back so it is deferred now rather than later.
 *
 * No I/O; the clock and the random source are injected. Trust: internal, sees only destination
 * names chosen by Sterna's router and queue ids.
 */
import { ConcurrencyLimiter, DestinationBackoff } from './scheduler.js';

export interface DestinationQueueOptions<E> {
  /** Deliveries at once, in total. */
  total: number;
  /** Deliveries at once to one destination. */
  perDestination: number;
  /** Messages waiting for a slot per destination; more are parked. */
  waitingPerDestination: number;
  now: () => number;
  random: () => number;
  /** The first block of a failing destination; it doubles with each failure. */
  backoffBaseMs: number;
  /** The longest block. */
  backoffMaxMs: number;
  /** A parked message may try again (its destination has room, or is backed off now). */
  onUnpark: (qid: string) => void;
  /** What a blocked destination answers when it has no recorded error (should not happen). */
  blockedError: (destination: string) => E;
}

/** The answer to a request for a slot. */
export type Admission<E> =
  /** Deliver now; call release() when done, exactly once (more calls are ignored). */
  | { kind: 'slot'; release: () => void }
  /** The destination is backed off until `until`; `error` is its last failure. */
  | { kind: 'backed-off'; until: number; error: E }
  /** The destination's waiting line is full: the message is parked and will be handed back. */
  | { kind: 'parked' };

interface Waiter<E> {
  destination: string;
  grant: (admission: Admission<E>) => void;
}

/** Destinations whose last error is remembered at most; the least recently failed go first. */
const MAX_REMEMBERED_ERRORS = 10_000;

export class DestinationQueues<E> {
  readonly #o: DestinationQueueOptions<E>;
  readonly #limiter: ConcurrencyLimiter;
  readonly #backoff: DestinationBackoff;
  readonly #lastError = new Map<string, E>();
  /** Requests waiting for a slot, in arrival order. */
  readonly #waiting: Waiter<E>[] = [];
  /** Waiting requests per destination. */
  readonly #waitingCount = new Map<string, number>();
  /** Parked queue ids per destination, in arrival order. */
  readonly #parked = new Map<string, Set<string>>();
  /** Handed-back messages and the destinations whose waiting line keeps a place for them. */
  readonly #reservedFor = new Map<string, Set<string>>();
  /** When each message was handed back with a reserved place (for kick). */
  readonly #reservedAt = new Map<string, number>();
  /** Places reserved per destination (the sum over #reservedFor). */
  readonly #reservedCount = new Map<string, number>();

  constructor(o: DestinationQueueOptions<E>) {
    if (!(o.waitingPerDestination >= 0)) throw new RangeError('waitingPerDestination must be >= 0');
    this.#o = o;
    this.#limiter = new ConcurrencyLimiter({ total: o.total, perDestination: o.perDestination });
    this.#backoff = new DestinationBackoff({
      now: o.now,
      random: o.random,
      baseMs: o.backoffBaseMs,
      maxMs: o.backoffMaxMs,
    });
  }

  /**
   * A slot for `destination` on behalf of message `qid`: at once when one is free, after a wait
   * when the destination's waiting line has room, else the message is parked.
   */
  acquire(destination: string, qid: string): Promise<Admission<E>> {
    const reserved = this.#unreserve(qid, destination);
    const blocked = this.#blocked(destination);
    if (blocked !== null) return Promise.resolve(blocked);
    const release = this.#limiter.tryAcquire(destination);
    if (release !== null)
      return Promise.resolve({ kind: 'slot', release: this.#releaser(destination, release) });
    const waiting = this.#waitingCount.get(destination) ?? 0;
    if (!reserved && waiting + this.#reserved(destination) >= this.#o.waitingPerDestination) {
      let set = this.#parked.get(destination);
      if (set === undefined) {
        set = new Set();
        this.#parked.set(destination, set);
      }
      set.add(qid);
      return Promise.resolve({ kind: 'parked' });
    }
    this.#waitingCount.set(destination, waiting + 1);
    return new Promise((grant) => this.#waiting.push({ destination, grant }));
  }

  /** The destination failed as a whole: block it, keep `error`, answer its waiters and parked messages. */
  failed(destination: string, error: E): void {
    this.#backoff.recordFailure(destination);
    this.#lastError.delete(destination);
    this.#lastError.set(destination, error);
    for (const oldest of this.#lastError.keys()) {
      if (this.#lastError.size <= MAX_REMEMBERED_ERRORS) break;
      this.#lastError.delete(oldest);
    }
    const blocked = this.#blocked(destination);
    if (blocked === null) return;
    for (let i = 0; i < this.#waiting.length;) {
      const w = this.#waiting[i];
      if (w === undefined || w.destination !== destination) {
        i++;
        continue;
      }
      this.#waiting.splice(i, 1);
      this.#waited(destination);
      w.grant(blocked);
    }
    this.#unpark(destination, Number.POSITIVE_INFINITY);
  }

  /** A host of the destination answered: it works again. */
  succeeded(destination: string): void {
    this.#backoff.recordSuccess(destination);
    this.#lastError.delete(destination);
  }

  /** Forgets a parked message (deleted, bounced or held by the administrator). */
  forget(qid: string): void {
    for (const [destination, set] of this.#parked) {
      if (set.delete(qid) && set.size === 0) this.#parked.delete(destination);
    }
    this.passEnded(qid);
  }

  /**
   * A delivery pass of `qid` ended: places still reserved for it (it was handed back but did not
   * ask for a slot there, e.g. held, expired or routed elsewhere) go to other parked messages.
   */
  passEnded(qid: string): void {
    const destinations = this.#reservedFor.get(qid);
    if (destinations === undefined) return;
    for (const destination of [...destinations]) {
      this.#unreserve(qid, destination);
      this.#unparkInto(destination, false);
    }
  }

  /**
   * A safety net, called periodically by the queue manager: a place reserved longer than
   * `staleMs` (its message never came back for it, e.g. held or busy with the administrator
   * when handed back) goes to another, and every destination with parked messages and room, or
   * with nothing running and nothing reserved, hands one back. So no parked message waits for
   * an event that cannot come.
   */
  kick(staleMs: number): void {
    const now = this.#o.now();
    for (const [qid, at] of [...this.#reservedAt]) if (now - at > staleMs) this.passEnded(qid);
    for (const destination of [...this.#parked.keys()]) this.#unparkInto(destination, false);
  }

  /** Deliveries running, to `destination` or in all. */
  active(destination?: string): number {
    return this.#limiter.active(destination);
  }

  /** Messages waiting for a slot to `destination`. */
  waiting(destination: string): number {
    return this.#waitingCount.get(destination) ?? 0;
  }

  /** Messages parked for `destination`, or for every destination. */
  parked(destination?: string): number {
    if (destination !== undefined) return this.#parked.get(destination)?.size ?? 0;
    let n = 0;
    for (const set of this.#parked.values()) n += set.size;
    return n;
  }

  /** The time until which `destination` is backed off, or null. */
  blockedUntil(destination: string): number | null {
    return this.#backoff.blockedUntil(destination);
  }

  #blocked(destination: string): Admission<E> | null {
    const until = this.#backoff.blockedUntil(destination);
    if (until === null) return null;
    const error = this.#lastError.get(destination) ?? this.#o.blockedError(destination);
    return { kind: 'backed-off', until, error };
  }

  /** Places reserved in `destination`'s waiting line for messages handed back. */
  #reserved(destination: string): number {
    return this.#reservedCount.get(destination) ?? 0;
  }

  #reserve(qid: string, destination: string): void {
    this.#reservedAt.set(qid, this.#o.now());
    let set = this.#reservedFor.get(qid);
    if (set === undefined) {
      set = new Set();
      this.#reservedFor.set(qid, set);
    }
    if (set.has(destination)) return;
    set.add(destination);
    this.#reservedCount.set(destination, this.#reserved(destination) + 1);
  }

  /** Drops qid's reserved place in destination's waiting line; true when it had one. */
  #unreserve(qid: string, destination: string): boolean {
    const set = this.#reservedFor.get(qid);
    if (set === undefined || !set.delete(destination)) return false;
    if (set.size === 0) {
      this.#reservedFor.delete(qid);
      this.#reservedAt.delete(qid);
    }
    const left = this.#reserved(destination) - 1;
    if (left <= 0) this.#reservedCount.delete(destination);
    else this.#reservedCount.set(destination, left);
    return true;
  }

  #waited(destination: string): void {
    const left = (this.#waitingCount.get(destination) ?? 1) - 1;
    if (left <= 0) this.#waitingCount.delete(destination);
    else this.#waitingCount.set(destination, left);
  }

  /** A release that hands the freed slot to the first waiter that can use it, then unparks. */
  #releaser(destination: string, release: () => void): () => void {
    let done = false;
    return () => {
      if (done) return;
      done = true;
      release();
      this.#handOff();
      // Room in a waiting line: let as many parked messages try again. The releasing destination,
      // and any with nothing running (parked while every slot in total was taken), get at least
      // one back, so no parked message depends on a release that cannot come.
      for (const parkedFor of [...this.#parked.keys()])
        this.#unparkInto(parkedFor, parkedFor === destination);
    };
  }

  /**
   * Grants free slots to waiters in arrival order, skipping those whose destination is at its
   * limit. Only waiters that get a slot are woken.
   */
  #handOff(): void {
    for (let i = 0; i < this.#waiting.length && this.#limiter.active() < this.#o.total;) {
      const w = this.#waiting[i];
      const release = w === undefined ? null : this.#limiter.tryAcquire(w.destination);
      if (w === undefined || release === null) {
        i++;
        continue;
      }
      this.#waiting.splice(i, 1);
      this.#waited(w.destination);
      w.grant({ kind: 'slot', release: this.#releaser(w.destination, release) });
    }
  }

  /**
   * Hands back as many parked messages of `destination` as its waiting line has unreserved room
   * for, each with a reserved place. At least one when `released` (the destination just freed a
   * slot) or when nothing runs there (parked while every slot in total was taken) and nothing is
   * reserved, so no parked message depends on a release that cannot come.
   */
  #unparkInto(destination: string, released: boolean): void {
    const reserved = this.#reserved(destination);
    const room = this.#o.waitingPerDestination - this.waiting(destination) - reserved;
    const idle = reserved === 0 && (released || this.#limiter.active(destination) === 0);
    const count = idle ? Math.max(1, room) : room;
    if (count > 0) this.#unpark(destination, count, true);
  }

  /** Hands back up to `count` parked messages of `destination`, oldest first. */
  #unpark(destination: string, count: number, reserve = false): void {
    const set = this.#parked.get(destination);
    if (set === undefined) return;
    const ids: string[] = [];
    for (const qid of set) {
      if (ids.length >= count) break;
      ids.push(qid);
    }
    for (const qid of ids) set.delete(qid);
    if (set.size === 0) this.#parked.delete(destination);
    if (reserve) for (const qid of ids) this.#reserve(qid, destination);
    for (const qid of ids) this.#o.onUnpark(qid);
  }
}
