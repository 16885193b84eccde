import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { IDEMPOTENCY_FILE, IdempotencyStore } from './idempotency.js';

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'sterna-idem-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const opts = (dir: string, inSpool: (qid: string) => boolean, now = 1000) => ({
  dataDir: dir,
  windowMs: 500,
  maxEntries: 10,
  fsync: false,
  inSpool,
  now: () => now,
});

test('a crash after the spool commit, before the answer: the pending line replays the queued id', async () => {
  await withDir(async (dir) => {
    const file = join(dir, IDEMPOTENCY_FILE);
    await writeFile(
      file,
      `${JSON.stringify({ t: 'pending', k: 'key1\0a', h: 'h1', at: 900, qid: 'QID1' })}\n` +
        `${JSON.stringify({ t: 'pending', k: 'key1\0b', h: 'h2', at: 900, qid: 'GONE' })}\n{"torn`,
    );
    const store = await IdempotencyStore.open(opts(dir, (q) => q === 'QID1'));
    assert.deepEqual(store.begin('key1\0a', 'h1'), {
      kind: 'replay',
      answer: { status: 202, body: { id: 'QID1' } },
    });
    assert.deepEqual(store.begin('key1\0a', 'other'), { kind: 'mismatch' });
    assert.deepEqual(store.begin('key1\0b', 'h2'), { kind: 'new' }, 'never committed: a retry queues');
    assert.deepEqual(store.begin('key1\0b', 'h2'), { kind: 'in-progress' });
    await store.close();
    assert.doesNotMatch(await readFile(file, 'utf8'), /torn|GONE/, 'compacted at open');
  });
});

test('entries expire after the window', async () => {
  await withDir(async (dir) => {
    let now = 1000;
    const store = await IdempotencyStore.open({ ...opts(dir, () => false), now: () => now });
    assert.equal(store.begin('k', 'h').kind, 'new');
    await store.done('k', 'h', { status: 202, body: { id: 'Q' } });
    assert.equal(store.begin('k', 'h').kind, 'replay');
    now += 501;
    assert.equal(store.begin('k', 'h').kind, 'new');
    await store.close();
  });
});
