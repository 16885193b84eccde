/**
 * Hostile and broken input against the running server (untrusted clients, DESIGN rules 6 and 7):
 * NUL bytes, an endless line, binary garbage, an HTTP request, and clients that vanish in the
 * middle of a message. Each case is followed by a fresh connection that must still be greeted
 * and be able to deliver; a message cut off mid-transfer must leave nothing behind, neither in
 * a mailbox nor in the spool.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, test } from 'node:test';
import { maildirMessages, waitForMessages } from './helpers/maildir.js';
import { TestClient, type TestReply } from './helpers/smtp-client.js';
import { startTestServer, TEST_HOSTNAME, type TestServer } from './helpers/server.js';

let server: TestServer;

before(async () => {
  server = await startTestServer({
    users: [
      { address: 'alice@sterna.test', password: 'pw-alice-1' },
      { address: 'bob@sterna.test', password: 'pw-bob-1' },
    ],
  });
});

after(async () => {
  await server.stop({ remove: true });
});

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

let healthChecks = 0;

/** A new connection is greeted and delivers a message to bob (the mailbox the bad cases never use). */
async function assertStillServing(): Promise<void> {
  const c = await TestClient.connect(server.ports.smtp);
  const greeting = await c.expect(220);
  assert.equal(greeting.text, `${TEST_HOSTNAME} ESMTP Sterna ready`);
  await c.cmd('EHLO client.example').then((r) => assert.equal(r.code, 250));
  await c.cmd('MAIL FROM:<health@example.org>').then((r) => assert.equal(r.code, 250));
  await c.cmd('RCPT TO:<bob@sterna.test>').then((r) => assert.equal(r.code, 250));
  await c.cmd('DATA').then((r) => assert.equal(r.code, 354));
  healthChecks++;
  c.send(`Subject: health ${healthChecks}\r\n\r\nstill fine\r\n.\r\n`);
  await c.expect(250, '2.0.0');
  await c.cmd('QUIT');
  c.close();
  const msgs = await waitForMessages(server.dataDir, 'sterna.test', 'bob', healthChecks);
  assert.equal(msgs.length, healthChecks);
}

/** Every reply until the server closes (bounded by the client's own timeout). */
async function drain(c: TestClient): Promise<TestReply[]> {
  const out: TestReply[] = [];
  for (;;) {
    const r = await c.read();
    if (r === null) return out;
    out.push(r);
  }
}

/** Waits until deliveries settle, then checks that alice got nothing and the spool holds no message. */
async function assertNothingLeft(): Promise<void> {
  await sleep(200);
  await server.app.manager.whenIdle();
  assert.equal((await maildirMessages(server.dataDir, 'sterna.test', 'alice')).length, 0);
  assert.equal(server.app.spool.size, 0);
}

/** A PRNG with a fixed seed (xorshift32), so the garbage is the same on every run. */
function garbage(bytes: number, seed: number): Buffer {
  const out = Buffer.alloc(bytes);
  let x = seed >>> 0;
  for (let i = 0; i < bytes; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

test('NUL bytes in a command get 500 5.5.2 and the session goes on; the server still serves', async () => {
  const c = await TestClient.connect(server.ports.smtp);
  await c.expect(220);
  c.send(Buffer.from('NO\x00OP\r\nEHLO a\x00b\r\n', 'latin1'));
  const r1 = await c.expect(500, '5.5.2');
  assert.equal(r1.text, '5.5.2 NUL character in command');
  await c.expect(500, '5.5.2');
  await c.cmd('NOOP').then((r) => assert.equal(r.code, 250));
  c.close();
  await assertStillServing();
});

test('a 1 MB line without CRLF gets one 500 5.5.2, the rest of it is discarded, and the session resynchronises on the next CRLF', async () => {
  const c = await TestClient.connect(server.ports.smtp);
  await c.expect(220);
  const line = Buffer.alloc(1024 * 1024, 0x41);
  c.send(line);
  const r = await c.expect(500, '5.5.2');
  assert.match(r.text, /^5\.5\.2 Line too long/);
  c.send('\r\nNOOP\r\n');
  const noop = await c.expect(250, '2.0.0');
  assert.equal(noop.text, '2.0.0 Ok');
  c.close();
  await assertStillServing();
});

test('a 1 MB line in the middle of DATA is refused at the end with 550 5.6.0, nothing delivered', async () => {
  const c = await TestClient.connect(server.ports.smtp);
  await c.expect(220);
  await c.cmd('EHLO client.example');
  await c.cmd('MAIL FROM:<x@example.org>');
  await c.cmd('RCPT TO:<alice@sterna.test>').then((r) => assert.equal(r.code, 250));
  await c.cmd('DATA').then((r) => assert.equal(r.code, 354));
  c.send('Subject: long\r\n\r\n');
  c.send(Buffer.alloc(1024 * 1024, 0x41));
  c.send('\r\n.\r\n');
  const r = await c.expect(550, '5.6.0');
  assert.match(r.text, /line longer than 1000 octets/);
  await c.cmd('NOOP').then((x) => assert.equal(x.code, 250));
  c.close();
  await assertNothingLeft();
  await assertStillServing();
});

test('64 KiB of binary garbage: only well-formed error replies, then 421 4.7.0 at the error limit and the close', async () => {
  const c = await TestClient.connect(server.ports.smtp);
  await c.expect(220);
  c.send(garbage(64 * 1024, 0x5eed1234));
  const replies = await drain(c);
  assert.ok(replies.length >= 2, `replies: ${replies.length}`);
  const last = replies[replies.length - 1]!;
  assert.equal(last.code, 421);
  assert.equal(last.enhanced, '4.7.0');
  for (const r of replies.slice(0, -1)) {
    assert.ok(r.code >= 500 && r.code < 600, `${r.code} ${r.text}`);
    assert.ok(r.enhanced?.startsWith('5.') === true, r.text);
  }
  assert.equal(replies.length, 11, replies.map((r) => `${r.code} ${r.text}`).join('\n'));
  await assertStillServing();
});

test('binary garbage on the implicit TLS port fails the handshake and closes; the server still serves', async () => {
  const raw = net.connect({ host: '127.0.0.1', port: server.ports.submissions });
  raw.on('error', () => undefined);
  let received = 0;
  raw.on('data', (d: Buffer) => (received += d.length));
  await new Promise<void>((r) => raw.once('connect', () => r()));
  raw.write(garbage(64 * 1024, 0x0badf00d));
  await new Promise<void>((r) => raw.once('close', () => r()));
  // At most a TLS alert came back, never an SMTP reply in clear.
  assert.ok(received < 64, `received ${received} bytes`);
  await assertStillServing();
});

test('an HTTP request gets 554 5.7.0 and the connection is closed', async () => {
  const c = await TestClient.connect(server.ports.smtp);
  await c.expect(220);
  c.send('GET / HTTP/1.1\r\nHost: mx.sterna.test\r\n\r\n');
  const replies = await drain(c);
  assert.equal(replies.length, 1);
  assert.equal(replies[0]?.code, 554);
  assert.equal(replies[0]?.enhanced, '5.7.0');
  await assertStillServing();
});

// ---- disconnects mid-message ----------------------------------------------------------------

async function openData(): Promise<TestClient> {
  const c = await TestClient.connect(server.ports.smtp);
  await c.expect(220);
  await c.cmd('EHLO client.example');
  await c.cmd('MAIL FROM:<x@example.org>').then((r) => assert.equal(r.code, 250));
  await c.cmd('RCPT TO:<alice@sterna.test>').then((r) => assert.equal(r.code, 250));
  return c;
}

test('a client that disconnects in the middle of DATA leaves nothing: no mailbox file, no spooled message', async () => {
  const c = await openData();
  await c.cmd('DATA').then((r) => assert.equal(r.code, 354));
  c.send('Subject: cut\r\n\r\n');
  c.send(`${'a'.repeat(98)}\r\n`.repeat(2600));
  c.send('last line, no end mark\r\n');
  await sleep(100);
  c.close();
  await assertStillServing();
  await assertNothingLeft();
});

test('a client that half-closes in the middle of DATA (FIN, no final dot) leaves nothing', async () => {
  const c = await openData();
  await c.cmd('DATA').then((r) => assert.equal(r.code, 354));
  c.send('Subject: fin\r\n\r\nbody without end\r\n');
  c.socket.end();
  await c.waitClosed();
  await assertStillServing();
  await assertNothingLeft();
});

test('a client that disconnects in the middle of a BDAT chunk, or between chunks, leaves nothing', async () => {
  const a = await openData();
  a.send('BDAT 1000 LAST\r\nSubject: cut\r\n\r\nonly part of it');
  await sleep(100);
  a.close();
  const b = await openData();
  b.send('BDAT 22\r\nSubject: cut\r\n\r\nfirst\r\n');
  await b.expect(250, '2.0.0');
  b.close();
  await assertStillServing();
  await assertNothingLeft();
});

test('a client that disconnects in the middle of DATA over TLS leaves nothing', async () => {
  const c = await TestClient.connect(server.ports.smtp);
  await c.expect(220);
  await c.cmd('EHLO client.example');
  await c.cmd('STARTTLS');
  await c.upgrade();
  await c.cmd('EHLO client.example');
  await c.cmd('MAIL FROM:<x@example.org>');
  await c.cmd('RCPT TO:<alice@sterna.test>').then((r) => assert.equal(r.code, 250));
  await c.cmd('DATA').then((r) => assert.equal(r.code, 354));
  c.send('Subject: tls cut\r\n\r\nhalf');
  await sleep(50);
  c.close();
  await assertStillServing();
  await assertNothingLeft();
});
