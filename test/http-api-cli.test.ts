/**
 * `sterna apikey add|list|delete` as an operator runs it (the compiled command, a config file),
 * and [http_api] configuration errors: exit 2 naming the key.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { addUser } from '../src/auth/users.js';
import { ApiKeyStore } from '../src/api/keys.js';
import { STERNA_CLI } from './helpers/process.js';
import { runTool } from './helpers/tools.js';

const sterna = (args: string[]) =>
  runTool(process.execPath, [STERNA_CLI, ...args], { env: { STERNA_CONFIG: '' } });

test('apikey add prints a key once, stores only its hash (0600); list shows no secret; delete revokes', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'sterna-apikey-'));
  try {
    const config = path.join(dir, 'sterna.toml');
    await writeFile(config, `data_dir = "${dir}"\n`);
    await addUser(path.join(dir, 'users.json'), 'alice@example.org', 'pw');
    const nouser = await sterna(['apikey', 'add', 'bob@example.org', '--config', config]);
    assert.equal(nouser.code, 1);
    assert.match(nouser.stderr, /no user bob@example\.org/);

    const add = await sterna([
      'apikey',
      'add',
      'alice@example.org',
      '--sender',
      'news@example.org',
      '--config',
      config,
    ]);
    assert.equal(add.code, 0, add.stderr);
    const key = add.stdout.trim();
    assert.match(key, /^stk_[0-9a-f]{12}_[A-Za-z0-9_-]{43}$/);
    const id = key.slice(4, 16);
    assert.match(add.stderr, new RegExp(`key ${id} created for alice@example.org`));
    const file = path.join(dir, 'api-keys.json');
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    assert.ok(!(await readFile(file, 'utf8')).includes(key.slice(17)), 'the secret is not stored');
    const store = new ApiKeyStore(file, (err) => assert.fail(String(err)));
    assert.deepEqual(await store.verify(key), {
      id,
      user: 'alice@example.org',
      senders: ['news@example.org'],
    });

    const list = await sterna(['apikey', 'list', '--config', config]);
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stdout, new RegExp(`^${id}  alice@example\\.org  news@example\\.org  \\d{4}-`));
    assert.ok(!list.stdout.includes(key.slice(17)));

    assert.equal((await sterna(['apikey', 'add', '--config', config])).code, 2);
    assert.equal(
      (await sterna(['apikey', 'add', 'alice@example.org', '--sender', 'bad', '--config', config])).code,
      1,
    );
    const del = await sterna(['apikey', 'delete', id, '--config', config]);
    assert.equal(del.code, 0, del.stderr);
    assert.equal(await store.verify(key), null, 'a deleted key is refused at once');
    assert.equal((await sterna(['apikey', 'delete', id, '--config', config])).code, 1);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('check-config: a bad [http_api] key is named, exit 2', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'sterna-apikey-'));
  try {
    const config = path.join(dir, 'sterna.toml');
    await writeFile(
      config,
      `data_dir = "${dir}"\n[http_api]\nlisten = ["nowhere", "127.0.0.1:99999"]\nmessages_per_minute = -1\n`,
    );
    const r = await sterna(['check-config', '--config', config]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /http_api\.listen\[0\]/);
    assert.match(r.stderr, /http_api\.messages_per_minute/);
    assert.match(r.stderr, /http_api\.listen\[1\]: port 99999 is out of range/);
    // An address another listener uses (listen.smtp's default) is refused before start.
    await writeFile(config, `data_dir = "${dir}"\n[http_api]\nlisten = ["127.0.0.1:2525"]\n`);
    const clash = await sterna(['check-config', '--config', config]);
    assert.equal(clash.code, 2);
    assert.match(
      clash.stderr,
      /http_api\.listen\[0\]: "127\.0\.0\.1:2525" is already used by listen\.smtp\[0\]/,
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
