/**
 * What workers share (docs/workers.md) beyond the queue: [server] workers = 2 run as an operator
 * runs it, the primary handing connections out in turn (NODE_CLUSTER_SCHED_POLICY=rr) so that
 * consecutive connections reach both workers. First a life with 3 workers leaves mail in
 * `<spool.dir>.2`; then with 2 workers: the queue gauges count that spool too (worker 0 drains
 * it); failed AUTHs spread over both workers lock the guesser out at exactly auth.max_failures
 * (the state store the primary holds); and the admin API's recent events, series and
 * destinations hold the mail of both workers; /readyz answers for both (worker 1's spool made
 * immutable with chattr(1) makes the server not ready). With [state] redis (a private
 * redis-server on loopback, test/helpers/redis.ts) the AUTH lock-out holds across workers too.
 * Test-only code: binds 127.0.0.1 only, writes only under os.tmpdir().
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { after, before, test } from 'node:test';
import { queueIdPartition } from '../src/queue/ids.js';
import { sendMessage } from './helpers/outbound.js';
import {
  freePort,
  prepareServeDir,
  sleep,
  startRoundRobinSterna,
  waitForLog,
  type LogRecord,
  type ServeDir,
  type SternaProcess,
} from './helpers/process.js';
import { requireRedis, startRedis } from './helpers/redis.js';
import { TestClient } from './helpers/smtp-client.js';

const READY_TIMEOUT_MS = 40_000;
const WAIT_MS = 30_000;
const USER = 'alice@sterna.test';
/** prepareServeDir gives every mailbox this password. */
const PASSWORD = 'unused';
const MAX_FAILURES = 4;
/** AUTH on the smtp listener without TLS (loopback tests), no delay, a lock-out at MAX_FAILURES. */
const AUTH_CONFIG =
  `[auth]\non_smtp_listener = true\nallow_plaintext = true\nmax_failures = ${MAX_FAILURES}\n` +
  `max_failures_per_network = 100\nfailure_delay_ms = 0\n`;

let serve: ServeDir;
let server: SternaProcess | undefined;
let admin = '';
/** Messages the 3-worker life left queued, by worker. */
const firstLife: string[] = [];

const workerReady = (r: LogRecord): boolean => r.fields['role'] === 'primary' && r.msg === 'worker ready';

const message = (i: number) => ({
  from: 'sender@client.test',
  to: ['someone@remote.test'],
  body: `Subject: shared ${i}\r\nMessage-ID: <s${i}@client.test>\r\n\r\nmessage ${i}\r\n`,
});

async function start(n: number, workers: number): Promise<SternaProcess> {
  // Connections handed out in turn: consecutive ones reach different workers.
  const p = await startRoundRobinSterna(serve, n, READY_TIMEOUT_MS);
  await waitForLog(p, workerReady, workers);
  return p;
}

/** GET on the admin API, as JSON. */
async function api<T>(route: string): Promise<T> {
  const res = await fetch(`${admin}${route}`);
  assert.equal(res.status, 200, route);
  return (await res.json()) as T;
}

/** Polls `read` until `done` holds (bounded); returns the last value. */
async function until<T>(read: () => Promise<T>, done: (v: T) => boolean): Promise<T> {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const v = await read();
    if (done(v) || Date.now() > deadline) return v;
    await sleep(100);
  }
}

before(async () => {
  serve = await prepareServeDir({
    prefix: 'sterna-workers-shared-',
    hostname: 'mx.sterna.test',
    domain: 'sterna.test',
    mailboxes: [USER],
    workers: 3,
  });
  const relayPort = await freePort(); // nothing listens: remote.test mail stays deferred
  const adminPort = await freePort();
  admin = `http://127.0.0.1:${adminPort}`;
  const base = await readFile(serve.configFile, 'utf8');
  const config = (workers: number): string =>
    base.replace(/workers = \d+/, `workers = ${workers}`) +
    `[relay]\ntrusted_networks = ["127.0.0.1/32"]\n` +
    `[transport]\n"remote.test" = { relay = "[127.0.0.1]:${relayPort}" }\n` +
    `[queue]\nfirst_retry_ms = 600000\n` +
    `[admin]\nlisten = ["127.0.0.1:${adminPort}"]\n` +
    AUTH_CONFIG;
  // --- a life with 3 workers: one message taken by each, left in the queue -------------------
  await writeFile(serve.configFile, config(3));
  server = await start(0, 3);
  for (let i = 0; i < 3; i++) firstLife.push(await sendMessage(serve.port, message(i)));
  assert.deepEqual(firstLife.map((q) => queueIdPartition(q, 3)).sort(), [0, 1, 2], 'one message per worker');
  assert.deepEqual(await server.stop(30_000), { code: 0, signal: null });
  // --- then 2 workers: worker 0 drains spool.2 -------------------------------------------------
  await writeFile(serve.configFile, config(2));
  server = await start(1, 2);
});

after(async () => {
  server?.kill('SIGKILL');
  await server?.exited;
  await rm(serve.dir, { recursive: true, force: true });
});

/** The AUTH PLAIN initial response for USER with `password`. */
const plain = (password: string): string => Buffer.from(`\0${USER}\0${password}`).toString('base64');

/** One AUTH PLAIN on a new connection (the next worker in turn); its reply. */
async function authOnce(port: number, creds: string): Promise<{ code: number; enhanced?: string }> {
  const c = await TestClient.connect(port);
  try {
    await c.expect(220);
    await c.cmd('EHLO client.test');
    const r = await c.cmd(`AUTH PLAIN ${creds}`);
    await c.cmd('QUIT');
    return { code: r.code, ...(r.enhanced !== undefined ? { enhanced: r.enhanced } : {}) };
  } finally {
    c.close();
  }
}

/** sterna_queue_messages summed over its states. */
async function queueGauge(): Promise<number> {
  const text = await (await fetch(`${admin}/metrics`)).text();
  return [...text.matchAll(/^sterna_queue_messages\{state="[a-z]+"\} (\d+)$/gm)].reduce(
    (n, m) => n + Number(m[1]),
    0,
  );
}

test('the queue gauges count the spool a worker drains for an earlier, larger worker count', async () => {
  // The three messages of the first life: in spool, spool.1 and spool.2 (drained by worker 0).
  assert.equal(await until(queueGauge, (n) => n === 3), 3);
});

test('failed AUTHs spread over both workers lock the client out at exactly auth.max_failures', async () => {
  await lockOutAcrossWorkers(serve.port, server!);
});

/**
 * auth.max_failures failed AUTHs, each on a new connection (so on both workers, in turn), then
 * the right password: refused with 454 4.7.0, on either worker.
 */
async function lockOutAcrossWorkers(port: number, p: SternaProcess): Promise<void> {
  for (let i = 0; i < MAX_FAILURES; i++)
    assert.deepEqual(
      await authOnce(port, plain(`wrong ${i}`)),
      { code: 535, enhanced: '5.7.8' },
      `failure ${i + 1}`,
    );
  // The failures reached both workers.
  const failed = await waitForLog(
    p,
    (r) => r.msg === 'auth' && r.fields['result'] === 'failed',
    MAX_FAILURES,
  );
  assert.deepEqual(
    [...new Set(failed.map((r) => r.fields['worker']))].sort(),
    [0, 1],
    'the failures were spread over both workers',
  );
  // The next attempt, on whichever worker, even with the right password: 454 4.7.0.
  assert.deepEqual(await authOnce(port, plain(PASSWORD)), { code: 454, enhanced: '4.7.0' });
  assert.deepEqual(await authOnce(port, plain(PASSWORD)), { code: 454, enhanced: '4.7.0' });
}

test('the admin API shows the mail of both workers: recent events, the series, the destinations', async () => {
  const qids: string[] = [];
  for (let i = 10; i < 14; i++) qids.push(await sendMessage(serve.port, message(i)));
  assert.deepEqual(
    [...new Set(qids.map((q) => queueIdPartition(q, 2)))].sort(),
    [0, 1],
    'both workers took mail',
  );
  const recent = await api<{ events: { qid: string; kind: string }[] }>('/api/recent?kind=queued&limit=100');
  assert.deepEqual(recent.events.map((e) => e.qid).sort(), [...qids].sort());
  // Paging: two pages of two, by the `next` of the first.
  const first = await api<{ events: { qid: string }[]; next: number | null }>(
    '/api/recent?kind=queued&limit=2',
  );
  assert.equal(first.events.length, 2);
  assert.notEqual(first.next, null);
  const second = await api<{ events: { qid: string }[] }>(
    `/api/recent?kind=queued&limit=2&before=${first.next}`,
  );
  assert.deepEqual([...first.events, ...second.events].map((e) => e.qid).sort(), [...qids].sort());
  // A message's story comes from the worker that took it.
  const ofWorker1 = qids.find((q) => queueIdPartition(q, 2) === 1)!;
  const story = await api<{ events: { kind: string }[]; inQueue: boolean }>(
    `/api/messages/${ofWorker1}/story`,
  );
  assert.equal(story.inQueue, true);
  assert.ok(
    story.events.some((e) => e.kind === 'queued'),
    JSON.stringify(story),
  );
  const series = await api<{ counts: { queued: number[] } }>('/api/stats/series');
  assert.equal(
    series.counts.queued.reduce((a, b) => a + b, 0),
    qids.length,
  );
  // Every deferred message of every spool: the 3 of the first life and the 4 new ones.
  const dest = await until(
    () => api<{ destinations: { domain: string; messages: number }[] }>('/api/destinations'),
    (d) => d.destinations.find((x) => x.domain === 'remote.test')?.messages === 7,
  );
  assert.equal(dest.destinations.find((x) => x.domain === 'remote.test')?.messages, 7, JSON.stringify(dest));
});

/** /readyz, without the token: its status and its JSON. */
async function readyz(): Promise<{
  status: number;
  body: { ready: boolean; reason?: string; detail?: string };
}> {
  const res = await fetch(`${admin}/readyz`);
  return {
    status: res.status,
    body: (await res.json()) as { ready: boolean; reason?: string; detail?: string },
  };
}

test('/readyz answers for every worker: a spool directory worker 1 cannot write makes the server not ready', async (t) => {
  assert.deepEqual(await readyz(), { status: 200, body: { ready: true } });
  // Root may write anywhere a mode forbids; an immutable directory it may not (chattr(1)).
  const spool1 = `${serve.dataDir}/spool.1`;
  try {
    execFileSync('chattr', ['+i', spool1], { stdio: 'pipe' });
  } catch (err) {
    if (process.env['CI'] === 'true') throw err;
    process.stderr.write(`*** /readyz worker test skipped: cannot chattr +i ${spool1} ***\n`);
    t.skip('chattr +i is not available here');
    return;
  }
  try {
    const r = await readyz();
    assert.equal(r.status, 503, JSON.stringify(r.body));
    assert.equal(r.body.ready, false);
    assert.equal(r.body.reason, 'spool-not-writable');
    const detail = r.body.detail ?? '';
    const expected = `worker 1: the spool directory ${spool1} is not writable (EPERM`;
    assert.ok(detail.startsWith(expected), detail);
  } finally {
    execFileSync('chattr', ['-i', spool1], { stdio: 'pipe' });
  }
  assert.deepEqual(await readyz(), { status: 200, body: { ready: true } });
});

test('/readyz: a worker whose event loop does not answer makes the server not ready, named', async () => {
  const running = server;
  assert.ok(running);
  const started = await waitForLog(running, (r) => workerReady(r) && r.fields['worker'] === 1);
  const pid = Number(started[started.length - 1]?.fields['pid']);
  assert.ok(pid > 0, JSON.stringify(started));
  // A stopped process answers nothing, as a worker stuck in a long synchronous task.
  process.kill(pid, 'SIGSTOP');
  try {
    const t0 = Date.now();
    const r = await readyz();
    const waited = Date.now() - t0;
    assert.equal(r.status, 503, JSON.stringify(r.body));
    assert.equal(r.body.reason, 'worker-not-answering');
    assert.ok((r.body.detail ?? '').startsWith('worker 1 did not answer within 2000 ms'), r.body.detail);
    assert.ok(waited >= 1900 && waited < 10_000, `answered after ${waited} ms`);
  } finally {
    process.kill(pid, 'SIGCONT');
  }
  assert.deepEqual(await readyz(), { status: 200, body: { ready: true } });
});

test(
  'with [state] redis, failed AUTHs spread over both workers lock the client out at exactly auth.max_failures',
  { skip: requireRedis().skip },
  async (t) => {
    const redis = await startRedis();
    const dir = await prepareServeDir({
      prefix: 'sterna-workers-redis-',
      hostname: 'mx.sterna.test',
      domain: 'sterna.test',
      mailboxes: [USER],
      workers: 2,
    });
    const stopped: SternaProcess[] = [];
    t.after(async () => {
      for (const q of stopped) {
        q.kill('SIGKILL');
        await q.exited;
      }
      await redis.stop();
      await rm(dir.dir, { recursive: true, force: true });
    });
    await writeFile(
      dir.configFile,
      `${await readFile(dir.configFile, 'utf8')}${AUTH_CONFIG}[state]\nredis = "${redis.url}"\n`,
    );
    const p = await startRoundRobinSterna(dir, 'redis', READY_TIMEOUT_MS);
    stopped.push(p);
    await waitForLog(p, workerReady, 2);
    await lockOutAcrossWorkers(dir.port, p);
    assert.deepEqual(await p.stop(30_000), { code: 0, signal: null });
  },
);
