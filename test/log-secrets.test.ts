/**
 * RFC 4954 15 (security): no password or AUTH payload ever reaches a log, at any level, even
 * at debug and for failed attempts. Runs the real `sterna` process with a JSON log on file and
 * searches the whole log for the secrets in every form a client sends them.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { addUser } from '../src/auth/users.js';
import { freePort, readJsonLog, startSternaProcess } from './helpers/process.js';
import { TestClient } from './helpers/smtp-client.js';

const GOOD = 'Correct-Horse-9137';
const BAD = 'Wrong-Battery-4521';
const b64 = (s: string): string => Buffer.from(s).toString('base64');

test('no password or SASL payload appears in the log, for good and bad attempts, PLAIN and LOGIN', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'sterna-secrets-'));
  const dataDir = path.join(dir, 'data');
  const smtp = await freePort();
  const submission = await freePort();
  const configFile = path.join(dir, 'sterna.toml');
  await writeFile(
    configFile,
    `hostname = "mx.sterna.test"\ndata_dir = "${dataDir}"\nlocal_domains = ["sterna.test"]\n` +
      `[server]\nworkers = 1\n[listen]\nsmtp = ["127.0.0.1:${smtp}"]\nsubmission = ["127.0.0.1:${submission}"]\nsubmissions = []\n` +
      `[auth]\nfailure_delay_ms = 1\n[log]\nlevel = "debug"\nformat = "json"\n`,
  );
  await addUser(path.join(dataDir, 'users.json'), 'kim@sterna.test', GOOD);
  const server = await startSternaProcess({
    configFile,
    smtpPort: smtp,
    stdoutFile: path.join(dir, 'out.log'),
    stderrFile: path.join(dir, 'err.log'),
  });
  try {
    const attempts: [string, string[], number][] = [
      [`AUTH PLAIN ${b64(`\0kim@sterna.test\0${GOOD}`)}`, [], 235],
      [`AUTH PLAIN ${b64(`\0kim@sterna.test\0${BAD}`)}`, [], 535],
      ['AUTH LOGIN', [b64('kim@sterna.test'), b64(BAD)], 535],
      ['AUTH LOGIN', [b64('kim@sterna.test'), b64(GOOD)], 235],
    ];
    for (const [first, rest, code] of attempts) {
      const c = await TestClient.connect(submission);
      await c.expect(220);
      await c.cmd('EHLO secrets.test');
      assert.equal((await c.cmd('STARTTLS')).code, 220);
      await c.upgrade();
      await c.cmd('EHLO secrets.test');
      let r = await c.cmd(first);
      for (const line of rest) r = await c.cmd(line);
      assert.equal(r.code, code, `${first}: ${r.text}`);
      await c.cmd('QUIT');
      c.close();
    }
  } finally {
    await server.stop();
  }
  const log =
    (await readFile(path.join(dir, 'out.log'), 'utf8')) + (await readFile(path.join(dir, 'err.log'), 'utf8'));
  const { records } = await readJsonLog(path.join(dir, 'out.log'));
  assert.ok(
    records.some((r) => r.msg === 'auth' && r.fields['result'] === 'ok'),
    'the AUTH outcome is logged',
  );
  assert.ok(
    records.some((r) => r.msg === 'auth' && r.fields['result'] === 'failed'),
    'failures are logged',
  );
  for (const secret of [
    GOOD,
    BAD,
    b64(GOOD),
    b64(BAD),
    b64(`\0kim@sterna.test\0${GOOD}`),
    b64(`\0kim@sterna.test\0${BAD}`),
  ]) {
    assert.equal(log.includes(secret), false, `the log contains ${secret}`);
  }
  await rm(dir, { recursive: true, force: true });
});
