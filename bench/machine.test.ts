/**
 * Tests for the benchmark's pinning of processes to cores (the pinned group): the command it
 * builds, and that a process started through it really runs only on the cores it was given.
 */
import assert from 'node:assert/strict';
import { availableParallelism } from 'node:os';
import { test } from 'node:test';
import { currentPinning, pinned, run, setPinning } from './machine.js';

test('pinned: the command unchanged without pinning, through taskset -c with it, by role', () => {
  setPinning(null);
  assert.deepEqual(pinned('server', '/usr/sbin/postfix', ['start']), ['/usr/sbin/postfix', ['start']]);
  setPinning({ server: '0', load: '1-3' });
  try {
    assert.deepEqual(pinned('server', '/usr/sbin/postfix', ['-c', 'dir', 'start']), [
      'taskset',
      ['-c', '0', '/usr/sbin/postfix', '-c', 'dir', 'start'],
    ]);
    assert.deepEqual(pinned('load', 'smtp-source', ['-s', '20']), [
      'taskset',
      ['-c', '1-3', 'smtp-source', '-s', '20'],
    ]);
  } finally {
    setPinning(null);
  }
  assert.equal(currentPinning(), null);
});

test('pinned: a process started through it may run on its cores only (Cpus_allowed_list)', async () => {
  setPinning({ server: '0', load: '0' });
  try {
    const r = await run(...pinned('server', 'grep', ['Cpus_allowed_list', '/proc/self/status']));
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^Cpus_allowed_list:\s+0\n$/);
  } finally {
    setPinning(null);
  }
  if (availableParallelism() > 1) {
    const free = await run(...pinned('server', 'grep', ['Cpus_allowed_list', '/proc/self/status']));
    assert.doesNotMatch(free.stdout, /^Cpus_allowed_list:\s+0\n$/, 'without pinning, not only core 0');
  }
});
