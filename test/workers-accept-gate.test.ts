/**
 * Which workers take new connections (cluster/accept-gate.ts, docs/workers.md "Which workers take
 * connections"). First the listeners' pause and resume on an in-process server; then `sterna
 * serve` with two workers and the default [server] connections_per_worker = 2, the primary
 * handing connections out in turn (NODE_CLUSTER_SCHED_POLICY=rr, which without the gate
 * alternates workers on consecutive connections): one session at a time stays on worker 0; eight
 * connections held open bring worker 1 in; once they are gone and the load has stayed low,
 * worker 0 takes everything again.
 * Test-only code: binds 127.0.0.1 only, writes only under os.tmpdir().
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';
import { LOAD_REPORT_MS, SCALE_DOWN_MS } from '../src/cluster/accept-gate.js';
import { queueIdPartition } from '../src/queue/ids.js';
import { sendMessage } from './helpers/outbound.js';
import { capturedLog } from './helpers/outbound-fixture.js';
import {
  prepareServeDir,
  sleep,
  startRoundRobinSterna,
  waitForLog,
  type SternaProcess,
  killThenRemove,
} from './helpers/process.js';
import { startTestServer } from './helpers/server.js';
import { TestClient } from './helpers/smtp-client.js';

/** Resolves true when a TCP connection to the port is accepted and greeted, false when refused. */
function greets(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    socket.setTimeout(5000, () => socket.destroy());
    socket.once('data', (d) => {
      socket.destroy();
      resolve(d.toString('latin1').startsWith('220'));
    });
    socket.once('error', () => resolve(false));
    socket.once('close', () => resolve(false));
  });
}

test('listeners pause without touching open sessions, and listen again on the same port', async () => {
  const server = await startTestServer();
  try {
    const port = server.ports.smtp;
    const open = await TestClient.connect(port);
    await open.expect(220);
    await server.app.listeners.setAccepting(false);
    assert.equal(server.app.listeners.accepting, false);
    assert.equal(await greets(port), false, 'one process: nobody else listens, so refused');
    assert.equal((await open.cmd('EHLO client.test')).code, 250, 'the open session goes on');
    await server.app.listeners.setAccepting(true);
    assert.equal(await greets(port), true, 'listening again on the same port');
    assert.equal((await open.cmd('QUIT')).code, 221);
    open.close();
    // The average open connections since the last look: about one while one was open.
    server.app.listeners.takeOccupancy();
    const held = await TestClient.connect(port);
    await held.expect(220);
    await sleep(200);
    const occupancy = server.app.listeners.takeOccupancy();
    held.close();
    assert.ok(occupancy > 0.8 && occupancy <= 1, `occupancy ${occupancy}`);
  } finally {
    await server.stop({ remove: true });
  }
});

test('a listener that cannot listen again after a pause says so once', async () => {
  const { log, lines } = capturedLog('info');
  const server = await startTestServer({ log });
  const squatter = net.createServer();
  try {
    const port = server.ports.smtp;
    await server.app.listeners.setAccepting(false);
    // Someone else takes the port while the listener is paused.
    await new Promise<void>((resolve, reject) => {
      squatter.once('error', reject);
      squatter.listen({ host: '127.0.0.1', port }, resolve);
    });
    await server.app.listeners.setAccepting(true);
    const errors = lines.filter((l) => l['level'] === 50);
    assert.deepEqual(
      errors.map((l) => l['msg']),
      ['cannot listen again'],
      JSON.stringify(errors),
    );
    assert.equal((errors[0]?.['err'] as { code?: string } | undefined)?.code, 'EADDRINUSE');
  } finally {
    squatter.close();
    await server.stop({ remove: true });
  }
});

test(
  'two workers: one session at a time stays on worker 0; concurrent connections bring worker 1 in',
  {
    timeout: 120_000,
  },
  async (t) => {
    const serve = await prepareServeDir({
      prefix: 'sterna-accept-gate-',
      hostname: 'mx.sterna.test',
      domain: 'sterna.test',
      mailboxes: ['box@sterna.test'],
      workers: 2,
      connectionsPerWorker: 2,
    });
    const started: SternaProcess[] = [];
    // One hook, in this order: the server stops writing into the directory before it goes.
    t.after(() => killThenRemove(started, serve.dir));
    const server = await startRoundRobinSterna(serve, 0, 40_000);
    started.push(server);
    await waitForLog(server, (r) => r.fields['role'] === 'primary' && r.msg === 'worker ready', 2);
    const send = async (i: number): Promise<number> => {
      const qid = await sendMessage(serve.port, {
        from: 'sender@client.test',
        to: ['box@sterna.test'],
        body: `Subject: gate ${i}\r\n\r\nmessage ${i}\r\n`,
      });
      return queueIdPartition(qid, 2);
    };
    // Let the start-up settle: the gate pauses worker 1 once both are ready.
    await sleep(LOAD_REPORT_MS * 2);

    const alone: number[] = [];
    for (let i = 0; i < 10; i++) alone.push(await send(i));
    assert.deepEqual(alone, new Array<number>(10).fill(0), 'one session at a time: all on worker 0');

    // Eight connections held open: twice connections_per_worker on worker 0 brings worker 1 in.
    const held: TestClient[] = [];
    try {
      for (let i = 0; i < 8; i++) {
        const c = await TestClient.connect(serve.port);
        await c.expect(220);
        held.push(c);
      }
      const busy: number[] = [];
      for (let i = 0; i < 20 && !busy.includes(1); i++) busy.push(await send(100 + i));
      assert.ok(busy.includes(1), `with 8 connections open, worker 1 takes some too: ${busy.join(' ')}`);
    } finally {
      for (const c of held) c.close();
    }

    // Load gone: after SCALE_DOWN_MS (and a report or two) worker 0 takes everything again.
    await sleep(SCALE_DOWN_MS + LOAD_REPORT_MS * 4);
    const after: number[] = [];
    for (let i = 0; i < 10; i++) after.push(await send(200 + i));
    assert.deepEqual(after, new Array<number>(10).fill(0), 'light again: all on worker 0');
  },
);
