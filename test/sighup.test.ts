/**
 * Issue 2: a renewed certificate takes effect on SIGHUP without a restart and without dropping
 * sessions. The real `sterna serve` process, a configured certificate pair, the file replaced,
 * SIGHUP sent: new TLS connections see the new certificate, an open session carries on.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { spawn } from 'node:child_process';
import { mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import tls from 'node:tls';
import { generateSelfSigned } from '../src/server/tls.js';
import { freePort, readGreeting, sleep, STERNA_CLI, startSternaProcess } from './helpers/process.js';
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
      `[server]\nworkers = 1\n[listen]\nsmtp = ["127.0.0.1:${smtp}"]\nsubmission = []\nsubmissions = ["127.0.0.1:${submissions}"]\n` +
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
    // Log lines reach the file within 100 ms (log.ts): wait for this one.
    const logged = async (): Promise<boolean> =>
      (await readFile(path.join(dir, 'out.log'), 'utf8')).includes('SIGHUP: reloading');
    const loggedBy = Date.now() + 5000;
    while (!(await logged()) && Date.now() < loggedBy) await sleep(50);
    assert.ok(await logged(), 'SIGHUP was handled');
    // The session opened before the reload is untouched.
    await open.cmd('NOOP').then((r) => assert.equal(r.code, 250));
    await open.cmd('QUIT').then((r) => assert.equal(r.code, 221));
    open.close();
  } finally {
    await server.stop();
    await rm(dir, { recursive: true, force: true });
  }
});

test('SIGHUP re-reads the configuration: the log level and aliases apply at once, other changed keys are named as needing a restart', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'sterna-sighup-'));
  const smtp = await freePort();
  const configFile = path.join(dir, 'sterna.toml');
  const base =
    `hostname = "mx.sterna.test"\ndata_dir = "${path.join(dir, 'data')}"\nlocal_domains = ["sterna.test"]\n` +
    `[server]\nworkers = 1\n[listen]\nsmtp = ["127.0.0.1:${smtp}"]\nsubmission = []\nsubmissions = []\n`;
  await writeFile(configFile, `${base}[log]\nlevel = "info"\nformat = "json"\n`);
  const out = path.join(dir, 'out.log');
  const server = await startSternaProcess({
    configFile,
    smtpPort: smtp,
    stdoutFile: out,
    stderrFile: path.join(dir, 'err.log'),
  });
  /** The RCPT reply code for `rcpt`. */
  const rcptCode = async (rcpt: string): Promise<number> => {
    const c = await TestClient.connect(smtp);
    try {
      await c.expect(220);
      await c.cmd('EHLO client.test');
      await c.cmd('MAIL FROM:<a@elsewhere.test>');
      return (await c.cmd(`RCPT TO:<${rcpt}>`)).code;
    } finally {
      c.close();
    }
  };
  /** The JSON log lines whose msg starts with `prefix`. */
  const logLines = async (prefix: string): Promise<Record<string, unknown>[]> =>
    (await readFile(out, 'utf8'))
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((l) => typeof l['msg'] === 'string' && l['msg'].startsWith(prefix));
  try {
    assert.equal(await rcptCode('sales@sterna.test'), 550);
    await writeFile(
      configFile,
      `${base}[aliases]\n"sales@sterna.test" = ["postmaster@sterna.test"]\n` +
        `[limits]\nmessage_bytes = 1000000\n[log]\nlevel = "debug"\nformat = "json"\n`,
    );
    process.kill(server.pid, 'SIGHUP');
    const deadline = Date.now() + 10_000;
    while ((await logLines('SIGHUP: these keys changed')).length === 0 && Date.now() < deadline)
      await sleep(50);
    const [applied] = await logLines('SIGHUP: configuration keys applied');
    assert.deepEqual(applied?.['keys'], ['aliases.sales@sterna.test', 'log.level']);
    const [restart] = await logLines('SIGHUP: these keys changed');
    assert.deepEqual(restart?.['keys'], ['limits.message_bytes']);
    assert.equal(restart?.['level'], 40);
    // The new alias is live, and debug lines now appear (level 20): a connection reset by the
    // client is logged at debug ("socket error").
    assert.equal(await rcptCode('sales@sterna.test'), 250);
    const rst = net.connect(smtp, '127.0.0.1');
    await once(rst, 'data');
    rst.resetAndDestroy();
    const debugBy = Date.now() + 10_000;
    while (!(await readFile(out, 'utf8')).includes('"level":20') && Date.now() < debugBy) await sleep(50);
    assert.ok((await readFile(out, 'utf8')).includes('"level":20'), 'debug logging after the reload');
    // A file that does not load changes nothing and says so.
    await writeFile(configFile, `${base}[limits]\nmessage_bytes = "ten"\n`);
    process.kill(server.pid, 'SIGHUP');
    const until = Date.now() + 10_000;
    while ((await logLines('SIGHUP: the configuration does not load')).length === 0 && Date.now() < until)
      await sleep(50);
    assert.equal((await logLines('SIGHUP: the configuration does not load')).length, 1);
    assert.equal(await rcptCode('sales@sterna.test'), 250);
  } finally {
    await server.stop();
    await rm(dir, { recursive: true, force: true });
  }
});

test('a SIGHUP the moment the listeners accept, while start-up is still finishing, reloads instead of killing the server', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'sterna-sighup-early-'));
  const smtp = await freePort();
  const admin = await freePort();
  const configFile = path.join(dir, 'sterna.toml');
  // The HTTP API and the admin listener start after the SMTP listeners: the window.
  await writeFile(
    configFile,
    `hostname = "mx.sterna.test"\ndata_dir = "${path.join(dir, 'data')}"\nlocal_domains = ["sterna.test"]\n` +
      `[server]\nworkers = 1\n[listen]\nsmtp = ["127.0.0.1:${smtp}"]\nsubmission = []\nsubmissions = []\n` +
      `[http_api]\nlisten = ["127.0.0.1:0"]\n[admin]\nlisten = ["127.0.0.1:${admin}"]\n` +
      `[log]\nlevel = "info"\nformat = "json"\n`,
  );
  const out = path.join(dir, 'out.log');
  const outFile = await open(out, 'w');
  const child = spawn(process.execPath, [STERNA_CLI, 'serve', '--config', configFile], {
    stdio: ['ignore', outFile.fd, 'ignore'],
  });
  await outFile.close();
  let exit: string | undefined;
  child.once('exit', (code, signal) => (exit = `code ${String(code)}, signal ${String(signal)}`));
  try {
    // Poll the port every few milliseconds and signal at the first greeting.
    const deadline = Date.now() + 15_000;
    let greeted = false;
    while (!greeted && exit === undefined && Date.now() < deadline) {
      greeted = await new Promise<boolean>((resolve) => {
        const s = net.connect(smtp, '127.0.0.1');
        s.once('data', (d) => {
          s.destroy();
          resolve(d.toString('latin1').startsWith('220'));
        });
        s.once('error', () => resolve(false));
      });
      if (!greeted) await sleep(2);
    }
    assert.ok(greeted, `no greeting (${exit ?? 'still running'})`);
    process.kill(child.pid ?? 0, 'SIGHUP');
    const by = Date.now() + 10_000;
    while (
      !(await readFile(out, 'utf8')).includes('SIGHUP: reloading') &&
      exit === undefined &&
      Date.now() < by
    )
      await sleep(50);
    assert.equal(exit, undefined, 'the server is still running');
    assert.ok((await readFile(out, 'utf8')).includes('SIGHUP: reloading'), 'the reload was logged');
    assert.equal((await readGreeting(smtp, 2000))?.slice(0, 4), '220 ');
  } finally {
    child.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  }
});
