/**
 * Child process for the kill -9 test (spool-crash.test.ts): commits messages from 8 concurrent
 * writers in a loop and prints "C <qid>" after each commit resolved; for two in three it
 * prints "S <qid>" before calling done() and "D <qid>" after done() resolved. The parent kills it with SIGKILL at a random moment.
 * Usage: node spool-crash-child.js <spool dir>
 */
import { Spool } from '../spool.js';
import { bodyLengthFor, deterministicBody, makeEnvelope } from './spool-fixtures.js';

const dir = process.argv[2];
if (!dir) throw new Error('usage: spool-crash-child.js <dir>');
const { spool } = await Spool.open({ dir, segmentBytes: 256 * 1024, fsync: true, compactAfterSegments: 3 });
process.stdout.write('ready\n');

async function worker(n: number): Promise<never> {
  for (let i = 0; ; i++) {
    const w = spool.begin();
    const body = deterministicBody(w.qid, bodyLengthFor(w.qid));
    for (let off = 0; off < body.length; off += 16 * 1024) await w.write(body.subarray(off, off + 16 * 1024));
    await w.commit(makeEnvelope([`r${n}@example.org`]));
    process.stdout.write(`C ${w.qid}\n`);
    if (i % 3 !== 0) {
      process.stdout.write(`S ${w.qid}\n`);
      await spool.done(w.qid);
      process.stdout.write(`D ${w.qid}\n`);
    }
  }
}

await Promise.all(Array.from({ length: 8 }, (_, n) => worker(n)));
