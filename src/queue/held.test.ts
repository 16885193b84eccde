/** HeldSet (held.ts): durable holds in held.json, atomic replacement, stale ids dropped at load. */
import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { HELD_FILE, HeldSet } from './held.js';

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'sterna-held-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test('a hold is written to held.json and survives a reload; release removes it', async () => {
  await withDir(async (dir) => {
    const live = (): boolean => true;
    const a = await HeldSet.load(dir, { fsync: true, live });
    assert.deepEqual(a.ids, []);
    assert.equal(await a.add('QB'), true);
    assert.equal(await a.add('QA'), true);
    assert.equal(await a.add('QA'), false);
    assert.equal(await readFile(join(dir, HELD_FILE), 'utf8'), '["QA","QB"]\n');
    const b = await HeldSet.load(dir, { fsync: true, live });
    assert.equal(b.has('QA'), true);
    assert.equal(await b.remove('QA'), true);
    assert.equal(await b.remove('QA'), false);
    assert.deepEqual((await HeldSet.load(dir, { fsync: true, live })).ids, ['QB']);
    assert.deepEqual((await readdir(dir)).sort(), [HELD_FILE], 'no temporary file is left');
  });
});

test('ids of messages no longer in the spool are dropped at load, and the file rewritten', async () => {
  await withDir(async (dir) => {
    await writeFile(join(dir, HELD_FILE), '["GONE","KEPT",7]\n');
    const s = await HeldSet.load(dir, { fsync: false, live: (q) => q === 'KEPT' });
    assert.deepEqual(s.ids, ['KEPT']);
    assert.equal(await readFile(join(dir, HELD_FILE), 'utf8'), '["KEPT"]\n');
  });
});

test('concurrent holds are all written (writes are serialised)', async () => {
  await withDir(async (dir) => {
    const s = await HeldSet.load(dir, { fsync: false, live: () => true });
    await Promise.all(['Q1', 'Q2', 'Q3', 'Q4'].map((q) => s.add(q)));
    assert.equal(await readFile(join(dir, HELD_FILE), 'utf8'), '["Q1","Q2","Q3","Q4"]\n');
  });
});
