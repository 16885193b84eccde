/**
 * Grouped directory fsyncs (dir-sync.ts): the callers that arrive while an fsync runs share
 * the next one, and no caller is answered by an fsync that began before it asked.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DirSyncGroups } from './dir-sync.js';

/** A fake fsync the test ends by hand, recording when each one began. */
function manualSyncs(): { sync: () => Promise<void>; began: number; finish: (err?: Error) => void } {
  const pending: { resolve: () => void; reject: (err: Error) => void }[] = [];
  const s = {
    began: 0,
    sync: () =>
      new Promise<void>((resolve, reject) => {
        s.began++;
        pending.push({ resolve, reject });
      }),
    finish: (err?: Error) => {
      const p = pending.shift();
      assert.ok(p !== undefined, 'no fsync is running');
      if (err === undefined) p.resolve();
      else p.reject(err);
    },
  };
  return s;
}

/** Settles pending promise callbacks. */
const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

test('callers arriving during a running fsync wait for the next one, which they all share', async () => {
  const groups = new DirSyncGroups();
  const fs = manualSyncs();
  const done: string[] = [];
  const track = (name: string, p: Promise<void>): Promise<void> => p.then(() => void done.push(name));
  const a = track('a', groups.sync('/m/new', fs.sync));
  await tick();
  assert.equal(fs.began, 1);
  // b, c, d renamed while a's fsync runs: it may not cover them.
  const rest = ['b', 'c', 'd'].map((n) => track(n, groups.sync('/m/new', fs.sync)));
  await tick();
  assert.equal(fs.began, 1, 'no second fsync while one runs');
  fs.finish();
  await a;
  await tick();
  assert.deepEqual(done, ['a'], 'b, c and d are not answered by the fsync that began before them');
  assert.equal(fs.began, 2, 'the next fsync starts as soon as the first ends');
  fs.finish();
  await Promise.all(rest);
  assert.deepEqual(done, ['a', 'b', 'c', 'd']);
  assert.equal(groups.started, 2);
  // Idle again: the next caller starts its own fsync at once.
  const e = groups.sync('/m/new', fs.sync);
  await tick();
  assert.equal(fs.began, 3);
  fs.finish();
  await e;
});

test('other directories are not grouped together', async () => {
  const groups = new DirSyncGroups();
  const fs = manualSyncs();
  const one = groups.sync('/a/new', fs.sync);
  const two = groups.sync('/b/new', fs.sync);
  await tick();
  assert.equal(fs.began, 2);
  fs.finish();
  fs.finish();
  await Promise.all([one, two]);
});

test('a failed fsync fails every caller that shared it, and the next caller starts afresh', async () => {
  const groups = new DirSyncGroups();
  const fs = manualSyncs();
  const first = groups.sync('/m/new', fs.sync);
  const shared = [groups.sync('/m/new', fs.sync), groups.sync('/m/new', fs.sync)];
  await tick();
  fs.finish();
  await first;
  await tick();
  fs.finish(new Error('EIO'));
  for (const p of shared) await assert.rejects(p, /EIO/);
  const after = groups.sync('/m/new', fs.sync);
  await tick();
  fs.finish();
  await after;
  assert.equal(groups.started, 3);
});
