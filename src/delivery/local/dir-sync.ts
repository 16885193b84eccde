/**
 * Grouped directory fsyncs (group commit) for Maildir delivery: concurrent deliveries into the
 * same new/ directory share its fsync instead of each running its own.
 *
 * The rule that keeps delivery exactly-once and durable: a caller is answered only by an fsync
 * of the directory that BEGAN after the caller asked, that is after its rename() returned. An
 * fsync already running when the caller asks may have begun before the rename, so it does not
 * count: the caller waits for the next one, which starts as soon as the running one ends and
 * covers every caller that arrived meanwhile. So at most two fsyncs of one directory are in
 * play (one running, one waiting to start), whatever the number of deliveries.
 *
 * A failed fsync fails every caller that shared it (each delivery is then deferred, and its
 * retry finds the file, docs/local-delivery.md). Trust: internal; no input from the network.
 */

/** Runs `sync` (an fsync of `dir`) or joins one; resolves once an fsync begun after the call has completed. */
export type DirSync = (dir: string, sync: () => Promise<void>) => Promise<void>;

interface Waiting {
  promise: Promise<void>;
  resolve: () => void;
  reject: (err: unknown) => void;
  sync: () => Promise<void>;
}

/** A directory whose fsync is running (it is in the map only then). */
interface DirState {
  /** The fsync that starts when the running one ends, with the callers that joined it. */
  next: Waiting | null;
}

export class DirSyncGroups {
  readonly #dirs = new Map<string, DirState>();
  #started = 0;

  /** fsyncs started so far (tests, benchmarks). */
  get started(): number {
    return this.#started;
  }

  /** The DirSync of these groups. */
  readonly sync: DirSync = (dir, sync) => {
    const state = this.#dirs.get(dir);
    if (state === undefined) {
      const fresh: DirState = { next: null };
      this.#dirs.set(dir, fresh);
      return this.#start(dir, fresh, sync);
    }
    if (state.next === null) {
      let resolve!: () => void;
      let reject!: (err: unknown) => void;
      const promise = new Promise<void>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      state.next = { promise, resolve, reject, sync };
    }
    return state.next.promise;
  };

  #start(dir: string, state: DirState, sync: () => Promise<void>): Promise<void> {
    this.#started++;
    return sync().finally(() => {
      const next = state.next;
      state.next = null;
      if (next === null) this.#dirs.delete(dir);
      else this.#start(dir, state, next.sync).then(next.resolve, next.reject);
    });
  }
}

/** Every caller runs its own fsync: the behaviour without grouping (benchmarks compare the two). */
export const ungroupedDirSync: DirSync = (_dir, sync) => sync();
