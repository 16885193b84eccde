/**
 * The AUTH throttle's rules, checked over each place its counts can live: its own table, the
 * in-process state store, and Redis (a real redis-server on loopback, test/helpers/redis.ts),
 * each with an injected clock; and two Redis clients (two nodes) failing at once count every
 * failure once.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { requireRedis, startRedis, type RedisInstance } from '../../test/helpers/redis.js';
import { MemoryStore } from '../state/memory.js';
import { RedisStore } from '../state/redis.js';
import type { StateStore } from '../state/store.js';
import { AuthThrottle, type AuthThrottleOptions } from './lockout.js';

/** A store on the given clock; undefined: the throttle's own table. */
type StoreMaker = ((now: () => number) => Promise<StateStore>) | undefined;

const opened: StateStore[] = [];

async function throttleOn(
  makeStore: StoreMaker,
  overrides: Partial<AuthThrottleOptions> = {},
): Promise<{ throttle: AuthThrottle; clock: { t: number } }> {
  const clock = { t: 1_000_000 };
  const now = (): number => clock.t;
  const store = makeStore === undefined ? undefined : await makeStore(now);
  if (store !== undefined) opened.push(store);
  const throttle = new AuthThrottle(
    {
      failureDelayMs: 1000,
      maxFailures: 5,
      maxNetworkFailures: 20,
      windowMs: 60_000,
      lockoutMs: 300_000,
      now,
      ...overrides,
    },
    store,
  );
  return { throttle, clock };
}

async function closeOpened(): Promise<void> {
  for (const s of opened.splice(0)) await s.close();
}

function makeThrottle(overrides: Partial<AuthThrottleOptions> = {}): ReturnType<typeof throttleOn> {
  return throttleOn(undefined, overrides);
}

const A = 'alice@example.test';
const B = 'bob@example.test';

/** `n` failures at `user` from `ip`. */
async function fail(throttle: AuthThrottle, ip: string, user: string, n: number): Promise<void> {
  for (let i = 0; i < n; i++) await throttle.delayAfterFailure(ip, user);
}

/** Each of `items` in turn through `fn` (the throttle's calls one after the other). */
async function inTurn<T, R>(items: readonly T[], fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = [];
  for (const item of items) out.push(await fn(item));
  return out;
}

function behaviour(label: string, makeStore: StoreMaker): void {
  const make = (overrides: Partial<AuthThrottleOptions> = {}): ReturnType<typeof throttleOn> =>
    throttleOn(makeStore, overrides);
  const own = makeStore === undefined;
  after(closeOpened);

  test(`${label}: delays after failures double: 1 s, 2 s, 4 s, 8 s`, async () => {
    const { throttle } = await make({ maxFailures: 100, maxNetworkFailures: 100 });
    assert.deepEqual(
      await inTurn([1, 2, 3, 4], () => throttle.delayAfterFailure('192.0.2.1', A)),
      [1000, 2000, 4000, 8000],
    );
  });

  test(`${label}: the delay doubles with the failures of the whole network, whatever the user name`, async () => {
    const { throttle } = await make();
    assert.deepEqual(
      await inTurn(['a', 'b', 'c', 'd'], (u) =>
        throttle.delayAfterFailure('2001:db8:1:2::1', `${u}@example.test`),
      ),
      [1000, 2000, 4000, 8000],
    );
    assert.equal(await throttle.delayAfterFailure('2001:db8:1:2:ffff::9', 'e@example.test'), 16_000);
  });

  test(`${label}: the delay is capped at 30 s by default, and at maxDelayMs when given`, async () => {
    const { throttle } = await make({ maxFailures: 1000, maxNetworkFailures: 1000 });
    const delays = await inTurn(
      Array.from({ length: 60 }, () => A),
      (u) => throttle.delayAfterFailure('192.0.2.1', u),
    );
    assert.equal(delays[4], 16_000);
    assert.equal(delays[5], 30_000);
    assert.equal(delays[59], 30_000);
    const capped = (await make({ maxFailures: 1000, maxDelayMs: 2500 })).throttle;
    assert.deepEqual(
      await inTurn([1, 2, 3], () => capped.delayAfterFailure('192.0.2.1', A)),
      [1000, 2000, 2500],
    );
  });

  test(`${label}: a zero failure delay gives no delay`, async () => {
    const { throttle } = await make({ failureDelayMs: 0 });
    assert.equal(await throttle.delayAfterFailure('192.0.2.1', A), 0);
    assert.equal(await throttle.delayAfterFailure('192.0.2.1', A), 0);
  });

  test(`${label}: maxFailures failures at one user lock out that user from that network, and only that pair`, async () => {
    const { throttle } = await make();
    await fail(throttle, '192.0.2.1', A, 4);
    assert.equal(await throttle.isLockedOut('192.0.2.1', A), false);
    await throttle.delayAfterFailure('192.0.2.1', A);
    assert.equal(await throttle.isLockedOut('192.0.2.1', A), true);
    assert.equal(
      await throttle.isLockedOut('192.0.2.1', 'ALICE@example.test'),
      true,
      'user names match case-blind',
    );
    assert.equal(await throttle.isLockedOut('192.0.2.1'), false, 'the network is not locked out');
    assert.equal(await throttle.isLockedOut('192.0.2.1', B), false);
    assert.equal(await throttle.isLockedOut('192.0.2.2', A), false);
  });

  test(`${label}: maxNetworkFailures failures over many user names lock out the whole network`, async () => {
    const { throttle } = await make();
    for (let i = 0; i < 19; i++) await throttle.delayAfterFailure('192.0.2.1', `user${i}@example.test`);
    assert.equal(await throttle.isLockedOut('192.0.2.1'), false);
    await throttle.delayAfterFailure('192.0.2.1', 'user19@example.test');
    assert.equal(await throttle.isLockedOut('192.0.2.1'), true);
    assert.equal(await throttle.isLockedOut('192.0.2.1', B), true);
    assert.equal(await throttle.isLockedOut('192.0.2.2'), false);
  });

  test(`${label}: an IPv6 client is counted by its /64: other addresses in it share the lock-out, the next /64 does not`, async () => {
    const { throttle } = await make();
    for (let i = 1; i <= 5; i++) await throttle.delayAfterFailure(`2001:db8:1:2::${i}`, A);
    assert.equal(await throttle.isLockedOut('2001:db8:1:2:abcd:ef01:2345:6789', A), true);
    assert.equal(await throttle.isLockedOut('2001:db8:1:3::1', A), false);
    for (let i = 0; i < 20; i++)
      await throttle.delayAfterFailure(`2001:db8:9:9::${i.toString(16)}`, `u${i}@x.test`);
    assert.equal(await throttle.isLockedOut('2001:db8:9:9:ffff::'), true);
    if (own) assert.equal(throttle.networks, 2);
  });

  test(`${label}: an IPv4-mapped IPv6 client is counted as its IPv4 address`, async () => {
    const { throttle } = await make();
    await fail(throttle, '::ffff:192.0.2.1', A, 3);
    await fail(throttle, '192.0.2.1', A, 2);
    assert.equal(await throttle.isLockedOut('192.0.2.1', A), true);
    assert.equal(await throttle.isLockedOut('::ffff:c000:201', A), true);
  });

  test(`${label}: the lock-out expires after lockoutMs and the delays start again from the first`, async () => {
    const { throttle, clock } = await make();
    await fail(throttle, '192.0.2.1', A, 5);
    clock.t += 299_999;
    assert.equal(await throttle.isLockedOut('192.0.2.1', A), true);
    clock.t += 1;
    assert.equal(await throttle.isLockedOut('192.0.2.1', A), false);
    assert.equal(await throttle.delayAfterFailure('192.0.2.1', A), 1000);
  });

  test(`${label}: failures older than the window are forgotten`, async () => {
    const { throttle, clock } = await make();
    await fail(throttle, '192.0.2.1', A, 4);
    clock.t += 60_000;
    assert.equal(await throttle.delayAfterFailure('192.0.2.1', A), 1000);
    assert.equal(await throttle.isLockedOut('192.0.2.1', A), false);
  });

  test(`${label}: a success forgets the failures of that user from that network`, async () => {
    const { throttle } = await make();
    await fail(throttle, '192.0.2.1', A, 4);
    await throttle.recordSuccess('192.0.2.1', A);
    assert.equal(await throttle.delayAfterFailure('192.0.2.1', A), 1000);
    assert.equal(await throttle.isLockedOut('192.0.2.1', A), false);
    if (own) {
      assert.equal(throttle.networks, 1);
      assert.equal(throttle.pairs, 1);
    }
  });

  test(`${label}: a success does not reset another user's failures from the same address: the guesser still gets locked out`, async () => {
    const { throttle } = await make();
    await fail(throttle, '192.0.2.1', A, 4);
    await throttle.recordSuccess('192.0.2.1', B);
    await throttle.delayAfterFailure('192.0.2.1', A);
    assert.equal(await throttle.isLockedOut('192.0.2.1', A), true);
    // ...and once locked out, a colleague's success does not lift it.
    await throttle.recordSuccess('192.0.2.1', B);
    assert.equal(await throttle.isLockedOut('192.0.2.1', A), true);
    assert.equal(await throttle.isLockedOut('192.0.2.1', B), false);
  });

  test(`${label}: a success takes only its own failures off the network's count`, async () => {
    const { throttle } = await make();
    await fail(throttle, '192.0.2.1', B, 3); // bob's typos
    for (let i = 0; i < 16; i++) await throttle.delayAfterFailure('192.0.2.1', `u${i}@example.test`);
    await throttle.recordSuccess('192.0.2.1', B); // 16 left
    for (let i = 16; i < 19; i++) await throttle.delayAfterFailure('192.0.2.1', `u${i}@example.test`);
    assert.equal(await throttle.isLockedOut('192.0.2.1'), false);
    await throttle.delayAfterFailure('192.0.2.1', 'u19@example.test'); // the 20th guess
    assert.equal(await throttle.isLockedOut('192.0.2.1'), true);
    // A pair whose failures were counted in an earlier network window takes nothing off the new one.
    const t2 = await make();
    await fail(t2.throttle, '192.0.2.1', A, 1); // the network's window starts
    t2.clock.t += 30_000;
    await fail(t2.throttle, '192.0.2.1', B, 2); // bob's window starts, inside the network's
    t2.clock.t += 30_000; // the network's window is over, bob's is not
    await fail(t2.throttle, '192.0.2.1', 'c@example.test', 1); // a new network window: 1 failure
    await t2.throttle.recordSuccess('192.0.2.1', B);
    assert.equal(await t2.throttle.delayAfterFailure('192.0.2.1', 'c@example.test'), 2000);
  });
}

behaviour('own table', undefined);
behaviour('in-process store', (now) => MemoryStore.open({ file: null, now }));

describe('Redis', { skip: requireRedis().skip }, () => {
  let redis: RedisInstance;
  before(async () => {
    redis = await startRedis();
  });
  after(async () => {
    await closeOpened();
    await redis?.stop();
  });
  let n = 0;
  behaviour('Redis store (real redis-server)', (now) =>
    Promise.resolve(new RedisStore({ url: redis.url, prefix: `lockout-${++n}:`, timeoutMs: 2000, now })),
  );

  test('two clients (two nodes) failing at once: every failure is counted once', async () => {
    const prefix = `lockout-race-${Date.now()}:`;
    const limits = { maxFailures: 1000, maxNetworkFailures: 1000, failureDelayMs: 1, maxDelayMs: 2 ** 40 };
    const a = await throttleOn(
      () => Promise.resolve(new RedisStore({ url: redis.url, prefix, timeoutMs: 2000 })),
      limits,
    );
    const b = await throttleOn(
      () => Promise.resolve(new RedisStore({ url: redis.url, prefix, timeoutMs: 2000 })),
      limits,
    );
    const delays = await Promise.all(
      Array.from({ length: 30 }, (_, i) => (i % 2 === 0 ? a : b).throttle.delayAfterFailure('192.0.2.7', A)),
    );
    // The n-th failure of the network waits 2^(n-1) ms: 30 distinct delays, none counted twice.
    assert.deepEqual(
      delays.sort((x, y) => x - y),
      Array.from({ length: 30 }, (_, i) => 2 ** i),
    );
  });
});

test('memory is bounded: beyond maxEntries the least recently active network is forgotten', async () => {
  const { throttle } = await makeThrottle({ maxEntries: 3 });
  await throttle.delayAfterFailure('192.0.2.1', A);
  await throttle.delayAfterFailure('192.0.2.2', A);
  await throttle.delayAfterFailure('192.0.2.3', A);
  await throttle.delayAfterFailure('192.0.2.1', A); // 192.0.2.1 becomes the most recent
  await throttle.delayAfterFailure('192.0.2.4', A); // evicts 192.0.2.2
  assert.equal(throttle.networks, 3);
  assert.equal(await throttle.delayAfterFailure('192.0.2.2', A), 1000); // forgotten: first failure again; evicts .3
  assert.equal(await throttle.delayAfterFailure('192.0.2.1', A), 4000); // remembered: third failure
  assert.equal(throttle.networks, 3);
  assert.equal(throttle.pairs, 3);
});

test('the default cap keeps at most 100,000 networks and 100,000 pairs', async () => {
  const { throttle } = await makeThrottle();
  for (let i = 0; i < 100_050; i++)
    await throttle.delayAfterFailure(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, A);
  assert.equal(throttle.networks, 100_000);
  assert.equal(throttle.pairs, 100_000);
  for (let i = 0; i < 100_050; i++) await throttle.delayAfterFailure('192.0.2.1', `u${i}@example.test`);
  assert.equal(throttle.pairs, 100_000);
});
