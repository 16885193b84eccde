import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { existingSpoolIndexes, spoolsOfWorker, workerSpoolDir, workerSpoolDirs } from './spool-dirs.js';

test('worker 0 keeps spool.dir (data of one process stays valid); worker k uses <spool.dir>.<k>', () => {
  assert.equal(workerSpoolDir('/var/lib/sterna/spool', 0), '/var/lib/sterna/spool');
  assert.equal(workerSpoolDir('/var/lib/sterna/spool/', 0), '/var/lib/sterna/spool');
  assert.equal(workerSpoolDir('/var/lib/sterna/spool', 3), '/var/lib/sterna/spool.3');
});

test('a spool left by a larger worker count goes to worker k % count, so every one is drained', () => {
  const existing = [0, 1, 2, 3, 4];
  assert.deepEqual(spoolsOfWorker(0, 2, existing), [0, 2, 4]);
  assert.deepEqual(spoolsOfWorker(1, 2, existing), [1, 3]);
  assert.deepEqual(spoolsOfWorker(0, 1, existing), [0, 1, 2, 3, 4]);
  // Each existing spool is opened by exactly one worker.
  for (const count of [1, 2, 3, 4, 5, 8]) {
    const owners = existing.map((k) =>
      [...Array(count).keys()].filter((i) => spoolsOfWorker(i, count, existing).includes(k)),
    );
    assert.ok(
      owners.every((o) => o.length === 1),
      `count ${count}: ${JSON.stringify(owners)}`,
    );
  }
});

test('the spool directories on disk: spool.dir and its numbered siblings, nothing else', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'sterna-spool-dirs-'));
  try {
    const base = path.join(dir, 'spool');
    for (const name of ['spool', 'spool.1', 'spool.3', 'spool.x', 'spool.01', 'spoolish.2', 'other.4'])
      await mkdir(path.join(dir, name));
    await writeFile(path.join(dir, 'spool.2'), 'a file, not a spool');
    assert.deepEqual(await existingSpoolIndexes(base), [0, 1, 3]);
    assert.deepEqual(await workerSpoolDirs(base, 0, 2), [base]);
    assert.deepEqual(await workerSpoolDirs(base, 1, 2), [`${base}.1`, `${base}.3`]);
    assert.deepEqual(await workerSpoolDirs(base, 0, 1), [base, `${base}.1`, `${base}.3`]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
