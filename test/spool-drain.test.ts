/**
 * Issue 3: a spool of 100,000 messages starts and drains, with a bounded active window.
 * The spool is filled through the spool API (fsync off: only the filling is sped up), then a
 * real server opens it, recovers every message and delivers (transport "discard") all of them.
 */
import assert from 'node:assert/strict';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import type { Envelope } from '../src/message/envelope.js';
import { Spool } from '../src/queue/spool.js';
import { startTestServer } from './helpers/server.js';

const COUNT = 100_000;

test('a spool of 100,000 messages opens, is recovered whole and drains', { timeout: 240_000 }, async (t) => {
  const dataDir = await mkdtemp(path.join(tmpdir(), 'sterna-drain-'));
  const { spool } = await Spool.open({
    dir: path.join(dataDir, 'spool'),
    segmentBytes: 64 * 1024 * 1024,
    fsync: false,
  });
  const body = Buffer.from('Subject: drain\r\n\r\n' + 'x'.repeat(200) + '\r\n');
  const envelope = (i: number): Envelope => ({
    sender: `s${i}@example.org`,
    mailParams: {},
    recipients: [{ address: `r${i % 97}@sink.test`, params: {} }],
    client: { ip: '127.0.0.1', port: 1, helo: 'fill.test' },
    listener: 'smtp',
    receivedAt: Date.now(),
  });
  const started = Date.now();
  for (let i = 0; i < COUNT; i += 500) {
    await Promise.all(
      Array.from({ length: Math.min(500, COUNT - i) }, async (_, k) => {
        const w = spool.begin();
        await w.write(body);
        await w.commit(envelope(i + k));
      }),
    );
  }
  await spool.close();
  t.diagnostic(`filled ${COUNT} messages in ${Date.now() - started} ms`);

  const openStart = Date.now();
  const server = await startTestServer({
    dataDir,
    top: 'transport = { "sink.test" = "discard" }',
    toml: '[spool]\nmax_active_messages = 200\n',
  });
  try {
    t.diagnostic(`server started (spool recovered) in ${Date.now() - openStart} ms`);
    assert.equal(server.app.recovery.messages, COUNT);
    const drainStart = Date.now();
    let peakHeap = 0;
    const deadline = Date.now() + 200_000;
    while (server.app.spool.size > 0 && Date.now() < deadline) {
      peakHeap = Math.max(peakHeap, process.memoryUsage().heapUsed);
      await new Promise((r) => setTimeout(r, 100));
    }
    t.diagnostic(
      `drained in ${Date.now() - drainStart} ms; peak heap ${(peakHeap / 1048576).toFixed(0)} MiB (test process and server)`,
    );
    assert.equal(server.app.spool.size, 0);
  } finally {
    await server.stop({ remove: true });
  }
});
