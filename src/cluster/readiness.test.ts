import assert from 'node:assert/strict';
import { test } from 'node:test';
import { IpcChannel, IpcError } from './ipc.js';
import {
  clusterReadiness,
  readinessFromPrimary,
  WORKER_READY_ANSWER_MS,
  PRIMARY_READY_ANSWER_MS,
  type ReadinessSource,
} from './readiness.js';

const ready = (index: number): ReadinessSource => ({ index, ask: () => Promise.resolve({ ready: true }) });

test('ready when every running worker is; each is asked with the worker deadline', async () => {
  const asked: number[] = [];
  const w = (index: number): ReadinessSource => ({
    index,
    ask: (ms) => {
      asked.push(ms);
      return Promise.resolve({ ready: true });
    },
  });
  assert.deepEqual(await clusterReadiness([w(0), w(1), w(2)]), { ready: true });
  assert.deepEqual(asked, [WORKER_READY_ANSWER_MS, WORKER_READY_ANSWER_MS, WORKER_READY_ANSWER_MS]);
});

test('one worker not ready makes the server not ready, with that worker named', async () => {
  const full: ReadinessSource = {
    index: 1,
    ask: () =>
      Promise.resolve({
        ready: false,
        reason: 'spool-full',
        detail: 'the file system of /var/spool.1 is full',
      }),
  };
  assert.deepEqual(await clusterReadiness([ready(0), full, ready(2)]), {
    ready: false,
    reason: 'spool-full',
    detail: 'worker 1: the file system of /var/spool.1 is full',
  });
});

test('of several workers not ready, the first by index answers', async () => {
  const notReady = (index: number, reason: string): ReadinessSource => ({
    index,
    ask: () => Promise.resolve({ ready: false, reason, detail: `why ${index}` }),
  });
  const state = await clusterReadiness([
    ready(0),
    notReady(1, 'spool-not-writable'),
    notReady(2, 'draining'),
  ]);
  assert.deepEqual(state, { ready: false, reason: 'spool-not-writable', detail: 'worker 1: why 1' });
});

test('a worker that does not answer is not ready: worker-not-answering, named, with the deadline', async () => {
  const silent: ReadinessSource = {
    index: 1,
    ask: (ms) => Promise.reject(new IpcError(`no answer to a ready request within ${ms} ms`)),
  };
  const state = await clusterReadiness([ready(0), silent]);
  assert.equal(state.ready, false);
  assert.equal(state.reason, 'worker-not-answering');
  assert.match(state.detail ?? '', /^worker 1 did not answer within 2000 ms \(no answer to a ready request/);
});

test('an answer of the wrong shape counts as no answer', async () => {
  const odd: ReadinessSource = { index: 0, ask: () => Promise.resolve({ ready: 'yes' }) };
  const state = await clusterReadiness([odd]);
  assert.equal(state.reason, 'worker-not-answering');
  assert.match(state.detail ?? '', /^worker 0 did not answer/);
});

test('a restarting worker is left out; with none running the server is starting', async () => {
  assert.deepEqual(await clusterReadiness([ready(0), { index: 1, ask: null }]), { ready: true });
  assert.deepEqual(
    await clusterReadiness([
      { index: 0, ask: null },
      { index: 1, ask: null },
    ]),
    {
      ready: false,
      reason: 'starting',
      detail: 'no worker is running yet',
    },
  );
});

test("worker 0 passes the primary's answer on, and is not ready when the primary is silent", async () => {
  const seen: number[] = [];
  const answer = await readinessFromPrimary((ms) => {
    seen.push(ms);
    return Promise.resolve({ ready: false, reason: 'draining', detail: 'worker 0: shutting down' });
  });
  assert.deepEqual(answer, { ready: false, reason: 'draining', detail: 'worker 0: shutting down' });
  assert.deepEqual(seen, [PRIMARY_READY_ANSWER_MS]);
  const silent = await readinessFromPrimary(() => Promise.reject(new IpcError('the other process is gone')));
  assert.equal(silent.reason, 'worker-not-answering');
  assert.match(
    silent.detail ?? '',
    /^the primary process did not answer within 3000 ms \(the other process is gone\)/,
  );
});

test('an IPC request given its own deadline fails after it, not after the channel timeout', async () => {
  // The other end never answers: the messages go nowhere.
  const ipc = new IpcChannel(() => undefined, 60_000);
  // The channel's timers do not hold the process open; this one does, for the test's sake.
  const hold = setTimeout(() => undefined, 10_000);
  const t0 = performance.now();
  await assert.rejects(ipc.request('ready', null, 50), (err: unknown) => {
    assert.ok(err instanceof IpcError);
    assert.equal(err.message, 'no answer to a ready request within 50 ms');
    return true;
  });
  const waited = performance.now() - t0;
  clearTimeout(hold);
  assert.ok(waited >= 45 && waited < 5_000, `waited ${waited} ms`);
});

test('a ready request over IPC reaches the handler and comes back', async () => {
  // Two ends wired to each other, as the primary and a worker over the cluster's channel.
  const link: { b?: IpcChannel } = {};
  const a = new IpcChannel((m) => link.b?.receive(m));
  const b = new IpcChannel((m) => a.receive(m));
  link.b = b;
  b.handle('ready', () => Promise.resolve({ ready: false, reason: 'spool-full', detail: 'full' }));
  const state = await clusterReadiness([{ index: 3, ask: (ms) => a.request('ready', null, ms) }]);
  assert.deepEqual(state, { ready: false, reason: 'spool-full', detail: 'worker 3: full' });
});
