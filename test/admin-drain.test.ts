/**
 * SIGTERM drains (docs/operations.md): a real `sterna serve` child gets a real SIGTERM while
 * one client is in the middle of DATA and another sits idle. The idle session ends at once with
 * 421 4.3.2, /readyz says draining (503), a new connection gets 421 4.3.2, the open transaction
 * still completes with 250 2.0.0 (then 421 4.3.2), and the process exits 0.
 */
import assert from 'node:assert/strict';
import { appendFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import { REPLIES } from '../src/smtp/replies.js';
import {
  freePort,
  outputTail,
  prepareServeDir,
  readJsonLog,
  startSternaProcess,
  type SternaProcess,
} from './helpers/process.js';
import { TestClient } from './helpers/smtp-client.js';

const DOMAIN = 'drain.test';
const { code: SHUTDOWN_CODE, enhanced: SHUTDOWN_ENHANCED } = REPLIES.SHUTTING_DOWN;

test('SIGTERM mid-transaction: the transaction completes with 250, new connections get 421 4.3.2, exit 0', async () => {
  const serve = await prepareServeDir({
    prefix: 'sterna-drain-',
    hostname: `mx.${DOMAIN}`,
    domain: DOMAIN,
    mailboxes: [`ann@${DOMAIN}`],
  });
  const adminPort = await freePort();
  await appendFile(
    serve.configFile,
    `[admin]\nlisten = ["127.0.0.1:${adminPort}"]\n[limits]\ndrain_timeout_ms = 20000\n`,
  );
  let proc: SternaProcess | undefined;
  const clients: TestClient[] = [];
  try {
    proc = await startSternaProcess({
      configFile: serve.configFile,
      smtpPort: serve.port,
      stdoutFile: path.join(serve.dir, 'stdout.log'),
      stderrFile: path.join(serve.dir, 'stderr.log'),
    });
    const open = async (): Promise<TestClient> => {
      const c = await TestClient.connect(serve.port);
      clients.push(c);
      return c;
    };
    const busy = await open();
    await busy.expect(220);
    await busy.cmd('EHLO client.test');
    assert.equal((await busy.cmd(`MAIL FROM:<bob@example.net>`)).code, 250);
    assert.equal((await busy.cmd(`RCPT TO:<ann@${DOMAIN}>`)).code, 250);
    assert.equal((await busy.cmd('DATA')).code, 354);
    busy.send(`From: <bob@example.net>\r\nTo: <ann@${DOMAIN}>\r\nSubject: drain\r\n\r\nfirst half\r\n`);
    const idle = await open();
    await idle.expect(220);
    await idle.cmd('EHLO idle.test');
    const ready = await fetch(`http://127.0.0.1:${adminPort}/readyz`);
    assert.equal(ready.status, 200);

    proc.kill('SIGTERM');
    // The idle session is ended at once: the drain has begun.
    await idle.expect(SHUTDOWN_CODE, SHUTDOWN_ENHANCED);

    const draining = await fetch(`http://127.0.0.1:${adminPort}/readyz`);
    assert.equal(draining.status, 503);
    const reason = (await draining.json()) as { ready: boolean; reason: string };
    assert.equal(reason.ready, false);
    assert.equal(reason.reason, 'draining');

    const late = await open();
    await late.expect(SHUTDOWN_CODE, SHUTDOWN_ENHANCED);
    assert.equal(await late.read(), null, 'closed after the 421');

    busy.send('second half\r\n.\r\n');
    const queued = await busy.expect(250, '2.0.0');
    const qid = /queued as (\S+)/.exec(queued.text)?.[1];
    assert.ok(qid !== undefined, queued.text);
    await busy.expect(SHUTDOWN_CODE, SHUTDOWN_ENHANCED);

    const exit = await proc.exited;
    assert.deepEqual(exit, { code: 0, signal: null }, await outputTail(proc));
    const { records } = await readJsonLog(proc.stdoutFile);
    assert.ok(
      records.some((r) => r.msg === 'queued' && r.fields['qid'] === qid),
      'the message was queued before the exit',
    );
    assert.ok(records.some((r) => r.msg === 'stopped'));
  } finally {
    for (const c of clients) c.close();
    if (proc !== undefined && proc.exit === undefined) await proc.stop();
    await rm(serve.dir, { recursive: true, force: true });
  }
});
