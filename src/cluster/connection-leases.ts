/**
 * `[limits] connections` and `connections_per_ip` across the workers of a cluster
 * (docs/workers.md, "Connection limits across workers").
 *
 * The kernel hands each new connection to one worker; counted there alone, N workers would let
 * a network hold N × the limit. Asking the primary before every greeting (as Postfix's smtpd
 * asks anvil) is exact but costs a round trip of about 100 µs of CPU on this kind of machine
 * (node:cluster IPC, measured), a tenth of a message. So the primary leases slots instead: a
 * worker that has no free slot for the total or for the client's network asks the primary
 * (LeaseLedger) for some, and then lets further connections in on its own until they are used.
 * The primary never leases more than the limit in all, so the limits hold exactly at every
 * moment. When none are left it asks the other workers to give back the slots they hold but do
 * not use (a reclaim), and refuses only if there still are none. A worker gives back the slots
 * of a network once it has had no connection from it for IDLE_RETURN_MS, so the tables stay as
 * small as the set of clients connected.
 *
 * Invariant: what a worker holds is never more than what the primary counts for it. The
 * primary adds a grant before it sends it and subtracts a give-back when it arrives; a worker
 * adds a grant when it arrives and subtracts a give-back before it sends it.
 *
 * The ledger and the holder do no I/O: their messages go through the links given to them
 * (cluster/ipc.ts carries them). Trust: internal; both ends are Sterna processes.
 */
import {
  ConnectionCounts,
  type ConnectionSlots,
  type SlotLimits,
  type SlotRefusal,
} from '../server/connection-slots.js';

/** A bucket of slots: null is the total, a string a client network. */
export type LeaseKey = string | null;

/** How long a worker keeps the slots of a network from which it has no open connection. */
export const IDLE_RETURN_MS = 1000;
/** How long the primary waits for the other workers to give back slots before it refuses. */
export const RECLAIM_WAIT_MS = 500;
/**
 * How long a worker waits for the primary's answer before it lets the connection in anyway,
 * counted as its own: a primary that cannot answer must not stop the mail (Postfix's smtpd
 * does the same when anvil does not answer).
 */
export const ASK_TIMEOUT_MS = 5000;

/** A worker asks for slots: for the total, for the network, or both (it has none free). */
export interface LeaseAsk {
  id: number;
  network: string;
  total: boolean;
  net: boolean;
}

/** The primary's answer: how many more slots the worker now holds of each (0: none left). */
export interface LeaseGrant {
  id: number;
  network: string;
  total: number;
  net: number;
}

/** How the primary reaches a worker; each returns false when that worker is gone. */
export interface LedgerLink {
  grant(worker: number, grant: LeaseGrant): boolean;
  reclaim(worker: number, key: LeaseKey): boolean;
}

class Bucket {
  readonly limit: number;
  /** Slots leased to each worker. */
  readonly held: number[];
  /** Asks being served on this bucket; it is not forgotten while any is. */
  serving = 0;
  /** The running reclaim: the workers asked that have not answered yet. */
  round: { awaiting: Set<number>; done: Promise<void>; wake: () => void } | null = null;

  constructor(limit: number, workers: number) {
    this.limit = limit;
    this.held = new Array<number>(workers).fill(0);
  }

  get free(): number {
    let leased = 0;
    for (const n of this.held) leased += n;
    return this.limit - leased;
  }

  get idle(): boolean {
    return this.serving === 0 && this.round === null && this.held.every((n) => n === 0);
  }
}

/** The primary's side: how many slots each worker holds, never more than the limits in all. */
export class LeaseLedger {
  readonly #workers: number;
  readonly #link: LedgerLink;
  readonly #perNetwork: number;
  readonly #reclaimWaitMs: number;
  readonly #total: Bucket;
  readonly #networks = new Map<string, Bucket>();

  constructor(o: { workers: number; limits: SlotLimits; link: LedgerLink; reclaimWaitMs?: number }) {
    this.#workers = o.workers;
    this.#link = o.link;
    this.#perNetwork = o.limits.perNetwork;
    this.#reclaimWaitMs = o.reclaimWaitMs ?? RECLAIM_WAIT_MS;
    this.#total = new Bucket(o.limits.total, o.workers);
  }

  /** Networks with slots leased (or an ask under way): what the tables hold. */
  get networks(): number {
    return this.#networks.size;
  }

  /** Slots leased to `worker` of `key` (for tests and metrics). */
  held(worker: number, key: LeaseKey): number {
    const bucket = key === null ? this.#total : this.#networks.get(key);
    return bucket?.held[worker] ?? 0;
  }

  /** Worker `worker` asks; the answer goes out through the link. */
  async ask(worker: number, ask: LeaseAsk): Promise<void> {
    if (!this.#valid(worker)) return;
    let net = this.#networks.get(ask.network);
    if (net === undefined) {
      net = new Bucket(this.#perNetwork, this.#workers);
      this.#networks.set(ask.network, net);
    }
    net.serving++;
    try {
      const total = ask.total ? await this.#grant(worker, this.#total, null) : 0;
      // Without a slot in the total the connection is refused: its network's are not needed.
      const netGrant = ask.net && (!ask.total || total > 0) ? await this.#grant(worker, net, ask.network) : 0;
      if (!this.#link.grant(worker, { id: ask.id, network: ask.network, total, net: netGrant })) {
        // Gone while it waited (dropWorker ran before these were added): nobody holds them.
        this.#total.held[worker] = Math.max(0, (this.#total.held[worker] ?? 0) - total);
        net.held[worker] = Math.max(0, (net.held[worker] ?? 0) - netGrant);
      }
    } finally {
      net.serving--;
      this.#forget(ask.network);
    }
  }

  /** Worker `worker` gave back `n` slots of `key`; `answered`: in answer to a reclaim. */
  giveBack(worker: number, key: LeaseKey, n: number, answered: boolean): void {
    if (!this.#valid(worker)) return;
    const bucket = key === null ? this.#total : this.#networks.get(key);
    if (bucket === undefined) return;
    bucket.held[worker] = Math.max(0, (bucket.held[worker] ?? 0) - Math.max(0, n));
    if (answered) this.#answered(bucket, worker);
    if (key !== null) this.#forget(key);
  }

  /** Worker `worker` is gone (or restarting): its connections went with it, and so do its slots. */
  dropWorker(worker: number): void {
    if (!this.#valid(worker)) return;
    for (const [key, bucket] of [[null, this.#total] as const, ...this.#networks]) {
      bucket.held[worker] = 0;
      this.#answered(bucket, worker);
      if (key !== null) this.#forget(key);
    }
  }

  async #grant(worker: number, bucket: Bucket, key: LeaseKey): Promise<number> {
    // A round already running was started for another worker and did not ask the ones this
    // worker needs: after it, one of its own.
    for (let round = 0; round < 2 && bucket.free <= 0; round++) await this.#reclaim(worker, bucket, key);
    const free = bucket.free;
    if (free <= 0) return 0;
    // A share of what is left, so that the next worker to ask finds some too; 1 near the limit.
    const grant = Math.max(1, Math.floor(free / (2 * this.#workers)));
    bucket.held[worker] = (bucket.held[worker] ?? 0) + grant;
    return grant;
  }

  /** Asks every other worker holding slots of `key` for its unused ones; one round at a time. */
  #reclaim(worker: number, bucket: Bucket, key: LeaseKey): Promise<void> {
    if (bucket.round !== null) return bucket.round.done;
    const awaiting = new Set<number>();
    for (let v = 0; v < this.#workers; v++)
      if (v !== worker && (bucket.held[v] ?? 0) > 0 && this.#link.reclaim(v, key)) awaiting.add(v);
    if (awaiting.size === 0) return Promise.resolve();
    let wake = (): void => undefined;
    const done = new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, this.#reclaimWaitMs);
      wake = () => {
        clearTimeout(timer);
        resolve();
      };
    }).then(() => {
      bucket.round = null;
    });
    bucket.round = { awaiting, done, wake };
    return done;
  }

  #answered(bucket: Bucket, worker: number): void {
    const round = bucket.round;
    if (round !== null && round.awaiting.delete(worker) && round.awaiting.size === 0) round.wake();
  }

  #forget(key: string): void {
    if (this.#networks.get(key)?.idle === true) this.#networks.delete(key);
  }

  #valid(worker: number): boolean {
    return Number.isInteger(worker) && worker >= 0 && worker < this.#workers;
  }
}

/** How a worker reaches its primary. */
export interface HolderLink {
  ask(ask: LeaseAsk): void;
  giveBack(key: LeaseKey, n: number, answered: boolean): void;
}

interface Waiting {
  resolve: (refusal: SlotRefusal | null) => void;
  timer: NodeJS.Timeout;
}

/** The connections from one network waiting for the primary, and the ask under way for them. */
interface NetworkQueue {
  waiting: Waiting[];
  /** The ask in flight (its id and what it asked for), or null. */
  ask: LeaseAsk | null;
  /** Asks in a row whose grant let nobody in. */
  fruitless: number;
}

/** Asks in a row that let no waiting connection in before those connections are refused. */
const MAX_FRUITLESS_ASKS = 2;

/** A worker's side: the slots it holds, and its open connections counted against them. */
export class LeaseHolder implements ConnectionSlots {
  readonly #link: HolderLink;
  readonly #now: () => number;
  readonly #askTimeoutMs: number;
  readonly #onAskTimeout: () => void;
  readonly #open = new ConnectionCounts();
  #totalHeld = 0;
  readonly #held = new Map<string, number>();
  /** Networks with slots held and no open connection: since when. */
  readonly #idleSince = new Map<string, number>();
  /**
   * Networks with connections waiting for the primary: one ask at a time per network, whose
   * grant lets in as many of them as it can (a burst of connections costs a few asks, not one
   * each). A network here keeps its slots (the sweep passes it by).
   */
  readonly #queues = new Map<string, NetworkQueue>();
  #nextId = 1;
  #sweeper: NodeJS.Timeout | null = null;

  constructor(o: {
    link: HolderLink;
    now?: () => number;
    askTimeoutMs?: number;
    /** The primary did not answer in time: the connection was let in anyway. */
    onAskTimeout?: () => void;
  }) {
    this.#link = o.link;
    this.#now = o.now ?? Date.now;
    this.#askTimeoutMs = o.askTimeoutMs ?? ASK_TIMEOUT_MS;
    this.#onAskTimeout = o.onAskTimeout ?? (() => undefined);
  }

  /** Gives back idle networks' slots every IDLE_RETURN_MS / 2 until stop(). */
  start(): void {
    this.#sweeper ??= setInterval(() => this.sweep(), IDLE_RETURN_MS / 2);
    this.#sweeper.unref();
  }

  stop(): void {
    if (this.#sweeper !== null) clearInterval(this.#sweeper);
    this.#sweeper = null;
  }

  acquire(network: string): SlotRefusal | null | Promise<SlotRefusal | null> {
    const queue = this.#queues.get(network);
    // Connections already waiting go first.
    if (queue === undefined && this.#fits(network)) {
      this.#take(network);
      return null;
    }
    const q = queue ?? { waiting: [], ask: null, fruitless: 0 };
    if (queue === undefined) this.#queues.set(network, q);
    return new Promise<SlotRefusal | null>((resolve) => {
      const waiting: Waiting = {
        resolve,
        timer: setTimeout(() => {
          const at = q.waiting.indexOf(waiting);
          if (at < 0) return;
          q.waiting.splice(at, 1);
          this.#take(network);
          this.#onAskTimeout();
          resolve(null);
          this.#settle(network, q);
        }, this.#askTimeoutMs),
      };
      waiting.timer.unref();
      q.waiting.push(waiting);
      if (q.ask === null) this.#ask(network, q);
    });
  }

  release(network: string): void {
    if (this.#open.remove(network) === 0 && this.#held.has(network))
      this.#idleSince.set(network, this.#now());
  }

  /** The primary's answer to an ask (also one that came after its timeout: the slots are kept). */
  granted(grant: LeaseGrant): void {
    this.#totalHeld += Math.max(0, grant.total);
    if (grant.net > 0) {
      this.#held.set(grant.network, (this.#held.get(grant.network) ?? 0) + grant.net);
      if (this.#open.of(grant.network) === 0 && !this.#idleSince.has(grant.network))
        this.#idleSince.set(grant.network, this.#now());
    }
    const q = this.#queues.get(grant.network);
    if (q === undefined || q.ask?.id !== grant.id) return;
    const asked = q.ask;
    q.ask = null;
    // Let in, in order and here (before any other message can take the slots back), as many as fit.
    let admitted = 0;
    while (q.waiting.length > 0 && this.#fits(grant.network)) {
      const w = q.waiting.shift();
      if (w === undefined) break;
      clearTimeout(w.timer);
      this.#take(grant.network);
      w.resolve(null);
      admitted++;
    }
    q.fruitless = admitted > 0 ? 0 : q.fruitless + 1;
    if (q.waiting.length > 0) {
      // Refused: a part asked for and not granted (none left in the cluster, even after a
      // reclaim); or asks that let nobody in, twice in a row. Those happen when this worker got
      // one part and a reclaim for another worker took the other back meanwhile: both buckets are
      // fully leased, and two workers each needing both could otherwise take each other's halves
      // back in turn forever.
      const noTotal = (asked.total && grant.total === 0) || this.#open.total >= this.#totalHeld;
      const noNet = asked.net && grant.net === 0;
      if ((asked.total && grant.total === 0) || noNet || q.fruitless >= MAX_FRUITLESS_ASKS) {
        const why: SlotRefusal = noTotal ? 'TOO_MANY_CONNECTIONS' : 'TOO_MANY_CONNECTIONS_FROM_IP';
        q.fruitless = 0;
        for (const w of q.waiting.splice(0)) {
          clearTimeout(w.timer);
          w.resolve(why);
        }
      } else this.#ask(grant.network, q);
    }
    this.#settle(grant.network, q);
  }

  /** The primary wants back the slots of `key` this worker does not use. */
  reclaim(key: LeaseKey): void {
    let n: number;
    if (key === null) {
      n = Math.max(0, this.#totalHeld - this.#open.total);
      this.#totalHeld -= n;
    } else {
      const held = this.#held.get(key) ?? 0;
      const open = this.#open.of(key);
      n = Math.max(0, held - open);
      if (held - n > 0) this.#held.set(key, held - n);
      else {
        this.#held.delete(key);
        this.#idleSince.delete(key);
      }
    }
    this.#link.giveBack(key, n, true);
  }

  /** Gives back the slots of networks idle for IDLE_RETURN_MS (start() runs it on a timer). */
  sweep(): void {
    const now = this.#now();
    for (const [network, since] of this.#idleSince) {
      if (now - since < IDLE_RETURN_MS || this.#queues.has(network)) continue;
      this.#idleSince.delete(network);
      const n = this.#held.get(network) ?? 0;
      this.#held.delete(network);
      if (n > 0) this.#link.giveBack(network, n, false);
    }
  }

  /** Networks this worker holds slots of (for tests). */
  get networks(): number {
    return this.#held.size;
  }

  /** Slots this worker holds of `key` (for tests). */
  holding(key: LeaseKey): number {
    return key === null ? this.#totalHeld : (this.#held.get(key) ?? 0);
  }

  #ask(network: string, q: NetworkQueue): void {
    const ask: LeaseAsk = {
      id: this.#nextId++,
      network,
      total: this.#open.total >= this.#totalHeld,
      net: this.#open.of(network) >= (this.#held.get(network) ?? 0),
    };
    q.ask = ask;
    this.#link.ask(ask);
  }

  /** Forgets a network's queue once nothing waits and no ask is under way. */
  #settle(network: string, q: NetworkQueue): void {
    if (q.waiting.length === 0 && q.ask === null && this.#queues.get(network) === q)
      this.#queues.delete(network);
  }

  #fits(network: string): boolean {
    return this.#open.total < this.#totalHeld && this.#open.of(network) < (this.#held.get(network) ?? 0);
  }

  #take(network: string): void {
    this.#open.add(network);
    this.#idleSince.delete(network);
  }
}
