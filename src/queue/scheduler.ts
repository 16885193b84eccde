/**
 * Retry timing for outbound delivery, pure: when a deferred recipient is due again, when a
 * message has been queued too long (bounce) or long enough to warn the sender (delay DSN),
 * which destinations are backed off as a whole, and how many deliveries may run at once.
 * No timers, no I/O: the clock and the random source are passed in, so every value is
 * reproducible in tests.
 *
 * Follows RFC 5321 4.5.4.1 (retry strategy: the give-up time should be at least 4–5 days; it
 * advises retry intervals of at least 30 minutes but welcomes variable strategies: ours starts
 * shorter and grows, as Postfix's does) and RFC 3461 (a "delayed" DSN before the final one). Trust level: internal; it sees only numbers and
 * destination names chosen by Sterna's router.
 */

/** Every value in milliseconds; each is a named config key (DESIGN.md rule 5). */
export interface RetryPolicy {
  /** Delay before the first retry (after the first failed attempt). Typically 5 minutes. */
  firstRetryMs: number;
  /** Ceiling for the doubling delay between attempts, before jitter. Typically 1 hour. */
  maxBackoffMs: number;
  /** A message still undelivered this long after arrival is bounced. Typically 5 days. */
  maxLifetimeMs: number;
  /** Spread of each delay: 0.1 means ±10%, so a queue restored after a restart is not retried in one burst. */
  jitter: number;
  /** A "delayed" DSN is sent once the message has waited this long; 0 turns the warning off. Typically 4 hours. */
  delayWarningMs: number;
}

/**
 * A random number in [0, 1), clamped so a misbehaving source cannot push a delay outside
 * its jitter bounds.
 */
function unit(random: () => number): number {
  const r = random();
  if (!Number.isFinite(r) || r < 0) return 0;
  return r >= 1 ? 1 - Number.EPSILON : r;
}

/** base × 2^(n−1), capped, computed without overflowing for large n. */
function doubling(baseMs: number, n: number, capMs: number): number {
  const steps = Math.max(0, Math.floor(n) - 1);
  // 2^53 is already past any sensible cap; stop multiplying there.
  const factor = steps >= 53 ? Number.MAX_SAFE_INTEGER : 2 ** steps;
  return Math.min(capMs, baseMs * factor);
}

/**
 * When the next attempt is due, after `attempts` attempts have failed, the last at
 * `lastAttemptAt`. The delay is firstRetryMs after the first failure, then doubles, capped
 * at maxBackoffMs: with the typical policy 5, 10, 20, 40, 60, 60 … minutes. Each delay is
 * then spread by ±jitter (so a capped delay may reach maxBackoffMs × (1 + jitter)).
 * `attempts` below 1 is treated as 1. Whether the result falls after the message's expiry is
 * for the caller to check with isExpired.
 */
export function nextAttemptAt(
  attempts: number,
  lastAttemptAt: number,
  policy: RetryPolicy,
  random: () => number,
): number {
  const base = doubling(policy.firstRetryMs, Math.max(1, attempts), policy.maxBackoffMs);
  const spread = 1 + policy.jitter * (2 * unit(random) - 1);
  return lastAttemptAt + Math.round(base * spread);
}

/** RFC 5321 4.5.4.1: give up on a message once it has been queued for maxLifetimeMs. */
export function isExpired(arrivalAt: number, now: number, policy: RetryPolicy): boolean {
  return now - arrivalAt >= policy.maxLifetimeMs;
}

/**
 * Whether to send the "delayed" DSN now: once, when the message has waited delayWarningMs
 * and has not yet expired (an expired message gets the failure DSN instead). A policy with
 * delayWarningMs 0 (or less) never warns.
 */
export function needsDelayWarning(
  arrivalAt: number,
  now: number,
  warned: boolean,
  policy: RetryPolicy,
): boolean {
  if (warned || policy.delayWarningMs <= 0) return false;
  if (isExpired(arrivalAt, now, policy)) return false;
  return now - arrivalAt >= policy.delayWarningMs;
}

export interface DestinationBackoffOptions {
  now: () => number;
  random: () => number;
  /** Block after the first failure. */
  baseMs: number;
  /** Ceiling of the block, however many failures follow. */
  maxMs: number;
  /** Destinations remembered at most; the least recently failed are forgotten first. Default 10,000. */
  maxEntries?: number;
}

/** Each block is shortened by up to this fraction, so blocked destinations do not all reopen at once. */
const BACKOFF_JITTER = 0.1;
const DEFAULT_MAX_ENTRIES = 10_000;

interface BackoffEntry {
  /** Consecutive failures counted (those during a block are not counted, see recordFailure). */
  failures: number;
  until: number;
}

/**
 * Backs off a destination (a domain or an MX host) that keeps failing as a whole, so its
 * queued messages do not each hammer it: after n consecutive failures the destination is
 * blocked for baseMs × 2^(n−1), capped at maxMs, shortened by up to 10% of jitter. A success
 * clears it. Memory is bounded by maxEntries.
 */
export class DestinationBackoff {
  readonly #now: () => number;
  readonly #random: () => number;
  readonly #baseMs: number;
  readonly #maxMs: number;
  readonly #maxEntries: number;
  /** Insertion order is failure recency: an entry is re-inserted at each counted failure. */
  readonly #entries = new Map<string, BackoffEntry>();

  constructor(opts: DestinationBackoffOptions) {
    this.#now = opts.now;
    this.#random = opts.random;
    this.#baseMs = opts.baseMs;
    this.#maxMs = opts.maxMs;
    this.#maxEntries = Math.max(1, opts.maxEntries ?? DEFAULT_MAX_ENTRIES);
  }

  /**
   * Counts a failed attempt to `destination` and blocks it. A failure reported while the
   * destination is already blocked came from an attempt started before the block (several
   * connections failing together): it is one outage, so it does not grow the block. A failure
   * long after the last block ended (more than maxMs after it) starts the count over.
   */
  recordFailure(destination: string): void {
    const now = this.#now();
    const previous = this.#entries.get(destination);
    if (previous !== undefined && now < previous.until) return;
    const stale = previous !== undefined && now - previous.until > this.#maxMs;
    const failures = previous === undefined || stale ? 1 : previous.failures + 1;
    const block = doubling(this.#baseMs, failures, this.#maxMs);
    const until = now + Math.round(block * (1 - BACKOFF_JITTER * unit(this.#random)));
    this.#entries.delete(destination);
    this.#entries.set(destination, { failures, until });
    while (this.#entries.size > this.#maxEntries) {
      const oldest = this.#entries.keys().next();
      if (oldest.done === true) break;
      this.#entries.delete(oldest.value);
    }
  }

  /** A successful delivery to `destination`: forget its failures. */
  recordSuccess(destination: string): void {
    this.#entries.delete(destination);
  }

  /** The time until which `destination` should not be tried, or null when it may be tried now. */
  blockedUntil(destination: string): number | null {
    const entry = this.#entries.get(destination);
    if (entry === undefined || entry.until <= this.#now()) return null;
    return entry.until;
  }

  /** Destinations currently remembered (blocked, or recently failed). */
  get size(): number {
    return this.#entries.size;
  }
}

export interface ConcurrencyLimits {
  /** Deliveries at once to one destination. */
  perDestination: number;
  /** Deliveries at once in all. */
  total: number;
}

/**
 * Counts deliveries in progress, per destination and in total. tryAcquire returns a release
 * function, or null when either limit is reached; releasing twice counts once. Destinations
 * with nothing in progress are not kept, so memory follows what is running.
 */
export class ConcurrencyLimiter {
  readonly #perDestination: number;
  readonly #total: number;
  readonly #active = new Map<string, number>();
  #running = 0;

  constructor(opts: ConcurrencyLimits) {
    if (!(opts.perDestination >= 1 && opts.total >= 1)) {
      throw new RangeError('ConcurrencyLimiter: perDestination and total must be at least 1');
    }
    this.#perDestination = opts.perDestination;
    this.#total = opts.total;
  }

  tryAcquire(destination: string): (() => void) | null {
    const current = this.#active.get(destination) ?? 0;
    if (this.#running >= this.#total || current >= this.#perDestination) return null;
    this.#active.set(destination, current + 1);
    this.#running++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#running--;
      const left = (this.#active.get(destination) ?? 1) - 1;
      if (left <= 0) this.#active.delete(destination);
      else this.#active.set(destination, left);
    };
  }

  /** Deliveries in progress to `destination`, or in total when no destination is given. */
  active(destination?: string): number {
    return destination === undefined ? this.#running : (this.#active.get(destination) ?? 0);
  }
}
