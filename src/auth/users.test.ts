import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  addUser,
  deleteUser,
  listUsers,
  parseUsersFile,
  setPassword,
  UserFileError,
  UserStore,
  type UserStoreLogger,
} from './users.js';

const tmpRoot = await mkdtemp(join(tmpdir(), 'sterna-users-'));
after(() => rm(tmpRoot, { recursive: true, force: true }));
let counter = 0;
async function freshFile(): Promise<string> {
  const dir = await mkdtemp(join(tmpRoot, `t${counter++}-`));
  return join(dir, 'users.json');
}

function recordingLogger(): UserStoreLogger & {
  lines: { level: string; obj: Record<string, unknown>; msg: string }[];
} {
  const lines: { level: string; obj: Record<string, unknown>; msg: string }[] = [];
  return {
    lines,
    info: (obj, msg) => lines.push({ level: 'info', obj, msg }),
    error: (obj, msg) => lines.push({ level: 'error', obj, msg }),
  };
}

async function waitFor(cond: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) assert.fail(`condition not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const password = (authcid: string, pw: string, authzid = '') =>
  ({ kind: 'password', authcid, authzid, password: pw }) as const;

const CHALLENGE = '<123.456@mx.example.org>';
const cram = (username: string, pw: string, challenge = CHALLENGE) =>
  ({
    kind: 'cram-md5',
    username,
    challenge,
    digestHex: createHmac('md5', pw).update(challenge).digest('hex'),
  }) as const;

// One shared store for the verify tests: alice (PLAIN/LOGIN only), carol (also CRAM-MD5).
const sharedFile = await freshFile();
await addUser(sharedFile, 'alice@example.org', 'alice-pw', { sendAs: ['Alias@Example.org', '@Example.NET'] });
await addUser(sharedFile, 'carol@example.org', 'carol-pw', { cram: true });
const shared = await UserStore.open(sharedFile, { watch: false });
after(() => shared.close());

test('verify: the right password authenticates and names the user', async () => {
  assert.deepEqual(await shared.verify(password('alice@example.org', 'alice-pw')), {
    ok: true,
    user: 'alice@example.org',
  });
});

test('verify: a wrong password fails', async () => {
  assert.deepEqual(await shared.verify(password('alice@example.org', 'alice-pW')), { ok: false });
});

test('verify: an unknown user fails, after the same scrypt work as a known one', async () => {
  const t0 = process.hrtime.bigint();
  assert.deepEqual(await shared.verify(password('mallory@example.org', 'alice-pw')), { ok: false });
  const unknownMs = Number(process.hrtime.bigint() - t0) / 1e6;
  // An unknown user must not answer in microseconds: it pays one scrypt too.
  assert.ok(unknownMs > 5, `unknown user answered in ${unknownMs} ms`);
});

test('verify: addresses are case-insensitive as a whole', async () => {
  assert.deepEqual(await shared.verify(password('ALICE@Example.ORG', 'alice-pw')), {
    ok: true,
    user: 'alice@example.org',
  });
});

test('RFC 4954 5: an authzid equal to the authcid is accepted; any other fails (no proxy authorisation)', async () => {
  assert.deepEqual(await shared.verify(password('alice@example.org', 'alice-pw', 'Alice@example.org')), {
    ok: true,
    user: 'alice@example.org',
  });
  assert.deepEqual(await shared.verify(password('alice@example.org', 'alice-pw', 'carol@example.org')), {
    ok: false,
  });
});

test('RFC 2195: CRAM-MD5 authenticates a user created with a CRAM secret', async () => {
  assert.deepEqual(await shared.verify(cram('carol@example.org', 'carol-pw')), {
    ok: true,
    user: 'carol@example.org',
  });
  assert.deepEqual(await shared.verify(cram('carol@example.org', 'wrong')), { ok: false });
});

test('CRAM-MD5 fails for a user without a CRAM secret, even with the right password', async () => {
  assert.deepEqual(await shared.verify(cram('alice@example.org', 'alice-pw')), { ok: false });
  assert.deepEqual(await shared.verify(cram('nobody@example.org', 'x')), { ok: false });
});

test('has and list are case-insensitive and sorted', () => {
  assert.equal(shared.has('Carol@EXAMPLE.org'), true);
  assert.equal(shared.has('bob@example.org'), false);
  assert.deepEqual(shared.list(), ['alice@example.org', 'carol@example.org']);
});

test('RFC 6409 6.1: mayUseSender allows own address, sendAs addresses and sendAs domains only', () => {
  const cases: [string, string, boolean][] = [
    ['alice@example.org', 'alice@example.org', true],
    ['alice@example.org', 'Alice@EXAMPLE.org', true],
    ['ALICE@example.org', 'alice@example.org', true],
    ['alice@example.org', 'alias@example.org', true],
    ['alice@example.org', 'ALIAS@example.ORG', true],
    ['alice@example.org', 'anyone@example.net', true],
    ['alice@example.org', 'anyone@EXAMPLE.NET', true],
    ['alice@example.org', 'anyone@sub.example.net', false],
    ['alice@example.org', 'anyone@example.net.evil', false],
    ['alice@example.org', 'carol@example.org', false],
    ['alice@example.org', 'alice@example.org.evil', false],
    ['alice@example.org', 'example.net', false],
    ['carol@example.org', 'alias@example.org', false],
    ['carol@example.org', 'anyone@example.net', false],
    ['nobody@example.org', 'nobody@example.org', false],
  ];
  for (const [user, sender, expected] of cases) {
    assert.equal(shared.mayUseSender(user, sender), expected, `${user} as ${sender}`);
  }
});

test('mayUseSender allows the null sender (bounces, auto-replies)', () => {
  assert.equal(shared.mayUseSender('carol@example.org', ''), true);
});

test('a missing users file opens as an empty store', async () => {
  const store = await UserStore.open(await freshFile(), { watch: false });
  assert.deepEqual(store.list(), []);
  assert.deepEqual(await store.verify(password('a@b', 'x')), { ok: false });
  store.close();
});

test('open refuses an invalid users file, without quoting its contents', async () => {
  const file = await freshFile();
  await writeFile(file, '{"version": 1, "users": {"a@b": {"password": "scrypt$SECRET');
  await assert.rejects(UserStore.open(file, { watch: false }), (err: unknown) => {
    assert.ok(err instanceof UserFileError);
    assert.equal(err.code, 'BAD_FILE');
    assert.equal(err.message, 'not valid JSON (is it half-written or hand-edited?)');
    return true;
  });
});

test('the store sees a user added by another writer, without a restart', async () => {
  const file = await freshFile();
  await addUser(file, 'alice@example.org', 'pw1');
  const logger = recordingLogger();
  const store = await UserStore.open(file, { logger, pollIntervalMs: 200, debounceMs: 20 });
  try {
    assert.deepEqual(store.list(), ['alice@example.org']);
    await addUser(file, 'bob@example.org', 'pw2');
    await waitFor(() => store.has('bob@example.org'));
    assert.deepEqual(await store.verify(password('bob@example.org', 'pw2')), {
      ok: true,
      user: 'bob@example.org',
    });
    await deleteUser(file, 'alice@example.org');
    await waitFor(() => !store.has('alice@example.org'));
    assert.ok(logger.lines.some((l) => l.level === 'info' && l.msg === 'users file reloaded'));
  } finally {
    store.close();
  }
});

test('the stat poll alone notices a change when there is no directory watch', async () => {
  const file = await freshFile();
  await addUser(file, 'alice@example.org', 'pw1');
  const store = await UserStore.open(file, { pollIntervalMs: 100, debounceMs: 10, fsWatch: false });
  try {
    await setPassword(file, 'alice@example.org', 'pw2');
    const deadline = Date.now() + 5_000;
    let ok = false;
    while (!ok && Date.now() < deadline) {
      ok = (await store.verify(password('alice@example.org', 'pw2'))).ok;
      if (!ok) await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(ok, true);
  } finally {
    store.close();
  }
});

test('a half-written file on reload keeps the previous users and logs an error without secrets', async () => {
  const file = await freshFile();
  await addUser(file, 'alice@example.org', 'pw1', { cram: true });
  const logger = recordingLogger();
  const store = await UserStore.open(file, { logger, watch: false });
  try {
    const full = await readFile(file, 'utf8');
    const half = full.slice(0, Math.floor(full.length / 2));
    await writeFile(file, half);
    await store.reload();
    assert.deepEqual(store.list(), ['alice@example.org']);
    assert.deepEqual(await store.verify(password('alice@example.org', 'pw1')), {
      ok: true,
      user: 'alice@example.org',
    });
    const errors = logger.lines.filter((l) => l.level === 'error');
    assert.equal(errors.length, 1);
    assert.equal(errors[0]!.obj['err'], 'not valid JSON (is it half-written or hand-edited?)');
    assert.ok(!JSON.stringify(logger.lines).includes('scrypt$'));
    assert.ok(!JSON.stringify(logger.lines).includes('plain$'));
    // When the writer finishes, the next reload takes the new contents.
    await writeFile(file, full.replace('alice@example.org', 'alice2@example.org'));
    await store.reload();
    assert.deepEqual(store.list(), ['alice2@example.org']);
  } finally {
    store.close();
  }
});

test('a watched store ignores a half-written file and recovers when it is complete', async () => {
  const file = await freshFile();
  await addUser(file, 'alice@example.org', 'pw1');
  const logger = recordingLogger();
  const store = await UserStore.open(file, { logger, pollIntervalMs: 100, debounceMs: 10 });
  try {
    await writeFile(file, '{"version": 1, "users": {');
    await waitFor(() => logger.lines.some((l) => l.level === 'error'));
    assert.deepEqual(store.list(), ['alice@example.org']);
    await addUser(file, 'bob@example.org', 'pw2').catch((err: unknown) => {
      // The writer refuses to modify an invalid file.
      assert.ok(err instanceof UserFileError && err.code === 'BAD_FILE');
    });
    await writeFile(file, JSON.stringify({ version: 1, users: {} }));
    await waitFor(() => store.list().length === 0);
  } finally {
    store.close();
  }
});

test('writers create the parent directory and a 0600 file, and leave no temporary or lock file', async () => {
  const dir = await mkdtemp(join(tmpRoot, 'nested-'));
  const file = join(dir, 'a', 'b', 'users.json');
  await addUser(file, 'Alice@Example.ORG', 'pw', { sendAs: ['@Example.NET', 'x@y.org', 'X@y.org'] });
  assert.equal((await stat(file)).mode & 0o777, 0o600);
  assert.deepEqual(await readdir(join(dir, 'a', 'b')), ['users.json']);
  const json: unknown = JSON.parse(await readFile(file, 'utf8'));
  const parsed = parseUsersFile(json);
  assert.deepEqual(Object.keys(parsed.users), ['alice@example.org']);
  assert.deepEqual(parsed.users['alice@example.org']!.sendAs, ['@example.net', 'x@y.org']);
  assert.equal(parsed.users['alice@example.org']!.cram, undefined);
  assert.match(parsed.users['alice@example.org']!.password, /^scrypt\$16384\$8\$1\$/);
});

test('addUser refuses an existing user; deleteUser and setPassword refuse an unknown one', async () => {
  const file = await freshFile();
  await addUser(file, 'alice@example.org', 'pw');
  const code = (c: string) => (err: unknown) => err instanceof UserFileError && err.code === c;
  await assert.rejects(addUser(file, 'ALICE@example.org', 'pw'), code('USER_EXISTS'));
  await assert.rejects(deleteUser(file, 'bob@example.org'), code('USER_NOT_FOUND'));
  await assert.rejects(setPassword(file, 'bob@example.org', 'pw'), code('USER_NOT_FOUND'));
  await assert.rejects(addUser(file, 'no-at-sign', 'pw'), code('BAD_ADDRESS'));
  await assert.rejects(addUser(file, 'a b@example.org', 'pw'), code('BAD_ADDRESS'));
  await assert.rejects(addUser(file, 'a@b@c', 'pw'), code('BAD_ADDRESS'));
  await assert.rejects(addUser(file, '@example.org', 'pw'), code('BAD_ADDRESS'));
  await assert.rejects(addUser(file, 'bob@example.org', 'pw', { sendAs: ['@'] }), code('BAD_ADDRESS'));
  assert.deepEqual(await listUsers(file), ['alice@example.org']);
});

test('setPassword replaces the hash and, for a CRAM user, the CRAM secret', async () => {
  const file = await freshFile();
  await addUser(file, 'carol@example.org', 'old', { cram: true });
  await setPassword(file, 'carol@example.org', 'new');
  const store = await UserStore.open(file, { watch: false });
  assert.deepEqual((await store.verify(password('carol@example.org', 'old'))).ok, false);
  assert.deepEqual((await store.verify(password('carol@example.org', 'new'))).ok, true);
  assert.deepEqual((await store.verify(cram('carol@example.org', 'old'))).ok, false);
  assert.deepEqual((await store.verify(cram('carol@example.org', 'new'))).ok, true);
  store.close();
});

test("concurrent writers do not lose each other's changes (lock file)", async () => {
  const file = await freshFile();
  const names = Array.from({ length: 6 }, (_, i) => `user${i}@example.org`);
  await Promise.all(names.map((n) => addUser(file, n, 'pw')));
  assert.deepEqual(await listUsers(file), names);
});

test('a writer waits for a lock held by another writer', async () => {
  const file = await freshFile();
  await addUser(file, 'alice@example.org', 'pw');
  await writeFile(`${file}.lock`, '12345\n');
  const release = setTimeout(() => void rm(`${file}.lock`), 200);
  try {
    await addUser(file, 'bob@example.org', 'pw');
  } finally {
    clearTimeout(release);
  }
  assert.deepEqual(await listUsers(file), ['alice@example.org', 'bob@example.org']);
});

test('parseUsersFile names the problem in a hand-edited file', () => {
  const bad = (json: unknown, message: string) =>
    assert.throws(
      () => parseUsersFile(json),
      (err: unknown) => err instanceof UserFileError && err.code === 'BAD_FILE' && err.message === message,
    );
  bad([], 'top level is not a JSON object');
  bad({ version: 2, users: {} }, '"version" must be 1');
  bad({ version: 1 }, '"users" is not an object');
  bad({ version: 1, users: {}, extra: 1 }, 'unknown top-level key "extra"');
  bad(
    { version: 1, users: { alice: { password: 'x' } } },
    'user "alice": not an address of the form local@domain',
  );
  bad({ version: 1, users: { 'a@b': {} } }, 'user "a@b": "password" must be a string');
  bad({ version: 1, users: { 'a@b': { password: 'x', sendas: [] } } }, 'user "a@b": unknown key "sendas"');
  bad({ version: 1, users: { 'a@b': { password: 'x', cram: 1 } } }, 'user "a@b": "cram" must be a string');
  bad(
    { version: 1, users: { 'a@b': { password: 'x', sendAs: ['nope'] } } },
    'user "a@b": "sendAs" entries must be addresses or "@domain"',
  );
  bad(
    { version: 1, users: { 'a@b': { password: 'x' }, 'A@B': { password: 'y' } } },
    'user "A@B": listed twice (addresses are case-insensitive)',
  );
  assert.deepEqual(
    parseUsersFile({ version: 1, users: { 'Alice@Example.org': { password: 'x', sendAs: ['@B.org'] } } }),
    {
      version: 1,
      users: { 'alice@example.org': { password: 'x', sendAs: ['@b.org'] } },
    },
  );
});

test('a user whose password is not a scrypt string ("!") cannot log in with a password', async () => {
  const file = await freshFile();
  await writeFile(file, JSON.stringify({ version: 1, users: { 'locked@example.org': { password: '!' } } }));
  const store = await UserStore.open(file, { watch: false });
  try {
    assert.equal(store.has('locked@example.org'), true);
    assert.deepEqual(await store.verify(password('locked@example.org', '!')), { ok: false });
  } finally {
    store.close();
  }
});
