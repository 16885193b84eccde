/**
 * The failed-AUTH accounting of auth/lockout.ts as state a store keeps: per client network and
 * per (network, user name) pair, the failures within a window and a lock-out time. The
 * transitions are pure functions of the two entries, the time and the limits, so every store
 * (state/memory.ts, state/redis.ts, and through the primary, cluster/shared-state.ts) runs the
 * same ones and a limit holds exactly however many workers or nodes share the store.
 * AuthFailureTable keeps the entries in memory, capped (least recently active first out).
 *
 * RFC 4954 section 4 leaves the defence to the server.
 * Trust: keys are client addresses and the user names they claim (untrusted, unbounded in
 * number), so the in-memory table is capped and the Redis keys expire.
 */

export interface AuthLimits {
  /** Delay after the first failure; doubles with each further failure from the network in the window. */
  failureDelayMs: number;
  /** Failures against one user name from one network within `windowMs` that lock that pair out. */
  maxFailures: number;
  /** Failures from one network, whatever the user name, within `windowMs` that lock it out. */
  maxNetworkFailures: number;
  /** Failures older than this (counted from the first failure of the window) are forgotten. */
  windowMs: number;
  /** How long a pair or a network is refused AUTH once locked out. */
  lockoutMs: number;
  /** Upper bound of a single delay. */
  maxDelayMs: number;
}

export interface AuthEntry {
  /** Failures since `windowStart`. */
  failures: number;
  windowStart: number;
  /** Refuse AUTH until this time; 0 when not locked out. */
  lockedUntil: number;
}

export interface AuthPairEntry extends AuthEntry {
  /** The `windowStart` of the network's entry when `netFailures` were counted into it. */
  netWindowStart: number;
  /** This pair's failures that are part of the network's current count. */
  netFailures: number;
}

/** What a transition does to one entry: leave it, forget it, or write it (moved to most recent or not). */
export type Change<E> = { kind: 'keep' } | { kind: 'delete' } | { kind: 'set'; entry: E; touch: boolean };

export interface Transition<T> {
  network: Change<AuthEntry>;
  pair: Change<AuthPairEntry>;
  result: T;
}

export const DEFAULT_MAX_DELAY_MS = 30_000;
export const DEFAULT_MAX_ENTRIES = 100_000;

const KEEP = { kind: 'keep' } as const;

/** The entry unless it has expired: its lock-out is over, or (not locked) its window is. */
export function live<E extends AuthEntry>(
  entry: E | undefined,
  now: number,
  windowMs: number,
): E | undefined {
  if (entry === undefined) return undefined;
  if (entry.lockedUntil > 0) return now < entry.lockedUntil ? entry : undefined;
  return now - entry.windowStart >= windowMs ? undefined : entry;
}

/** When a store may forget the entry (ms since the epoch). */
export function expiresAt(entry: AuthEntry, windowMs: number): number {
  return entry.lockedUntil > 0 ? entry.lockedUntil : entry.windowStart + windowMs;
}

function isLocked(entry: AuthEntry | undefined): boolean {
  return entry !== undefined && entry.lockedUntil > 0;
}

/** Locked out: the network is, or (when a pair is asked about) the pair is. Both entries live. */
export function lockedOut(network: AuthEntry | undefined, pair: AuthPairEntry | undefined): boolean {
  return isLocked(network) || isLocked(pair);
}

/**
 * One more failure of the pair (and so of its network), both entries live or absent. The
 * result is the delay before the 535: failureDelayMs * 2^(n-1) for the network's n-th failure
 * in the window, capped at maxDelayMs. The failure that reaches maxFailures for the pair, or
 * maxNetworkFailures for the network, also starts that lock-out.
 */
export function failure(
  network: AuthEntry | undefined,
  pair: AuthPairEntry | undefined,
  now: number,
  limits: AuthLimits,
): Transition<number> {
  const n: AuthEntry = network !== undefined ? { ...network } : fresh(now);
  const p: AuthPairEntry =
    pair !== undefined ? { ...pair } : { ...fresh(now), netWindowStart: 0, netFailures: 0 };
  n.failures += 1;
  if (n.failures >= limits.maxNetworkFailures && n.lockedUntil === 0) n.lockedUntil = now + limits.lockoutMs;
  p.failures += 1;
  if (p.failures >= limits.maxFailures && p.lockedUntil === 0) p.lockedUntil = now + limits.lockoutMs;
  if (p.netWindowStart !== n.windowStart) {
    p.netWindowStart = n.windowStart;
    p.netFailures = 0;
  }
  p.netFailures += 1;
  // Bound the exponent so the product stays a finite number before the cap applies.
  const exponent = Math.min(n.failures - 1, 40);
  return {
    network: { kind: 'set', entry: n, touch: true },
    pair: { kind: 'set', entry: p, touch: true },
    result: Math.min(limits.failureDelayMs * 2 ** exponent, limits.maxDelayMs),
  };
}

/**
 * A success of the pair: its failures are forgotten and taken off its network's count (unless
 * the network is locked out, or its window began after they were counted).
 */
export function success(network: AuthEntry | undefined, pair: AuthPairEntry | undefined): Transition<void> {
  if (pair === undefined) return { network: KEEP, pair: KEEP, result: undefined };
  if (network === undefined || network.lockedUntil > 0 || network.windowStart !== pair.netWindowStart)
    return { network: KEEP, pair: { kind: 'delete' }, result: undefined };
  const failures = network.failures - pair.netFailures;
  return {
    network:
      failures <= 0 ? { kind: 'delete' } : { kind: 'set', entry: { ...network, failures }, touch: false },
    pair: { kind: 'delete' },
    result: undefined,
  };
}

function fresh(now: number): AuthEntry {
  return { failures: 0, windowStart: now, lockedUntil: 0 };
}

/**
 * The entries in process memory (the in-process store's, and a throttle's own without a store).
 * Insertion order is recency order; beyond maxEntries networks, or pairs, the least recently
 * active go first.
 */
export class AuthFailureTable {
  readonly #networks = new Map<string, AuthEntry>();
  readonly #pairs = new Map<string, AuthPairEntry>();
  readonly #now: () => number;
  readonly #maxEntries: number;

  constructor(now: () => number, maxEntries = DEFAULT_MAX_ENTRIES) {
    this.#now = now;
    this.#maxEntries = maxEntries;
  }

  locked(net: string, pair: string | null, limits: AuthLimits): boolean {
    const now = this.#now();
    return lockedOut(
      this.#live(this.#networks, net, now, limits),
      pair === null ? undefined : this.#live(this.#pairs, pair, now, limits),
    );
  }

  failed(net: string, pair: string, limits: AuthLimits): number {
    const now = this.#now();
    return this.#apply(
      net,
      pair,
      failure(
        this.#live(this.#networks, net, now, limits),
        this.#live(this.#pairs, pair, now, limits),
        now,
        limits,
      ),
    );
  }

  succeeded(net: string, pair: string, limits: AuthLimits): void {
    const now = this.#now();
    // The pair first, as the checks always looked: an expired pair is forgotten either way.
    const p = this.#live(this.#pairs, pair, now, limits);
    if (p === undefined) return;
    this.#apply(net, pair, success(this.#live(this.#networks, net, now, limits), p));
  }

  /** Number of networks remembered (for tests). */
  get networks(): number {
    return this.#networks.size;
  }

  /** Number of (network, user) pairs remembered (for tests). */
  get pairs(): number {
    return this.#pairs.size;
  }

  #live<E extends AuthEntry>(
    map: Map<string, E>,
    key: string,
    now: number,
    limits: AuthLimits,
  ): E | undefined {
    const entry = live(map.get(key), now, limits.windowMs);
    if (entry === undefined) map.delete(key);
    return entry;
  }

  #apply<T>(net: string, pair: string, t: Transition<T>): T {
    this.#change(this.#networks, net, t.network);
    this.#change(this.#pairs, pair, t.pair);
    return t.result;
  }

  #change<E>(map: Map<string, E>, key: string, change: Change<E>): void {
    switch (change.kind) {
      case 'keep':
        return;
      case 'delete':
        map.delete(key);
        return;
      case 'set':
        if (change.touch) map.delete(key);
        map.set(key, change.entry);
        while (map.size > this.#maxEntries) {
          const oldest = map.keys().next();
          if (oldest.done === true) break;
          map.delete(oldest.value);
        }
        return;
      default: {
        const never: never = change;
        throw new Error(`unhandled change ${JSON.stringify(never)}`);
      }
    }
  }
}
