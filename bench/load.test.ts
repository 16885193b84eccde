/**
 * Tests for the benchmark's own measuring tools: the message builder, the percentile, the load
 * generators' reply reading and error counting (against a scripted server on 127.0.0.1), the
 * new-connection-per-message generator with STARTTLS against a real Sterna on loopback (counts
 * exact, sessions resumed), and the spool observer that decides whether Sterna delivered what it
 * accepted.
 */
import assert from 'node:assert/strict';
import { appendFile, mkdtemp, readdir, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import type { Envelope } from '../src/message/envelope.js';
import { Spool } from '../src/queue/spool.js';
import { maildirMessages, waitForMessages } from '../test/helpers/maildir.js';
import { dataDirsWithCert, startTestServer } from '../test/helpers/server.js';
import { mergeResults, runConnectLoad, runConnectLoadProcesses, split } from './connect-load.js';
import { buildMessage, runLoad } from './load.js';
import { percentile } from './machine.js';
import { countLiveMessages, LiveMessageCounter } from './sterna.js';
import { makeCert } from './tls-certs.js';
import { startTlsFloor } from './tls-floor.js';

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

/** The envelope of the messages the spool observer tests commit. */
const spoolEnvelope = (): Envelope => ({
  sender: 'a@x.test',
  mailParams: {},
  recipients: [{ address: 'b@bench.test', params: {} }],
  client: { ip: '127.0.0.1', port: 1, helo: 'x.test' },
  listener: 'smtp',
  receivedAt: Date.now(),
});

test('countLiveMessages: a committed message is live until its DONE record', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'sterna-bench-test-'));
  const { spool } = await Spool.open({ dir, segmentBytes: 1024 * 1024, fsync: false });
  try {
    assert.equal(countLiveMessages(dir), 0);
    const qids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const w = spool.begin();
      await w.write(Buffer.from('Subject: t\r\n\r\nbody\r\n'));
      await w.commit(spoolEnvelope());
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

test('LiveMessageCounter: one counter follows commits, DONE records and a compaction that deletes segments', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'sterna-bench-test-'));
  // Small segments: the 40 messages of 4 KiB span several, and compaction has some to delete.
  const { spool } = await Spool.open({ dir, segmentBytes: 32 * 1024, fsync: false });
  try {
    const counter = new LiveMessageCounter(dir);
    assert.equal(counter.count(), 0);
    const qids: string[] = [];
    for (let i = 0; i < 40; i++) {
      const w = spool.begin();
      await w.write(Buffer.from(`Subject: t${i}\r\n\r\n${'x'.repeat(4096)}\r\n`));
      await w.commit(spoolEnvelope());
      qids.push(w.qid);
      if (i === 19) assert.equal(counter.count(), 20, 'counted halfway, then again from there');
    }
    assert.equal(counter.count(), 40);
    for (const qid of qids.slice(0, 30)) await spool.done(qid);
    assert.equal(counter.count(), 10);
    const { deletedSegments } = await spool.compact();
    assert.ok(deletedSegments > 0, 'the compaction deleted segments the counter had read');
    assert.equal(counter.count(), 10);
    assert.equal(countLiveMessages(dir), 10);
    for (const qid of qids.slice(30)) await spool.done(qid);
    assert.equal(counter.count(), 0);
  } finally {
    await spool.close();
    await rm(dir, { recursive: true, force: true });
  }
});

test('LiveMessageCounter: bodies larger than its read window, and a tail still being written', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'sterna-bench-test-'));
  const { spool } = await Spool.open({ dir, segmentBytes: 64 * 1024 * 1024, fsync: false });
  try {
    const counter = new LiveMessageCounter(dir);
    const qids: string[] = [];
    for (let i = 0; i < 30; i++) {
      // 100 KiB and 1 KiB bodies in turn: the counter steps over the large CHUNKs unread.
      const w = spool.begin();
      await w.write(Buffer.from(`Subject: t${i}\r\n\r\n${'x'.repeat(i % 2 === 0 ? 100 * 1024 : 1024)}\r\n`));
      await w.commit(spoolEnvelope());
      qids.push(w.qid);
      if (i === 14) assert.equal(counter.count(), 15);
    }
    for (const qid of qids.slice(0, 12)) await spool.done(qid);
    assert.equal(counter.count(), 18);
    assert.equal(countLiveMessages(dir), 18);
  } finally {
    await spool.close();
  }
  try {
    // The start of a record whose rest is not written yet: counted once it is whole, not before.
    const segments = join(dir, 'segments');
    const [name] = (await readdir(segments)).filter((n) => n.endsWith('.log'));
    assert.ok(name !== undefined, 'a segment file');
    await appendFile(join(segments, name), Buffer.from([1, 2, 3, 4, 5]));
    assert.equal(countLiveMessages(dir), 18);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('split: near-equal parts that add up', () => {
  assert.deepEqual(split(20, 2), [10, 10]);
  assert.deepEqual(split(7, 3), [3, 2, 2]);
  assert.deepEqual(split(1, 2), [1, 0]);
});

test('runConnectLoad: a new connection per message, every message counted (scripted server)', async () => {
  const { server, port, dots } = await scriptedServer('250 2.1.5 ok');
  let connections = 0;
  server.on('connection', () => connections++);
  try {
    const r = await runConnectLoad({
      host: '127.0.0.1',
      port,
      sessions: 3,
      messages: 10,
      bodyBytes: 500,
      from: 'a@x.test',
      to: 'b@y.test',
      tls: 'none',
      timeoutMs: 10_000,
    });
    assert.equal(r.accepted, 10);
    assert.equal(r.failed, 0);
    assert.equal(dots(), 10);
    assert.equal(connections, 10);
    assert.equal(r.handshakes, 0);
    assert.equal(r.latenciesMs.length, 10);
    assert.ok(r.p50Ms <= r.p99Ms && r.p99Ms <= r.maxMs);
  } finally {
    server.close();
  }
});

test('runConnectLoad: STARTTLS required but not offered is a failure per message', async () => {
  const { server, port, dots } = await scriptedServer('250 2.1.5 ok');
  try {
    const r = await runConnectLoad({
      host: '127.0.0.1',
      port,
      sessions: 2,
      messages: 4,
      bodyBytes: 100,
      from: 'a@x.test',
      to: 'b@y.test',
      tls: 'full',
      timeoutMs: 10_000,
    });
    assert.equal(r.accepted, 0);
    assert.equal(r.failed, 4);
    assert.equal(r.firstError, 'EHLO: no STARTTLS offered');
    assert.equal(dots(), 0);
  } finally {
    server.close();
  }
});

test('mergeResults: counts add up, percentiles over all latencies, time from first start to last end', () => {
  const part = (lat: number[], start: number, end: number) => ({
    accepted: lat.length,
    failed: 0,
    firstError: '',
    seconds: (end - start) / 1000,
    messagesPerSecond: 0,
    p50Ms: 0,
    p99Ms: 0,
    maxMs: 0,
    handshakes: lat.length,
    resumed: 1,
    tlsVersion: 'TLSv1.3',
    cipher: 'X',
    serverKey: 'P-256',
    startedAtMs: start,
    endedAtMs: end,
    latenciesMs: lat,
  });
  const m = mergeResults([part([1, 2, 3], 1000, 2000), part([4, 5], 1500, 3000)]);
  assert.equal(m.accepted, 5);
  assert.equal(m.handshakes, 5);
  assert.equal(m.resumed, 2);
  assert.equal(m.seconds, 2);
  assert.equal(m.messagesPerSecond, 2.5);
  assert.equal(m.p50Ms, 3);
  assert.equal(m.maxMs, 5);
});

test('the TLS floor: every message answered over its own full handshake, plain and large bodies too', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'sterna-bench-test-'));
  const floor = await startTlsFloor(await makeCert(dir, 'ecdsa-p256'));
  try {
    const options = {
      host: '127.0.0.1',
      port: floor.port,
      sessions: 3,
      from: 'sender@source.example',
      to: 'rcpt@floor.test',
      timeoutMs: 30_000,
    };
    const full = await runConnectLoad({ ...options, messages: 9, bodyBytes: 2000, tls: 'full' });
    assert.equal(full.firstError, '');
    assert.equal(full.accepted, 9);
    assert.equal(full.handshakes, 9);
    assert.equal(full.serverKey, 'P-256');
    // A body larger than a TLS record and a socket read: the dot arrives after many reads.
    const large = await runConnectLoad({ ...options, messages: 3, bodyBytes: 300 * 1024, tls: 'full' });
    assert.equal(large.firstError, '');
    assert.equal(large.accepted, 3);
    const plain = await runConnectLoad({ ...options, messages: 4, bodyBytes: 100, tls: 'none' });
    assert.equal(plain.firstError, '');
    assert.equal(plain.accepted, 4);
  } finally {
    await floor.stop();
    await rm(dir, { recursive: true, force: true });
  }
});

/**
 * A real Sterna with STARTTLS on loopback: every message on its own connection and its own TLS
 * handshake; with `resume`, every connection after a session's first resumes its TLS session.
 * Every message must be in the Maildir, no more, no fewer.
 */
test('runConnectLoad against Sterna: STARTTLS full and resumed, counts exact in the Maildir', async () => {
  const [dataDir] = await dataDirsWithCert(1);
  const srv = await startTestServer({
    ...(dataDir === undefined ? {} : { dataDir }),
    users: [{ address: 'rcpt@sterna.test', password: 'bench-password-1' }],
  });
  try {
    const options = {
      host: '127.0.0.1',
      port: srv.ports.smtp,
      sessions: 3,
      bodyBytes: 2000,
      from: 'sender@source.example',
      to: 'rcpt@sterna.test',
      timeoutMs: 30_000,
    };
    const full = await runConnectLoad({ ...options, messages: 9, tls: 'full' });
    assert.equal(full.firstError, '');
    assert.equal(full.accepted, 9);
    assert.equal(full.handshakes, 9);
    assert.equal(full.resumed, 0);
    assert.match(full.tlsVersion, /^TLSv1\.[23]$/);
    assert.match(full.serverKey, /^(RSA-\d+|P-\d+)$/);
    const resumed = await runConnectLoad({ ...options, messages: 12, tls: 'resume' });
    assert.equal(resumed.firstError, '');
    assert.equal(resumed.accepted, 12);
    assert.equal(resumed.handshakes, 12);
    // Each session's first connection has no session to offer; every later one resumes.
    assert.equal(resumed.resumed, 12 - options.sessions);
    // Two child processes sharing the load, plain SMTP.
    const plain = await runConnectLoadProcesses({ ...options, messages: 6, tls: 'none' }, 2);
    assert.equal(plain.firstError, '');
    assert.equal(plain.accepted, 6);
    assert.equal(plain.handshakes, 0);
    const all = 9 + 12 + 6;
    assert.equal((await waitForMessages(srv.dataDir, 'sterna.test', 'rcpt', all, 20_000)).length, all);
    assert.equal((await maildirMessages(srv.dataDir, 'sterna.test', 'rcpt')).length, all);
  } finally {
    await srv.stop({ remove: true });
  }
});
