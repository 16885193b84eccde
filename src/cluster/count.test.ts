import assert from 'node:assert/strict';
import test from 'node:test';
import { defaultWorkers } from './count.js';

test('the default worker count leaves one core to the thread pools and the kernel, and is at least one', () => {
  assert.equal(defaultWorkers(1), 1);
  assert.equal(defaultWorkers(2), 1);
  assert.equal(defaultWorkers(4), 3);
  assert.equal(defaultWorkers(16), 15);
});
