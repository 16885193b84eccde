/**
 * Child process for the write-failure test (spool-crash.test.ts). Run under `ulimit -f`, so
 * writes past the limit fail (EFBIG; SIGXFSZ is ignored) the way a full disk fails them.
 * Commits from 10 writers until refusals, then prints one JSON line: the qids committed and
 * the error codes seen. Usage: node spool-full-child.js <spool dir>
 */
import { Spool, SpoolError } from '../spool.js';
import { deterministicBody, makeEnvelope } from './spool-fixtures.js';

process.on('SIGXFSZ', () => undefined);
const dir = process.argv[2];
if (!dir) throw new Error('usage: spool-full-child.js <dir>');
const { spool } = await Spool.open({ dir, segmentBytes: 64 * 1024 * 1024, fsync: true });
const committed: string[] = [];
const codes = new Set<string>();
await Promise.all(
  Array.from({ length: 10 }, async () => {
    for (let i = 0; i < 60; i++) {
      const w = spool.begin();
      try {
        await w.write(deterministicBody(w.qid, 3000));
        await w.commit(makeEnvelope());
        committed.push(w.qid);
      } catch (err) {
        codes.add(err instanceof SpoolError ? err.code : String(err));
        w.abort();
      }
    }
  }),
);
// Small records still fit after a refused batch was cut off again.
await spool.done(committed[0]!);
await spool.close();
process.stdout.write(`${JSON.stringify({ committed: committed.slice(1), codes: [...codes] })}\n`);
