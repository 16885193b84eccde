/**
 * The in-process state store (the default): counters and records in maps, with expiry, saved
 * to one JSON file under data_dir (`<data_dir>/state/state.json`) so that greylisting and the
 * trusted networks survive a restart. The file is written a moment after a change (at most
 * once per flushMs) and at close, atomically (temporary file, fsync, rename, directory fsync);
 * a crash loses at most the last flushMs of changes, which costs a greylisted sender one more
 * retry, never a message. Expired entries are dropped on load and swept as the store runs.
 * Trust: internal; the file is Sterna's own (a file it cannot parse is set aside, not trusted).
 */
import { mkdir, open, readFile, rename, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Logger } from '../observability/log.js';
import { AuthFailureTable, type AuthLimits } from './auth-failures.js';
import {
  countsAt,
  positiveCounters,
  takeOutcome,
  windowIndex,
  type CounterRule,
  type CounterView,
  type CounterWindow,
  type StateStore,
  type TakeResult,
} from './store.js';

interface Entry<T> {
  value: T;
  expiresAt: number;
}

export interface MemoryStoreOptions {
  /** The file the state is kept in; null: memory only (tests, benchmarks). */
  file: string | null;
  now?: () => number;
  fsync?: boolean;
  /** Longest time a change waits before it is written. Default 1000 ms. */
  flushMs?: number;
  log?: Logger;
  /** Most networks, and most (network, user) pairs, of failed AUTH remembered. Default 100,000. */
  authMaxEntries?: number;
}

const FILE_VERSION = 1;

interface SavedState {
  version: number;
  counters: [string, number, number][];
  records: [string, string, number][];
}

export class MemoryStore implements StateStore {
  readonly #counters = new Map<string, Entry<number>>();
  readonly #records = new Map<string, Entry<string>>();
  readonly #file: string | null;
  readonly #now: () => number;
  readonly #fsync: boolean;
  readonly #flushMs: number;
  readonly #log: Logger | undefined;
  #timer: NodeJS.Timeout | null = null;
  #sweeper: NodeJS.Timeout;
  #writing: Promise<void> = Promise.resolve();
  #closed = false;
  /** Failed AUTH: in memory only, as before stores held them (a restart forgets them). */
  readonly #auth: AuthFailureTable;

  private constructor(opts: MemoryStoreOptions) {
    this.#file = opts.file;
    this.#now = opts.now ?? Date.now;
    this.#fsync = opts.fsync ?? true;
    this.#flushMs = opts.flushMs ?? 1000;
    this.#log = opts.log;
    this.#auth = new AuthFailureTable(this.#now, opts.authMaxEntries);
    this.#sweeper = setInterval(() => this.#sweep(), 60_000);
    this.#sweeper.unref();
  }

  get description(): string {
    return this.#file === null ? 'memory' : `memory (${this.#file})`;
  }

  /** Opens the store, reading what an earlier run saved in file. */
  static async open(opts: MemoryStoreOptions): Promise<MemoryStore> {
    const store = new MemoryStore(opts);
    if (opts.file !== null) await store.#load(opts.file);
    return store;
  }

  take(rules: readonly CounterRule[], amount: number, window: CounterWindow): Promise<TakeResult> {
    return Promise.resolve(this.#take(rules, amount, window));
  }

  #take(rules: readonly CounterRule[], amount: number, window: CounterWindow): TakeResult {
    const at = this.#now();
    const { index } = windowIndex(at, window.ms);
    const raw = rules.map((r) => ({
      current: this.#count(`${r.key}:${index}`, at),
      previous: window.kind === 'sliding' ? this.#count(`${r.key}:${index - 1}`, at) : 0,
    }));
    const counts = countsAt(raw, at, window);
    const refused = rules.findIndex((r, i) => (counts[i] ?? 0) + amount > r.limit);
    if (refused < 0) {
      const expiresAt = (index + 2) * window.ms;
      for (const r of rules) {
        const key = `${r.key}:${index}`;
        this.#counters.set(key, { value: this.#count(key, at) + amount, expiresAt });
      }
      this.#changed();
    }
    return takeOutcome(raw, rules, refused, at, amount, window);
  }

  peek(key: string, window: CounterWindow): Promise<number> {
    const at = this.#now();
    const { index } = windowIndex(at, window.ms);
    const current = this.#count(`${key}:${index}`, at);
    const previous = window.kind === 'sliding' ? this.#count(`${key}:${index - 1}`, at) : 0;
    return Promise.resolve(countsAt([{ current, previous }], at, window)[0] ?? 0);
  }

  counters(prefix: string, window: CounterWindow): Promise<CounterView[]> {
    const keys = new Set<string>();
    for (const k of this.#counters.keys()) {
      if (!k.startsWith(prefix)) continue;
      keys.add(k.slice(0, k.lastIndexOf(':')));
    }
    return positiveCounters(keys, (key) => this.peek(key, window));
  }

  get(key: string): Promise<string | null> {
    const e = this.#records.get(key);
    if (e === undefined) return Promise.resolve(null);
    if (e.expiresAt <= this.#now()) {
      this.#records.delete(key);
      return Promise.resolve(null);
    }
    return Promise.resolve(e.value);
  }

  set(key: string, value: string, ttlMs: number): Promise<void> {
    this.#records.set(key, { value, expiresAt: this.#now() + ttlMs });
    this.#changed();
    return Promise.resolve();
  }

  delete(key: string): Promise<void> {
    if (this.#records.delete(key)) this.#changed();
    return Promise.resolve();
  }

  authLocked(net: string, pair: string | null, limits: AuthLimits): Promise<boolean> {
    return Promise.resolve(this.#auth.locked(net, pair, limits));
  }

  authFailed(net: string, pair: string, limits: AuthLimits): Promise<number> {
    return Promise.resolve(this.#auth.failed(net, pair, limits));
  }

  authSucceeded(net: string, pair: string, limits: AuthLimits): Promise<void> {
    this.#auth.succeeded(net, pair, limits);
    return Promise.resolve();
  }

  /** Writes what is pending and stops the timers. */
  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#sweeper);
    if (this.#timer !== null) {
      clearTimeout(this.#timer);
      this.#timer = null;
      await this.#save();
    }
    await this.#writing;
  }

  /** Writes the state now (tests, and close()). */
  flush(): Promise<void> {
    if (this.#timer !== null) {
      clearTimeout(this.#timer);
      this.#timer = null;
    }
    return this.#save();
  }

  #count(key: string, at: number): number {
    const e = this.#counters.get(key);
    if (e === undefined) return 0;
    if (e.expiresAt <= at) {
      this.#counters.delete(key);
      return 0;
    }
    return e.value;
  }

  #changed(): void {
    if (this.#file === null || this.#timer !== null || this.#closed) return;
    this.#timer = setTimeout(() => {
      this.#timer = null;
      void this.#save();
    }, this.#flushMs);
    this.#timer.unref();
  }

  #sweep(): void {
    const at = this.#now();
    for (const [k, e] of this.#counters) if (e.expiresAt <= at) this.#counters.delete(k);
    for (const [k, e] of this.#records) if (e.expiresAt <= at) this.#records.delete(k);
  }

  #save(): Promise<void> {
    const file = this.#file;
    if (file === null) return Promise.resolve();
    const run = this.#writing.then(async () => {
      this.#sweep();
      const state: SavedState = {
        version: FILE_VERSION,
        counters: [...this.#counters].map(([k, e]) => [k, e.value, e.expiresAt]),
        records: [...this.#records].map(([k, e]) => [k, e.value, e.expiresAt]),
      };
      const tmp = `${file}.tmp`;
      const fh = await open(tmp, 'w', 0o600);
      try {
        await fh.writeFile(`${JSON.stringify(state)}\n`);
        if (this.#fsync) await fh.datasync();
      } finally {
        await fh.close();
      }
      await rename(tmp, file);
      if (this.#fsync) {
        const dir = await open(dirname(file), 'r');
        try {
          await dir.sync();
        } finally {
          await dir.close();
        }
      }
    });
    this.#writing = run.catch((err: unknown) => {
      this.#log?.error({ err, file }, 'state not saved; greylisting and rate counts may restart');
    });
    return this.#writing;
  }

  async #load(file: string): Promise<void> {
    await mkdir(dirname(file), { recursive: true, mode: 0o700 });
    await unlink(`${file}.tmp`).catch(() => undefined);
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      if (err instanceof Error && 'code' in err && err.code === 'ENOENT') return;
      throw err;
    }
    const saved = parseSaved(text);
    if (saved === null) {
      const aside = `${file}.unreadable-${this.#now()}`;
      await rename(file, aside);
      this.#log?.error({ file, aside }, 'state file unreadable; set aside, starting with an empty state');
      return;
    }
    const at = this.#now();
    for (const [k, v, exp] of saved.counters)
      if (exp > at) this.#counters.set(k, { value: v, expiresAt: exp });
    for (const [k, v, exp] of saved.records) if (exp > at) this.#records.set(k, { value: v, expiresAt: exp });
  }
}

function isTriple<T>(x: unknown, second: (v: unknown) => v is T): x is [string, T, number] {
  return (
    Array.isArray(x) && x.length === 3 && typeof x[0] === 'string' && second(x[1]) && typeof x[2] === 'number'
  );
}

const isNumber = (v: unknown): v is number => typeof v === 'number';
const isString = (v: unknown): v is string => typeof v === 'string';

/** The saved state, or null when the text is not one (checked entry by entry: a fail-closed parse). */
function parseSaved(text: string): SavedState | null {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return null;
  }
  if (typeof value !== 'object' || value === null) return null;
  const v: { version?: unknown; counters?: unknown; records?: unknown } = value;
  if (v.version !== FILE_VERSION || !Array.isArray(v.counters) || !Array.isArray(v.records)) return null;
  const counters: unknown[] = v.counters;
  const records: unknown[] = v.records;
  const c = counters.filter((x) => isTriple(x, isNumber));
  const r = records.filter((x) => isTriple(x, isString));
  if (c.length !== counters.length || r.length !== records.length) return null;
  return { version: FILE_VERSION, counters: c, records: r };
}
