/**
 * End to end on loopback: a message accepted on the smtp listener lands in the recipient's
 * Maildir with Return-Path, Delivered-To and Received prepended, and the body byte for byte.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { TestClient } from './helpers/smtp-client.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { maildirMessages, waitForMessages } from './helpers/maildir.js';

let server: TestServer;

before(async () => {
  server = await startTestServer({
    users: [{ address: 'alice@sterna.test', password: 'correct horse' }],
    top: 'aliases = { "team@sterna.test" = ["alice@sterna.test", "postmaster@sterna.test"] }',
  });
});

after(async () => {
  await server.stop({ remove: true });
});

async function send(from: string, to: string[], body: string): Promise<string> {
  const c = await TestClient.connect(server.ports.smtp);
  await c.expect(220);
  assert.equal((await c.cmd('EHLO client.example')).code, 250);
  assert.equal((await c.cmd(`MAIL FROM:<${from}>`)).code, 250);
  for (const rcpt of to) assert.equal((await c.cmd(`RCPT TO:<${rcpt}>`)).code, 250);
  await c.cmd('DATA').then((r) => assert.equal(r.code, 354));
  c.send(body + '.\r\n');
  const r = await c.expect(250, '2.0.0');
  const qid = /queued as ([A-Z0-9]+)/.exec(r.text)?.[1];
  assert.ok(qid !== undefined, r.text);
  await c.cmd('QUIT');
  c.close();
  return qid;
}

test('RFC 5321 4.4: a message for a local mailbox lands in its Maildir with trace headers and the exact body', async () => {
  const body = 'Subject: hello\r\nFrom: bob@example.org\r\n\r\nline one\r\n..dot-stuffed line\r\nlast\r\n';
  const qid = await send('bob@example.org', ['alice@sterna.test'], body);
  const [msg] = await waitForMessages(server.dataDir, 'sterna.test', 'alice');
  assert.ok(msg !== undefined, 'message delivered');
  const text = msg.toString('utf8');
  assert.ok(
    text.startsWith(
      'Return-Path: <bob@example.org>\r\nDelivered-To: alice@sterna.test\r\nReceived: from client.example',
    ),
    text,
  );
  assert.ok(text.includes(`with ESMTP id ${qid}`), text);
  assert.ok(text.includes('\tfor <alice@sterna.test>;'), text);
  assert.ok(
    text.endsWith('Subject: hello\r\nFrom: bob@example.org\r\n\r\nline one\r\n.dot-stuffed line\r\nlast\r\n'),
    text,
  );
});

test('aliases expand to mailboxes, and postmaster@ lands in the postmaster mailbox', async () => {
  const before = (await maildirMessages(server.dataDir, 'sterna.test', 'alice')).length;
  await send('carol@example.org', ['team@sterna.test'], 'Subject: team\r\n\r\nfor the team\r\n');
  const alice = await waitForMessages(server.dataDir, 'sterna.test', 'alice', before + 1);
  assert.equal(alice.length, before + 1);
  const pm = await waitForMessages(server.dataDir, TEST_POSTMASTER_DOMAIN, 'postmaster', 1);
  assert.equal(pm.length, 1);
  assert.ok(pm[0]!.toString().endsWith('for the team\r\n'));
});

const TEST_POSTMASTER_DOMAIN = 'mx.sterna.test';
