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
 * The counts live in the state store (state/auth-failures.ts through state/store.ts): the
 * in-process store, the primary's one for every worker (cluster/shared-state.ts), or Redis, so a
 * limit holds exactly however many workers or nodes a guesser's connections reach. Without a
 * store a throttle keeps its own table (tests, tools). The caller does the waiting and sends
 * the replies (AUTH_FAILED after the delay, AUTH_LOCKED_OUT while locked out).
 *
 * RFC 4954 section 4 leaves the defence to the server; RFC 4954 section 6 names 454 / 535.
 * Trust: keys are client addresses and the user names they claim (untrusted, unbounded in
 * number), so memory is capped (and Redis keys expire).
 */
import { clientNetworkKey } from '../policy/client-network.js';
import {
  AuthFailureTable,
  DEFAULT_MAX_DELAY_MS,
  DEFAULT_MAX_ENTRIES,
  type AuthLimits,
} from '../state/auth-failures.js';
import type { StateStore } from '../state/store.js';

export { DEFAULT_MAX_DELAY_MS, DEFAULT_MAX_ENTRIES };

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
  /** The clock of the throttle's own table (a store keeps its own clock). */
  now: () => number;
  /** Upper bound of a single delay. Default 30 s. */
  maxDelayMs?: number;
  /** Own table: most networks, and most pairs, remembered. Default 100,000. */
  maxEntries?: number;
}

/** The part of a state store the throttle uses. */
export type AuthFailureStore = Pick<StateStore, 'authLocked' | 'authFailed' | 'authSucceeded'>;

/** A claimed user name is keyed by at most this many characters (an address is at most 254). */
const MAX_USER_KEY_CHARS = 320;

export class AuthThrottle {
  readonly #limits: AuthLimits;
  readonly #store: AuthFailureStore;
  readonly #table: AuthFailureTable | null;

  /** `store`: where the counts live (the state store); absent: a table of the throttle's own. */
  constructor(opts: AuthThrottleOptions, store?: AuthFailureStore) {
    this.#limits = {
      failureDelayMs: opts.failureDelayMs,
      maxFailures: opts.maxFailures,
      maxNetworkFailures: opts.maxNetworkFailures,
      windowMs: opts.windowMs,
      lockoutMs: opts.lockoutMs,
      maxDelayMs: opts.maxDelayMs ?? DEFAULT_MAX_DELAY_MS,
    };
    if (store !== undefined) {
      this.#store = store;
      this.#table = null;
    } else {
      const table = new AuthFailureTable(opts.now, opts.maxEntries ?? DEFAULT_MAX_ENTRIES);
      this.#table = table;
      this.#store = {
        authLocked: (net, pair, limits) => Promise.resolve(table.locked(net, pair, limits)),
        authFailed: (net, pair, limits) => Promise.resolve(table.failed(net, pair, limits)),
        authSucceeded: (net, pair, limits) => Promise.resolve(table.succeeded(net, pair, limits)),
      };
    }
  }

  /**
   * True while AUTH from `ip` must be refused without trying (reply AUTH_LOCKED_OUT): its network
   * is locked out, or, when `user` is given, that user name is locked out for its network.
   */
  isLockedOut(ip: string, user?: string): Promise<boolean> {
    const net = clientNetworkKey(ip);
    return this.#store.authLocked(net, user === undefined ? null : pairKey(net, user), this.#limits);
  }

  /**
   * Records a failed attempt at `user` from `ip` and returns how long to wait before replying
   * 535: failureDelayMs * 2^(n-1) for the network's n-th failure in the window, capped at
   * maxDelayMs. The failure that reaches maxFailures for the pair, or maxNetworkFailures for
   * the network, also starts that lock-out.
   */
  delayAfterFailure(ip: string, user: string): Promise<number> {
    const net = clientNetworkKey(ip);
    return this.#store.authFailed(net, pairKey(net, user), this.#limits);
  }

  /**
   * A successful AUTH as `user` from `ip` forgets that pair's failures, and takes them off its
   * network's count; the failures of other user names from the same network stay.
   */
  recordSuccess(ip: string, user: string): Promise<void> {
    const net = clientNetworkKey(ip);
    return this.#store.authSucceeded(net, pairKey(net, user), this.#limits);
  }

  /** Number of networks in the throttle's own table (tests); 0 with a store. */
  get networks(): number {
    return this.#table?.networks ?? 0;
  }

  /** Number of (network, user) pairs in the throttle's own table (tests); 0 with a store. */
  get pairs(): number {
    return this.#table?.pairs ?? 0;
  }
}

/** A network key holds no NUL, so the pair key splits one way only. */
function pairKey(net: string, user: string): string {
  return `${net}\0${user.slice(0, MAX_USER_KEY_CHARS).toLowerCase()}`;
}
