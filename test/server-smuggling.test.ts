/**
 * SMTP smuggling (CVE-2023-51764/51765/51766) against the running server: a DATA body that
 * hides a fake end-of-data ("\n.\n", "\r.\r", ...) followed by a second transaction. With the
 * default smtp.bare_line_endings = "reject" the whole message is refused with 550 5.6.11 and
 * nothing is delivered; with "normalize" exactly one message is delivered, the smuggled
 * commands inside its body. In both modes the hidden commands are never run.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { maildirMessages, waitForMessages } from './helpers/maildir.js';
import { TestClient } from './helpers/smtp-client.js';
import { dataDirsWithCert, startTestServer, type TestServer } from './helpers/server.js';

let reject: TestServer;
let normalize: TestServer;

const users = [
  { address: 'alice@sterna.test', password: 'pw-alice-1' },
  { address: 'bob@sterna.test', password: 'pw-bob-1' },
];

before(async () => {
  const dirs = await dataDirsWithCert(2);
  [reject, normalize] = await Promise.all([
    startTestServer({ dataDir: dirs[0]!, users }),
    startTestServer({ dataDir: dirs[1]!, users, toml: '[smtp]\nbare_line_endings = "normalize"\n' }),
  ]);
});

after(async () => {
  await Promise.all([reject.stop({ remove: true }), normalize.stop({ remove: true })]);
});

const FAKE_ENDS: [string, string][] = [
  ['\\n.\\n', '\n.\n'],
  ['\\r.\\r', '\r.\r'],
  ['\\n.\\r\\n', '\n.\r\n'],
  ['\\r\\n.\\n', '\r\n.\n'],
  ['\\r\\n.\\r', '\r\n.\r'],
];

const SMUGGLED = 'MAIL FROM:<evil@x>\r\nRCPT TO:<alice@sterna.test>\r\nDATA\r\nsmuggled\r\n';

/** Opens a transaction for `rcpt` and sends a body with a fake end followed by a smuggled transaction. */
async function smuggle(server: TestServer, rcpt: string, fakeEnd: string): Promise<TestClient> {
  const c = await TestClient.connect(server.ports.smtp);
  await c.expect(220);
  await c.cmd('EHLO client.example');
  await c.cmd('MAIL FROM:<sender@example.org>').then((r) => assert.equal(r.code, 250));
  await c.cmd(`RCPT TO:<${rcpt}>`).then((r) => assert.equal(r.code, 250));
  await c.cmd('DATA').then((r) => assert.equal(r.code, 354));
  c.send(`Subject: smuggling\r\n\r\nfirst part${fakeEnd}${SMUGGLED}\r\n.\r\n`);
  return c;
}

/** No reply is pending or left to come: the next reply is the one for NOOP. */
async function assertInSync(c: TestClient): Promise<void> {
  const noop = await c.cmd('NOOP');
  assert.equal(noop.code, 250);
  assert.equal(noop.text, '2.0.0 Ok');
}

const settle = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

test('smuggling, reject mode: every fake end-of-data makes the message refused with 550 5.6.11, nothing delivered', async () => {
  for (const [name, fakeEnd] of FAKE_ENDS) {
    const c = await smuggle(reject, 'alice@sterna.test', fakeEnd);
    const r = await c.read();
    assert.ok(r !== null, `${name}: connection closed`);
    assert.equal(r.code, 550, `${name}: ${r.text}`);
    assert.equal(r.enhanced, '5.6.11', name);
    await assertInSync(c);
    c.close();
  }
  await settle(300);
  await reject.app.manager.whenIdle();
  assert.equal((await maildirMessages(reject.dataDir, 'sterna.test', 'alice')).length, 0);
  assert.equal(reject.app.spool.size, 0);
});

test('smuggling, normalize mode: each fake end-of-data gives exactly one message, with the smuggled commands in its body', async () => {
  let expected = 0;
  for (const [name, fakeEnd] of FAKE_ENDS) {
    // One mailbox for the genuine message; the smuggled one would land in alice's.
    const c = await smuggle(normalize, 'bob@sterna.test', fakeEnd);
    const r = await c.read();
    assert.ok(r !== null, `${name}: connection closed`);
    assert.equal(r.code, 250, `${name}: ${r.text}`);
    assert.equal(r.enhanced, '2.0.0', name);
    assert.match(r.text, /^2\.0\.0 Ok: queued as [A-Z0-9]+$/);
    await assertInSync(c);
    c.close();
    expected++;
    const msgs = await waitForMessages(normalize.dataDir, 'sterna.test', 'bob', expected);
    assert.equal(msgs.length, expected, name);
  }
  await settle(300);
  await normalize.app.manager.whenIdle();
  const bob = await maildirMessages(normalize.dataDir, 'sterna.test', 'bob');
  assert.equal(bob.length, FAKE_ENDS.length);
  for (const msg of bob) {
    const text = msg.toString('latin1');
    // The fake end stays in the body as the literal line "." (not unstuffed), then the
    // smuggled commands as text, then the empty line before the real end of data.
    assert.ok(
      text.endsWith(
        '\r\n\r\nfirst part\r\n.\r\nMAIL FROM:<evil@x>\r\nRCPT TO:<alice@sterna.test>\r\nDATA\r\nsmuggled\r\n\r\n',
      ),
      JSON.stringify(text),
    );
    // Normalized: no bare CR or LF is left in the stored message.
    assert.doesNotMatch(text, /\r(?!\n)|(?<!\r)\n/);
  }
  assert.equal((await maildirMessages(normalize.dataDir, 'sterna.test', 'alice')).length, 0);
  assert.equal(normalize.app.spool.size, 0);
});
