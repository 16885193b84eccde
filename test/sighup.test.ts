/**
 * Issue 2: a renewed certificate takes effect on SIGHUP without a restart and without dropping
 * sessions. The real `sterna serve` process, a configured certificate pair, the file replaced,
 * SIGHUP sent: new TLS connections see the new certificate, an open session carries on.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import tls from 'node:tls';
import { generateSelfSigned } from '../src/server/tls.js';
import { freePort, sleep, startSternaProcess } from './helpers/process.js';
import { TestClient } from './helpers/smtp-client.js';

function fingerprint(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = tls.connect(
      { host: '127.0.0.1', port, rejectUnauthorized: false, servername: 'mx.sterna.test' },
      () => {
        const fp = s.getPeerCertificate().fingerprint256;
        s.destroy();
        resolve(fp);
      },
    );
    s.once('error', reject);
  });
}

test('SIGHUP reloads the certificate: new connections get the new one, an open session continues', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'sterna-sighup-'));
  const certFile = path.join(dir, 'cert.pem');
  const keyFile = path.join(dir, 'key.pem');
  const first = await generateSelfSigned('mx.sterna.test', new Date(Date.now() - 60_000));
  await writeFile(certFile, first.cert);
  await writeFile(keyFile, first.key, { mode: 0o600 });
  const smtp = await freePort();
  const submissions = await freePort();
  const configFile = path.join(dir, 'sterna.toml');
  await writeFile(
    configFile,
    `hostname = "mx.sterna.test"\ndata_dir = "${path.join(dir, 'data')}"\n` +
      `[listen]\nsmtp = ["127.0.0.1:${smtp}"]\nsubmission = []\nsubmissions = ["127.0.0.1:${submissions}"]\n` +
      `[tls]\ncert_file = "${certFile}"\nkey_file = "${keyFile}"\n[log]\nlevel = "info"\nformat = "json"\n`,
  );
  const server = await startSternaProcess({
    configFile,
    smtpPort: smtp,
    stdoutFile: path.join(dir, 'out.log'),
    stderrFile: path.join(dir, 'err.log'),
  });
  try {
    const before = await fingerprint(submissions);
    const open = await TestClient.connect(submissions, { tls: true });
    await open.expect(220);
    await open.cmd('EHLO still-here.test').then((r) => assert.equal(r.code, 250));

    const second = await generateSelfSigned('mx.sterna.test', new Date(Date.now() - 60_000));
    await writeFile(certFile, second.cert);
    await writeFile(keyFile, second.key, { mode: 0o600 });
    process.kill(server.pid, 'SIGHUP');
    let after = before;
    const deadline = Date.now() + 5000;
    while (after === before && Date.now() < deadline) {
      await sleep(50);
      after = await fingerprint(submissions);
    }
    assert.notEqual(after, before, 'new connections see the renewed certificate');
    assert.ok(
      (await readFile(path.join(dir, 'out.log'), 'utf8')).includes('SIGHUP: reloading'),
      'SIGHUP was handled',
    );
    // The session opened before the reload is untouched.
    await open.cmd('NOOP').then((r) => assert.equal(r.code, 250));
    await open.cmd('QUIT').then((r) => assert.equal(r.code, 221));
    open.close();
  } finally {
    await server.stop();
    await rm(dir, { recursive: true, force: true });
  }
});
