/**
 * Tests for the benchmark's own measuring tools: the message builder, the percentile, the load
 * generator's reply reading and error counting (against a scripted server on 127.0.0.1), and the
 * spool observer that decides whether Sterna delivered what it accepted.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import type { Envelope } from '../src/message/envelope.js';
import { Spool } from '../src/queue/spool.js';
import { buildMessage, runLoad } from './load.js';
import { percentile } from './machine.js';
import { countLiveMessages } from './sterna.js';

test('buildMessage: payload of exactly the requested size, lines within RFC 5321 4.5.3.1.6, no dot-stuffing needed', () => {
  for (const size of [1024, 100 * 1024, 77]) {
    const text = buildMessage(size, 'a@x.test', 'b@y.test').toString('latin1');
    assert.ok(text.endsWith('\r\n.\r\n'));
    const body = text.slice(text.indexOf('\r\n\r\n') + 4, -3);
    assert.equal(body.length, size);
    const lines = text.split('\r\n').slice(0, -2);
    assert.equal(
      lines.every((l) => l.length <= 998 && !l.startsWith('.')),
      true,
    );
  }
});

test('percentile: nearest rank', () => {
  const v = Array.from({ length: 100 }, (_, i) => i + 1);
  assert.equal(percentile(v, 0.5), 50);
  assert.equal(percentile(v, 0.99), 99);
  assert.equal(percentile([7], 0.99), 7);
  assert.equal(percentile([], 0.5), 0);
});

/** A scripted SMTP server: multi-line EHLO, and RCPT answered by rcptReply. */
async function scriptedServer(
  rcptReply: string,
): Promise<{ server: Server; port: number; dots: () => number }> {
  let dots = 0;
  const server = createServer((socket) => {
    let inData = false;
    let buffer = '';
    socket.write('220 fake ESMTP\r\n');
    socket.on('data', (chunk: Buffer) => {
      buffer += chunk.toString('latin1');
      let at: number;
      while ((at = buffer.indexOf('\r\n')) >= 0) {
        const line = buffer.slice(0, at);
        buffer = buffer.slice(at + 2);
        if (inData) {
          if (line === '.') {
            inData = false;
            dots++;
            socket.write('250 2.0.0 queued\r\n');
          }
        } else if (line.startsWith('EHLO')) socket.write('250-fake\r\n250-PIPELINING\r\n250 8BITMIME\r\n');
        else if (line.startsWith('MAIL')) socket.write('250 2.1.0 ok\r\n');
        else if (line.startsWith('RCPT')) socket.write(`${rcptReply}\r\n`);
        else if (line === 'DATA') {
          inData = true;
          socket.write('354 go ahead\r\n');
        } else if (line === 'QUIT') socket.end('221 bye\r\n');
        else if (line === 'RSET') socket.write('250 ok\r\n');
      }
    });
    socket.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;
  return { server, port, dots: () => dots };
}

test('runLoad: every message gets its 250 after the dot; sessions share the total', async () => {
  const { server, port, dots } = await scriptedServer('250 2.1.5 ok');
  try {
    const r = await runLoad({
      host: '127.0.0.1',
      port,
      sessions: 3,
      messages: 10,
      bodyBytes: 2000,
      from: 'a@x.test',
      to: 'b@y.test',
      timeoutMs: 10_000,
    });
    assert.equal(r.accepted, 10);
    assert.equal(r.failed, 0);
    assert.equal(dots(), 10);
    assert.ok(r.p50Ms <= r.p99Ms && r.p99Ms <= r.maxMs);
  } finally {
    server.close();
  }
});

test('runLoad: a refused RCPT counts as a failure and keeps the server reply', async () => {
  const { server, port } = await scriptedServer('550 5.1.1 no such user');
  try {
    const r = await runLoad({
      host: '127.0.0.1',
      port,
      sessions: 2,
      messages: 4,
      bodyBytes: 100,
      from: 'a@x.test',
      to: 'b@y.test',
      timeoutMs: 10_000,
    });
    assert.equal(r.accepted, 0);
    assert.equal(r.failed, 2);
    assert.equal(r.firstError, 'RCPT: expected 250, got 550 5.1.1 no such user');
  } finally {
    server.close();
  }
});

test('countLiveMessages: a committed message is live until its DONE record', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'sterna-bench-test-'));
  const { spool } = await Spool.open({ dir, segmentBytes: 1024 * 1024, fsync: false });
  try {
    const envelope: Envelope = {
      sender: 'a@x.test',
      mailParams: {},
      recipients: [{ address: 'b@bench.test', params: {} }],
      client: { ip: '127.0.0.1', port: 1, helo: 'x.test' },
      listener: 'smtp',
      receivedAt: Date.now(),
    };
    assert.equal(countLiveMessages(dir), 0);
    const qids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const w = spool.begin();
      await w.write(Buffer.from('Subject: t\r\n\r\nbody\r\n'));
      await w.commit(envelope);
      qids.push(w.qid);
    }
    assert.equal(countLiveMessages(dir), 3);
    await spool.done(qids[1] ?? '');
    assert.equal(countLiveMessages(dir), 2);
  } finally {
    await spool.close();
    await rm(dir, { recursive: true, force: true });
  }
});
