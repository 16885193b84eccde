/**
 * The small commands on the running server (RFC 5321 4.1.1, 3.5, 7.3): greeting, HELO/EHLO,
 * VRFY (252 by default, so it reveals nothing), EXPN (not offered), HELP, NOOP, RSET, QUIT,
 * unknown commands and commands out of sequence.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { TestClient } from './helpers/smtp-client.js';
import { dataDirsWithCert, startTestServer, TEST_HOSTNAME, type TestServer } from './helpers/server.js';

let server: TestServer;
let verify: TestServer;

before(async () => {
  const dirs = await dataDirsWithCert(2);
  const users = [{ address: 'alice@sterna.test', password: 'pw-alice-1' }];
  [server, verify] = await Promise.all([
    startTestServer({ dataDir: dirs[0]!, users }),
    startTestServer({ dataDir: dirs[1]!, users, toml: '[smtp]\nvrfy = "verify"\n' }),
  ]);
});

after(async () => {
  await Promise.all([server.stop({ remove: true }), verify.stop({ remove: true })]);
});

async function session(s: TestServer = server): Promise<TestClient> {
  const c = await TestClient.connect(s.ports.smtp);
  const greeting = await c.expect(220);
  assert.equal(greeting.text, `${TEST_HOSTNAME} ESMTP Sterna ready`);
  return c;
}

test('RFC 5321 4.1.1.1: EHLO answers with the hostname, the client name and address, then the extensions', async () => {
  const c = await session();
  const r = await c.cmd('EHLO client.example');
  assert.equal(r.code, 250);
  assert.deepEqual(r.lines, [
    `${TEST_HOSTNAME} Hello client.example [127.0.0.1]`,
    'PIPELINING',
    'SIZE 52428800',
    '8BITMIME',
    'SMTPUTF8',
    'ENHANCEDSTATUSCODES',
    'CHUNKING',
    'DSN',
    'STARTTLS',
  ]);
  const helo = await c.cmd('HELO client.example');
  assert.equal(helo.code, 250);
  assert.deepEqual(helo.lines, [`${TEST_HOSTNAME} Hello client.example [127.0.0.1]`]);
  const empty = await c.cmd('EHLO');
  assert.equal(empty.code, 501);
  assert.equal(empty.enhanced, '5.5.2');
  c.close();
});

test('RFC 5321 3.5.3: VRFY answers 252 2.5.2 by default, for known and unknown users alike', async () => {
  const c = await session();
  for (const who of ['alice@sterna.test', 'nobody@sterna.test', '<alice@sterna.test>', 'alice']) {
    const r = await c.cmd(`VRFY ${who}`);
    assert.equal(r.code, 252, who);
    assert.equal(r.enhanced, '2.5.2', who);
  }
  const bare = await c.cmd('VRFY');
  assert.equal(bare.code, 501);
  assert.equal(bare.enhanced, '5.5.2');
  c.close();
});

test('smtp.vrfy = "verify": VRFY answers 250 2.1.5 for a mailbox and 550 5.1.1 for an unknown user', async () => {
  const c = await session(verify);
  const known = await c.cmd('VRFY <alice@sterna.test>');
  assert.equal(known.code, 250);
  assert.equal(known.enhanced, '2.1.5');
  assert.equal(known.text, '2.1.5 <alice@sterna.test>');
  const unknown = await c.cmd('VRFY nobody@sterna.test');
  assert.equal(unknown.code, 550);
  assert.equal(unknown.enhanced, '5.1.1');
  c.close();
});

test('RFC 5321 3.5.2: EXPN is not offered: 502 5.5.1', async () => {
  const c = await session();
  const r = await c.cmd('EXPN staff');
  assert.equal(r.code, 502);
  assert.equal(r.enhanced, '5.5.1');
  assert.equal(r.text, '5.5.1 EXPN is not available');
  c.close();
});

test('RFC 5321 4.1.1.8: HELP answers 214, with or without an argument', async () => {
  const c = await session();
  for (const cmd of ['HELP', 'HELP MAIL']) {
    const r = await c.cmd(cmd);
    assert.equal(r.code, 214, cmd);
    assert.equal(r.enhanced, '2.0.0', cmd);
  }
  c.close();
});

test('RFC 5321 4.1.1.9: NOOP answers 250 2.0.0 in any state, also with an argument', async () => {
  const c = await session();
  for (const cmd of ['NOOP', 'NOOP anything', 'noop']) {
    const r = await c.cmd(cmd);
    assert.equal(r.code, 250, cmd);
    assert.equal(r.text, '2.0.0 Ok', cmd);
  }
  await c.cmd('EHLO client.example');
  await c.cmd('MAIL FROM:<a@example.org>');
  assert.equal((await c.cmd('NOOP')).code, 250);
  // NOOP did not disturb the transaction.
  assert.equal((await c.cmd('RCPT TO:<alice@sterna.test>')).code, 250);
  c.close();
});

test('RFC 5321 4.1.1.5: RSET answers 250 2.0.0 and ends the transaction; EHLO is kept', async () => {
  const c = await session();
  await c.cmd('EHLO client.example');
  await c.cmd('MAIL FROM:<a@example.org>').then((r) => assert.equal(r.code, 250));
  await c.cmd('RCPT TO:<alice@sterna.test>').then((r) => assert.equal(r.code, 250));
  const rset = await c.cmd('RSET');
  assert.equal(rset.code, 250);
  assert.equal(rset.enhanced, '2.0.0');
  const rcpt = await c.cmd('RCPT TO:<alice@sterna.test>');
  assert.equal(rcpt.code, 503);
  assert.equal(rcpt.enhanced, '5.5.1');
  // A new transaction may start without a new EHLO.
  await c.cmd('MAIL FROM:<a@example.org>').then((r) => assert.equal(r.code, 250));
  c.close();
});

test('RFC 5321 4.1.1.10: QUIT answers 221 2.0.0 and the server closes the connection', async () => {
  const c = await session();
  await c.cmd('EHLO client.example');
  const r = await c.cmd('QUIT');
  assert.equal(r.code, 221);
  assert.equal(r.enhanced, '2.0.0');
  assert.equal(r.text, `2.0.0 ${TEST_HOSTNAME} closing connection`);
  await c.waitClosed();
  assert.equal(c.closed, true);
});

test('RFC 5321 4.2.4 and 4.1.4: unknown commands get 500 5.5.1, commands out of sequence 503 5.5.1', async () => {
  const c = await session();
  const unknown = await c.cmd('FROB');
  assert.equal(unknown.code, 500);
  assert.equal(unknown.enhanced, '5.5.1');
  const early = await c.cmd('MAIL FROM:<a@example.org>');
  assert.equal(early.code, 503);
  assert.equal(early.enhanced, '5.5.1');
  await c.cmd('EHLO client.example');
  const noMail = await c.cmd('DATA');
  assert.equal(noMail.code, 503);
  assert.equal(noMail.enhanced, '5.5.1');
  await c.cmd('MAIL FROM:<a@example.org>');
  const nested = await c.cmd('MAIL FROM:<b@example.org>');
  assert.equal(nested.code, 503);
  assert.equal(nested.enhanced, '5.5.1');
  const noRcpt = await c.cmd('DATA');
  assert.equal(noRcpt.code, 554);
  assert.equal(noRcpt.enhanced, '5.5.1');
  c.close();
});
