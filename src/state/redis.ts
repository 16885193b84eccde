/**
 * The Redis state store ([state] redis = "redis://…"), through ioredis: what several Sterna
 * nodes share, so that a farm behind one MX name enforces one limit and one greylist.
 * Counters are one Redis string per key and fixed window (`<prefix>c:<key>:<window index>`,
 * expiring after two windows); take() runs as one Lua script (EVAL is atomic in Redis), so
 * two nodes cannot both pass the last slot of a limit. Records are `<prefix>r:<key>` with PX.
 * Window indexes come from each node's clock (keep the nodes on NTP).
 * Every command has a timeout ([state] timeout_ms); a failure rejects, and the caller decides
 * ([state] on_error).
 * Trust: internal; the server is the operator's.
 */
import { Redis } from 'ioredis';
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

  async close(): Promise<void> {
    await this.#redis.quit().catch(() => this.#redis.disconnect());
  }

  #counterKey(key: string, index: number): string {
    return `${this.#prefix}c:${key}:${index}`;
  }
}

/** A literal for a Redis MATCH pattern (glob): *, ?, [, ] and \ escaped. */
function globEscape(s: string): string {
  return s.replace(/[*?[\]\\]/g, '\\$&');
}
