import assert from 'node:assert/strict';
import { test } from 'node:test';
import { KeyRateLimiter } from './rate-limit.js';

test('a key gets messages_per_minute at once, then waits for the bucket to refill', () => {
  let now = 0;
  const rl = new KeyRateLimiter(2, () => now);
  assert.equal(rl.take('a'), 0);
  assert.equal(rl.take('a'), 0);
  assert.equal(rl.take('a'), 30, 'one token every 30 s at 2 a minute');
  assert.equal(rl.take('b'), 0, 'keys are counted apart');
  now = 30_000;
  assert.equal(rl.take('a'), 0);
  rl.refund('a');
  assert.equal(rl.take('a'), 0);
});

test('0 means no limit', () => {
  const rl = new KeyRateLimiter(0, () => 0);
  for (let i = 0; i < 1000; i++) assert.equal(rl.take('a'), 0);
});
