/**
 * [server] helper_threads_nice (src/server/helper-threads.ts): in `sterna serve`, every thread
 * but the event loop's (libuv's pool, V8's workers) runs that many nice levels below it, in one
 * process and in each worker of a cluster; 0 leaves them alone. Read from /proc, as `top -H`
 * shows it. Linux only (the feature and the check both need /proc/<pid>/task).
 * Test-only code: binds 127.0.0.1 only, writes only under os.tmpdir().
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { test } from 'node:test';
import { waitForMessages } from './helpers/maildir.js';
import {
  prepareServeDir,
  startRoundRobinSterna,
  startSternaProcess,
  waitForLog,
  type ServeDir,
  type SternaProcess,
} from './helpers/process.js';
import { TestClient } from './helpers/smtp-client.js';

const READY_TIMEOUT_MS = 40_000;
const HAS_PROC = existsSync('/proc/self/task');
const OWN_NICE = os.getPriority();

/** Nice value of every thread of `pid`, by thread id (field 19 of /proc/<pid>/task/<tid>/stat). */
async function threadNices(pid: number): Promise<Map<number, number>> {
  const nices = new Map<number, number>();
  for (const tid of await readdir(`/proc/${pid}/task`)) {
    try {
      const stat = await readFile(`/proc/${pid}/task/${tid}/stat`, 'latin1');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      nices.set(Number(tid), Number(fields[16]));
    } catch {
      // The thread ended between the listing and the read.
    }
  }
  return nices;
}

/**
 * The event loop's nice value (this test's own: the server inherits it, 0 unless the suite runs
 * under `nice`) and the others', for one process.
 */
async function split(pid: number): Promise<{ loop: number | undefined; helpers: number[] }> {
  const nices = await threadNices(pid);
  return { loop: nices.get(pid), helpers: [...nices].filter(([tid]) => tid !== pid).map(([, n]) => n) };
}

/** Sends one message to bob@sterna.test and waits until it is in his Maildir. */
async function deliverOne(serve: ServeDir): Promise<void> {
  const c = await TestClient.connect(serve.port);
  try {
    await c.expect(220);
    await c.cmd('EHLO client.test');
    assert.equal((await c.cmd('MAIL FROM:<alice@example.net>')).code, 250);
    assert.equal((await c.cmd('RCPT TO:<bob@sterna.test>')).code, 250);
    assert.equal((await c.cmd('DATA')).code, 354);
    assert.equal((await c.cmd('Subject: nice\r\n\r\nhello\r\n.')).code, 250);
    await c.cmd('QUIT');
  } finally {
    c.close();
  }
  const got = await waitForMessages(serve.dataDir, 'sterna.test', 'bob', 1, 20_000);
  assert.equal(got.length, 1, 'the message reached the Maildir');
}

/** The nice value `offset` levels below this process's own. */
const below = (offset: number): number => Math.min(19, OWN_NICE + offset);

async function serveDir(extra: string, workers = 1): Promise<ServeDir> {
  const serve = await prepareServeDir({
    prefix: 'sterna-nice-',
    hostname: 'mx.sterna.test',
    domain: 'sterna.test',
    mailboxes: ['bob@sterna.test'],
    workers,
  });
  const base = await readFile(serve.configFile, 'utf8');
  await writeFile(serve.configFile, base.replace('[server]\n', `[server]\n${extra}`));
  return serve;
}

async function run(serve: ServeDir, group: boolean): Promise<SternaProcess> {
  if (group) return startRoundRobinSterna(serve, 0, READY_TIMEOUT_MS);
  return startSternaProcess({
    configFile: serve.configFile,
    smtpPort: serve.port,
    stdoutFile: `${serve.dir}/sterna.log`,
    stderrFile: `${serve.dir}/sterna.err`,
    readyTimeoutMs: READY_TIMEOUT_MS,
  });
}

test('helper threads run below the event loop', { skip: !HAS_PROC && 'no /proc/self/task' }, async (t) => {
  const oneProcess: { name: string; extra: string; expected: () => number }[] = [
    { name: 'one process, the default: 10 nice levels below', extra: '', expected: () => below(10) },
    { name: 'helper_threads_nice = 3', extra: 'helper_threads_nice = 3\n', expected: () => below(3) },
    {
      name: 'helper_threads_nice = 0 leaves them as they were',
      extra: 'helper_threads_nice = 0\n',
      expected: () => OWN_NICE,
    },
  ];
  for (const c of oneProcess) {
    await t.test(c.name, async () => {
      const serve = await serveDir(c.extra);
      const p = await run(serve, false);
      try {
        // "listening" is logged once the priorities are set.
        await waitForLog(p, (r) => r.msg === 'listening');
        const { loop, helpers } = await split(p.pid);
        assert.equal(loop, OWN_NICE);
        // libuv's pool (4 threads) and V8's platform workers at least.
        assert.ok(helpers.length >= 5, `helper threads: ${helpers.length}`);
        assert.deepEqual(new Set(helpers), new Set([c.expected()]));
        // The Maildir writer thread starts with the first local delivery, after the others
        // were lowered: it lowers itself to the same level.
        await deliverOne(serve);
        const after = await split(p.pid);
        assert.ok(
          after.helpers.length > helpers.length,
          `helper threads after delivery: ${after.helpers.length}`,
        );
        assert.deepEqual(new Set(after.helpers), new Set([c.expected()]));
      } finally {
        await p.stop();
        await rm(serve.dir, { recursive: true, force: true });
      }
    });
  }

  await t.test('two workers: the same in each worker', async () => {
    const serve = await serveDir('', 2);
    const p = await run(serve, true);
    try {
      // The primary logs each worker's pid once that worker is ready, its priorities set.
      const ready = await waitForLog(p, (r) => r.fields['role'] === 'primary' && r.msg === 'worker ready', 2);
      const workers = ready.map((r) => Number(r.fields['pid']));
      assert.equal(new Set(workers).size, 2, `workers: ${workers.join(' ')}`);
      for (const pid of workers) {
        const { loop, helpers } = await split(pid);
        assert.equal(loop, OWN_NICE, `worker ${pid}`);
        assert.ok(helpers.length >= 5, `worker ${pid}: helper threads: ${helpers.length}`);
        assert.deepEqual(new Set(helpers), new Set([below(10)]), `worker ${pid}`);
      }
    } finally {
      await p.stop();
      await rm(serve.dir, { recursive: true, force: true });
    }
  });
});
