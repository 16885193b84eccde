import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Spool } from './spool.js';
import { makeEnvelope, withTempDir } from './testdata/spool-fixtures.js';

const COUNT = 100_000;

test(
  'a spool of 100,000 live messages reopens with all of them (open time and index memory logged)',
  { timeout: 120_000 },
  async (t) => {
    await withTempDir(async (dir) => {
      const o = { dir, segmentBytes: 64 * 1024 * 1024, fsync: false };
      const { spool } = await Spool.open(o);
      const envelope = makeEnvelope(['one@example.org', 'two@example.net']);
      const body = Buffer.alloc(1024, 'x');
      let next = 0;
      const started = performance.now();
      await Promise.all(
        Array.from({ length: 100 }, async () => {
          while (next < COUNT) {
            next++;
            const w = spool.begin();
            await w.write(body);
            await w.commit(envelope);
          }
        }),
      );
      const writeMs = performance.now() - started;
      assert.equal(spool.size, COUNT);
      await spool.close();

      global.gc?.();
      const heapBefore = process.memoryUsage().heapUsed;
      const t0 = performance.now();
      const { spool: again, report } = await Spool.open(o);
      const openMs = performance.now() - t0;
      global.gc?.();
      const heapAfter = process.memoryUsage().heapUsed;
      t.diagnostic(
        `wrote ${COUNT} messages in ${Math.round(writeMs)} ms; reopened in ${Math.round(openMs)} ms; ` +
          `heap +${Math.round((heapAfter - heapBefore) / 1024 / 1024)} MB (run node with --expose-gc for an exact figure)`,
      );
      assert.equal(report.messages, COUNT);
      assert.equal(again.size, COUNT);
      const list = again.list();
      assert.equal(list.length, COUNT);
      assert.deepEqual(list[0]!.states, [{ status: 'pending' }, { status: 'pending' }]);
      await again.close();
    });
  },
);
