/**
 * Brute-force defence for AUTH, per client IP: each failure delays the 535 reply a little
 * more (doubling), and too many failures within a window refuse AUTH from that IP for a while.
 * Pure: the clock is injected; the caller does the waiting and sends the replies
 * (AUTH_FAILED after the delay, AUTH_LOCKED_OUT while locked out).
 *
 * RFC 4954 section 4 leaves the defence to the server; RFC 4954 section 6 names 454 / 535.
 * Trust: keys are client IPs (untrusted, unbounded in number), so memory is capped.
 */

export interface AuthThrottleOptions {
  /** Delay after the first failure; doubles with each further failure in the window. */
  failureDelayMs: number;
  /** Failures from one IP within `windowMs` that trigger a lock-out. */
  maxFailures: number;
  /** Failures older than this (counted from the first failure of the window) are forgotten. */
  windowMs: number;
  /** How long an IP is refused AUTH once locked out. */
  lockoutMs: number;
  now: () => number;
  /** Upper bound of a single delay. Default 30 s. */
  maxDelayMs?: number;
  /** Most IPs remembered; the least recently active are forgotten first. Default 100,000. */
  maxEntries?: number;
}

interface Entry {
  /** Failures since `windowStart`. */
  failures: number;
  windowStart: number;
  /** Refuse AUTH until this time; 0 when not locked out. */
  lockedUntil: number;
}

export const DEFAULT_MAX_DELAY_MS = 30_000;
export const DEFAULT_MAX_ENTRIES = 100_000;

export class AuthThrottle {
  readonly #opts: Required<AuthThrottleOptions>;
  /** Insertion order is recency order: an entry is re-inserted whenever it changes. */
  readonly #entries = new Map<string, Entry>();

  constructor(opts: AuthThrottleOptions) {
    this.#opts = {
      maxDelayMs: DEFAULT_MAX_DELAY_MS,
      maxEntries: DEFAULT_MAX_ENTRIES,
      ...opts,
    };
  }

  /** True while `ip` must be refused AUTH (reply AUTH_LOCKED_OUT without trying). */
  isLockedOut(ip: string): boolean {
    const entry = this.#current(ip);
    return entry !== undefined && entry.lockedUntil > 0;
  }

  /**
   * Records a failed attempt from `ip` and returns how long to wait before replying 535:
   * failureDelayMs * 2^(n-1) for the n-th failure in the window, capped at maxDelayMs. The
   * failure that reaches maxFailures also starts the lock-out.
   */
  delayAfterFailure(ip: string): number {
    const now = this.#opts.now();
    const entry = this.#current(ip) ?? { failures: 0, windowStart: now, lockedUntil: 0 };
    entry.failures += 1;
    if (entry.failures >= this.#opts.maxFailures && entry.lockedUntil === 0) {
      entry.lockedUntil = now + this.#opts.lockoutMs;
    }
    this.#store(ip, entry);
    // Bound the exponent so the product stays a finite number before the cap applies.
    const exponent = Math.min(entry.failures - 1, 40);
    return Math.min(this.#opts.failureDelayMs * 2 ** exponent, this.#opts.maxDelayMs);
  }

  /**
   * A successful AUTH forgets the IP's failures: several users behind one NAT address should
   * not pay for one colleague's typo. (The cost: an attacker who owns one account can reset
   * the count between guesses at others; the per-failure delay still applies.)
   */
  recordSuccess(ip: string): void {
    this.#entries.delete(ip);
  }

  /** Number of IPs remembered (for metrics and tests). */
  get size(): number {
    return this.#entries.size;
  }

  /** The entry for `ip`, after dropping whatever has expired; undefined if nothing is left. */
  #current(ip: string): Entry | undefined {
    const entry = this.#entries.get(ip);
    if (entry === undefined) return undefined;
    const now = this.#opts.now();
    if (entry.lockedUntil > 0) {
      if (now < entry.lockedUntil) return entry;
      // The lock-out is over: start again from a clean slate.
      this.#entries.delete(ip);
      return undefined;
    }
    if (now - entry.windowStart >= this.#opts.windowMs) {
      this.#entries.delete(ip);
      return undefined;
    }
    return entry;
  }

  #store(ip: string, entry: Entry): void {
    this.#entries.delete(ip);
    this.#entries.set(ip, entry);
    while (this.#entries.size > this.#opts.maxEntries) {
      const oldest = this.#entries.keys().next();
      if (oldest.done === true) break;
      this.#entries.delete(oldest.value);
    }
  }
}
