import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  ConcurrencyLimiter,
  DestinationBackoff,
  isExpired,
  needsDelayWarning,
  nextAttemptAt,
  type RetryPolicy,
} from './scheduler.js';

const MIN = 60_000;
const HOUR = 60 * MIN;
const DAY = 24 * HOUR;

const policy: RetryPolicy = {
  firstRetryMs: 5 * MIN,
  maxBackoffMs: HOUR,
  maxLifetimeMs: 5 * DAY,
  jitter: 0.1,
  delayWarningMs: 4 * HOUR,
};

/** mulberry32: a small seeded generator, so a failing run can be replayed. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const middle = (): number => 0.5;
const T0 = 1_800_000_000_000;

test('retry schedule without jitter: 5, 10, 20, 40 minutes, then capped at 60', () => {
  const delays = [1, 2, 3, 4, 5, 6, 7, 20, 100, 5000].map((n) => nextAttemptAt(n, T0, policy, middle) - T0);
  assert.deepEqual(
    delays,
    [5, 10, 20, 40, 60, 60, 60, 60, 60, 60].map((m) => m * MIN),
  );
});

test('attempts below 1 are treated as the first retry', () => {
  assert.equal(nextAttemptAt(0, T0, policy, middle), T0 + 5 * MIN);
  assert.equal(nextAttemptAt(-3, T0, policy, middle), T0 + 5 * MIN);
});

test('jitter spreads each delay within ±10%, and reaches both ends', () => {
  assert.equal(
    nextAttemptAt(1, T0, policy, () => 0),
    T0 + 4.5 * MIN,
  );
  assert.equal(
    nextAttemptAt(6, T0, policy, () => 0),
    T0 + 54 * MIN,
  );
  const high = nextAttemptAt(6, T0, policy, () => 1 - Number.EPSILON) - T0;
  assert.equal(high, 66 * MIN);
  const random = seeded(42);
  const expected = [5, 10, 20, 40, 60, 60];
  for (let round = 0; round < 500; round++) {
    for (let n = 1; n <= expected.length; n++) {
      const base = expected[n - 1]! * MIN;
      const delay = nextAttemptAt(n, T0, policy, random) - T0;
      assert.ok(delay >= base * 0.9 && delay <= base * 1.1, `attempt ${n}: ${delay} outside ±10% of ${base}`);
    }
  }
});

test('seeded jitter is reproducible', () => {
  const a = seeded(7);
  const b = seeded(7);
  for (let n = 1; n < 10; n++) assert.equal(nextAttemptAt(n, T0, policy, a), nextAttemptAt(n, T0, policy, b));
});

test('a random source outside [0, 1) cannot push a delay past its jitter bounds', () => {
  assert.equal(
    nextAttemptAt(1, T0, policy, () => 7),
    T0 + 5.5 * MIN,
  );
  assert.equal(
    nextAttemptAt(1, T0, policy, () => -1),
    T0 + 4.5 * MIN,
  );
  assert.equal(
    nextAttemptAt(1, T0, policy, () => Number.NaN),
    T0 + 4.5 * MIN,
  );
});

test('RFC 5321 4.5.4.1: a message expires exactly 5 days after arrival', () => {
  assert.equal(isExpired(T0, T0, policy), false);
  assert.equal(isExpired(T0, T0 + 5 * DAY - 1, policy), false);
  assert.equal(isExpired(T0, T0 + 5 * DAY, policy), true);
  assert.equal(isExpired(T0, T0 + 6 * DAY, policy), true);
});

test('RFC 3461 delay warning: due at 4 hours, sent once, never after expiry', () => {
  assert.equal(needsDelayWarning(T0, T0 + 4 * HOUR - 1, false, policy), false);
  assert.equal(needsDelayWarning(T0, T0 + 4 * HOUR, false, policy), true);
  assert.equal(needsDelayWarning(T0, T0 + 4 * HOUR, true, policy), false);
  assert.equal(needsDelayWarning(T0, T0 + 2 * DAY, false, policy), true);
  assert.equal(needsDelayWarning(T0, T0 + 2 * DAY, true, policy), false);
  assert.equal(needsDelayWarning(T0, T0 + 5 * DAY, false, policy), false);
});

test('a delay warning time of 0 turns the warning off', () => {
  const off = { ...policy, delayWarningMs: 0 };
  assert.equal(needsDelayWarning(T0, T0 + DAY, false, off), false);
});

function fakeClock(start: number): { now: () => number; advance: (ms: number) => void } {
  let t = start;
  return { now: () => t, advance: (ms) => (t += ms) };
}

test('destination backoff: blocks double from the base and stop at the ceiling', () => {
  const clock = fakeClock(T0);
  const backoff = new DestinationBackoff({ now: clock.now, random: () => 0, baseMs: MIN, maxMs: 10 * MIN });
  assert.equal(backoff.blockedUntil('example.com'), null);
  const blocks: number[] = [];
  for (let i = 0; i < 7; i++) {
    backoff.recordFailure('example.com');
    const until = backoff.blockedUntil('example.com');
    assert.notEqual(until, null);
    blocks.push(until! - clock.now());
    clock.advance(until! - clock.now());
    assert.equal(backoff.blockedUntil('example.com'), null, 'unblocked once the block has passed');
  }
  assert.deepEqual(
    blocks,
    [1, 2, 4, 8, 10, 10, 10].map((m) => m * MIN),
  );
});

test('destination backoff: jitter only shortens a block, by at most 10%', () => {
  const clock = fakeClock(T0);
  const random = seeded(3);
  const backoff = new DestinationBackoff({ now: clock.now, random, baseMs: MIN, maxMs: 10 * MIN });
  for (let i = 0; i < 200; i++) {
    const name = `d${i}.example`;
    for (let f = 0; f < 6; f++) {
      backoff.recordFailure(name);
      const block = backoff.blockedUntil(name)! - clock.now();
      const nominal = Math.min(10, 2 ** f) * MIN;
      assert.ok(block > nominal * 0.9 - 1 && block <= nominal, `${block} vs ${nominal}`);
      clock.advance(block);
    }
  }
});

test('destination backoff: success clears the destination; other destinations are independent', () => {
  const clock = fakeClock(T0);
  const backoff = new DestinationBackoff({ now: clock.now, random: () => 0, baseMs: MIN, maxMs: HOUR });
  backoff.recordFailure('a.example');
  clock.advance(MIN);
  backoff.recordFailure('a.example');
  assert.equal(backoff.blockedUntil('a.example'), T0 + 3 * MIN);
  assert.equal(backoff.blockedUntil('b.example'), null);
  backoff.recordSuccess('a.example');
  assert.equal(backoff.blockedUntil('a.example'), null);
  backoff.recordFailure('a.example');
  assert.equal(backoff.blockedUntil('a.example'), T0 + 2 * MIN, 'counting starts over after a success');
});

test('destination backoff: failures during a block count once (one outage, many connections)', () => {
  const clock = fakeClock(T0);
  const backoff = new DestinationBackoff({ now: clock.now, random: () => 0, baseMs: MIN, maxMs: HOUR });
  backoff.recordFailure('mx.example');
  for (let i = 0; i < 20; i++) backoff.recordFailure('mx.example');
  assert.equal(backoff.blockedUntil('mx.example'), T0 + MIN);
});

test('destination backoff: a failure long after the last block starts the count over', () => {
  const clock = fakeClock(T0);
  const backoff = new DestinationBackoff({ now: clock.now, random: () => 0, baseMs: MIN, maxMs: 10 * MIN });
  for (let i = 0; i < 3; i++) {
    backoff.recordFailure('x.example');
    clock.advance(backoff.blockedUntil('x.example')! - clock.now());
  }
  clock.advance(10 * MIN + 1);
  backoff.recordFailure('x.example');
  assert.equal(backoff.blockedUntil('x.example'), clock.now() + MIN);
});

test('destination backoff: memory is capped, the least recently failed forgotten first', () => {
  const clock = fakeClock(T0);
  const backoff = new DestinationBackoff({
    now: clock.now,
    random: () => 0,
    baseMs: MIN,
    maxMs: HOUR,
    maxEntries: 3,
  });
  backoff.recordFailure('a');
  backoff.recordFailure('b');
  backoff.recordFailure('c');
  clock.advance(MIN);
  backoff.recordFailure('a');
  backoff.recordFailure('d');
  assert.equal(backoff.size, 3);
  // b failed least recently: forgotten, so its next failure would count as its first.
  backoff.recordFailure('b');
  assert.equal(backoff.blockedUntil('b'), clock.now() + MIN);
  // That evicted c, now the least recent; a and d kept their counts.
  assert.equal(backoff.size, 3);
  assert.equal(backoff.blockedUntil('a'), clock.now() + 2 * MIN);
  assert.equal(backoff.blockedUntil('d'), clock.now() + MIN);
  for (let i = 0; i < 10_000; i++) backoff.recordFailure(`host${i}`);
  assert.equal(backoff.size, 3);
});

test('concurrency limiter: at most perDestination to one destination', () => {
  const limiter = new ConcurrencyLimiter({ perDestination: 2, total: 10 });
  const r1 = limiter.tryAcquire('a.example');
  const r2 = limiter.tryAcquire('a.example');
  assert.notEqual(r1, null);
  assert.notEqual(r2, null);
  assert.equal(limiter.tryAcquire('a.example'), null);
  assert.notEqual(limiter.tryAcquire('b.example'), null);
  assert.equal(limiter.active('a.example'), 2);
  assert.equal(limiter.active(), 3);
  r1!();
  assert.equal(limiter.active('a.example'), 1);
  assert.notEqual(limiter.tryAcquire('a.example'), null);
});

test('concurrency limiter: at most total across destinations', () => {
  const limiter = new ConcurrencyLimiter({ perDestination: 5, total: 3 });
  const releases = ['a', 'b', 'c'].map((d) => limiter.tryAcquire(d));
  assert.ok(releases.every((r) => r !== null));
  assert.equal(limiter.tryAcquire('d'), null);
  assert.equal(limiter.tryAcquire('a'), null);
  releases[1]!();
  assert.equal(limiter.active(), 2);
  assert.equal(limiter.active('b'), 0);
  assert.notEqual(limiter.tryAcquire('d'), null);
});

test('concurrency limiter: releasing twice counts once', () => {
  const limiter = new ConcurrencyLimiter({ perDestination: 1, total: 2 });
  const release = limiter.tryAcquire('a')!;
  const other = limiter.tryAcquire('b')!;
  release();
  release();
  assert.equal(limiter.active(), 1);
  assert.equal(limiter.active('b'), 1);
  assert.notEqual(limiter.tryAcquire('a'), null);
  assert.equal(limiter.tryAcquire('c'), null);
  other();
});

test('concurrency limiter: limits below 1 are refused', () => {
  assert.throws(() => new ConcurrencyLimiter({ perDestination: 0, total: 1 }), RangeError);
  assert.throws(() => new ConcurrencyLimiter({ perDestination: 1, total: Number.NaN }), RangeError);
});
