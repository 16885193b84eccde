/**
 * Early talkers ([early_talkers], src/server/connection.ts): with a greeting delay, a client
 * that sends before the 220 gets 554 5.5.1, the connection is closed and a log line says so; a
 * client that waits is served. With improper_pipelining = "reject", commands sent ahead of
 * their replies before EHLO offered PIPELINING (or after HELO) get the same; pipelining after
 * EHLO's reply is fine (RFC 2920). An allow-listed client gets no delay and no checks.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { capturedLog } from './helpers/outbound-fixture.js';
import { assertNothingStored } from './helpers/policy.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { assertReply, TestClient } from './helpers/smtp-client.js';

let server: TestServer;
const { log, lines } = capturedLog();

before(async () => {
  server = await startTestServer({
    log,
    toml: `
[early_talkers]
greeting_delay_ms = 400
improper_pipelining = "reject"

[[lists]]
name = "friends"
match = "client"
action = "allow"
entries = ["127.0.0.8"]
`,
  });
});

after(async () => {
  await server?.stop({ remove: true });
});

test('a client that sends before the delayed greeting gets 554 5.5.1 and is closed, with a log line', async () => {
  const c = await TestClient.connect(server.ports.smtp, { localAddress: '127.0.0.5' });
  c.send('EHLO spam.example\r\nMAIL FROM:<spam@example.net>\r\n');
  const r = await c.expect(554, '5.5.1');
  assert.equal(r.text, '5.5.1 mx.sterna.test protocol error: you sent before my greeting');
  assert.equal(await c.read(), null, 'nothing more: no greeting, no reply to the commands');
  await c.waitClosed();
  assert.ok(
    lines.some(
      (l) => l['msg'] === 'early talker refused' && l['kind'] === 'pregreet' && l['ip'] === '127.0.0.5',
    ),
  );
  assertNothingStored(server);
});

test('a client that waits for the greeting is served; PIPELINING after EHLO is fine', async () => {
  const started = Date.now();
  const c = await TestClient.connect(server.ports.smtp, { localAddress: '127.0.0.6' });
  await c.expect(220);
  assert.ok(Date.now() - started >= 350, 'the greeting waited for greeting_delay_ms');
  assertReply(await c.cmd('EHLO client.example'), 250);
  c.send('MAIL FROM:<a@example.org>\r\nRCPT TO:<postmaster@sterna.test>\r\nRSET\r\n');
  await c.expect(250, '2.1.0');
  await c.expect(250, '2.1.5');
  await c.expect(250, '2.0.0');
  assertReply(await c.cmd('QUIT'), 221);
  c.close();
});

test('commands pipelined before EHLO offered PIPELINING, or after HELO: 554 5.5.1 and closed', async () => {
  for (const opening of ['EHLO fast.example\r\nMAIL FROM:<a@example.org>\r\n', 'HELO x\r\n']) {
    const c = await TestClient.connect(server.ports.smtp, { localAddress: '127.0.0.5' });
    await c.expect(220);
    if (opening.startsWith('HELO')) {
      assertReply(await c.cmd('HELO old.example'), 250);
      c.send('MAIL FROM:<a@example.org>\r\nRCPT TO:<postmaster@sterna.test>\r\n');
    } else {
      c.send(opening);
    }
    const r = await c.expect(554, '5.5.1');
    assert.match(r.text, /commands sent ahead of replies without PIPELINING/);
    await c.waitClosed();
  }
  assert.ok(lines.some((l) => l['msg'] === 'early talker refused' && l['kind'] === 'improper-pipelining'));
});

test('an allow-listed client gets no greeting delay and no early-talker check', async () => {
  const started = Date.now();
  const c = await TestClient.connect(server.ports.smtp, { localAddress: '127.0.0.8' });
  c.send('EHLO friend.example\r\n');
  await c.expect(220);
  assert.ok(Date.now() - started < 350, 'no delay for a friend');
  assertReply((await c.read())!, 250);
  c.close();
});
