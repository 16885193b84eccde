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
    windowMs: 60_000,
    lockoutMs: 300_000,
    now: () => clock.t,
    ...overrides,
  });
  return { throttle, clock };
}

test('delays after failures double: 1 s, 2 s, 4 s, 8 s', () => {
  const { throttle } = makeThrottle({ maxFailures: 100 });
  assert.deepEqual(
    [1, 2, 3, 4].map(() => throttle.delayAfterFailure('192.0.2.1')),
    [1000, 2000, 4000, 8000],
  );
});

test('the delay is capped at 30 s by default, and at maxDelayMs when given', () => {
  const { throttle } = makeThrottle({ maxFailures: 1000 });
  const delays = Array.from({ length: 60 }, () => throttle.delayAfterFailure('192.0.2.1'));
  assert.equal(delays[4], 16_000);
  assert.equal(delays[5], 30_000);
  assert.equal(delays[59], 30_000);
  const capped = makeThrottle({ maxFailures: 1000, maxDelayMs: 2500 }).throttle;
  assert.deepEqual(
    [1, 2, 3].map(() => capped.delayAfterFailure('192.0.2.1')),
    [1000, 2000, 2500],
  );
});

test('a zero failure delay gives no delay', () => {
  const { throttle } = makeThrottle({ failureDelayMs: 0 });
  assert.equal(throttle.delayAfterFailure('192.0.2.1'), 0);
  assert.equal(throttle.delayAfterFailure('192.0.2.1'), 0);
});

test('maxFailures failures within the window lock the IP out, and only that IP', () => {
  const { throttle } = makeThrottle();
  for (let i = 0; i < 4; i++) throttle.delayAfterFailure('192.0.2.1');
  assert.equal(throttle.isLockedOut('192.0.2.1'), false);
  throttle.delayAfterFailure('192.0.2.1');
  assert.equal(throttle.isLockedOut('192.0.2.1'), true);
  assert.equal(throttle.isLockedOut('192.0.2.2'), false);
});

test('the lock-out expires after lockoutMs and the delays start again from the first', () => {
  const { throttle, clock } = makeThrottle();
  for (let i = 0; i < 5; i++) throttle.delayAfterFailure('192.0.2.1');
  clock.t += 299_999;
  assert.equal(throttle.isLockedOut('192.0.2.1'), true);
  clock.t += 1;
  assert.equal(throttle.isLockedOut('192.0.2.1'), false);
  assert.equal(throttle.delayAfterFailure('192.0.2.1'), 1000);
});

test('failures older than the window are forgotten', () => {
  const { throttle, clock } = makeThrottle();
  for (let i = 0; i < 4; i++) throttle.delayAfterFailure('192.0.2.1');
  clock.t += 60_000;
  assert.equal(throttle.delayAfterFailure('192.0.2.1'), 1000);
  assert.equal(throttle.isLockedOut('192.0.2.1'), false);
});

test('a success forgets the failures of that IP', () => {
  const { throttle } = makeThrottle();
  for (let i = 0; i < 4; i++) throttle.delayAfterFailure('192.0.2.1');
  throttle.recordSuccess('192.0.2.1');
  assert.equal(throttle.delayAfterFailure('192.0.2.1'), 1000);
  assert.equal(throttle.isLockedOut('192.0.2.1'), false);
});

test('memory is bounded: beyond maxEntries the least recently active IP is forgotten', () => {
  const { throttle } = makeThrottle({ maxEntries: 3 });
  throttle.delayAfterFailure('192.0.2.1');
  throttle.delayAfterFailure('192.0.2.2');
  throttle.delayAfterFailure('192.0.2.3');
  throttle.delayAfterFailure('192.0.2.1'); // 192.0.2.1 becomes the most recent
  throttle.delayAfterFailure('192.0.2.4'); // evicts 192.0.2.2
  assert.equal(throttle.size, 3);
  assert.equal(throttle.delayAfterFailure('192.0.2.2'), 1000); // forgotten: first failure again; evicts .3
  assert.equal(throttle.delayAfterFailure('192.0.2.1'), 4000); // remembered: third failure
  assert.equal(throttle.size, 3);
});

test('the default cap keeps at most 100,000 IPs', () => {
  const { throttle } = makeThrottle();
  for (let i = 0; i < 100_050; i++)
    throttle.delayAfterFailure(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`);
  assert.equal(throttle.size, 100_000);
});
