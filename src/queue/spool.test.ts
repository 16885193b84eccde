import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { RecipientState } from '../message/envelope.js';
import { isQueueId } from './ids.js';
import { LAZY_DONE_SYNC_MS, Spool, SpoolError, type SpoolOptions } from './spool.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { remoteOutcome } from '../message/outcome.js';

const PEER = { host: 'mx.x.org', address: '192.0.2.1' };
const NO_SUCH_USER = remoteOutcome({ code: 550, enhanced: '5.1.1', lines: ['5.1.1 no'] }, 'rcpt', PEER);
import { deterministicBody, makeEnvelope, readAll, withTempDir } from './testdata/spool-fixtures.js';

function opts(dir: string, extra: Partial<SpoolOptions> = {}): SpoolOptions {
  return { dir, segmentBytes: 1024 * 1024, fsync: true, ...extra };
}

async function commitMessage(
  spool: Spool,
  body: Buffer,
  recipients?: string[],
  pieceBytes = 64 * 1024,
): Promise<string> {
  const w = spool.begin();
  for (let off = 0; off < body.length; off += pieceBytes) await w.write(body.subarray(off, off + pieceBytes));
  await w.commit(makeEnvelope(recipients));
  return w.qid;
}

async function segmentFiles(dir: string): Promise<string[]> {
  return (await readdir(join(dir, 'segments'))).sort();
}

test('rule 3: a committed message reads back identical after reopen (envelope, states, 5 MB body, empty body)', async () => {
  await withTempDir(async (dir) => {
    const big = deterministicBody('big', 5 * 1024 * 1024);
    const small = Buffer.from('Subject: hi\r\n\r\nHello\r\n');
    const { spool } = await Spool.open(opts(dir));
    const q1 = await commitMessage(spool, big, ['a@example.org', 'b@example.org']);
    const q2 = await commitMessage(spool, small);
    const q3 = await commitMessage(spool, Buffer.alloc(0));
    assert.ok(isQueueId(q1) && isQueueId(q2) && isQueueId(q3));
    await spool.close();

    const { spool: again, report } = await Spool.open(opts(dir));
    // 5 MiB in 1 MiB segments: the body spans six files, and the COMMIT is in the last.
    assert.deepEqual(report, { messages: 3, segments: 6, truncatedBytes: 0, corrupt: [] });
    const m1 = await again.read(q1);
    assert.deepEqual(m1.envelope, makeEnvelope(['a@example.org', 'b@example.org']));
    assert.deepEqual(m1.states, [{ status: 'pending' }, { status: 'pending' }]);
    assert.equal(m1.size, big.length);
    assert.ok((await readAll(again.openBody(q1))).equals(big));
    assert.ok((await readAll(again.openBody(q2))).equals(small));
    assert.equal((await readAll(again.openBody(q3))).length, 0);
    assert.equal((await again.read(q3)).size, 0);
    assert.deepEqual(
      again.list().map((m) => m.qid),
      [q1, q2, q3],
    );
    await again.close();
  });
});

test('a body written in many 1-byte pieces is stored and returned exactly', async () => {
  await withTempDir(async (dir) => {
    const body = deterministicBody('tiny', 3000);
    const { spool } = await Spool.open(opts(dir));
    const qid = await commitMessage(spool, body, undefined, 1);
    assert.ok((await readAll(spool.openBody(qid))).equals(body));
    await spool.close();
  });
});

test('abort leaves no live message, and interleaved chunks of an aborted message do not corrupt another', async () => {
  await withTempDir(async (dir) => {
    const { spool } = await Spool.open(opts(dir));
    const keep = spool.begin();
    const drop = spool.begin();
    for (let i = 0; i < 40; i++) {
      await keep.write(deterministicBody(`k${i}`, 5000));
      await drop.write(deterministicBody(`d${i}`, 7000));
    }
    drop.abort();
    await keep.commit(makeEnvelope());
    await assert.rejects(
      drop.write(Buffer.from('x')),
      (e: unknown) => e instanceof SpoolError && e.code === 'CLOSED',
    );
    await assert.rejects(
      drop.commit(makeEnvelope()),
      (e: unknown) => e instanceof SpoolError && e.code === 'CLOSED',
    );
    assert.equal(spool.size, 1);
    await spool.close();

    const { spool: again } = await Spool.open(opts(dir));
    assert.deepEqual(
      again.list().map((m) => m.qid),
      [keep.qid],
    );
    const expected = Buffer.concat(Array.from({ length: 40 }, (_, i) => deterministicBody(`k${i}`, 5000)));
    assert.ok((await readAll(again.openBody(keep.qid))).equals(expected));
    await assert.rejects(
      again.read(drop.qid),
      (e: unknown) => e instanceof SpoolError && e.code === 'NOT_FOUND',
    );
    await again.close();
  });
});

test('50 concurrent writers interleaving their writes each read back their own body', async () => {
  await withTempDir(async (dir) => {
    const { spool } = await Spool.open(opts(dir, { segmentBytes: 256 * 1024 }));
    const bodies = new Map<string, Buffer>();
    await Promise.all(
      Array.from({ length: 50 }, async (_, i) => {
        const w = spool.begin();
        const body = deterministicBody(`w${i}`, 1000 + i * 1500);
        bodies.set(w.qid, body);
        for (let off = 0; off < body.length; off += 700) {
          await w.write(body.subarray(off, off + 700));
          await new Promise((r) => setImmediate(r));
        }
        await w.commit(makeEnvelope([`r${i}@example.org`]));
      }),
    );
    await spool.close();
    const { spool: again, report } = await Spool.open(opts(dir, { segmentBytes: 256 * 1024 }));
    assert.equal(report.messages, 50);
    for (const [qid, body] of bodies) assert.ok((await readAll(again.openBody(qid))).equals(body), qid);
    await again.close();
  });
});

test('group commit: 50 concurrent commits need far fewer than 50 fdatasyncs', async () => {
  await withTempDir(async (dir) => {
    let syncs = 0;
    const { spool } = await Spool.open(opts(dir, { onSync: () => syncs++ }));
    const committed: string[] = [];
    spool.onCommitted((qid) => committed.push(qid));
    const qids = await Promise.all(
      Array.from({ length: 50 }, (_, i) => commitMessage(spool, deterministicBody(`g${i}`, 1024))),
    );
    assert.ok(syncs >= 1 && syncs < 10, `fdatasync calls: ${syncs}`);
    assert.deepEqual([...committed].sort(), [...qids].sort());
    await spool.close();
  });
});

test('done with durable: false waits for no fdatasync; one follows within LAZY_DONE_SYNC_MS unless a commit brings it', async () => {
  await withTempDir(async (dir) => {
    let syncs = 0;
    const { spool } = await Spool.open(opts(dir, { onSync: () => syncs++ }));
    const waitForSync = async (from: number): Promise<number> => {
      const t0 = Date.now();
      while (syncs === from && Date.now() - t0 < LAZY_DONE_SYNC_MS + 3000) await sleep(10);
      return Date.now() - t0;
    };
    // Alone: the DONE gets a sync of its own, a second later.
    const q1 = await commitMessage(spool, Buffer.from('one'));
    const s1 = syncs;
    await spool.done(q1, { durable: false });
    assert.equal(syncs, s1, 'done() returned before any fdatasync');
    const waited = await waitForSync(s1);
    assert.equal(syncs, s1 + 1, 'one fdatasync followed');
    assert.ok(waited >= LAZY_DONE_SYNC_MS - 100, `not before its time (${waited} ms)`);
    // Followed by a commit: that commit's sync covers the DONE, and the timer finds nothing to do.
    const q2 = await commitMessage(spool, Buffer.from('two'));
    const s2 = syncs;
    await spool.done(q2, { durable: false });
    const q3 = await commitMessage(spool, Buffer.from('three'));
    assert.equal(syncs, s2 + 1, "the commit's own sync");
    await sleep(LAZY_DONE_SYNC_MS + 300);
    assert.equal(syncs, s2 + 1, 'no second sync for a DONE already durable');
    await spool.close();
    const { spool: again } = await Spool.open(opts(dir));
    assert.deepEqual(
      again.list().map((m) => m.qid),
      [q3],
      'the finished messages stay finished',
    );
    await again.close();
  });
});

test('fsync: false commits without fdatasync', async () => {
  await withTempDir(async (dir) => {
    let syncs = 0;
    const { spool } = await Spool.open(opts(dir, { fsync: false, onSync: () => syncs++ }));
    const qid = await commitMessage(spool, Buffer.from('x'));
    await spool.close();
    assert.equal(syncs, 0);
    const { spool: again } = await Spool.open(opts(dir, { fsync: false }));
    assert.ok((await readAll(again.openBody(qid))).equals(Buffer.from('x')));
    await again.close();
  });
});

test('update and done survive reopen; done messages are gone', async () => {
  await withTempDir(async (dir) => {
    const { spool } = await Spool.open(opts(dir));
    const q1 = await commitMessage(spool, Buffer.from('one'), ['a@x.org', 'b@x.org', 'c@x.org']);
    const q2 = await commitMessage(spool, Buffer.from('two'));
    const deferred: RecipientState = {
      status: 'deferred',
      attempts: 1,
      nextAttemptAt: 1_700_000_600_000,
      outcome: remoteOutcome({ code: 451, enhanced: '4.7.1', lines: ['4.7.1 greylisted'] }, 'rcpt', PEER),
    };
    await spool.update(q1, [
      { index: 0, state: { status: 'delivered', at: 1_700_000_100_000, detail: '250 ok' } },
      { index: 2, state: deferred },
    ]);
    await spool.update(q1, [
      { index: 1, state: { status: 'failed', at: 1_700_000_200_000, outcome: NO_SUCH_USER } },
    ]);
    await spool.done(q2);
    await assert.rejects(spool.done(q2), (e: unknown) => e instanceof SpoolError && e.code === 'NOT_FOUND');
    await assert.rejects(spool.update(q1, [{ index: 3, state: { status: 'pending' } }]), RangeError);
    await spool.close();

    const { spool: again, report } = await Spool.open(opts(dir));
    assert.equal(report.messages, 1);
    assert.deepEqual(again.list(), [
      {
        qid: q1,
        receivedAt: 1_700_000_000_000,
        size: 3,
        states: [
          { status: 'delivered', at: 1_700_000_100_000, detail: '250 ok' },
          { status: 'failed', at: 1_700_000_200_000, outcome: NO_SUCH_USER },
          deferred,
        ],
      },
    ]);
    await assert.rejects(again.read(q2), (e: unknown) => e instanceof SpoolError && e.code === 'NOT_FOUND');
    await again.close();
  });
});

test('segments are deleted once every message in them is done', async () => {
  await withTempDir(async (dir) => {
    const o = opts(dir, { segmentBytes: 64 * 1024 });
    const { spool } = await Spool.open(o);
    const qids: string[] = [];
    for (let i = 0; i < 20; i++) qids.push(await commitMessage(spool, deterministicBody(`s${i}`, 20_000)));
    const before = await segmentFiles(dir);
    assert.ok(before.length >= 5, `segments: ${before.join(' ')}`);
    for (const q of qids) await spool.done(q);
    await spool.compact(); // waits for the maintenance queued by done()
    const after = await segmentFiles(dir);
    assert.equal(after.length, 1);
    assert.equal(after[0], before[before.length - 1]);
    await spool.close();
    const { spool: again, report } = await Spool.open(o);
    assert.equal(report.messages, 0);
    await again.close();
  });
});

test('compaction moves a long-deferred message forward, deletes the old segment, and it survives reopen', async () => {
  await withTempDir(async (dir) => {
    const o = opts(dir, { segmentBytes: 64 * 1024, compactAfterSegments: 1000 });
    const { spool } = await Spool.open(o);
    const oldBody = deterministicBody('old', 150_000);
    const old = await commitMessage(spool, oldBody, ['x@example.org', 'y@example.org']);
    await spool.update(old, [{ index: 1, state: { status: 'delivered', at: 5 } }]);
    const firstSegment = (await segmentFiles(dir))[0];
    const others: string[] = [];
    for (let i = 0; i < 10; i++) others.push(await commitMessage(spool, deterministicBody(`o${i}`, 20_000)));
    for (const q of others) await spool.done(q);
    assert.ok((await segmentFiles(dir)).includes(firstSegment!), 'the deferred message pins its segment');

    const result = await spool.compact();
    assert.equal(result.relocated, 1);
    assert.ok(result.deletedSegments >= 1);
    assert.ok(!(await segmentFiles(dir)).includes(firstSegment!));
    assert.ok((await readAll(spool.openBody(old))).equals(oldBody));
    await spool.close();

    const { spool: again, report } = await Spool.open(o);
    assert.equal(report.messages, 1);
    const m = await again.read(old);
    assert.deepEqual(m.envelope, makeEnvelope(['x@example.org', 'y@example.org']));
    assert.deepEqual(m.states, [{ status: 'pending' }, { status: 'delivered', at: 5 }]);
    assert.ok((await readAll(again.openBody(old))).equals(oldBody));
    await again.done(old);
    await again.close();
  });
});

test('automatic compaction keeps the segment count bounded behind one deferred message', async () => {
  await withTempDir(async (dir) => {
    const o = opts(dir, { segmentBytes: 64 * 1024, compactAfterSegments: 3, fsync: false });
    const { spool } = await Spool.open(o);
    const stuck = await commitMessage(spool, Buffer.from('deferred for days'));
    for (let i = 0; i < 60; i++) {
      const q = await commitMessage(spool, deterministicBody(`a${i}`, 10_000));
      await spool.done(q);
    }
    await spool.compact();
    const files = await segmentFiles(dir);
    assert.ok(files.length <= 5, `segments: ${files.length}`);
    assert.equal((await readAll(spool.openBody(stuck))).toString(), 'deferred for days');
    await spool.close();
  });
});

test('a reader keeps the segment it reads even if the message is done meanwhile', async () => {
  await withTempDir(async (dir) => {
    const { spool } = await Spool.open(opts(dir, { segmentBytes: 64 * 1024 }));
    const body = deterministicBody('r', 300_000);
    const qid = await commitMessage(spool, body);
    const it = spool.openBody(qid)[Symbol.asyncIterator]();
    const first = await it.next();
    assert.equal(first.done, false);
    await spool.done(qid);
    for (let i = 0; i < 10; i++)
      await spool.done(await commitMessage(spool, deterministicBody(`f${i}`, 30_000)));
    const parts: Buffer[] = [first.value];
    for (let r = await it.next(); !r.done; r = await it.next()) parts.push(r.value);
    assert.ok(Buffer.concat(parts).equals(body));
    await spool.compact();
    assert.equal((await segmentFiles(dir)).length, 1);
    await spool.close();
  });
});

test('a second open of the same directory is refused while the first holds the lock; a stale lock is taken over', async () => {
  await withTempDir(async (dir) => {
    const { spool } = await Spool.open(opts(dir));
    await assert.rejects(
      Spool.open(opts(dir)),
      (e: unknown) => e instanceof SpoolError && /in use by process/.test(e.message),
    );
    await spool.close();
    await writeFile(join(dir, 'LOCK'), '999999999\n');
    const { spool: again } = await Spool.open(opts(dir));
    await again.close();
  });
});

test('after close every operation fails with CLOSED', async () => {
  await withTempDir(async (dir) => {
    const { spool } = await Spool.open(opts(dir));
    const qid = await commitMessage(spool, Buffer.from('x'));
    const w = spool.begin();
    await spool.close();
    assert.throws(
      () => spool.begin(),
      (e: unknown) => e instanceof SpoolError && e.code === 'CLOSED',
    );
    await assert.rejects(
      w.write(Buffer.from('y')),
      (e: unknown) => e instanceof SpoolError && e.code === 'CLOSED',
    );
    await assert.rejects(spool.read(qid), (e: unknown) => e instanceof SpoolError && e.code === 'CLOSED');
    await assert.rejects(spool.done(qid), (e: unknown) => e instanceof SpoolError && e.code === 'CLOSED');
  });
});

/** Open descriptors of this process on files under `dir`, by path (" (deleted)" marks an unlinked one). */
async function openFilesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const fd of await readdir('/proc/self/fd')) {
    try {
      const target = await readlink(join('/proc/self/fd', fd));
      if (target.startsWith(dir)) out.push(target);
    } catch {
      // closed meanwhile
    }
  }
  return out;
}

test('reads share a handle per segment: at most 16 stay open unused, and a deleted segment is closed', async () => {
  await withTempDir(async (dir) => {
    // One 40 KiB message per 64 KiB segment: 30 messages, about 30 segments.
    const { spool } = await Spool.open(opts(dir, { segmentBytes: 64 * 1024, compactAfterSegments: 1000 }));
    const bodies = new Map<string, Buffer>();
    for (let i = 0; i < 30; i++) {
      const body = deterministicBody(`m${i}`, 40 * 1024);
      bodies.set(await commitMessage(spool, body), body);
    }
    assert.ok((await segmentFiles(dir)).length >= 20);
    for (const [qid, body] of bodies) {
      await spool.read(qid);
      assert.ok((await readAll(spool.openBody(qid))).equals(body));
    }
    // Closing is asynchronous (FileHandle.close): give it a moment.
    await new Promise((resolve) => setTimeout(resolve, 50));
    const open = await openFilesUnder(join(dir, 'segments'));
    // 16 unused read handles at most, plus the log's own handle on the segment being written.
    assert.ok(open.length <= 17, `open segment files: ${open.length}`);
    for (const qid of bodies.keys()) await spool.done(qid);
    await spool.compact(); // deletes the finished segments
    await new Promise((resolve) => setTimeout(resolve, 50));
    const left = await openFilesUnder(join(dir, 'segments'));
    assert.deepEqual(
      left.filter((p) => p.endsWith('(deleted)')),
      [],
      'no handle is kept on a deleted segment',
    );
    await spool.close();
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.deepEqual(await openFilesUnder(join(dir, 'segments')), [], 'close() closes every handle');
  });
});

test('a live message is read from disk once for its envelope and chunk list, not on every pass', async () => {
  await withTempDir(async (dir) => {
    const { spool } = await Spool.open(opts(dir));
    const body = Buffer.from('Subject: once\r\n\r\nHello\r\n');
    const qid = await commitMessage(spool, body);
    assert.equal((await spool.read(qid)).envelope.recipients.length, 1);
    // The record is in memory: with the segment emptied under it, the envelope still reads, and
    // so does the small body, kept since its commit (spool-recent-bodies.ts).
    const [segment] = await segmentFiles(dir);
    assert.ok(segment !== undefined);
    await writeFile(join(dir, 'segments', segment), '');
    assert.equal((await spool.read(qid)).envelope.recipients.length, 1);
    assert.deepEqual(await readAll(spool.openBody(qid)), body);
    assert.deepEqual(await readAll(spool.openBody(qid)), body);
  });
});

test('a small body is read back from memory until its message is done; a large one from disk', async () => {
  await withTempDir(async (dir) => {
    const { spool } = await Spool.open(opts(dir));
    const small = Buffer.from('Subject: kept\r\n\r\n' + 'k'.repeat(100) + '\r\n');
    // Above the 256 KiB kept per body, written in pieces: read back from the segment.
    const large = Buffer.alloc(300 * 1024, 'L');
    const smallQid = await commitMessage(spool, small, undefined, 7);
    const largeQid = await commitMessage(spool, large);
    const other = await commitMessage(spool, small);
    assert.deepEqual(await readAll(spool.openBody(largeQid)), large);
    await spool.done(other);
    const [segment] = await segmentFiles(dir);
    assert.ok(segment !== undefined);
    await writeFile(join(dir, 'segments', segment), '');
    // Written in 7-byte pieces, kept whole and in order.
    assert.deepEqual(await readAll(spool.openBody(smallQid)), small);
    await assert.rejects(readAll(spool.openBody(largeQid)), (err: unknown) => err instanceof SpoolError);
    await spool.close();
  });
});
