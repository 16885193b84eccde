/**
 * Limits of the running server, each a named config key (DESIGN rule 5): recipients per message
 * (RFC 5321 4.5.3.1.8), message size (RFC 1870), command line length (RFC 5321 4.5.3.1.4), the
 * error limit, connections per client IP and in total, and the timeouts of RFC 5321 4.5.3.2
 * (command, data block, whole DATA phase) plus the TLS handshake.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import v8 from 'node:v8';
import vm from 'node:vm';
import { addLoopbackIpv6, requireLoopbackIpv6 } from './helpers/loopback-ipv6.js';
import { maildirMessages, waitForMessages } from './helpers/maildir.js';
import { assertReply, TestClient } from './helpers/smtp-client.js';
import { dataDirsWithCert, startTestServer, TEST_HOSTNAME, type TestServer } from './helpers/server.js';

const MESSAGE_BYTES = 10_000;

let server: TestServer; // counts and sizes
let timeouts: TestServer; // short timeouts
let perIp: TestServer; // 2 connections per IP
let total: TestServer; // 2 connections in total

const users = [
  { address: 'alice@sterna.test', password: 'pw-alice-1' },
  { address: 'bob@sterna.test', password: 'pw-bob-1' },
];

before(async () => {
  const dirs = await dataDirsWithCert(4);
  [server, timeouts, perIp, total] = await Promise.all([
    startTestServer({
      dataDir: dirs[0]!,
      users,
      toml: `[limits]\nrecipients = 3\nmessage_bytes = ${MESSAGE_BYTES}\nerrors = 3\n`,
    }),
    startTestServer({
      dataDir: dirs[1]!,
      users,
      toml:
        '[limits]\ncommand_timeout_ms = 1000\ndata_block_timeout_ms = 400\n' +
        'data_total_timeout_ms = 900\ntls_handshake_timeout_ms = 500\n',
    }),
    startTestServer({ dataDir: dirs[2]!, toml: '[limits]\nconnections_per_ip = 2\n' }),
    startTestServer({ dataDir: dirs[3]!, toml: '[limits]\nconnections = 2\n' }),
  ]);
});

after(async () => {
  await Promise.all([server, timeouts, perIp, total].map((s) => s.stop({ remove: true })));
});

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function mailSession(s: TestServer, rcpts: string[] = ['alice@sterna.test']): Promise<TestClient> {
  const c = await TestClient.connect(s.ports.smtp);
  await c.expect(220);
  await c.cmd('EHLO client.example');
  await c.cmd('MAIL FROM:<sender@example.org>').then((r) => assert.equal(r.code, 250));
  for (const r of rcpts) await c.cmd(`RCPT TO:<${r}>`).then((x) => assert.equal(x.code, 250));
  return c;
}

/**
 * After a refusal: the spool holds no message (the refused one was never committed; earlier
 * ones have been delivered once the manager is idle) and `local`'s Maildir still has `before`.
 */
async function assertNothingQueued(s: TestServer, local: string, before: number): Promise<void> {
  await s.app.manager.whenIdle();
  assert.equal(s.app.spool.size, 0);
  assert.equal((await maildirMessages(s.dataDir, 'sterna.test', local)).length, before);
}

/** Expects the reply, then the server closing the connection. */
async function expectClosedWith(c: TestClient, code: number, enhanced: string): Promise<string> {
  const r = await c.expect(code, enhanced);
  await c.waitClosed();
  assert.equal(c.closed, true);
  return r.text;
}

// ---- recipients ---------------------------------------------------------------------------

test('RFC 5321 4.5.3.1.8: with limits.recipients = 3 the 4th RCPT gets 452 4.5.3, and the 3 accepted still get the message', async () => {
  const c = await mailSession(server, []);
  for (let i = 0; i < 3; i++)
    await c.cmd('RCPT TO:<alice@sterna.test>').then((r) => assert.equal(r.code, 250));
  const fourth = await c.cmd('RCPT TO:<bob@sterna.test>');
  assertReply(fourth, 452, '4.5.3');
  assert.equal(fourth.text, '4.5.3 Too many recipients: the limit is 3 per message');
  await c.cmd('DATA').then((r) => assert.equal(r.code, 354));
  c.send('Subject: three\r\n\r\nx\r\n.\r\n');
  await c.expect(250, '2.0.0');
  c.close();
  await server.app.manager.whenIdle();
  assert.equal((await maildirMessages(server.dataDir, 'sterna.test', 'bob')).length, 0);
});

// ---- message size -------------------------------------------------------------------------

test('RFC 1870: EHLO advertises SIZE, and a declared SIZE over the limit is refused at MAIL with 552 5.3.4', async () => {
  const c = await TestClient.connect(server.ports.smtp);
  await c.expect(220);
  const ehlo = await c.cmd('EHLO client.example');
  assert.ok(ehlo.lines.includes(`SIZE ${MESSAGE_BYTES}`), ehlo.text);
  const big = await c.cmd(`MAIL FROM:<sender@example.org> SIZE=${MESSAGE_BYTES + 1}`);
  assertReply(big, 552, '5.3.4');
  const ok = await c.cmd(`MAIL FROM:<sender@example.org> SIZE=${MESSAGE_BYTES}`);
  assert.equal(ok.code, 250);
  c.close();
});

test('RFC 1870: a DATA body over the limit (5 MB sent, 10 kB allowed) gets 552 5.3.4 after the dot and nothing is delivered', async () => {
  const before = (await maildirMessages(server.dataDir, 'sterna.test', 'bob')).length;
  const c = await mailSession(server, ['bob@sterna.test']);
  await c.cmd('DATA').then((r) => assert.equal(r.code, 354));
  const line = `${'x'.repeat(98)}\r\n`;
  const block = Buffer.from(line.repeat(10_000)); // 1 MB
  c.send('Subject: too big\r\n\r\n');
  for (let i = 0; i < 5; i++) c.send(block);
  c.send('.\r\n');
  const r = await c.expect(552, '5.3.4');
  assert.equal(r.text, `5.3.4 Message size exceeds the limit of ${MESSAGE_BYTES} octets`);
  // The session is usable afterwards.
  await c.cmd('NOOP').then((x) => assert.equal(x.code, 250));
  c.close();
  await assertNothingQueued(server, 'bob', before);
});

test('RFC 3030 + 1870: BDAT chunks over the limit get 552 5.3.4 and nothing is delivered', async () => {
  const before = (await maildirMessages(server.dataDir, 'sterna.test', 'bob')).length;
  const c = await mailSession(server, ['bob@sterna.test']);
  const chunk = Buffer.alloc(MESSAGE_BYTES + 1, 0x61);
  c.send(Buffer.concat([Buffer.from(`BDAT ${chunk.length} LAST\r\n`), chunk]));
  await c.expect(552, '5.3.4');
  await c.cmd('NOOP').then((x) => assert.equal(x.code, 250));
  c.close();
  await assertNothingQueued(server, 'bob', before);
});

// ---- line length and errors -----------------------------------------------------------------

test('RFC 5321 4.5.3.1.4: a command line of 512 octets is accepted, 513 gets 500 5.5.2, and far longer lines too', async () => {
  const c = await TestClient.connect(server.ports.smtp);
  await c.expect(220);
  const exact = await c.cmd(`NOOP ${'x'.repeat(512 - 'NOOP '.length - 2)}`);
  assert.equal(exact.code, 250);
  const over = await c.cmd(`NOOP ${'x'.repeat(513 - 'NOOP '.length - 2)}`);
  assertReply(over, 500, '5.5.2');
  assert.equal(over.text, '5.5.2 Line too long: the limit is 512 octets');
  c.close();
  // A line beyond the reader's own buffer (AUTH's 12288) gives one reply, and the session goes on.
  const d = await TestClient.connect(server.ports.smtp);
  await d.expect(220);
  const huge = await d.cmd(`MAIL FROM:<${'a'.repeat(20_000)}@example.org>`);
  assertReply(huge, 500, '5.5.2');
  await d.cmd('NOOP').then((r) => assert.equal(r.code, 250));
  d.close();
});

test('error limit: with limits.errors = 3 the third error is answered, then 421 4.7.0 and the connection closes', async () => {
  const c = await TestClient.connect(server.ports.smtp);
  await c.expect(220);
  c.send('BOGUS1\r\nBOGUS2\r\nBOGUS3\r\nNOOP\r\n');
  await c.expect(500, '5.5.1');
  await c.expect(500, '5.5.1');
  await c.expect(500, '5.5.1');
  const text = await expectClosedWith(c, 421, '4.7.0');
  assert.equal(text, `4.7.0 ${TEST_HOSTNAME} too many errors in this session, closing connection`);
});

test('DESIGN rule 7: a client that pipelines commands and never reads the replies cannot make the server buffer them', async () => {
  // HELP is 6 octets in and about 110 out. The server shares this process, so replies it kept
  // queued would be live heap: 3 MB of HELP left unread would hold some 60 MB of replies.
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc') as () => void;
  const c = await TestClient.connect(server.ports.smtp);
  await c.expect(220);
  c.socket.pause();
  gc();
  const base = process.memoryUsage().heapUsed;
  const block = Buffer.from('HELP\r\n'.repeat(10_000));
  let sent = 0;
  let stalled = false;
  while (sent < 16 * 1024 * 1024 && !stalled) {
    sent += block.length;
    if (c.socket.write(block)) continue;
    stalled = !(await new Promise<boolean>((resolve) => {
      const t = setTimeout(() => resolve(false), 1000);
      c.socket.once('drain', () => {
        clearTimeout(t);
        resolve(true);
      });
    }));
  }
  gc();
  const grown = process.memoryUsage().heapUsed - base;
  c.close();
  assert.ok(stalled, `the server kept reading: ${sent} octets accepted`);
  assert.ok(grown < 16 * 1024 * 1024, `live heap grew by ${Math.round(grown / 1048576)} MB`);
});

// ---- connections ----------------------------------------------------------------------------

/** A raw connection that collects what the server sends until it closes. */
interface RawConn {
  socket: net.Socket;
  received: () => string;
  closed: Promise<void>;
}

function rawConnect(port: number, localAddress?: string, host = '127.0.0.1'): Promise<RawConn> {
  return new Promise((resolve, reject) => {
    let text = '';
    const socket = net.connect({ host, port, ...(localAddress ? { localAddress } : {}) });
    const closed = new Promise<void>((r) => socket.once('close', () => r()));
    socket.on('data', (d: Buffer) => (text += d.toString('latin1')));
    socket.on('error', () => undefined);
    socket.once('connect', () => resolve({ socket, received: () => text, closed }));
    socket.once('error', reject);
  });
}

async function waitFor(cond: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await sleep(10);
  }
}

/**
 * Connects until the server greets (220): right after a client closes, the server may not have
 * seen the close yet and refuses with 421. Bounded; fails with the last refusal.
 */
async function connectWhenServed(port: number, localAddress?: string, host?: string): Promise<RawConn> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const c = await rawConnect(port, localAddress, host);
    await waitFor(() => c.received().startsWith('220 ') || c.socket.destroyed);
    if (c.received().startsWith('220 ')) return c;
    assert.ok(Date.now() < deadline, `still refused: ${c.received()}`);
  }
}

test('limits.connections_per_ip = 2: a third connection from the same address gets 421 4.7.0 and is closed; others and later ones are served', async () => {
  const a = await rawConnect(perIp.ports.smtp);
  const b = await rawConnect(perIp.ports.submission);
  await waitFor(() => a.received().startsWith('220 ') && b.received().startsWith('220 '));
  const third = await rawConnect(perIp.ports.smtp);
  await third.closed;
  assert.equal(
    third.received(),
    `421 4.7.0 ${TEST_HOSTNAME} too many connections from your network, try again later\r\n`,
  );
  // On the implicit TLS port, no plaintext reply: the connection is just closed.
  const thirdTls = await rawConnect(perIp.ports.submissions);
  await thirdTls.closed;
  assert.equal(thirdTls.received(), '');
  // Another client address is not affected.
  const other = await rawConnect(perIp.ports.smtp, '127.0.0.2');
  await waitFor(() => other.received().startsWith('220 '));
  other.socket.destroy();
  // Once one closes, a new connection is served again.
  a.socket.destroy();
  await a.closed;
  (await connectWhenServed(perIp.ports.smtp)).socket.destroy();
  b.socket.destroy();
});

// Documentation addresses (RFC 3849) added to lo for this test: three in one /64, one in the next.
const SAME_64 = ['2001:db8:5e7a:1::a', '2001:db8:5e7a:1::b', '2001:db8:5e7a:1:ffff:ffff:ffff:ffff'];
const NEXT_64 = '2001:db8:5e7a:2::a';

test(
  'limits.connections_per_ip = 2 counts an IPv6 client by its /64: a third connection from another address of the same /64 gets 421 4.7.0; the next /64 is served',
  requireLoopbackIpv6(),
  async () => {
    const lo = await addLoopbackIpv6([...SAME_64, NEXT_64]);
    const [dir] = await dataDirsWithCert(1);
    const v6 = await startTestServer({
      dataDir: dir!,
      listen: 'smtp = ["[::1]:0"]\nsubmission = []\nsubmissions = []',
      toml: '[limits]\nconnections_per_ip = 2\n',
    });
    const conns: RawConn[] = [];
    try {
      const connect = async (from: string): Promise<RawConn> => {
        const c = await rawConnect(v6.ports.smtp, from, '::1');
        conns.push(c);
        return c;
      };
      const a = await connect(SAME_64[0]!);
      const b = await connect(SAME_64[1]!);
      await waitFor(() => a.received().startsWith('220 ') && b.received().startsWith('220 '));
      const third = await connect(SAME_64[2]!);
      await third.closed;
      assert.equal(
        third.received(),
        `421 4.7.0 ${TEST_HOSTNAME} too many connections from your network, try again later\r\n`,
      );
      const next = await connect(NEXT_64);
      await waitFor(() => next.received().startsWith('220 '));
      // Once one of the /64 closes, another address of it is served again.
      a.socket.destroy();
      await a.closed;
      conns.push(await connectWhenServed(v6.ports.smtp, SAME_64[2], '::1'));
    } finally {
      for (const c of conns) c.socket.destroy();
      await v6.stop({ remove: true });
      await lo.remove();
    }
  },
);

test('limits.connections = 2: a third connection on any listener gets 421 4.7.0 and is closed', async () => {
  const a = await rawConnect(total.ports.smtp);
  const b = await rawConnect(total.ports.submission, '127.0.0.2');
  await waitFor(() => a.received().startsWith('220 ') && b.received().startsWith('220 '));
  const third = await rawConnect(total.ports.smtp, '127.0.0.3');
  await third.closed;
  assert.equal(third.received(), `421 4.7.0 ${TEST_HOSTNAME} too many connections, try again later\r\n`);
  a.socket.destroy();
  b.socket.destroy();
  await Promise.all([a.closed, b.closed]);
  (await connectWhenServed(total.ports.smtp)).socket.destroy();
});

// ---- timeouts (run side by side: each waits for a timer) ------------------------------------

describe('timeouts', { concurrency: true }, () => {
  test('RFC 5321 4.5.3.2.7: an idle client gets 421 4.4.2 after limits.command_timeout_ms and is disconnected', async () => {
    const c = await TestClient.connect(timeouts.ports.smtp);
    await c.expect(220);
    await c.cmd('EHLO client.example');
    const t0 = Date.now();
    const text = await expectClosedWith(c, 421, '4.4.2');
    assert.equal(text, `4.4.2 ${TEST_HOSTNAME} timeout, closing connection`);
    const elapsed = Date.now() - t0;
    assert.ok(elapsed >= 950 && elapsed < 10_000, `closed after ${elapsed} ms`);
  });

  test('RFC 5321 4.5.3.2.7: each command rearms the timer; a client slower in total than the timeout but quick per command is served', async () => {
    const c = await TestClient.connect(timeouts.ports.smtp);
    await c.expect(220);
    for (let i = 0; i < 5; i++) {
      await sleep(300);
      await c.cmd('NOOP').then((r) => assert.equal(r.code, 250));
    }
    c.close();
  });

  test('RFC 5321 4.5.3.2.5: a client silent in the middle of DATA gets 421 4.4.2 after limits.data_block_timeout_ms; nothing is delivered', async () => {
    const c = await mailSession(timeouts);
    await c.cmd('DATA').then((r) => assert.equal(r.code, 354));
    c.send('Subject: stalled\r\n\r\nhalf a message');
    const t0 = Date.now();
    await expectClosedWith(c, 421, '4.4.2');
    const elapsed = Date.now() - t0;
    assert.ok(elapsed >= 350 && elapsed < 10_000, `closed after ${elapsed} ms`);
    await assertNothingQueued(timeouts, 'alice', 0);
  });

  test('RFC 5321 4.5.3.2.5: a client silent in the middle of a BDAT chunk gets 421 4.4.2', async () => {
    const c = await mailSession(timeouts);
    c.send('BDAT 100 LAST\r\nonly ten b');
    await expectClosedWith(c, 421, '4.4.2');
    assert.equal(timeouts.app.spool.size, 0);
  });

  test('RFC 5321 4.5.3.2.6: a DATA phase that trickles bytes forever is ended after limits.data_total_timeout_ms', async () => {
    const c = await mailSession(timeouts);
    await c.cmd('DATA').then((r) => assert.equal(r.code, 354));
    const t0 = Date.now();
    const timer = setInterval(() => {
      if (!c.closed) c.send('x');
    }, 50);
    try {
      await expectClosedWith(c, 421, '4.4.2');
    } finally {
      clearInterval(timer);
    }
    const elapsed = Date.now() - t0;
    assert.ok(elapsed >= 850 && elapsed < 10_000, `ended after ${elapsed} ms`);
    assert.equal((await maildirMessages(timeouts.dataDir, 'sterna.test', 'alice')).length, 0);
  });

  test('limits.tls_handshake_timeout_ms: a client that never starts the handshake on submissions is disconnected', async () => {
    const conn = await rawConnect(timeouts.ports.submissions);
    const t0 = Date.now();
    await conn.closed;
    const elapsed = Date.now() - t0;
    assert.equal(conn.received(), '');
    assert.ok(elapsed >= 450 && elapsed < 10_000, `closed after ${elapsed} ms`);
  });

  test('limits.tls_handshake_timeout_ms: a client that stalls after STARTTLS is disconnected', async () => {
    const c = await TestClient.connect(timeouts.ports.smtp);
    await c.expect(220);
    await c.cmd('EHLO client.example');
    await c.cmd('STARTTLS').then((r) => assert.equal(r.code, 220));
    await c.waitClosed();
    assert.equal(c.closed, true);
  });
});

test('after the timeouts fire, the server still greets and delivers', async () => {
  const c = await TestClient.connect(timeouts.ports.submissions, { tls: true });
  await c.expect(220);
  c.close();
  const d = await mailSession(timeouts, ['bob@sterna.test']);
  await d.cmd('DATA').then((r) => assert.equal(r.code, 354));
  d.send('Subject: fine\r\n\r\nok\r\n.\r\n');
  await d.expect(250, '2.0.0');
  d.close();
  assert.equal((await waitForMessages(timeouts.dataDir, 'sterna.test', 'bob', 1)).length, 1);
});
