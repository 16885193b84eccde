/**
 * AUTH on the submission listeners of the running server (RFC 4954, 4616, 2195, 6409, 8314):
 * PLAIN with an initial response, LOGIN, CRAM-MD5; AUTH only after TLS; MAIL only after AUTH;
 * the sender must be owned by the user; lock-out after auth.max_failures; relay to other domains
 * for authenticated users; Message-ID and Date added to submitted messages (RFC 6409 8); users
 * added to the users file while the server runs.
 */
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { after, before, test } from 'node:test';
import { addUser } from '../src/auth/users.js';
import { waitForMessages } from './helpers/maildir.js';
import { assertReply, startTlsSession, TestClient } from './helpers/smtp-client.js';
import { dataDirsWithCert, startTestServer, TEST_HOSTNAME, type TestServer } from './helpers/server.js';

let server: TestServer;
let lockout: TestServer;

const ALICE = { address: 'alice@sterna.test', password: 'correct horse battery' };
const BOB = { address: 'bob@sterna.test', password: 'b0b-secret' };
const DAVE = { address: 'dave@sterna.test', password: 'dave-pw-4' };

before(async () => {
  const dirs = await dataDirsWithCert(2);
  [server, lockout] = await Promise.all([
    startTestServer({
      dataDir: dirs[0]!,
      users: [
        { ...ALICE, cram: true, sendAs: ['@alias.test', 'press@sterna.test'] },
        { ...BOB, cram: true },
      ],
      auth: 'mechanisms = ["PLAIN", "LOGIN", "CRAM-MD5"]',
    }),
    startTestServer({
      dataDir: dirs[1]!,
      users: [ALICE, BOB, DAVE],
      auth: 'max_failures = 2\nlockout_ms = 60000',
    }),
  ]);
});

after(async () => {
  await Promise.all([server.stop({ remove: true }), lockout.stop({ remove: true })]);
});

const b64 = (s: string): string => Buffer.from(s, 'utf8').toString('base64');
const plain = (user: string, password: string): string => b64(`\0${user}\0${password}`);

/** A submission session after STARTTLS and a second EHLO, ready for AUTH. */
async function submission(s: TestServer = server): Promise<TestClient> {
  return (await startTlsSession(s.ports.submission)).client;
}

/** Sends a message in an authenticated session and returns the queue id. */
async function sendMessage(c: TestClient, from: string, to: string, body: string): Promise<string> {
  await c.cmd(`MAIL FROM:<${from}>`).then((r) => assert.equal(r.code, 250, r.text));
  const rcpt = await c.cmd(`RCPT TO:<${to}>`);
  assert.equal(rcpt.code, 250, rcpt.text);
  assert.equal(rcpt.enhanced, '2.1.5');
  await c.cmd('DATA').then((r) => assert.equal(r.code, 354));
  c.send(`${body}.\r\n`);
  const r = await c.expect(250, '2.0.0');
  const qid = /queued as ([A-Z0-9]+)/.exec(r.text)?.[1];
  assert.ok(qid !== undefined, r.text);
  return qid;
}

test('RFC 4616: AUTH PLAIN with an initial response gives 235 2.7.0; the user may then relay to another domain', async () => {
  const c = await submission();
  const r = await c.cmd(`AUTH PLAIN ${plain(ALICE.address, ALICE.password)}`);
  assertReply(r, 235, '2.7.0');
  assert.equal(r.text, '2.7.0 Authentication successful');
  // RFC 4954 4: no AUTH after a successful one, and EHLO no longer offers it.
  const ehlo = await c.cmd('EHLO client.example');
  assert.ok(!ehlo.lines.some((l) => l.startsWith('AUTH')), ehlo.text);
  const again = await c.cmd(`AUTH PLAIN ${plain(ALICE.address, ALICE.password)}`);
  assertReply(again, 503, '5.5.1');
  await sendMessage(c, ALICE.address, 'someone@example.com', 'Subject: out\r\n\r\nto the world\r\n');
  await c.cmd('QUIT');
  c.close();
});

test('RFC 4616: AUTH PLAIN with a wrong password gives 535 5.7.8, and the session can try again', async () => {
  const c = await submission();
  const bad = await c.cmd(`AUTH PLAIN ${plain(ALICE.address, 'wrong')}`);
  assertReply(bad, 535, '5.7.8');
  // Empty initial response: the server asks with an empty 334, the client answers.
  const ask = await c.cmd('AUTH PLAIN');
  assert.equal(ask.code, 334);
  assert.equal(ask.text, '');
  const ok = await c.cmd(plain(BOB.address, BOB.password));
  assertReply(ok, 235, '2.7.0');
  c.close();
});

test('LOGIN: Username and Password challenges, 235 2.7.0 on success and relay allowed; 535 5.7.8 on failure', async () => {
  const c = await submission();
  const u = await c.cmd('AUTH LOGIN');
  assert.equal(u.code, 334);
  assert.equal(u.text, 'VXNlcm5hbWU6');
  const p = await c.cmd(b64(BOB.address));
  assert.equal(p.code, 334);
  assert.equal(p.text, 'UGFzc3dvcmQ6');
  const ok = await c.cmd(b64(BOB.password));
  assertReply(ok, 235, '2.7.0');
  await sendMessage(c, BOB.address, 'friend@example.com', 'Subject: login\r\n\r\nvia LOGIN\r\n');
  c.close();

  const d = await submission();
  await d.cmd('AUTH LOGIN');
  await d.cmd(b64(BOB.address));
  const bad = await d.cmd(b64('not the password'));
  assertReply(bad, 535, '5.7.8');
  d.close();
});

test('RFC 2195: CRAM-MD5 answers a fresh challenge; the right digest gives 235 2.7.0 and relay, a wrong one 535 5.7.8', async () => {
  const c = await submission();
  const ehlo = await c.cmd('EHLO client.example');
  assert.ok(ehlo.lines.includes('AUTH PLAIN LOGIN CRAM-MD5'), ehlo.text);
  const ch = await c.cmd('AUTH CRAM-MD5');
  assert.equal(ch.code, 334);
  const challenge = Buffer.from(ch.text, 'base64').toString('latin1');
  assert.match(challenge, new RegExp(`^<[^<>@]+@${TEST_HOSTNAME.replace(/\./g, '\\.')}>$`));
  const digest = createHmac('md5', ALICE.password).update(challenge).digest('hex');
  const ok = await c.cmd(b64(`${ALICE.address} ${digest}`));
  assertReply(ok, 235, '2.7.0');
  await sendMessage(c, ALICE.address, 'someone@example.net', 'Subject: cram\r\n\r\nvia CRAM-MD5\r\n');
  c.close();

  const d = await submission();
  const ch2 = await d.cmd('AUTH CRAM-MD5');
  const challenge2 = Buffer.from(ch2.text, 'base64').toString('latin1');
  assert.notEqual(challenge2, challenge, 'each challenge is fresh');
  // A digest of the previous challenge (a replay) is refused.
  const bad = await d.cmd(b64(`${ALICE.address} ${digest}`));
  assertReply(bad, 535, '5.7.8');
  d.close();
});

test('RFC 4954 4: "*" cancels an exchange with 501 5.0.0; an unknown mechanism gets 504 5.5.4', async () => {
  const c = await submission();
  await c.cmd('AUTH LOGIN').then((r) => assert.equal(r.code, 334));
  const cancel = await c.cmd('*');
  assertReply(cancel, 501, '5.0.0');
  const unknown = await c.cmd('AUTH GSSAPI');
  assertReply(unknown, 504, '5.5.4');
  await c.cmd('NOOP').then((r) => assert.equal(r.code, 250));
  c.close();
});

test('RFC 4954 + 3207: before STARTTLS on submission, AUTH is not advertised and is refused with 538 5.7.11', async () => {
  const c = await TestClient.connect(server.ports.submission);
  await c.expect(220);
  const ehlo = await c.cmd('EHLO client.example');
  assert.ok(!ehlo.lines.some((l) => l.startsWith('AUTH')), ehlo.text);
  const r = await c.cmd(`AUTH PLAIN ${plain(ALICE.address, ALICE.password)}`);
  assertReply(r, 538, '5.7.11');
  c.close();
});

test('RFC 6409 4.3: MAIL on submission without AUTH gets 530 5.7.0 (STARTTLS and implicit TLS alike)', async () => {
  const c = await submission();
  const r = await c.cmd(`MAIL FROM:<${ALICE.address}>`);
  assertReply(r, 530, '5.7.0');
  c.close();
  const d = await TestClient.connect(server.ports.submissions, { tls: true });
  await d.expect(220);
  await d.cmd('EHLO client.example');
  const r2 = await d.cmd(`MAIL FROM:<${ALICE.address}>`);
  assertReply(r2, 530, '5.7.0');
  // ...and after AUTH on the implicit TLS port, MAIL is accepted.
  await d.cmd(`AUTH PLAIN ${plain(ALICE.address, ALICE.password)}`).then((r) => assert.equal(r.code, 235));
  await d.cmd(`MAIL FROM:<${ALICE.address}>`).then((r) => assert.equal(r.code, 250));
  d.close();
});

test('AUTH is not offered on the smtp listener: 503 5.5.1 even after STARTTLS', async () => {
  const c = await TestClient.connect(server.ports.smtp);
  await c.expect(220);
  await c.cmd('EHLO client.example');
  await c.cmd('STARTTLS');
  await c.upgrade();
  const ehlo = await c.cmd('EHLO client.example');
  assert.ok(!ehlo.lines.some((l) => l.startsWith('AUTH')), ehlo.text);
  const r = await c.cmd(`AUTH PLAIN ${plain(ALICE.address, ALICE.password)}`);
  assertReply(r, 503, '5.5.1');
  c.close();
});

test('auth.enforce_sender: a sender the user does not own gets 553 5.7.1; its own, its sendAs and <> are accepted', async () => {
  const c = await submission();
  await c.cmd(`AUTH PLAIN ${plain(ALICE.address, ALICE.password)}`).then((r) => assert.equal(r.code, 235));
  const other = await c.cmd(`MAIL FROM:<${BOB.address}>`);
  assertReply(other, 553, '5.7.1');
  assert.equal(
    other.text,
    `5.7.1 Sender address <${BOB.address}> is not owned by the authenticated user ${ALICE.address}`,
  );
  for (const from of ['ALICE@sterna.test', 'anyone@alias.test', 'press@sterna.test', '']) {
    const ok = await c.cmd(`MAIL FROM:<${from}>`);
    assert.equal(ok.code, 250, `${from}: ${ok.text}`);
    assert.equal(ok.enhanced, '2.1.0');
    await c.cmd('RSET').then((r) => assert.equal(r.code, 250));
  }
  c.close();
});

test('RFC 6409 8.2, 8.3: a submitted message without Message-ID and Date gets both; one that has them is left alone', async () => {
  const c = await submission();
  await c.cmd(`AUTH PLAIN ${plain(ALICE.address, ALICE.password)}`).then((r) => assert.equal(r.code, 235));
  const qid = await sendMessage(c, ALICE.address, BOB.address, 'Subject: bare\r\n\r\nno ids\r\n');
  await sendMessage(
    c,
    ALICE.address,
    BOB.address,
    'Subject: complete\r\nMessage-ID: <own@example.org>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\nids\r\n',
  );
  c.close();
  const msgs = (await waitForMessages(server.dataDir, 'sterna.test', 'bob', 2)).map((m) => m.toString());
  const bare = msgs.find((m) => m.includes('Subject: bare'));
  const complete = msgs.find((m) => m.includes('Subject: complete'));
  assert.ok(bare !== undefined && complete !== undefined, msgs.join('\n---\n'));
  assert.ok(bare.includes(`\r\nMessage-ID: <${qid}@${TEST_HOSTNAME}>\r\n`), bare);
  assert.match(
    bare,
    /\r\nDate: (Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{1,2} \w{3} \d{4} \d\d:\d\d:\d\d \+0000\r\n/,
  );
  assert.ok(bare.includes(`with ESMTPSA id ${qid}`), bare);
  assert.ok(bare.endsWith('Subject: bare\r\n\r\nno ids\r\n'), bare);
  assert.equal(complete.match(/^Message-ID:/gim)?.length, 1, complete);
  assert.equal(complete.match(/^Date:/gim)?.length, 1, complete);
  assert.ok(complete.includes('\r\nMessage-ID: <own@example.org>\r\n'));
});

/** One AUTH PLAIN in a fresh submission session on the lock-out server; its reply. */
async function authOnce(user: string, password: string): Promise<{ code: number; enhanced?: string }> {
  const c = await submission(lockout);
  const r = await c.cmd(`AUTH PLAIN ${plain(user, password)}`);
  c.close();
  return { code: r.code, ...(r.enhanced !== undefined ? { enhanced: r.enhanced } : {}) };
}

test("lock-out: another user's successful AUTH from the same address neither resets nor lifts the count of a guesser's failures", async () => {
  // Runs before the other lock-out test: nothing is locked out from 127.0.0.1 yet.
  assert.deepEqual(await authOnce(DAVE.address, 'guess 1'), { code: 535, enhanced: '5.7.8' });
  assert.deepEqual(await authOnce(BOB.address, BOB.password), { code: 235, enhanced: '2.7.0' });
  // Bob's success did not reset the count: this second guess reaches auth.max_failures (2).
  assert.deepEqual(await authOnce(DAVE.address, 'guess 2'), { code: 535, enhanced: '5.7.8' });
  assert.deepEqual(await authOnce(DAVE.address, DAVE.password), { code: 454, enhanced: '4.7.0' });
  // Bob, from the same address, still logs in; and that does not lift the lock-out on dave.
  assert.deepEqual(await authOnce(BOB.address, BOB.password), { code: 235, enhanced: '2.7.0' });
  assert.deepEqual(await authOnce(DAVE.address, DAVE.password), { code: 454, enhanced: '4.7.0' });
});

test('lock-out: after auth.max_failures (2) failures from an address, AUTH gets 454 4.7.0 even with the right password', async () => {
  const c = await submission(lockout);
  for (let i = 0; i < 2; i++) {
    const bad = await c.cmd(`AUTH PLAIN ${plain(ALICE.address, `wrong ${i}`)}`);
    assertReply(bad, 535, '5.7.8');
  }
  const locked = await c.cmd(`AUTH PLAIN ${plain(ALICE.address, ALICE.password)}`);
  assertReply(locked, 454, '4.7.0');
  c.close();
  // The lock-out holds for the address, not just the session.
  const d = await submission(lockout);
  const still = await d.cmd(`AUTH PLAIN ${plain(ALICE.address, ALICE.password)}`);
  assertReply(still, 454, '4.7.0');
  d.close();
});

test('a user added to the users file while the server runs can authenticate within a few seconds', async () => {
  const carol = { address: 'carol@sterna.test', password: 'added-live' };
  await addUser(server.config.auth.users_file, carol.address, carol.password);
  const deadline = Date.now() + 8000;
  while (!server.app.users.has(carol.address) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.ok(server.app.users.has(carol.address), 'users file re-read');
  const c = await submission();
  const r = await c.cmd(`AUTH PLAIN ${plain(carol.address, carol.password)}`);
  assertReply(r, 235, '2.7.0');
  await sendMessage(c, carol.address, ALICE.address, 'Subject: hi\r\n\r\nfrom the new user\r\n');
  c.close();
  // The new user is also a local mailbox now.
  const smtp = await TestClient.connect(server.ports.smtp);
  await smtp.expect(220);
  await smtp.cmd('EHLO client.example');
  await smtp.cmd('MAIL FROM:<x@example.org>');
  await smtp.cmd(`RCPT TO:<${carol.address}>`).then((x) => assert.equal(x.code, 250));
  smtp.close();
});
