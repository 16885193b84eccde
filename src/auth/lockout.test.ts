import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AuthThrottle, type AuthThrottleOptions } from './lockout.js';

function makeThrottle(overrides: Partial<AuthThrottleOptions> = {}): {
  throttle: AuthThrottle;
  clock: { t: number };
} {
  const clock = { t: 1_000_000 };
  const throttle = new AuthThrottle({
    failureDelayMs: 1000,
    maxFailures: 5,
    maxNetworkFailures: 20,
    windowMs: 60_000,
    lockoutMs: 300_000,
    now: () => clock.t,
    ...overrides,
  });
  return { throttle, clock };
}

const A = 'alice@example.test';
const B = 'bob@example.test';

/** `n` failures at `user` from `ip`. */
function fail(throttle: AuthThrottle, ip: string, user: string, n: number): void {
  for (let i = 0; i < n; i++) throttle.delayAfterFailure(ip, user);
}

test('delays after failures double: 1 s, 2 s, 4 s, 8 s', () => {
  const { throttle } = makeThrottle({ maxFailures: 100, maxNetworkFailures: 100 });
  assert.deepEqual(
    [1, 2, 3, 4].map(() => throttle.delayAfterFailure('192.0.2.1', A)),
    [1000, 2000, 4000, 8000],
  );
});

test('the delay doubles with the failures of the whole network, whatever the user name', () => {
  const { throttle } = makeThrottle();
  assert.deepEqual(
    ['a', 'b', 'c', 'd'].map((u) => throttle.delayAfterFailure('2001:db8:1:2::1', `${u}@example.test`)),
    [1000, 2000, 4000, 8000],
  );
  assert.equal(throttle.delayAfterFailure('2001:db8:1:2:ffff::9', 'e@example.test'), 16_000);
});

test('the delay is capped at 30 s by default, and at maxDelayMs when given', () => {
  const { throttle } = makeThrottle({ maxFailures: 1000, maxNetworkFailures: 1000 });
  const delays = Array.from({ length: 60 }, () => throttle.delayAfterFailure('192.0.2.1', A));
  assert.equal(delays[4], 16_000);
  assert.equal(delays[5], 30_000);
  assert.equal(delays[59], 30_000);
  const capped = makeThrottle({ maxFailures: 1000, maxDelayMs: 2500 }).throttle;
  assert.deepEqual(
    [1, 2, 3].map(() => capped.delayAfterFailure('192.0.2.1', A)),
    [1000, 2000, 2500],
  );
});

test('a zero failure delay gives no delay', () => {
  const { throttle } = makeThrottle({ failureDelayMs: 0 });
  assert.equal(throttle.delayAfterFailure('192.0.2.1', A), 0);
  assert.equal(throttle.delayAfterFailure('192.0.2.1', A), 0);
});

test('maxFailures failures at one user lock out that user from that network, and only that pair', () => {
  const { throttle } = makeThrottle();
  fail(throttle, '192.0.2.1', A, 4);
  assert.equal(throttle.isLockedOut('192.0.2.1', A), false);
  throttle.delayAfterFailure('192.0.2.1', A);
  assert.equal(throttle.isLockedOut('192.0.2.1', A), true);
  assert.equal(throttle.isLockedOut('192.0.2.1', 'ALICE@example.test'), true, 'user names match case-blind');
  assert.equal(throttle.isLockedOut('192.0.2.1'), false, 'the network is not locked out');
  assert.equal(throttle.isLockedOut('192.0.2.1', B), false);
  assert.equal(throttle.isLockedOut('192.0.2.2', A), false);
});

test('maxNetworkFailures failures over many user names lock out the whole network', () => {
  const { throttle } = makeThrottle();
  for (let i = 0; i < 19; i++) throttle.delayAfterFailure('192.0.2.1', `user${i}@example.test`);
  assert.equal(throttle.isLockedOut('192.0.2.1'), false);
  throttle.delayAfterFailure('192.0.2.1', 'user19@example.test');
  assert.equal(throttle.isLockedOut('192.0.2.1'), true);
  assert.equal(throttle.isLockedOut('192.0.2.1', B), true);
  assert.equal(throttle.isLockedOut('192.0.2.2'), false);
});

test('an IPv6 client is counted by its /64: other addresses in it share the lock-out, the next /64 does not', () => {
  const { throttle } = makeThrottle();
  for (let i = 1; i <= 5; i++) throttle.delayAfterFailure(`2001:db8:1:2::${i}`, A);
  assert.equal(throttle.isLockedOut('2001:db8:1:2:abcd:ef01:2345:6789', A), true);
  assert.equal(throttle.isLockedOut('2001:db8:1:3::1', A), false);
  for (let i = 0; i < 20; i++) throttle.delayAfterFailure(`2001:db8:9:9::${i.toString(16)}`, `u${i}@x.test`);
  assert.equal(throttle.isLockedOut('2001:db8:9:9:ffff::'), true);
  assert.equal(throttle.networks, 2);
});

test('an IPv4-mapped IPv6 client is counted as its IPv4 address', () => {
  const { throttle } = makeThrottle();
  fail(throttle, '::ffff:192.0.2.1', A, 3);
  fail(throttle, '192.0.2.1', A, 2);
  assert.equal(throttle.isLockedOut('192.0.2.1', A), true);
  assert.equal(throttle.isLockedOut('::ffff:c000:201', A), true);
});

test('the lock-out expires after lockoutMs and the delays start again from the first', () => {
  const { throttle, clock } = makeThrottle();
  fail(throttle, '192.0.2.1', A, 5);
  clock.t += 299_999;
  assert.equal(throttle.isLockedOut('192.0.2.1', A), true);
  clock.t += 1;
  assert.equal(throttle.isLockedOut('192.0.2.1', A), false);
  assert.equal(throttle.delayAfterFailure('192.0.2.1', A), 1000);
});

test('failures older than the window are forgotten', () => {
  const { throttle, clock } = makeThrottle();
  fail(throttle, '192.0.2.1', A, 4);
  clock.t += 60_000;
  assert.equal(throttle.delayAfterFailure('192.0.2.1', A), 1000);
  assert.equal(throttle.isLockedOut('192.0.2.1', A), false);
});

test('a success forgets the failures of that user from that network', () => {
  const { throttle } = makeThrottle();
  fail(throttle, '192.0.2.1', A, 4);
  throttle.recordSuccess('192.0.2.1', A);
  assert.equal(throttle.delayAfterFailure('192.0.2.1', A), 1000);
  assert.equal(throttle.isLockedOut('192.0.2.1', A), false);
  assert.equal(throttle.networks, 1);
  assert.equal(throttle.pairs, 1);
});

test("a success does not reset another user's failures from the same address: the guesser still gets locked out", () => {
  const { throttle } = makeThrottle();
  fail(throttle, '192.0.2.1', A, 4);
  throttle.recordSuccess('192.0.2.1', B);
  throttle.delayAfterFailure('192.0.2.1', A);
  assert.equal(throttle.isLockedOut('192.0.2.1', A), true);
  // ...and once locked out, a colleague's success does not lift it.
  throttle.recordSuccess('192.0.2.1', B);
  assert.equal(throttle.isLockedOut('192.0.2.1', A), true);
  assert.equal(throttle.isLockedOut('192.0.2.1', B), false);
});

test("a success takes only its own failures off the network's count", () => {
  const { throttle } = makeThrottle();
  fail(throttle, '192.0.2.1', B, 3); // bob's typos
  for (let i = 0; i < 16; i++) throttle.delayAfterFailure('192.0.2.1', `u${i}@example.test`);
  throttle.recordSuccess('192.0.2.1', B); // 16 left
  for (let i = 16; i < 19; i++) throttle.delayAfterFailure('192.0.2.1', `u${i}@example.test`);
  assert.equal(throttle.isLockedOut('192.0.2.1'), false);
  throttle.delayAfterFailure('192.0.2.1', 'u19@example.test'); // the 20th guess
  assert.equal(throttle.isLockedOut('192.0.2.1'), true);
  // A pair whose failures were counted in an earlier network window takes nothing off the new one.
  const t2 = makeThrottle();
  fail(t2.throttle, '192.0.2.1', A, 1); // the network's window starts
  t2.clock.t += 30_000;
  fail(t2.throttle, '192.0.2.1', B, 2); // bob's window starts, inside the network's
  t2.clock.t += 30_000; // the network's window is over, bob's is not
  fail(t2.throttle, '192.0.2.1', 'c@example.test', 1); // a new network window: 1 failure
  t2.throttle.recordSuccess('192.0.2.1', B);
  assert.equal(t2.throttle.delayAfterFailure('192.0.2.1', 'c@example.test'), 2000);
});

test('memory is bounded: beyond maxEntries the least recently active network is forgotten', () => {
  const { throttle } = makeThrottle({ maxEntries: 3 });
  throttle.delayAfterFailure('192.0.2.1', A);
  throttle.delayAfterFailure('192.0.2.2', A);
  throttle.delayAfterFailure('192.0.2.3', A);
  throttle.delayAfterFailure('192.0.2.1', A); // 192.0.2.1 becomes the most recent
  throttle.delayAfterFailure('192.0.2.4', A); // evicts 192.0.2.2
  assert.equal(throttle.networks, 3);
  assert.equal(throttle.delayAfterFailure('192.0.2.2', A), 1000); // forgotten: first failure again; evicts .3
  assert.equal(throttle.delayAfterFailure('192.0.2.1', A), 4000); // remembered: third failure
  assert.equal(throttle.networks, 3);
  assert.equal(throttle.pairs, 3);
});

test('the default cap keeps at most 100,000 networks and 100,000 pairs', () => {
  const { throttle } = makeThrottle();
  for (let i = 0; i < 100_050; i++)
    throttle.delayAfterFailure(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, A);
  assert.equal(throttle.networks, 100_000);
  assert.equal(throttle.pairs, 100_000);
  for (let i = 0; i < 100_050; i++) throttle.delayAfterFailure('192.0.2.1', `u${i}@example.test`);
  assert.equal(throttle.pairs, 100_000);
});
