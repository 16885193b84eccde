/**
 * Shared state behind one interface: counters over time windows (rate limits) and keyed
 * records with a time to live (greylisting triplets, trusted networks). Two implementations:
 * in process (memory.ts, the default, persisted under data_dir) and Redis (redis.ts, when
 * [state] redis is set), so that several Sterna nodes behind one MX name enforce one limit.
 *
 * Counters are windows of `windowMs`: "fixed" counts from the start of the current window
 * (floor(now / windowMs)); "sliding" weighs the previous fixed window by the part of it still
 * inside the last windowMs (the sliding-window-counter approximation: two integers per key,
 * atomic in Redis). take() is all or nothing over several keys: it adds `amount` to every key
 * only when none would go over its limit, so a refused attempt never counts, and two nodes
 * sharing a store cannot both pass the last slot.
 * The failed-AUTH counts of auth/lockout.ts live here too (state/auth-failures.ts), so that every
 * worker and node sharing the store counts one guesser once.
 * Trust: internal; keys are built by Sterna from client data, values are Sterna's own.
 */
import type { AuthLimits } from './auth-failures.js';

export type WindowKind = 'fixed' | 'sliding';

export interface CounterWindow {
  ms: number;
  kind: WindowKind;
}

export interface CounterRule {
  key: string;
  /** Largest count allowed within the window. */
  limit: number;
}

export interface TakeResult {
  ok: boolean;
  /** Each key's count within the window, after the take when ok, before it when refused. */
  counts: number[];
  /** Refused: the index of the first rule that would go over its limit. */
  refused?: number;
  /** Refused: how long until `amount` fits under that rule's limit again. */
  retryAfterMs: number;
}

export interface CounterView {
  key: string;
  count: number;
}

export interface StateStore {
  /** Adds amount to every rule's counter when all stay within their limits; else adds nothing. */
  take(rules: readonly CounterRule[], amount: number, window: CounterWindow): Promise<TakeResult>;
  /** A counter's current count, nothing added. */
  peek(key: string, window: CounterWindow): Promise<number>;
  /** Every counter whose key starts with prefix and whose count is above zero. */
  counters(prefix: string, window: CounterWindow): Promise<CounterView[]>;
  get(key: string): Promise<string | null>;
  set(key: string, value: string, ttlMs: number): Promise<void>;
  delete(key: string): Promise<void>;
  /**
   * Failed AUTH (auth/lockout.ts, state/auth-failures.ts), each call atomic over the store: is
   * the network, or the (network, user) pair when given, locked out?
   */
  authLocked(net: string, pair: string | null, limits: AuthLimits): Promise<boolean>;
  /** One more failure of the pair and its network; the delay before the 535. */
  authFailed(net: string, pair: string, limits: AuthLimits): Promise<number>;
  /** A success of the pair: its failures forgotten, and taken off its network's count. */
  authSucceeded(net: string, pair: string, limits: AuthLimits): Promise<void>;
  /** What the store is, for the log: "memory (FILE)" or "redis (HOST:PORT)". */
  readonly description: string;
  close(): Promise<void>;
}

/** The fixed window `at` falls in, and how far into it `at` is (0 to 1). */
export function windowIndex(at: number, ms: number): { index: number; fraction: number } {
  const index = Math.floor(at / ms);
  return { index, fraction: (at - index * ms) / ms };
}

/** A counter's count from its two fixed windows: the current one and, for sliding, the previous. */
export function windowCount(current: number, previous: number, fraction: number, kind: WindowKind): number {
  return kind === 'fixed' ? current : previous * (1 - fraction) + current;
}

/**
 * How long until `amount` more fits under `limit` for a counter at (current, previous), with
 * no further takes meanwhile. At least one second: a retry hint of 0 would invite a loop.
 */
export function retryAfterMs(
  current: number,
  previous: number,
  at: number,
  amount: number,
  limit: number,
  window: CounterWindow,
): number {
  const { index, fraction } = windowIndex(at, window.ms);
  const toNextWindow = (index + 1) * window.ms - at;
  let wait: number;
  const room = limit - amount;
  if (window.kind === 'fixed' || room < 0) {
    wait = toNextWindow;
  } else if (current <= room && previous > 0) {
    // Still in this window: previous * (1 - f) + current <= room once f >= 1 - (room - current) / previous.
    const f = 1 - (room - current) / previous;
    wait = Math.max(0, (f - fraction) * window.ms);
  } else {
    // In the next window the current count becomes the previous one.
    const f = current > 0 ? Math.max(0, 1 - room / current) : 0;
    wait = toNextWindow + f * window.ms;
  }
  // The 1e-6 keeps floating-point noise from adding a millisecond.
  return Math.max(1000, Math.ceil(wait - 1e-6));
}

/** A counter's two fixed windows as read: the current one and, for sliding, the previous. */
export interface WindowCounts {
  current: number;
  previous: number;
}

/** Each rule's count within the window, from its fixed windows at `at`. */
export function countsAt(raw: readonly WindowCounts[], at: number, window: CounterWindow): number[] {
  const { fraction } = windowIndex(at, window.ms);
  return raw.map((c) => windowCount(c.current, c.previous, fraction, window.kind));
}

/**
 * The answer to a take() over `rules` whose counts before it were `raw`: taken when `refused`
 * is negative (every count moves up by amount), else refused by that rule, with its retry hint.
 * Both stores answer through this, so they answer alike.
 */
export function takeOutcome(
  raw: readonly WindowCounts[],
  rules: readonly CounterRule[],
  refused: number,
  at: number,
  amount: number,
  window: CounterWindow,
): TakeResult {
  const counts = countsAt(raw, at, window);
  if (refused < 0) return { ok: true, counts: counts.map((c) => c + amount), retryAfterMs: 0 };
  const c = raw[refused] ?? { current: 0, previous: 0 };
  return {
    ok: false,
    counts,
    refused,
    retryAfterMs: retryAfterMs(c.current, c.previous, at, amount, rules[refused]?.limit ?? 0, window),
  };
}

/** The counters of `keys` (in key order) whose count is above zero. */
export async function positiveCounters(
  keys: Iterable<string>,
  peek: (key: string) => Promise<number>,
): Promise<CounterView[]> {
  const out: CounterView[] = [];
  for (const key of [...keys].sort()) {
    const count = await peek(key);
    if (count > 0) out.push({ key, count });
  }
  return out;
}
