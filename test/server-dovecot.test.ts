/**
 * `[auth] backend = "dovecot"` against a real Dovecot (dovecot-core), started by this file with a
 * private config (test/helpers/dovecot.ts): PLAIN and LOGIN are checked by Dovecot's auth socket
 * (the protocol Postfix uses with smtpd_sasl_type = dovecot), the session's user is the name
 * Dovecot returns, a good password gives 235 and the message lands, a bad one 535 5.7.8, and a
 * Dovecot that is stopped, or that does not answer, 454 4.7.0 (RFC 4954 6) until it is back.
 * Sender ownership: an address user owns that address; a bare user name owns it in each local
 * domain (RFC 6409 6.1).
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { requireDovecot, startDovecot, type DovecotInstance } from './helpers/dovecot.js';
import { waitForMessages } from './helpers/maildir.js';
import { dataDirsWithCert, startTestServer, type TestServer } from './helpers/server.js';
import { assertReply, startTlsSession, type TestClient } from './helpers/smtp-client.js';
import { assertDelivered, crlfMessage } from './helpers/tools.js';

const dovecotTool = requireDovecot();

const ALICE = { name: 'alice@sterna.test', password: 'alice in dovecot' };
/** A Dovecot user without a domain, as on a site whose mailboxes are system users. */
const CAROL = { name: 'carol', password: 'carol in dovecot' };
/** A mailbox in Sterna's users file only (a recipient): its password there is never asked. */
const BOB = { address: 'bob@sterna.test', password: 'bob in the users file' };

const b64 = (s: string): string => Buffer.from(s, 'utf8').toString('base64');
const plain = (user: string, password: string): string => `AUTH PLAIN ${b64(`\0${user}\0${password}`)}`;

let dovecot: DovecotInstance | undefined;
let server: TestServer | undefined;
/** A Sterna whose "Dovecot" handshakes and then never answers. */
let silentServer: TestServer | undefined;
let silent: net.Server | undefined;
let silentDir: string | undefined;
let silentConnections = 0;

before(async () => {
  if (dovecotTool.skip !== false) return;
  silentDir = await mkdtemp(path.join(tmpdir(), 'sterna-silent-auth-'));
  const silentSocket = path.join(silentDir, 'auth');
  const fake = net.createServer((s) => {
    silentConnections++;
    s.resume(); // reads (and ignores) the AUTH lines, so that the client's close is seen
    s.on('error', () => undefined);
    s.write('VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nSPID\t1\nCUID\t1\nDONE\n');
  });
  silent = fake;
  await new Promise<void>((resolve) => fake.listen(silentSocket, resolve));
  const dirs = await dataDirsWithCert(2);
  const dv = await startDovecot({ users: [ALICE, CAROL] });
  dovecot = dv;
  const auth = (socket: string, timeoutMs: number): string =>
    `backend = "dovecot"\n[auth.dovecot]\nsocket = "${socket}"\ntimeout_ms = ${timeoutMs}`;
  server = await startTestServer({ dataDir: dirs[0]!, users: [BOB], auth: auth(dv.authSocket, 5000) });
  silentServer = await startTestServer({ dataDir: dirs[1]!, auth: auth(silentSocket, 300) });
});

// Whatever started, even when a before step failed half-way, is stopped.
after(async () => {
  await Promise.all([
    server?.stop({ remove: true }),
    silentServer?.stop({ remove: true }),
    dovecot?.cleanup(),
  ]);
  await new Promise<void>((resolve) => (silent === undefined ? resolve() : silent.close(() => resolve())));
  if (silentDir !== undefined) await rm(silentDir, { recursive: true, force: true });
});

async function session(s: TestServer | undefined = server): Promise<TestClient> {
  assert.ok(s !== undefined, 'the test server is running');
  return (await startTlsSession(s.ports.submission)).client;
}

test(
  'a good password (PLAIN) checked by Dovecot gives 235 2.7.0, and the message lands',
  dovecotTool,
  async () => {
    const c = await session();
    const ok = await c.cmd(plain(ALICE.name, ALICE.password));
    assertReply(ok, 235, '2.7.0');
    assert.equal(ok.text, '2.7.0 Authentication successful');
    const message = crlfMessage([
      `From: ${ALICE.name}`,
      `To: ${BOB.address}`,
      'Subject: via Dovecot auth',
      'Date: Sat, 05 Dec 2026 10:00:00 +0000',
      'Message-ID: <dovecot-1@sterna.test>',
      '',
      'Checked by Dovecot.',
    ]);
    assertReply(await c.cmd(`MAIL FROM:<${ALICE.name}>`), 250, '2.1.0');
    assertReply(await c.cmd(`RCPT TO:<${BOB.address}>`), 250, '2.1.5');
    assert.equal((await c.cmd('DATA')).code, 354);
    c.send(Buffer.concat([message, Buffer.from('.\r\n')]));
    const queued = await c.expect(250, '2.0.0');
    await c.cmd('QUIT');
    c.close();
    const [delivered] = await waitForMessages(server!.dataDir, 'sterna.test', 'bob');
    assertDelivered(delivered, {
      sender: ALICE.name,
      recipient: BOB.address,
      helo: 'client.example',
      protocol: 'ESMTPSA',
      authUser: ALICE.name,
      message,
      qid: /queued as ([A-Za-z0-9]+)/.exec(queued.text)?.[1] ?? '',
    });
  },
);

test(
  'LOGIN goes to Dovecot too; a bare Dovecot user owns its name in each local domain, nothing else',
  dovecotTool,
  async () => {
    const c = await session();
    assert.equal((await c.cmd('AUTH LOGIN')).code, 334);
    assert.equal((await c.cmd(b64(CAROL.name))).code, 334);
    assertReply(await c.cmd(b64(CAROL.password)), 235, '2.7.0');
    assertReply(await c.cmd('MAIL FROM:<someone@example.com>'), 553, '5.7.1');
    assertReply(await c.cmd('MAIL FROM:<carol@example.com>'), 553, '5.7.1');
    assertReply(await c.cmd('MAIL FROM:<carol@sterna.test>'), 250, '2.1.0');
    c.close();
  },
);

test(
  'Dovecot stopped: 454 4.7.0 (try later), no crash; started again: 235 on a new connection to it',
  dovecotTool,
  async () => {
    const dv = dovecot!;
    await dv.stop();
    const c = await session();
    const r = await c.cmd(plain(ALICE.name, ALICE.password));
    assertReply(r, 454, '4.7.0');
    assert.equal(r.text, '4.7.0 Temporary authentication failure; try again later');
    await dv.start();
    assertReply(await c.cmd(plain(ALICE.name, ALICE.password)), 235, '2.7.0');
    c.close();
  },
);

test(
  'a Dovecot that does not answer within auth.dovecot.timeout_ms: 454 4.7.0, and the next attempt connects afresh',
  dovecotTool,
  async () => {
    const c = await session(silentServer);
    const started = Date.now();
    assertReply(await c.cmd(plain(ALICE.name, ALICE.password)), 454, '4.7.0');
    assert.ok(Date.now() - started >= 300, 'after the timeout');
    assert.equal(silentConnections, 1);
    // The connection that stopped answering was dropped: the next AUTH opens a new one.
    assertReply(await c.cmd(plain(ALICE.name, ALICE.password)), 454, '4.7.0');
    assert.equal(silentConnections, 2);
    c.close();
  },
);

// Last: Dovecot delays its answers to a client address after failures (its auth penalty).
test('a bad password gives 535 5.7.8; the users file is not asked', dovecotTool, async () => {
  const c = await session();
  assertReply(await c.cmd(plain(ALICE.name, 'not the password')), 535, '5.7.8');
  assertReply(await c.cmd(plain(BOB.address, BOB.password)), 535, '5.7.8');
  c.close();
});
