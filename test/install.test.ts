/**
 * Installation: the `sterna` command as npm installs it (package.json "bin", run directly, not
 * through `node`, so the build must leave it executable), its dispatch on the name it is called
 * by (a `sendmail` symbolic link, docs/sendmail.md), and the systemd unit in contrib/, checked
 * by `systemd-analyze verify` (docs/install.md).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFile, stat, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { STERNA_CLI } from './helpers/process.js';
import { findTool, makeTempDir, requireTool } from './helpers/tools.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));

function run(
  file: string,
  args: string[],
): Promise<{ code: number | string; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      file,
      args,
      { timeout: 20_000, env: { ...process.env, STERNA_CONFIG: '' } },
      (err, stdout, stderr) => {
        resolve({ code: err === null ? 0 : (err.code ?? 1), stdout, stderr });
      },
    );
  });
}

test('the built bin runs by itself: executable, with its shebang (npx sterna, npm link, npm install -g)', async () => {
  const pkg = JSON.parse(await readFile(path.join(REPO, 'package.json'), 'utf8')) as {
    version: string;
    bin: Record<string, string>;
  };
  assert.equal(path.join(REPO, pkg.bin['sterna'] ?? ''), STERNA_CLI);
  assert.equal(
    (await stat(STERNA_CLI)).mode & 0o111,
    0o111,
    'executable by everyone, as the build leaves it',
  );
  const r = await run(STERNA_CLI, ['--version']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, `sterna ${pkg.version}\n`);
});

test('called as sendmail, mailq or newaliases, sterna is that command', async () => {
  const tmp = await makeTempDir('sterna-names-');
  try {
    for (const name of ['sendmail', 'mailq', 'newaliases'])
      await symlink(STERNA_CLI, path.join(tmp.dir, name));
    const help = await run(path.join(tmp.dir, 'sendmail'), ['--help']);
    assert.equal(help.code, 0, help.stderr);
    assert.match(help.stdout, /^Usage: sterna sendmail /);
    const bad = await run(path.join(tmp.dir, 'sendmail'), ['-Y']);
    assert.equal(bad.code, 64);
    assert.equal(bad.stderr, 'sendmail: unknown option -Y (see: sterna sendmail --help)\n');
    const config = path.join(tmp.dir, 'sterna.toml');
    await writeFile(config, `data_dir = "${tmp.dir}/data"\naliases_file = "${tmp.dir}/aliases.toml"\n`);
    await writeFile(path.join(tmp.dir, 'aliases.toml'), '"root@localhost" = ["alice@localhost"]\n');
    const aliases = await run(path.join(tmp.dir, 'newaliases'), ['-C', config]);
    assert.equal(aliases.code, 0, aliases.stderr);
    assert.match(aliases.stdout, /aliases\.toml: 1 aliases, ok/);
    // mailq on a data directory that does not exist: a one-line reason, EX_CANTCREAT.
    const mailq = await run(path.join(tmp.dir, 'mailq'), ['-C', config]);
    assert.equal(mailq.code, 73);
    assert.match(mailq.stderr, /^mailq: data_dir .* cannot be reached \(ENOENT\): start the server once/);
  } finally {
    await tmp.cleanup();
  }
});

test(
  'contrib/sterna.service passes systemd-analyze verify, hardened',
  requireTool('systemd-analyze'),
  async () => {
    const unit = await readFile(path.join(REPO, 'contrib', 'sterna.service'), 'utf8');
    for (const line of [
      /^User=sterna$/m,
      /^AmbientCapabilities=CAP_NET_BIND_SERVICE$/m,
      /^NoNewPrivileges=yes$/m,
      /^ProtectSystem=strict$/m,
      /^ReadWritePaths=\/var\/lib\/sterna$/m,
      /^Restart=on-failure$/m,
      /^ExecReload=\/bin\/kill -HUP \$MAINPID$/m,
    ])
      assert.match(unit, line);
    // Offline check: verify wants ExecStart's program to exist and be executable, and no booted
    // systemd (--root would need a whole unit tree). So the copy checked points ExecStart at the
    // built command (executable, which also checks the build), the one change; --man=no skips
    // the man pages Documentation= may name. Warnings count: an unknown key is only a warning.
    const tmp = await makeTempDir('sterna-unit-');
    try {
      const copy = path.join(tmp.dir, 'sterna.service');
      await writeFile(copy, unit.replace('/usr/local/bin/sterna ', `${STERNA_CLI} `));
      const r = await run(findTool('systemd-analyze') ?? 'systemd-analyze', ['verify', '--man=no', copy]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stderr, '', 'no warning either');
    } finally {
      await tmp.cleanup();
    }
  },
);
