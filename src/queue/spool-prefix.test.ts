/**
 * A commit prefix (the Authentication-Results field, known only at the end of data) is stored
 * after the body but read first, by every reader, after reopen and after compaction moved the
 * message (spool-writer.ts commit()).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Spool } from './spool.js';
import { deterministicBody, makeEnvelope, readAll, withTempDir } from './testdata/spool-fixtures.js';

test('a commit prefix is read first: at once, after reopen and after relocation; size counts it', async () => {
  await withTempDir(async (dir) => {
    const o = { dir, segmentBytes: 64 * 1024, fsync: true, compactAfterSegments: 1000 };
    const { spool } = await Spool.open(o);
    const body = deterministicBody('body', 150_000);
    const prefix = Buffer.from(
      'Authentication-Results: mx.example; spf=pass smtp.mailfrom=a@example.org\r\n',
    );
    const w = spool.begin();
    for (let off = 0; off < body.length; off += 10_000) await w.write(body.subarray(off, off + 10_000));
    await w.commit(makeEnvelope(['x@example.org', 'y@example.org']), prefix);
    const qid = w.qid;
    const want = Buffer.concat([prefix, body]);
    assert.ok((await readAll(spool.openBody(qid))).equals(want));
    assert.equal((await spool.read(qid)).size, want.length);
    await spool.update(qid, [{ index: 1, state: { status: 'delivered', at: 5 } }]);

    // Fill later segments with finished messages, so compaction relocates ours.
    for (let i = 0; i < 10; i++) {
      const other = spool.begin();
      await other.write(deterministicBody(`o${i}`, 20_000));
      await other.commit(makeEnvelope());
      await spool.done(other.qid);
    }
    const result = await spool.compact();
    assert.equal(result.relocated, 1);
    assert.ok((await readAll(spool.openBody(qid))).equals(want));
    await spool.close();

    const { spool: again } = await Spool.open(o);
    assert.ok((await readAll(again.openBody(qid))).equals(want));
    assert.equal((await again.read(qid)).size, want.length);
    await again.close();
  });
});

test('without a prefix (and with an empty one) the body is stored as before', async () => {
  await withTempDir(async (dir) => {
    const { spool } = await Spool.open({ dir, segmentBytes: 1024 * 1024, fsync: true });
    for (const prefix of [undefined, Buffer.alloc(0)]) {
      const w = spool.begin();
      await w.write(Buffer.from('Subject: x\r\n\r\nbody\r\n'));
      await w.commit(makeEnvelope(), prefix);
      assert.equal((await readAll(spool.openBody(w.qid))).toString(), 'Subject: x\r\n\r\nbody\r\n');
    }
    await spool.close();
  });
});
