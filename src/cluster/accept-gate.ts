/**
 * Which workers take new connections (docs/workers.md, "Which workers take connections").
 *
 * Every worker could listen on the shared socket all the time, and the kernel would then hand
 * each new connection to whichever worker was waiting. Under light load that spreads a client's
 * consecutive connections over idle processes, and each one has to wake up: with one session at
 * a time, two workers on two cores delivered 10–28 % fewer messages a second than one. Under
 * heavy load the second worker is worth 14–50 % more. So the workers report their load (the
 * time-weighted average of their open connections) and the primary lets only as many of them
 * take new connections as that load needs, `connections_per_worker` open connections each:
 * worker 0 always, the next ones in index order (the first live ones, when a worker is down).
 * More workers join at once; one leaves only after the load has stayed lower for SCALE_DOWN_MS.
 *
 * AcceptGate is the primary's decision alone (no timers, no I/O; the clock is injected), and
 * startLoadReports the worker's side. Trust: internal.
 */

/** How long the load must stay lower before a worker stops taking connections. */
export const SCALE_DOWN_MS = 2000;
/** How often a worker looks at its load (and reports it when it changed). */
export const LOAD_REPORT_MS = 250;

export interface AcceptGateOptions {
  /** Workers in the cluster. */
  count: number;
  /** Open connections per accepting worker before another one joins (> 0). */
  connectionsPerWorker: number;
  now?: () => number;
}

export class AcceptGate {
  readonly #count: number;
  readonly #perWorker: number;
  readonly #now: () => number;
  readonly #loads: number[];
  readonly #alive: boolean[];
  /** How many live workers take connections: the first ones by index. */
  #wanted = 1;
  /** Since when the load has asked for fewer workers than take connections; null: it has not. */
  #lowerSince: number | null = null;

  constructor(o: AcceptGateOptions) {
    if (!(o.connectionsPerWorker > 0)) throw new RangeError('connectionsPerWorker must be positive');
    this.#count = o.count;
    this.#perWorker = o.connectionsPerWorker;
    this.#now = o.now ?? Date.now;
    this.#loads = new Array<number>(o.count).fill(0);
    // A worker counts once it is ready: until worker 0 is, the first ready one takes connections.
    this.#alive = new Array<boolean>(o.count).fill(false);
  }

  /** Worker `index` reported its average open connections. */
  report(index: number, open: number): void {
    if (index < 0 || index >= this.#count) return;
    this.#loads[index] = open;
    this.#decide();
  }

  /** Worker `index` is ready (true) or down (false: its load goes with it). */
  setAlive(index: number, alive: boolean): void {
    if (index < 0 || index >= this.#count) return;
    this.#alive[index] = alive;
    if (!alive) this.#loads[index] = 0;
    this.#decide();
  }

  /** Decides again (a pending scale-down may be due); the primary calls it on a timer. */
  recheck(): void {
    this.#decide();
  }

  /** When recheck() may change something, in ms from now; null: nothing is pending. */
  get recheckInMs(): number | null {
    if (this.#lowerSince === null) return null;
    return Math.max(0, this.#lowerSince + SCALE_DOWN_MS - this.#now());
  }

  /** Whether worker `index` takes new connections now. */
  accepts(index: number): boolean {
    if (!this.#alive[index]) return false;
    let rank = 0;
    for (let i = 0; i < index; i++) if (this.#alive[i]) rank++;
    return rank < this.#wanted;
  }

  #decide(): void {
    const total = this.#loads.reduce((sum, n) => sum + n, 0);
    const want = Math.min(this.#count, Math.max(1, Math.ceil(total / this.#perWorker)));
    if (want >= this.#wanted) {
      this.#wanted = want;
      this.#lowerSince = null;
      return;
    }
    const now = this.#now();
    if (this.#lowerSince === null) this.#lowerSince = now;
    else if (now - this.#lowerSince >= SCALE_DOWN_MS) {
      this.#wanted = want;
      this.#lowerSince = null;
    }
  }
}

/** What a worker's listeners offer the load reports (server/listeners.ts). */
export interface LoadSource {
  takeOccupancy(): number;
  onOpened: ((open: number) => void) | undefined;
}

/**
 * The worker's side: every LOAD_REPORT_MS, its average open connections since the last look,
 * sent when it changed (an idle worker sends nothing); and at once when its open connections
 * reach twice `connectionsPerWorker`, so a burst of new clients brings the other workers in
 * without waiting for the next look. Returns the function that stops the reports.
 */
export function startLoadReports(
  source: LoadSource,
  send: (open: number) => void,
  connectionsPerWorker: number,
): () => void {
  const burst = 2 * connectionsPerWorker;
  let sent = 0;
  source.onOpened = (open) => {
    if (open >= burst && sent < burst) {
      sent = open;
      send(open);
    }
  };
  const timer = setInterval(() => {
    // Tenths are enough to decide on, and keep a steady load from being sent again and again.
    const open = Math.round(source.takeOccupancy() * 10) / 10;
    if (open !== sent) {
      sent = open;
      send(open);
    }
  }, LOAD_REPORT_MS);
  timer.unref();
  return () => {
    clearInterval(timer);
    source.onOpened = undefined;
  };
}
