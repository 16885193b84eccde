/**
 * Brute-force defence for AUTH, per client network (policy/client-network.ts: an IPv4 address,
 * an IPv6 /64). Each failure delays the 535 reply a little more (doubling with the network's
 * failures), and too many failures within a window refuse AUTH for a while:
 * - maxFailures against one user name from one network lock that (network, user) pair out: a
 *   guesser at alice is refused, while bob behind the same NAT address still logs in;
 * - maxNetworkFailures from one network, over all user names, lock the whole network out: a
 *   guesser who tries a few passwords at many users is stopped too.
 * A successful AUTH forgets only its own pair's failures (and takes them off the network's
 * count): one user's typos do not count against colleagues behind the same address, and a
 * guesser who owns one account cannot wipe the count of its guesses at the others by logging in.
 * Pure: the clock is injected; the caller does the waiting and sends the replies
 * (AUTH_FAILED after the delay, AUTH_LOCKED_OUT while locked out).
 *
 * RFC 4954 section 4 leaves the defence to the server; RFC 4954 section 6 names 454 / 535.
 * Trust: keys are client addresses and the user names they claim (untrusted, unbounded in
 * number), so memory is capped.
 */
import { clientNetworkKey } from '../policy/client-network.js';

export interface AuthThrottleOptions {
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
  now: () => number;
  /** Upper bound of a single delay. Default 30 s. */
  maxDelayMs?: number;
  /** Most networks, and most (network, user) pairs, remembered; the least recently active go first. Default 100,000. */
  maxEntries?: number;
}

interface Entry {
  /** Failures since `windowStart`. */
  failures: number;
  windowStart: number;
  /** Refuse AUTH until this time; 0 when not locked out. */
  lockedUntil: number;
}

interface PairEntry extends Entry {
  /** The `windowStart` of the network's entry when `netFailures` were counted into it. */
  netWindowStart: number;
  /** This pair's failures that are part of the network's current count. */
  netFailures: number;
}

export const DEFAULT_MAX_DELAY_MS = 30_000;
export const DEFAULT_MAX_ENTRIES = 100_000;
/** A claimed user name is keyed by at most this many characters (an address is at most 254). */
const MAX_USER_KEY_CHARS = 320;

export class AuthThrottle {
  readonly #opts: Required<AuthThrottleOptions>;
  /** By network key. Insertion order is recency order: an entry is re-inserted whenever it changes. */
  readonly #networks = new Map<string, Entry>();
  /** By network key + NUL + user name, in the same recency order. */
  readonly #pairs = new Map<string, PairEntry>();

  constructor(opts: AuthThrottleOptions) {
    this.#opts = {
      maxDelayMs: DEFAULT_MAX_DELAY_MS,
      maxEntries: DEFAULT_MAX_ENTRIES,
      ...opts,
    };
  }

  /**
   * True while AUTH from `ip` must be refused without trying (reply AUTH_LOCKED_OUT): its network
   * is locked out, or, when `user` is given, that user name is locked out for its network.
   */
  isLockedOut(ip: string, user?: string): boolean {
    const net = clientNetworkKey(ip);
    if (isLocked(this.#current(this.#networks, net))) return true;
    return user !== undefined && isLocked(this.#current(this.#pairs, pairKey(net, user)));
  }

  /**
   * Records a failed attempt at `user` from `ip` and returns how long to wait before replying
   * 535: failureDelayMs * 2^(n-1) for the network's n-th failure in the window, capped at
   * maxDelayMs. The failure that reaches maxFailures for the pair, or maxNetworkFailures for
   * the network, also starts that lock-out.
   */
  delayAfterFailure(ip: string, user: string): number {
    const now = this.#opts.now();
    const net = clientNetworkKey(ip);
    const key = pairKey(net, user);
    const network = this.#current(this.#networks, net) ?? fresh(now);
    const pair = this.#current(this.#pairs, key) ?? { ...fresh(now), netWindowStart: 0, netFailures: 0 };
    network.failures += 1;
    if (network.failures >= this.#opts.maxNetworkFailures && network.lockedUntil === 0)
      network.lockedUntil = now + this.#opts.lockoutMs;
    pair.failures += 1;
    if (pair.failures >= this.#opts.maxFailures && pair.lockedUntil === 0)
      pair.lockedUntil = now + this.#opts.lockoutMs;
    if (pair.netWindowStart !== network.windowStart) {
      pair.netWindowStart = network.windowStart;
      pair.netFailures = 0;
    }
    pair.netFailures += 1;
    this.#store(this.#networks, net, network);
    this.#store(this.#pairs, key, pair);
    // Bound the exponent so the product stays a finite number before the cap applies.
    const exponent = Math.min(network.failures - 1, 40);
    return Math.min(this.#opts.failureDelayMs * 2 ** exponent, this.#opts.maxDelayMs);
  }

  /**
   * A successful AUTH as `user` from `ip` forgets that pair's failures, and takes them off its
   * network's count; the failures of other user names from the same network stay.
   */
  recordSuccess(ip: string, user: string): void {
    const net = clientNetworkKey(ip);
    const key = pairKey(net, user);
    const pair = this.#current(this.#pairs, key);
    if (pair === undefined) return;
    this.#pairs.delete(key);
    const network = this.#current(this.#networks, net);
    if (network === undefined || network.lockedUntil > 0 || network.windowStart !== pair.netWindowStart)
      return;
    network.failures -= pair.netFailures;
    if (network.failures <= 0) this.#networks.delete(net);
  }

  /** Number of networks remembered (for metrics and tests). */
  get networks(): number {
    return this.#networks.size;
  }

  /** Number of (network, user) pairs remembered (for metrics and tests). */
  get pairs(): number {
    return this.#pairs.size;
  }

  /** The entry for `key`, after dropping whatever has expired; undefined if nothing is left. */
  #current<E extends Entry>(map: Map<string, E>, key: string): E | undefined {
    const entry = map.get(key);
    if (entry === undefined) return undefined;
    const now = this.#opts.now();
    if (entry.lockedUntil > 0) {
      if (now < entry.lockedUntil) return entry;
      // The lock-out is over: start again from a clean slate.
      map.delete(key);
      return undefined;
    }
    if (now - entry.windowStart >= this.#opts.windowMs) {
      map.delete(key);
      return undefined;
    }
    return entry;
  }

  #store<E extends Entry>(map: Map<string, E>, key: string, entry: E): void {
    map.delete(key);
    map.set(key, entry);
    while (map.size > this.#opts.maxEntries) {
      const oldest = map.keys().next();
      if (oldest.done === true) break;
      map.delete(oldest.value);
    }
  }
}

function fresh(now: number): Entry {
  return { failures: 0, windowStart: now, lockedUntil: 0 };
}

function isLocked(entry: Entry | undefined): boolean {
  return entry !== undefined && entry.lockedUntil > 0;
}

/** A network key holds no NUL, so the pair key splits one way only. */
function pairKey(net: string, user: string): string {
  return `${net}\0${user.slice(0, MAX_USER_KEY_CHARS).toLowerCase()}`;
}
