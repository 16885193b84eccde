/**
 * Local delivery that cannot write the Maildir leaves the recipient deferred with a reason that
 * tells the administrator what to fix, retries on the configured schedule, and delivers exactly
 * once when the problem is gone. The unwritable Maildir is real: chattr +i refuses even root.
 * Also: transport "discard" accepts, queues and throws away.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { renderOutcome } from '../src/message/outcome.js';
import { TestClient } from './helpers/smtp-client.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { maildirMessages, waitForMessages } from './helpers/maildir.js';

let server: TestServer;

before(async () => {
  server = await startTestServer({
    users: [{ address: 'dora@sterna.test', password: 'pw-dora-1' }],
    top: 'transport = { "sink.test" = "discard" }',
    toml: '[local_delivery]\nretry_ms = 300\n',
  });
});

after(async () => {
  await server.stop({ remove: true });
});

async function send(to: string, body: string): Promise<string> {
  const c = await TestClient.connect(server.ports.smtp);
  await c.expect(220);
  await c.cmd('EHLO retry.test');
  assert.equal((await c.cmd('MAIL FROM:<sender@example.org>')).code, 250);
  const r = await c.cmd(`RCPT TO:<${to}>`);
  assert.equal(r.code, 250, r.text);
  assert.equal((await c.cmd('DATA')).code, 354);
  c.send(`${body}.\r\n`);
  const q = await c.expect(250, '2.0.0');
  await c.cmd('QUIT');
  c.close();
  return /queued as (\S+)/.exec(q.text)![1]!;
}

function chattr(flag: '+i' | '-i', dir: string): boolean {
  try {
    execFileSync('chattr', [flag, dir], { stdio: 'pipe' });
    return true;
  } catch {
    return false;
  }
}

test('an unwritable Maildir defers the recipient with a reason, then the retry delivers exactly once', async (t) => {
  const maildir = path.join(server.dataDir, 'mailboxes', 'sterna.test', 'dora');
  for (const sub of ['tmp', 'new', 'cur']) await mkdir(path.join(maildir, sub), { recursive: true });
  if (!chattr('+i', path.join(maildir, 'tmp'))) {
    if (process.env['CI'] === 'true')
      assert.fail('chattr is needed for this test (e2fsprogs) and must work on the data dir');
    t.skip('chattr +i not available on this file system');
    return;
  }
  try {
    const qid = await send('dora@sterna.test', 'Subject: retry\r\n\r\nwaits for the admin\r\n');
    // Wait for the first attempt to be recorded as deferred.
    let state = (await server.app.spool.read(qid)).states[0];
    const deadline = Date.now() + 5000;
    while (state?.status !== 'deferred' && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
      state = (await server.app.spool.read(qid)).states[0];
    }
    assert.equal(state?.status, 'deferred');
    assert.ok(
      state.status === 'deferred' && /operation not permitted \(EPERM\)/.test(renderOutcome(state.outcome)),
      JSON.stringify(state),
    );
    assert.ok(
      state.status === 'deferred' && renderOutcome(state.outcome).includes('check the owner'),
      state.status,
    );
    assert.equal((await maildirMessages(server.dataDir, 'sterna.test', 'dora')).length, 0);
  } finally {
    chattr('-i', path.join(maildir, 'tmp'));
  }
  const msgs = await waitForMessages(server.dataDir, 'sterna.test', 'dora', 1);
  assert.equal(msgs.length, 1);
  assert.ok(msgs[0]!.toString().endsWith('waits for the admin\r\n'));
  await new Promise((r) => setTimeout(r, 700)); // a further retry round must not add a copy
  assert.equal((await maildirMessages(server.dataDir, 'sterna.test', 'dora')).length, 1);
  assert.equal(server.app.spool.size, 0, 'the message is finished and gone from the spool');
});

test('transport "discard": any recipient in the domain is accepted, queued, then dropped', async () => {
  const qid = await send('anyone@sink.test', 'Subject: sink\r\n\r\ngone\r\n');
  assert.match(qid, /^[0-9A-Z]+$/);
  const deadline = Date.now() + 5000;
  while (server.app.spool.list().some((m) => m.qid === qid) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.equal(
    server.app.spool.list().some((m) => m.qid === qid),
    false,
  );
});
