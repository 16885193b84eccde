/**
 * Allow and deny lists ([[lists]], src/policy/lists.ts) on a real server: a client deny gets
 * 554 5.7.1 at the greeting and 503 to everything but QUIT (RFC 5321 3.1); HELO, sender and
 * recipient denies get 550 5.7.1 with the list's reason; an allow skips the denies after it;
 * list files are re-read when they change and on reload (SIGHUP). Nothing is stored for a
 * refused message. Clients bind 127.0.0.x addresses to act as other hosts.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { silentLogger } from '../src/observability/log.js';
import { PolicyLists } from '../src/policy/lists.js';
import { waitFor } from './helpers/outbound.js';
import { assertNothingStored, clientFrom, greetedFrom, sendSimple } from './helpers/policy.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { assertReply, TestClient } from './helpers/smtp-client.js';

let server: TestServer;
let dir: string;
let listFile: string;

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'sterna-lists-'));
  listFile = path.join(dir, 'deny-senders.txt');
  await writeFile(listFile, '# spammers\nspam.example\n');
  server = await startTestServer({
    users: [{ address: 'alice@sterna.test', password: 'pw' }],
    toml: `
[[lists]]
name = "friends"
match = "client"
action = "allow"
entries = ["127.0.0.8"]

[[lists]]
name = "bad-hosts"
match = "client"
action = "deny"
entries = ["127.0.0.7", "127.0.1.0/24", "2001:db8:bad::/48"]
reason = "Mail from your network is refused; write to postmaster@sterna.test"

[[lists]]
name = "bad-helo"
match = "helo"
action = "deny"
entries = [".dynamic.example", "localhost.localdomain"]
reason = "Your HELO name is refused"

[[lists]]
name = "bad-senders"
match = "sender"
action = "deny"
entries = ["evil@example.net", ".bulk.example"]
file = "${listFile}"
reason = "Sender refused by local policy"

[[lists]]
name = "closed-mailboxes"
match = "recipient"
action = "deny"
entries = ["alice@sterna.test"]
reason = "This mailbox accepts no mail from outside"
`,
  });
});

after(async () => {
  await server?.stop({ remove: true });
  await rm(dir, { recursive: true, force: true });
});

test('client deny: 554 5.7.1 with the reason at connect, 503 to commands, QUIT served', async () => {
  for (const from of ['127.0.0.7', '127.0.1.44']) {
    const c = await TestClient.connect(server.ports.smtp, { localAddress: from });
    const greeting = await c.expect(554, '5.7.1');
    assert.equal(
      greeting.text,
      '5.7.1 mx.sterna.test Mail from your network is refused; write to postmaster@sterna.test',
    );
    assertReply(await c.cmd('EHLO client.example'), 503, '5.7.1');
    assertReply(await c.cmd('MAIL FROM:<a@example.org>'), 503, '5.7.1');
    assertReply(await c.cmd('QUIT'), 221, '2.0.0');
    c.close();
  }
  const ok = await greetedFrom(server, '127.0.0.6');
  ok.close();
  assertNothingStored(server);
});

test('HELO, sender and recipient denies: 550 5.7.1 with the reason; nothing stored', async () => {
  const c = await greetedFrom(server, '127.0.0.6');
  const helo = await c.cmd('EHLO host-1-2.dynamic.example');
  assertReply(helo, 550, '5.7.1');
  assert.equal(helo.text, '5.7.1 Your HELO name is refused');
  assertReply(await c.cmd('MAIL FROM:<a@example.org>'), 503, '5.5.1'); // no HELO accepted yet
  assertReply(await c.cmd('EHLO mx.example.org'), 250);
  for (const sender of ['evil@example.net', 'x@a.bulk.example', 'y@spam.example', 'Evil@EXAMPLE.net']) {
    const r = await c.cmd(`MAIL FROM:<${sender}>`);
    assertReply(r, 550, '5.7.1');
    assert.equal(r.text, '5.7.1 Sender refused by local policy');
  }
  assertReply(await c.cmd('MAIL FROM:<friend@example.org>'), 250);
  const rcpt = await c.cmd('RCPT TO:<alice@sterna.test>');
  assertReply(rcpt, 550, '5.7.1');
  assert.equal(rcpt.text, '5.7.1 This mailbox accepts no mail from outside');
  assertReply(await c.cmd('DATA'), 554, '5.5.1');
  await c.cmd('QUIT');
  c.close();
  assertNothingStored(server);
});

test('a client allow skips the deny lists after it', async () => {
  const c = await clientFrom(server, '127.0.0.8', 'host.dynamic.example');
  assert.equal(await sendSimple(c, 'evil@example.net', 'alice@sterna.test'), 250);
  await c.cmd('QUIT');
  c.close();
  await waitFor('the message delivered and gone from the spool', () => server.app.spool.list().length === 0);
});

test('list file: re-read when it changes, and at once on reload (SIGHUP)', async () => {
  const c = await clientFrom(server, '127.0.0.6');
  assertReply(await c.cmd('MAIL FROM:<y@spam.example>'), 550, '5.7.1');
  // Changed on disk: noticed by the watch, within a few seconds.
  await writeFile(listFile, 'other-spam.example\n');
  await waitFor('the changed list file read again', async () => {
    const r = await c.cmd('MAIL FROM:<z@other-spam.example>');
    if (r.code === 250) await c.cmd('RSET');
    return r.code === 550;
  });
  assertReply(await c.cmd('MAIL FROM:<y@spam.example>'), 250);
  await c.cmd('RSET');
  // Reload (what SIGHUP runs) reads it at once.
  await writeFile(listFile, 'third.example\n');
  await server.app.reload();
  assertReply(await c.cmd('MAIL FROM:<q@third.example>'), 550, '5.7.1');
  assertReply(await c.cmd('MAIL FROM:<z@other-spam.example>'), 250);
  await c.cmd('QUIT');
  c.close();
});

test('lists match IPv4 and IPv6 networks, IPv4-mapped addresses, domains, parents and <>', async () => {
  const lists = await PolicyLists.open(
    [
      {
        name: 'nets',
        match: 'client',
        action: 'deny',
        entries: ['192.0.2.0/24', '2001:db8:bad::/48', '198.51.100.7'],
        file: '',
        reason: 'r',
      },
      { name: 'ok', match: 'client', action: 'allow', entries: ['192.0.2.10'], file: '', reason: '' },
      {
        name: 's',
        match: 'sender',
        action: 'deny',
        entries: ['<>', '@example.com', '.example.org'],
        file: '',
        reason: 'r',
      },
    ],
    silentLogger(),
  );
  try {
    assert.equal(lists.check('client', '192.0.2.77')?.list, 'nets');
    assert.equal(lists.check('client', '::ffff:192.0.2.77')?.list, 'nets');
    assert.equal(lists.check('client', '2001:db8:bad:1::25')?.list, 'nets');
    assert.equal(lists.check('client', '2001:db8:bae::25'), null);
    assert.equal(lists.check('client', '198.51.100.7')?.action, 'deny');
    assert.equal(lists.check('client', '192.0.2.10')?.action, 'allow', 'an allow wins over a deny');
    assert.equal(lists.check('sender', '')?.action, 'deny');
    assert.equal(lists.check('sender', 'a@example.com')?.action, 'deny');
    assert.equal(lists.check('sender', 'a@sub.example.com'), null);
    assert.equal(lists.check('sender', 'a@sub.example.org')?.action, 'deny');
    assert.equal(lists.check('sender', 'a@example.org'), null);
  } finally {
    lists.close();
  }
  await assert.rejects(
    PolicyLists.open(
      [{ name: 'bad', match: 'client', action: 'deny', entries: ['300.1.1.1'], file: '', reason: '' }],
      silentLogger(),
    ),
    /lists "bad": "300.1.1.1" is not an IP address/,
  );
});
