import assert from 'node:assert/strict';
import test from 'node:test';
import { defaultWorkers } from './count.js';

test('the default worker count is one per core, at least one', () => {
  assert.equal(defaultWorkers(0), 1);
  assert.equal(defaultWorkers(1), 1);
  assert.equal(defaultWorkers(2), 2);
  assert.equal(defaultWorkers(16), 16);
});
