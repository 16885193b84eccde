import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable, Writable } from 'node:stream';
import { UserStore } from '../auth/users.js';
import { runUserCommand } from './user-command.js';

const tmpRoot = await mkdtemp(join(tmpdir(), 'sterna-user-cli-'));
after(() => rm(tmpRoot, { recursive: true, force: true }));
let counter = 0;
const freshFile = (): string => join(tmpRoot, `d${counter++}`, 'users.json');

class Sink extends Writable {
  text = '';
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    this.text += chunk.toString('utf8');
    cb();
  }
}

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

async function run(usersFile: string, argv: string[], input = ''): Promise<Run> {
  const stdout = new Sink();
  const stderr = new Sink();
  const stdin = Readable.from(input === '' ? [] : [Buffer.from(input)]);
  const code = await runUserCommand(argv, { stdin, stdout, stderr, usersFile });
  return { code, stdout: stdout.text, stderr: stderr.text };
}

async function verifies(usersFile: string, user: string, password: string): Promise<boolean> {
  const store = await UserStore.open(usersFile, { watch: false });
  try {
    return (await store.verify({ kind: 'password', authcid: user, authzid: '', password })).ok;
  } finally {
    store.close();
  }
}

test('add, list, passwd, del round trip with the password on stdin', async () => {
  const file = freshFile();
  assert.deepEqual(await run(file, ['add', 'Alice@Example.org'], 'first-pw\n'), {
    code: 0,
    stdout: 'added user alice@example.org\n',
    stderr: '',
  });
  assert.deepEqual(
    await run(file, ['add', 'bob@example.org', '--send-as', '@example.net'], 'bob-pw\r\nignored\n'),
    {
      code: 0,
      stdout: 'added user bob@example.org\n',
      stderr: '',
    },
  );
  assert.deepEqual(await run(file, ['list']), {
    code: 0,
    stdout: 'alice@example.org\nbob@example.org\n',
    stderr: '',
  });
  assert.equal(await verifies(file, 'alice@example.org', 'first-pw'), true);
  assert.equal(await verifies(file, 'bob@example.org', 'bob-pw'), true);

  assert.deepEqual(await run(file, ['passwd', 'alice@example.org'], 'second-pw'), {
    code: 0,
    stdout: 'changed password of alice@example.org\n',
    stderr: '',
  });
  assert.equal(await verifies(file, 'alice@example.org', 'first-pw'), false);
  assert.equal(await verifies(file, 'alice@example.org', 'second-pw'), true);

  assert.deepEqual(await run(file, ['del', 'alice@example.org']), {
    code: 0,
    stdout: 'deleted user alice@example.org\n',
    stderr: '',
  });
  assert.deepEqual(await run(file, ['list']), { code: 0, stdout: 'bob@example.org\n', stderr: '' });
  const json = await readFile(file, 'utf8');
  assert.ok(!json.includes('bob-pw'), 'the users file holds no plain password');
});

test('add --cram-md5 stores a CRAM secret and --send-as entries', async () => {
  const file = freshFile();
  const r = await run(
    file,
    ['add', 'carol@example.org', '--cram-md5', '--send-as', 'c@example.org', '--send-as', '@example.com'],
    'pw\n',
  );
  assert.equal(r.code, 0);
  const parsed = JSON.parse(await readFile(file, 'utf8')) as {
    users: Record<string, { cram?: string; sendAs?: string[] }>;
  };
  assert.equal(parsed.users['carol@example.org']!.cram, 'plain$cHc=');
  assert.deepEqual(parsed.users['carol@example.org']!.sendAs, ['c@example.org', '@example.com']);
});

test('operational errors exit 1 with a clear message: user exists, user not found', async () => {
  const file = freshFile();
  await run(file, ['add', 'alice@example.org'], 'pw\n');
  assert.deepEqual(await run(file, ['add', 'ALICE@example.org'], 'pw\n'), {
    code: 1,
    stdout: '',
    stderr: 'sterna user add: user alice@example.org already exists\n',
  });
  assert.deepEqual(await run(file, ['del', 'bob@example.org']), {
    code: 1,
    stdout: '',
    stderr: 'sterna user del: no user bob@example.org\n',
  });
  assert.deepEqual(await run(file, ['passwd', 'bob@example.org'], 'pw\n'), {
    code: 1,
    stdout: '',
    stderr: 'sterna user passwd: no user bob@example.org\n',
  });
});

test('an empty or missing password exits 1 and adds nobody', async () => {
  const file = freshFile();
  assert.deepEqual(await run(file, ['add', 'alice@example.org'], '\n'), {
    code: 1,
    stdout: '',
    stderr: 'sterna user add: the password must not be empty\n',
  });
  assert.deepEqual(await run(file, ['add', 'alice@example.org'], ''), {
    code: 1,
    stdout: '',
    stderr: 'sterna user add: no password on standard input\n',
  });
  assert.deepEqual(await run(file, ['list']), { code: 0, stdout: '', stderr: '' });
});

test('usage errors exit 2: no command, unknown command, bad address, missing or extra arguments, bad option', async () => {
  const file = freshFile();
  const cases: string[][] = [
    [],
    ['frobnicate'],
    ['add'],
    ['add', 'not-an-address'],
    ['add', 'a@b', 'c@d'],
    ['add', 'a@b', '--bogus'],
    ['add', 'a@b', '--send-as', 'nope'],
    ['add', 'a@b', '--send-as'],
    ['del', 'a@b', '--cram-md5'],
    ['list', 'extra'],
  ];
  for (const argv of cases) {
    const r = await run(file, argv, 'pw\n');
    assert.equal(r.code, 2, argv.join(' '));
    assert.equal(r.stdout, '', argv.join(' '));
    assert.match(r.stderr, /Usage: sterna user/, argv.join(' '));
  }
  assert.deepEqual(await run(file, ['list']), { code: 0, stdout: '', stderr: '' });
});

test('--help prints usage to stdout and exits 0, for the command and each subcommand', async () => {
  const file = freshFile();
  const top = await run(file, ['--help']);
  assert.equal(top.code, 0);
  assert.match(top.stdout, /^Usage: sterna user COMMAND/);
  for (const sub of ['add', 'del', 'passwd', 'list']) {
    const r = await run(file, [sub, '--help']);
    assert.equal(r.code, 0, sub);
    assert.ok(r.stdout.startsWith(`Usage: sterna user ${sub}`), sub);
    assert.equal(r.stderr, '');
  }
});

/** A fake terminal: readline reads from it, and nothing it echoes may reach the output. */
function fakeTty(): PassThrough & { isTTY: boolean } {
  return Object.assign(new PassThrough(), { isTTY: true });
}

test('on a terminal the password is asked twice, without echo', async () => {
  const file = freshFile();
  const stdin = fakeTty();
  const stdout = new Sink();
  const stderr = new Sink();
  const done = runUserCommand(['add', 'alice@example.org'], { stdin, stdout, stderr, usersFile: file });
  stdin.write('tty-secret\r');
  stdin.write('tty-secret\r');
  assert.equal(await done, 0);
  assert.equal(stdout.text, 'added user alice@example.org\n');
  assert.equal(stderr.text, 'Password: \nRetype password: \n');
  assert.ok(!stdout.text.includes('tty-secret') && !stderr.text.includes('tty-secret'));
  assert.equal(await verifies(file, 'alice@example.org', 'tty-secret'), true);
});

test('on a terminal, two different passwords exit 1 and add nobody', async () => {
  const file = freshFile();
  const stdin = fakeTty();
  const stdout = new Sink();
  const stderr = new Sink();
  const done = runUserCommand(['add', 'alice@example.org'], { stdin, stdout, stderr, usersFile: file });
  stdin.write('one\rtwo\r');
  assert.equal(await done, 1);
  assert.equal(stderr.text, 'Password: \nRetype password: \nsterna user add: the passwords do not match\n');
  assert.deepEqual(await run(file, ['list']), { code: 0, stdout: '', stderr: '' });
});
