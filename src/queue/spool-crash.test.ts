import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { Spool } from './spool.js';
import {
  bodyLengthFor,
  deterministicBody,
  makeEnvelope,
  readAll,
  withTempDir,
} from './testdata/spool-fixtures.js';

const CHILD = fileURLToPath(new URL('./testdata/spool-crash-child.js', import.meta.url));
const FULL_CHILD = fileURLToPath(new URL('./testdata/spool-full-child.js', import.meta.url));

/** Runs the child until `killAfterMs` after it is ready, SIGKILLs it, returns its complete stdout lines. */
function runAndKill(dir: string, killAfterMs: number): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CHILD, dir], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    let timer: NodeJS.Timeout | undefined;
    const guard = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stdout.on('data', (d: string) => {
      out += d;
      if (!timer && out.startsWith('ready\n')) timer = setTimeout(() => child.kill('SIGKILL'), killAfterMs);
    });
    child.stderr.on('data', (d: string) => (err += d));
    child.on('error', reject);
    child.on('close', (_code, signal) => {
      clearTimeout(guard);
      if (timer) clearTimeout(timer);
      if (signal !== 'SIGKILL') reject(new Error(`child ended without being killed: ${signal ?? ''} ${err}`));
      // Only complete lines count: a line cut by the kill says nothing.
      else resolve(out.split('\n').slice(0, -1));
    });
  });
}

test(
  'rule 3 under kill -9: every message whose commit resolved is recovered with its exact body',
  { timeout: 90_000 },
  async () => {
    await withTempDir(async (dir) => {
      const committed = new Set<string>();
      const finishing = new Set<string>();
      const finished = new Set<string>();
      for (const killAfterMs of [300, 170, 420]) {
        const lines = await runAndKill(dir, killAfterMs);
        for (const line of lines) {
          if (line.startsWith('C ')) committed.add(line.slice(2));
          if (line.startsWith('S ')) finishing.add(line.slice(2));
          if (line.startsWith('D ')) finished.add(line.slice(2));
        }
        const { spool, report } = await Spool.open({ dir, segmentBytes: 256 * 1024, fsync: true });
        try {
          const live = new Set(spool.list().map((m) => m.qid));
          assert.deepEqual(report.corrupt, []);
          for (const qid of committed) {
            if (finished.has(qid)) {
              assert.ok(!live.has(qid), `${qid} was done but came back`);
              continue;
            }
            // done() was called but had not resolved: the message may be either live or gone.
            if (finishing.has(qid) && !live.has(qid)) continue;
            assert.ok(live.has(qid), `acknowledged message ${qid} lost`);
            const m = await spool.read(qid);
            assert.equal(m.envelope.sender, makeEnvelope().sender);
            const body = await readAll(spool.openBody(qid));
            assert.ok(body.equals(deterministicBody(qid, bodyLengthFor(qid))), `body of ${qid}`);
          }
        } finally {
          await spool.close();
        }
      }
      assert.ok(committed.size > 20, `only ${committed.size} messages committed before the kills`);
    });
  },
);

test(
  'a failed write (file size limit, as a full disk) refuses those messages only; the log stays clean',
  { timeout: 60_000 },
  async () => {
    await withTempDir(async (dir) => {
      // ulimit -f counts 1024-byte blocks in bash: writes past 1,000 KiB fail with EFBIG.
      const { stdout } = await promisify(execFile)(
        '/bin/bash',
        ['-c', 'ulimit -f 1000 && exec "$0" "$1" "$2"', process.execPath, FULL_CHILD, dir],
        { timeout: 30_000 },
      );
      const result = JSON.parse(stdout) as { committed: string[]; codes: string[] };
      assert.deepEqual(result.codes, ['EIO']);
      assert.ok(result.committed.length > 100, `committed ${result.committed.length}`);
      const { spool, report } = await Spool.open({ dir, segmentBytes: 64 * 1024 * 1024, fsync: true });
      try {
        assert.deepEqual(report, {
          messages: result.committed.length,
          segments: 1,
          truncatedBytes: 0,
          corrupt: [],
        });
        for (const qid of result.committed) {
          assert.ok((await readAll(spool.openBody(qid))).equals(deterministicBody(qid, 3000)), qid);
        }
      } finally {
        await spool.close();
      }
    });
  },
);
