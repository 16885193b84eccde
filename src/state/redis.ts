/**
 * The Redis state store ([state] redis = "redis://…"), through ioredis: what several Sterna
 * nodes share, so that a farm behind one MX name enforces one limit and one greylist.
 * Counters are one Redis string per key and fixed window (`<prefix>c:<key>:<window index>`,
 * expiring after two windows); take() runs as one Lua script (EVAL is atomic in Redis), so
 * two nodes cannot both pass the last slot of a limit. Records are `<prefix>r:<key>` with PX.
 * Window indexes come from each node's clock (keep the nodes on NTP).
 * Failed AUTH (state/auth-failures.ts) is one JSON record per network (`<prefix>a:n:<net>`) and
 * per pair (`<prefix>a:p:<net NUL user>`), expiring with its window or lock-out; a failure or a
 * success reads both and writes them in one optimistic transaction (WATCH, MULTI/EXEC, again
 * when another node changed them meanwhile) on a connection of its own, one at a time per process.
 * Every command has a timeout ([state] timeout_ms); a failure rejects, and the caller decides
 * ([state] on_error).
 * Trust: internal; the server is the operator's.
 */
import { Redis } from 'ioredis';
import { z } from 'zod';
import {
  expiresAt,
  failure,
  live,
  lockedOut,
  success,
  type AuthEntry,
  type AuthLimits,
  type AuthPairEntry,
  type Change,
  type Transition,
} from './auth-failures.js';
import { countsAt, positiveCounters, takeOutcome, windowIndex } from './store.js';
import type { CounterRule, CounterView, CounterWindow, StateStore, TakeResult } from './store.js';

/**
 * KEYS: current and previous window key of each rule, in pairs. ARGV: amount, "1" for sliding,
 * the fraction of the current window gone, the TTL of a new window key, then each rule's limit.
 * Returns { refused rule (1-based; 0: taken), current1, previous1, current2, ... }.
 */
const TAKE_SCRIPT = `
local amount = tonumber(ARGV[1])
local sliding = ARGV[2] == '1'
local fraction = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
local n = #KEYS / 2
local out = { 0 }
for i = 1, n do
  local cur = tonumber(redis.call('GET', KEYS[2 * i - 1]) or '0')
  local prev = 0
  if sliding then prev = tonumber(redis.call('GET', KEYS[2 * i]) or '0') end
  out[2 * i] = cur
  out[2 * i + 1] = prev
  if out[1] == 0 and prev * (1 - fraction) + cur + amount > tonumber(ARGV[4 + i]) then out[1] = i end
end
if out[1] == 0 then
  for i = 1, n do
    redis.call('INCRBY', KEYS[2 * i - 1], amount)
    redis.call('PEXPIRE', KEYS[2 * i - 1], ttl)
  end
end
return out
`;

export interface RedisStoreOptions {
  url: string;
  /** Prefix of every key Sterna writes, so one Redis can serve other programs too. */
  prefix: string;
  /** Timeout of each command (and of connecting). */
  timeoutMs: number;
  now?: () => number;
}

export class RedisStore implements StateStore {
  readonly #redis: Redis;
  readonly #prefix: string;
  readonly #now: () => number;
  readonly #where: string;
  /** The connection of the AUTH transactions (WATCH holds per connection); made at first use. */
  #authConn: Redis | null = null;
  #authQueue: Promise<unknown> = Promise.resolve();

  constructor(opts: RedisStoreOptions) {
    this.#prefix = opts.prefix;
    this.#now = opts.now ?? Date.now;
    this.#redis = new Redis(opts.url, {
      commandTimeout: opts.timeoutMs,
      connectTimeout: opts.timeoutMs,
      maxRetriesPerRequest: 1,
      lazyConnect: false,
    });
    // Connection errors surface as failed commands; the 'error' event alone must not crash us.
    this.#redis.on('error', () => undefined);
    const u = new URL(opts.url);
    this.#where = `redis (${u.host})`;
  }

  get description(): string {
    return this.#where;
  }

  async take(rules: readonly CounterRule[], amount: number, window: CounterWindow): Promise<TakeResult> {
    const at = this.#now();
    const { index, fraction } = windowIndex(at, window.ms);
    const keys = rules.flatMap((r) => [this.#counterKey(r.key, index), this.#counterKey(r.key, index - 1)]);
    const ttl = Math.max(1, (index + 2) * window.ms - at);
    const args = [
      String(amount),
      window.kind === 'sliding' ? '1' : '0',
      String(fraction),
      String(ttl),
      ...rules.map((r) => String(r.limit)),
    ];
    const result: unknown = await this.#redis.eval(TAKE_SCRIPT, keys.length, ...keys, ...args);
    if (!Array.isArray(result) || result.length !== 1 + 2 * rules.length)
      throw new Error('unexpected answer from Redis to the rate-limit script');
    const nums = result.map((x) => Number(x));
    const raw = rules.map((_, i) => ({ current: nums[1 + 2 * i] ?? 0, previous: nums[2 + 2 * i] ?? 0 }));
    return takeOutcome(raw, rules, (nums[0] ?? 0) - 1, at, amount, window);
  }

  async peek(key: string, window: CounterWindow): Promise<number> {
    const at = this.#now();
    const { index } = windowIndex(at, window.ms);
    const [cur, prev] = await this.#redis.mget(
      this.#counterKey(key, index),
      this.#counterKey(key, index - 1),
    );
    const raw = { current: Number(cur ?? 0), previous: window.kind === 'sliding' ? Number(prev ?? 0) : 0 };
    return countsAt([raw], at, window)[0] ?? 0;
  }

  async counters(prefix: string, window: CounterWindow): Promise<CounterView[]> {
    const base = `${this.#prefix}c:`;
    const keys = new Set<string>();
    let cursor = '0';
    do {
      const [next, found] = await this.#redis.scan(
        cursor,
        'MATCH',
        `${base}${globEscape(prefix)}*`,
        'COUNT',
        1000,
      );
      cursor = next;
      for (const k of found) keys.add(k.slice(base.length, k.lastIndexOf(':')));
    } while (cursor !== '0');
    return positiveCounters(keys, (key) => this.peek(key, window));
  }

  get(key: string): Promise<string | null> {
    return this.#redis.get(`${this.#prefix}r:${key}`);
  }

  async set(key: string, value: string, ttlMs: number): Promise<void> {
    await this.#redis.set(`${this.#prefix}r:${key}`, value, 'PX', Math.max(1, Math.ceil(ttlMs)));
  }

  async delete(key: string): Promise<void> {
    await this.#redis.del(`${this.#prefix}r:${key}`);
  }

  async authLocked(net: string, pair: string | null, limits: AuthLimits): Promise<boolean> {
    const [n, p] = await this.#redis.mget(this.#authKey('n', net), this.#authKey('p', pair ?? ''));
    const now = this.#now();
    return lockedOut(
      live(parseEntry(n ?? null), now, limits.windowMs),
      pair === null ? undefined : live(parsePair(p ?? null), now, limits.windowMs),
    );
  }

  authFailed(net: string, pair: string, limits: AuthLimits): Promise<number> {
    return this.#authTransaction(net, pair, limits, (n, p, now) => failure(n, p, now, limits));
  }

  authSucceeded(net: string, pair: string, limits: AuthLimits): Promise<void> {
    return this.#authTransaction(net, pair, limits, (n, p) => success(n, p));
  }

  async close(): Promise<void> {
    await this.#authQueue.catch(() => undefined);
    if (this.#authConn !== null) await this.#authConn.quit().catch(() => this.#authConn?.disconnect());
    await this.#redis.quit().catch(() => this.#redis.disconnect());
  }

  /** Runs one AUTH transition on the two records, atomically against every other node. */
  #authTransaction<T>(
    net: string,
    pair: string,
    limits: AuthLimits,
    step: (n: AuthEntry | undefined, p: AuthPairEntry | undefined, now: number) => Transition<T>,
  ): Promise<T> {
    const run = this.#authQueue.then(async () => {
      if (this.#authConn === null) {
        this.#authConn = this.#redis.duplicate();
        this.#authConn.on('error', () => undefined);
      }
      const conn = this.#authConn;
      const nk = this.#authKey('n', net);
      const pk = this.#authKey('p', pair);
      for (let attempt = 0; attempt < AUTH_TRIES; attempt++) {
        await conn.watch(nk, pk);
        const [n, p] = await conn.mget(nk, pk);
        const now = this.#now();
        const t = step(
          live(parseEntry(n ?? null), now, limits.windowMs),
          live(parsePair(p ?? null), now, limits.windowMs),
          now,
        );
        const tx = conn.multi();
        writeChange(tx, nk, t.network, now, limits);
        writeChange(tx, pk, t.pair, now, limits);
        // Nothing to write still runs EXEC, which ends the WATCH.
        if ((await tx.exec()) !== null) return t.result;
      }
      throw new Error(`failed AUTH not counted: the records kept changing (${AUTH_TRIES} tries)`);
    });
    this.#authQueue = run.catch(() => undefined);
    return run;
  }

  #authKey(kind: 'n' | 'p', key: string): string {
    return `${this.#prefix}a:${kind}:${key}`;
  }

  #counterKey(key: string, index: number): string {
    return `${this.#prefix}c:${key}:${index}`;
  }
}

/** Tries of an AUTH transaction that other nodes keep interrupting. */
const AUTH_TRIES = 20;

const authEntry = z.object({ failures: z.number(), windowStart: z.number(), lockedUntil: z.number() });
const authPair = authEntry.extend({ netWindowStart: z.number(), netFailures: z.number() });

/** A record as stored, or undefined when absent or not one (then it is counted afresh). */
function parseEntry(text: string | null): AuthEntry | undefined {
  return parseJson(text, authEntry);
}

function parsePair(text: string | null): AuthPairEntry | undefined {
  return parseJson(text, authPair);
}

function parseJson<T>(text: string | null, schema: z.ZodType<T>): T | undefined {
  if (text === null) return undefined;
  try {
    const r = schema.safeParse(JSON.parse(text));
    return r.success ? r.data : undefined;
  } catch {
    return undefined;
  }
}

function writeChange(
  tx: ReturnType<Redis['multi']>,
  key: string,
  change: Change<AuthEntry>,
  now: number,
  limits: AuthLimits,
): void {
  switch (change.kind) {
    case 'keep':
      return;
    case 'delete':
      tx.del(key);
      return;
    case 'set':
      tx.set(
        key,
        JSON.stringify(change.entry),
        'PX',
        Math.max(1, expiresAt(change.entry, limits.windowMs) - now),
      );
      return;
    default: {
      const never: never = change;
      throw new Error(`unhandled change ${JSON.stringify(never)}`);
    }
  }
}

/** A literal for a Redis MATCH pattern (glob): *, ?, [, ] and \ escaped. */
function globEscape(s: string): string {
  return s.replace(/[*?[\]\\]/g, '\\$&');
}
