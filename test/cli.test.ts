/**
 * The `sterna` command as a user runs it: help, version, configuration errors that name the
 * key with exit code 2, and `serve` on the embedded defaults (a fresh directory, nothing else).
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { TestClient } from './helpers/smtp-client.js';

const CLI = fileURLToPath(new URL('../src/cli/sterna.js', import.meta.url));

function run(
  args: string[],
  opts: { cwd?: string; input?: string } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile(
      process.execPath,
      [CLI, ...args],
      { cwd: opts.cwd, timeout: 20_000, env: { ...process.env, STERNA_CONFIG: '' } },
      (err, stdout, stderr) => {
        const code = err === null ? 0 : typeof err.code === 'number' ? err.code : 1;
        resolve({ code, stdout, stderr });
      },
    );
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
}

test('sterna --help lists the commands and exits 0; --version prints the version', async () => {
  const help = await run(['--help']);
  assert.equal(help.code, 0);
  for (const cmd of ['serve', 'check-config', 'user'])
    assert.ok(help.stdout.includes(`sterna ${cmd}`), help.stdout);
  const pkg = JSON.parse(await readFile(new URL('../../package.json', import.meta.url), 'utf8')) as {
    version: string;
  };
  const version = await run(['--version']);
  assert.equal(version.code, 0);
  assert.equal(version.stdout, `sterna ${pkg.version}\n`);
});

test('every subcommand has --help', async () => {
  for (const cmd of ['serve', 'check-config', 'user']) {
    const r = await run([cmd, '--help']);
    assert.equal(r.code, 0, `${cmd} --help: ${r.stderr}`);
    assert.ok(r.stdout.includes('Usage'), `${cmd} --help: ${r.stdout}`);
  }
});

test('an unknown command is a usage error: exit 2', async () => {
  const r = await run(['frobnicate']);
  assert.equal(r.code, 2);
  assert.ok(r.stderr.includes('unknown command "frobnicate"'), r.stderr);
});

test('check-config names the bad key and exits 2; a good file exits 0', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'sterna-cli-'));
  try {
    const bad = path.join(dir, 'bad.toml');
    await writeFile(bad, '[limits]\nmessage_bytes = "10M"\n[limts]\nx = 1\n');
    const r = await run(['check-config', '--config', bad]);
    assert.equal(r.code, 2);
    assert.ok(r.stderr.includes('limits.message_bytes'), r.stderr);
    assert.ok(r.stderr.includes('limts'), r.stderr);
    const good = path.join(dir, 'good.toml');
    await writeFile(good, `data_dir = "${dir}"\n[limits]\nmessage_bytes = 1000000\n`);
    const ok = await run(['check-config', '--config', good]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(ok.stdout, `configuration ok: ${good}\n`);
    const missing = await run(['serve', '--config', path.join(dir, 'nope.toml')]);
    assert.equal(missing.code, 2);
    assert.ok(missing.stderr.includes('cannot read the configuration file'), missing.stderr);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('check-config and serve: a Maildir owner or group this machine does not know exits 2 naming the key', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'sterna-cli-'));
  try {
    const file = path.join(dir, 'owner.toml');
    await writeFile(
      file,
      `data_dir = "${dir}"\n[local_delivery]\nowner = "no-such-sterna-user"\ngroup = "no-such-sterna-group"\n`,
    );
    for (const cmd of ['check-config', 'serve']) {
      const r = await run([cmd, '--config', file]);
      assert.equal(r.code, 2, `${cmd}: ${r.stderr}`);
      assert.match(r.stderr, /local_delivery\.owner: no such name in \/etc\/passwd: "no-such-sterna-user"/);
      assert.match(r.stderr, /local_delivery\.group: no such name in \/etc\/group: "no-such-sterna-group"/);
    }
    // Names this machine has (and numbers) pass.
    await writeFile(file, `data_dir = "${dir}"\n[local_delivery]\nowner = "root"\ngroup = "0"\n`);
    const ok = await run(['check-config', '--config', file]);
    assert.equal(ok.code, 0, ok.stderr);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('check-config: a relay with credentials over unverified TLS exits 2 naming the key; the explicit opt-out warns and exits 0', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'sterna-cli-'));
  try {
    const entry =
      '"*" = { relay = "smtp.provider.test:587", tls = "required", auth_user = "u", auth_password = "p"';
    const weak = path.join(dir, 'weak.toml');
    await writeFile(weak, `data_dir = "${dir}"\n[transport]\n${entry} }\n`);
    const r = await run(['check-config', '--config', weak]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /transport\."\*"\.tls: a relay with AUTH credentials must verify its certificate/);
    assert.match(r.stderr, /set transport\."\*"\.auth_over_unverified_tls = true/);

    const optOut = path.join(dir, 'opt-out.toml');
    await writeFile(
      optOut,
      `data_dir = "${dir}"\n[transport]\n${entry}, auth_over_unverified_tls = true }\n`,
    );
    const ok = await run(['check-config', '--config', optOut]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(ok.stdout, `configuration ok: ${optOut}\n`);
    assert.equal(
      ok.stderr,
      'sterna check-config: warning: transport."*".auth_over_unverified_tls = true: the AUTH password for smtp.provider.test:587 is sent without verifying the relay\'s certificate; an active attacker on the path can collect it (prefer tls = "required-verify" with tls_ca_file)\n',
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('serve with no config runs on the embedded defaults: smtp on 127.0.0.1:2525, data in ./data', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'sterna-defaults-'));
  const child = spawn(process.execPath, [CLI, 'serve'], {
    cwd: dir,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, STERNA_CONFIG: '' },
  });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  try {
    const deadline = Date.now() + 15_000;
    while (!out.includes('"port":2465') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.ok(out.includes('"listener":"smtp"') && out.includes('"port":2525'), out);
    assert.ok(out.includes('"port":2587') && out.includes('"port":2465'), out);
    assert.ok(out.includes('swaks --server 127.0.0.1:2525'), out);
    assert.ok(out.includes('TEST certificate') || out.includes('test certificate'), out);
    const c = await TestClient.connect(2525);
    await c.expect(220);
    await c.cmd('EHLO cli.test').then((r) => assert.equal(r.code, 250));
    await c.cmd('QUIT').then((r) => assert.equal(r.code, 221));
    c.close();
    await readFile(path.join(dir, 'data', 'tls', 'test-cert.pem'));
  } finally {
    child.kill('SIGTERM');
    const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
    assert.equal(code, 0, out);
    await rm(dir, { recursive: true, force: true });
  }
});
