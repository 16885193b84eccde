/**
 * Messages per minute per API key ([http_api] messages_per_minute): a token bucket holding a
 * minute's worth, refilled continuously, so a burst up to the limit passes and the average is
 * held. In memory, per process. It is the key's own burst guard; the per-user, per-domain and
 * per-network limits of [rate_limits] (policy/rate-limits.ts, shared by every listener and every
 * node) count API messages too, in api/listener.ts.
 * Pure: the clock is injected.
 */
export class KeyRateLimiter {
  readonly #perMinute: number;
  readonly #now: () => number;
  readonly #buckets = new Map<string, { tokens: number; at: number }>();

  constructor(perMinute: number, now: () => number = Date.now) {
    this.#perMinute = perMinute;
    this.#now = now;
  }

  /** Takes one message's token for `key`: 0 when allowed, else the seconds to wait (Retry-After). */
  take(key: string): number {
    if (this.#perMinute === 0) return 0;
    const now = this.#now();
    const ratePerMs = this.#perMinute / 60_000;
    const b = this.#buckets.get(key) ?? { tokens: this.#perMinute, at: now };
    b.tokens = Math.min(this.#perMinute, b.tokens + (now - b.at) * ratePerMs);
    b.at = now;
    this.#buckets.set(key, b);
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return 0;
    }
    return Math.max(1, Math.ceil((1 - b.tokens) / ratePerMs / 1000));
  }

  /** Gives a token back (the request failed before anything was queued). */
  refund(key: string): void {
    const b = this.#buckets.get(key);
    if (b !== undefined) b.tokens = Math.min(this.#perMinute, b.tokens + 1);
  }
}
