/**
 * The spool log's inline writes (spool-log.ts, docs/spool.md "Writing inline"): a small batch
 * goes out with a pwritev on the calling thread, a large one, or any batch for a while after a
 * slow inline write, through libuv's thread pool. Which one ran is seen by keeping the pool busy:
 * a write through it waits behind the pool's work, an inline one does not.
 */
import assert from 'node:assert/strict';
import { pbkdf2 } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { RecordType } from './spool-format.js';
import { INLINE_PAUSE_MS, INLINE_WRITE_MAX_BYTES, INLINE_WRITE_SLOW_MS, SpoolLog } from './spool-log.js';

/**
 * Keeps every thread of libuv's pool busy for a while; resolves when the first of its tasks is
 * done (a request queued behind them cannot have run before that).
 */
function busyPool(): Promise<void> {
  const threads = Math.max(4, Number(process.env['UV_THREADPOOL_SIZE'] ?? 4));
  const one = (): Promise<void> =>
    new Promise((resolve, reject) =>
      pbkdf2('password', 'salt', 200_000, 32, 'sha256', (err) => (err ? reject(err) : resolve())),
    );
  return Promise.race(Array.from({ length: threads * 2 }, one));
}

async function writtenBeforePoolFree(log: SpoolLog, bytes: number): Promise<boolean> {
  let poolFree = false;
  const pool = busyPool().then(() => {
    poolFree = true;
  });
  // Every pool thread has taken a task before the record is appended.
  await new Promise((resolve) => setTimeout(resolve, 20));
  const r = log.append(RecordType.Chunk, [Buffer.alloc(bytes, 0x61)]);
  await r.written;
  const before = !poolFree;
  await pool;
  return before;
}

test('a small batch is written inline, a large one through the thread pool; both land in the file', async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'sterna-spool-log-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const log = await SpoolLog.create(dir, 1, { segmentBytes: 64 * 1024 * 1024, fsync: true, now: Date.now });
  assert.equal(await writtenBeforePoolFree(log, 1000), true, 'a 1 KB record does not wait for the pool');
  assert.equal(
    await writtenBeforePoolFree(log, INLINE_WRITE_MAX_BYTES + 1),
    false,
    'a batch above INLINE_WRITE_MAX_BYTES goes through the pool',
  );
  await log.flush();
  await log.close();
  const files = await readdir(dir);
  assert.equal(files.length, 1);
  const bytes = await readFile(path.join(dir, files[0] ?? ''));
  // Both payloads, in order, after the segment's header and each record's own header.
  const first = bytes.indexOf(Buffer.alloc(1000, 0x61));
  assert.ok(first > 0);
  assert.ok(bytes.length >= first + 1000 + INLINE_WRITE_MAX_BYTES + 1);
  assert.equal(
    bytes.subarray(bytes.length - INLINE_WRITE_MAX_BYTES - 1).every((b) => b === 0x61),
    true,
  );
});

test('after an inline write slower than INLINE_WRITE_SLOW_MS, writes go through the pool for INLINE_PAUSE_MS', async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'sterna-spool-log-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  let now = 0;
  // Each reading of the clock moves it on: every inline write looks slow.
  const slow = { step: INLINE_WRITE_SLOW_MS + 1 };
  const log = await SpoolLog.create(dir, 1, {
    segmentBytes: 64 * 1024 * 1024,
    fsync: false,
    now: Date.now,
    clock: () => (now += slow.step),
  });
  assert.equal(await writtenBeforePoolFree(log, 100), true, 'the first one inline (and slow)');
  slow.step = 0;
  assert.equal(log.writesInline, false);
  assert.equal(await writtenBeforePoolFree(log, 100), false, 'the next through the pool');
  now += INLINE_PAUSE_MS;
  assert.equal(log.writesInline, true);
  assert.equal(await writtenBeforePoolFree(log, 100), true, 'inline again after the pause');
  await log.close();
});
