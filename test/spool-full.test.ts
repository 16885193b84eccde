/**
 * Issue 3: a full disk. The spool lives on a 1 MiB tmpfs; a message that does not fit gets
 * 452 4.3.1 (RFC 3463: mail system full), nothing half-written survives, the session and the
 * spool keep working, and a message that fits is accepted and survives a restart.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { TestClient } from './helpers/smtp-client.js';
import { startTestServer } from './helpers/server.js';
import { waitForMessages } from './helpers/maildir.js';

function tryMount(dir: string): boolean {
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', dir], { stdio: 'pipe' });
    return true;
  } catch {
    return false;
  }
}

test('a full spool disk answers 452 4.3.1, keeps the spool consistent, and accepts again', async (t) => {
  const dataDir = await mkdtemp(path.join(tmpdir(), 'sterna-full-'));
  const spoolDir = path.join(dataDir, 'small-spool');
  await mkdir(spoolDir);
  if (!tryMount(spoolDir)) {
    process.stderr.write('*** spool-full test skipped: cannot mount a tmpfs here (needs root) ***\n');
    t.skip('cannot mount a tmpfs');
    return;
  }
  try {
    const opts = {
      dataDir,
      users: [{ address: 'fay@sterna.test', password: 'pw-fay-123' }],
      toml: `[spool]\ndir = "${spoolDir}"\nsegment_bytes = 262144\n`,
    };
    let server = await startTestServer(opts);
    const c = await TestClient.connect(server.ports.smtp);
    await c.expect(220);
    await c.cmd('EHLO full.test');
    const send = async (
      body: string,
    ): Promise<{ code: number; enhanced: string | undefined; text: string }> => {
      assert.equal((await c.cmd('MAIL FROM:<a@example.org>')).code, 250);
      assert.equal((await c.cmd('RCPT TO:<fay@sterna.test>')).code, 250);
      assert.equal((await c.cmd('DATA')).code, 354);
      c.send(`${body}.\r\n`);
      const r = await c.read();
      assert.ok(r !== null);
      return r;
    };
    const line = 'y'.repeat(998) + '\r\n';
    const big = await send('Subject: too big for the disk\r\n\r\n' + line.repeat(2048)); // 2 MiB
    assert.equal(big.code, 452, big.text);
    assert.equal(big.enhanced, '4.3.1');
    assert.equal(server.app.spool.size, 0);
    const small = await send('Subject: fits\r\n\r\nsmall enough\r\n');
    assert.equal(small.code, 250, small.text);
    assert.equal(small.enhanced, '2.0.0');
    await c.cmd('QUIT');
    c.close();
    const msgs = await waitForMessages(dataDir, 'sterna.test', 'fay', 1);
    assert.equal(msgs.length, 1);
    assert.ok(msgs[0]!.toString().endsWith('small enough\r\n'));
    await server.stop();
    server = await startTestServer({ dataDir, toml: opts.toml });
    assert.equal(server.app.recovery.corrupt.length, 0, JSON.stringify(server.app.recovery));
    assert.equal(server.app.spool.size, 0, 'the delivered message is not delivered again');
    await server.stop();
  } finally {
    execFileSync('umount', [spoolDir], { stdio: 'pipe' });
    await rm(dataDir, { recursive: true, force: true });
  }
});
