/**
 * `sterna sendmail` with real callers against a real server: a shell pipeline as cron runs it,
 * bsd-mailx's mail(1) (pointed at sterna through its `sendmail` variable, never the system's
 * /usr/sbin/sendmail), and SMTP on stdin (-bs); on a running server (delivered into the Maildir,
 * checked byte for byte) and on a stopped one (left in the maildrop, delivered at the next
 * start). When the tests run as root (CI does) the callers run as the unprivileged user
 * "nobody", to show that the submitter is the Unix user the kernel records and that it cannot
 * be forged: not with -f, not with a maildrop file written by hand, not with a hard link.
 * Exit codes are checked exactly (sysexits). docs/sendmail.md describes the behaviour.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { chmod, chown, link, mkdir, readdir, rename, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { encodeTrailer, type MaildropRecord } from '../src/queue/maildrop-format.js';
import { STERNA_CLI } from './helpers/process.js';
import { waitForMessages, maildirMessages } from './helpers/maildir.js';
import { startTestServer, TEST_HOSTNAME, type TestServer } from './helpers/server.js';
import { findTool, makeTempDir, requireTool } from './helpers/tools.js';
import { pollUntil } from './helpers/interop.js';
import { TestClient } from './helpers/smtp-client.js';

const IS_ROOT = process.getuid?.() === 0;
/** The caller: nobody when we are root, else ourselves (the forging checks then skip). */
const CALLER = IS_ROOT
  ? { login: 'nobody', uid: Number(execFileSync('id', ['-u', 'nobody']).toString().trim()) }
  : { login: process.env['USER'] ?? 'me', uid: process.getuid?.() ?? 0 };
const CALLER_GID = IS_ROOT ? Number(execFileSync('id', ['-g', 'nobody']).toString().trim()) : undefined;
const ORIGIN = 'sterna.test';
const SENDMAIL_TOML = `[limits]\nmessage_bytes = 20000\n[sendmail]\norigin = "${ORIGIN}"\nscan_interval_ms = 500\n`;

let tmp: { dir: string; cleanup(): Promise<void> };
let dataDir: string;
let configFile: string;
/** A symbolic link named "sendmail" to the built sterna command: it dispatches on its name. */
let sendmailLink: string;
let server: TestServer | null = null;

async function start(restart = false): Promise<TestServer> {
  server = await startTestServer({
    dataDir,
    toml: SENDMAIL_TOML,
    users: restart ? [] : [{ address: `alice@${ORIGIN}`, password: 'alice-password-1' }],
  });
  return server;
}

/**
 * The built command where the caller (nobody) can read it: the checkout may sit where only root
 * may enter (CI clones anywhere, /root included), as a real install never does. dist/,
 * node_modules and package.json are linked (hard links, a copy across file systems) into `dir`.
 */
async function callerReadableCli(dir: string): Promise<string> {
  const repo = path.resolve(path.dirname(STERNA_CLI), '../../..');
  const app = path.join(dir, 'app');
  await mkdir(app, { mode: 0o755 });
  for (const part of ['dist', 'node_modules', 'package.json']) {
    const from = path.join(repo, part);
    try {
      execFileSync('cp', ['-al', from, app], { stdio: 'pipe' });
    } catch {
      execFileSync('cp', ['-a', from, app], { stdio: 'pipe' });
    }
  }
  execFileSync('chmod', ['-R', 'a+rX', app], { stdio: 'pipe' });
  return path.join(app, path.relative(repo, STERNA_CLI));
}

before(async () => {
  tmp = await makeTempDir('sterna-sendmail-');
  dataDir = path.join(tmp.dir, 'data');
  await mkdir(dataDir);
  // The caller must reach data_dir/maildrop and read the configuration (docs/sendmail.md).
  await chmod(tmp.dir, 0o711);
  await chmod(dataDir, 0o711);
  configFile = path.join(tmp.dir, 'sterna.toml');
  await writeFile(configFile, `hostname = "${TEST_HOSTNAME}"\ndata_dir = "${dataDir}"\n${SENDMAIL_TOML}`);
  await chmod(configFile, 0o644);
  sendmailLink = path.join(tmp.dir, 'sendmail');
  await symlink(IS_ROOT ? await callerReadableCli(tmp.dir) : STERNA_CLI, sendmailLink);
  await start();
});

after(async () => {
  await server?.stop();
  await tmp.cleanup();
});

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a program as the caller (nobody under root), with stdin `input`; bounded in time. */
function runAsCaller(
  command: string,
  args: string[],
  input: string | Buffer,
  env: Record<string, string> = {},
): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', HOME: tmp.dir, STERNA_CONFIG: configFile, ...env },
      cwd: tmp.dir,
      ...(CALLER_GID !== undefined ? { uid: CALLER.uid, gid: CALLER_GID } : {}),
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() });
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(input);
  });
}

const sendmail = (args: string[], input: string | Buffer, env?: Record<string, string>): Promise<Run> =>
  runAsCaller(sendmailLink, args, input, env);

const DATE = String.raw`(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{1,2} \w{3} \d{4} \d{2}:\d{2}:\d{2} \+0000`;

/**
 * Checks a delivered file: the trace and the fields the server adds, then exactly `message`.
 * Returns the queue id.
 */
function assertLocalDelivery(
  file: Buffer | undefined,
  want: { sender: string; added: string; message: string },
): string {
  assert.ok(file !== undefined, 'nothing delivered');
  const text = file.toString('utf8');
  const head = new RegExp(
    `^Return-Path: <${want.sender}>\r\nDelivered-To: alice@${ORIGIN}\r\n` +
      `Received: by ${TEST_HOSTNAME} \\(Sterna, from local user ${CALLER.login} uid ${CALLER.uid}\\)\r\n` +
      `\tid ([0-9A-Z]{16});\r\n\t${DATE}\r\n`,
  );
  const m = head.exec(text);
  assert.ok(m !== null, `trace not as expected:\n${text}`);
  const qid = m[1] ?? '';
  const added = want.added.replace('QID', qid);
  const rest = text.slice(m[0].length);
  assert.ok(new RegExp(`^${added}`).test(rest), `added fields not as expected (want ${added}):\n${rest}`);
  assert.equal(rest.replace(new RegExp(`^${added}`), ''), want.message);
  return qid;
}

async function maildropFiles(): Promise<string[]> {
  return (await readdir(path.join(dataDir, 'maildrop'))).sort();
}

test('RFC 8601 5: an Authentication-Results field claiming our authserv-id is removed on this path too', async () => {
  const before = (await maildirMessages(dataDir, ORIGIN, 'alice')).length;
  const forged = `Authentication-Results: ${TEST_HOSTNAME}; dmarc=pass header.from=${ORIGIN}\r\n`;
  const run = await sendmail(
    [`alice@${ORIGIN}`],
    `${forged}From: ${CALLER.login}@${ORIGIN}\r\nSubject: forged\r\n\r\nforged results\r\n`,
  );
  assert.equal(run.code, 0, run.stderr);
  const msgs = await waitForMessages(dataDir, ORIGIN, 'alice', before + 1);
  const text = msgs[before]?.toString('utf8') ?? '';
  assert.ok(text.includes('Subject: forged\r\n'), text);
  assert.ok(!text.includes('Authentication-Results:'), `the forged field is gone:\n${text}`);
});

test('a cron-style pipeline with -t: LF becomes CRLF, Bcc is removed, Message-ID/Date/From added', async () => {
  const before = (await maildirMessages(dataDir, ORIGIN, 'alice')).length;
  const run = await runAsCaller(
    '/bin/sh',
    [
      '-c',
      `printf 'To: alice\\nBcc: alice@${ORIGIN}\\nSubject: cron job\\n\\nline one\\n..dots stay\\n' | "${sendmailLink}" -t -oi -odi -oem`,
    ],
    '',
  );
  assert.equal(run.code, 0, run.stderr);
  assert.equal(run.stderr, '');
  const msgs = await waitForMessages(dataDir, ORIGIN, 'alice', before + 1);
  assertLocalDelivery(msgs[before], {
    sender: `${CALLER.login}@${ORIGIN}`,
    added: `Message-ID: <QID@${TEST_HOSTNAME}>\r\nDate: ${DATE}\r\nFrom: "${CALLER.login}" <${CALLER.login}@${ORIGIN}>\r\n`,
    message: 'To: alice\r\nSubject: cron job\r\n\r\nline one\r\n..dots stay\r\n',
  });
});

test('without -i a lone "." ends the message; -F names the From; a body without header gets its empty line', async () => {
  const before = (await maildirMessages(dataDir, ORIGIN, 'alice')).length;
  const run = await sendmail(['-F', 'Night Job', `alice@${ORIGIN}`], 'just text\n.\nnot sent\n');
  assert.equal(run.code, 0, run.stderr);
  const msgs = await waitForMessages(dataDir, ORIGIN, 'alice', before + 1);
  assertLocalDelivery(msgs[before], {
    sender: `${CALLER.login}@${ORIGIN}`,
    added: `Message-ID: <QID@${TEST_HOSTNAME}>\r\nDate: ${DATE}\r\nFrom: "Night Job" <${CALLER.login}@${ORIGIN}>\r\n`,
    message: '\r\njust text\r\n',
  });
});

test(
  'bsd-mailx sends through sterna (its sendmail variable), as the calling user',
  requireTool('bsd-mailx'),
  async () => {
    const before = (await maildirMessages(dataDir, ORIGIN, 'alice')).length;
    const mailrc = path.join(tmp.dir, 'mailrc');
    await writeFile(mailrc, `set sendmail=${sendmailLink}\n`);
    await chmod(mailrc, 0o644);
    const run = await runAsCaller(
      findTool('bsd-mailx') ?? 'bsd-mailx',
      ['-s', 'From mailx', `alice@${ORIGIN}`],
      'Hello from mailx\n',
      {
        MAILRC: mailrc,
        // mailx names the locale's charset in Content-Type.
        LC_ALL: 'C.UTF-8',
      },
    );
    assert.equal(run.code, 0, run.stderr);
    const msgs = await waitForMessages(dataDir, ORIGIN, 'alice', before + 1);
    assertLocalDelivery(msgs[before], {
      sender: `${CALLER.login}@${ORIGIN}`,
      added: `Message-ID: <QID@${TEST_HOSTNAME}>\r\nDate: ${DATE}\r\nFrom: "${CALLER.login}" <${CALLER.login}@${ORIGIN}>\r\n`,
      message:
        `To: alice@${ORIGIN}\r\nSubject: From mailx\r\nMIME-Version: 1.0\r\n` +
        'Content-Type: text/plain; charset="UTF-8"\r\nContent-Transfer-Encoding: 8bit\r\n\r\nHello from mailx\r\n',
    });
  },
);

test('-bs: SMTP on stdin/stdout through the session engine; a sender the user does not own gets 553 5.7.1', async () => {
  const before = (await maildirMessages(dataDir, ORIGIN, 'alice')).length;
  const other = CALLER.login === 'alice' ? 'bob' : 'alice';
  const run = await sendmail(
    ['-bs'],
    `EHLO client\r\nMAIL FROM:<${other}@${ORIGIN}>\r\nRCPT TO:<alice@${ORIGIN}>\r\nRSET\r\n` +
      `MAIL FROM:<${CALLER.login}@${ORIGIN}>\r\nRCPT TO:<alice@${ORIGIN}>\r\nDATA\r\nSubject: bs\r\n\r\nover smtp\r\n.\r\nQUIT\r\n`,
  );
  assert.equal(run.code, 0, run.stderr);
  const replies = run.stdout.split('\r\n').filter((l) => !l.startsWith('250-'));
  assert.equal(replies[0], `220 ${TEST_HOSTNAME} ESMTP Sterna ready`);
  assert.equal(replies[1], `250 DSN`);
  assert.equal(replies[2], `250 2.1.0 Sender <${other}@${ORIGIN}> ok`);
  if (IS_ROOT)
    assert.equal(
      replies[3],
      `553 5.7.1 Sender address <${other}@${ORIGIN}> is not owned by the authenticated user ${CALLER.login}`,
    );
  assert.match(replies[8] ?? '', /^250 2\.0\.0 Ok: queued as [0-9A-Z]{16}$/);
  assert.equal(replies[9], `221 2.0.0 ${TEST_HOSTNAME} closing connection`);
  const msgs = await waitForMessages(dataDir, ORIGIN, 'alice', before + 1);
  const text = msgs[before]?.toString() ?? '';
  assert.match(text, new RegExp(`from local user ${CALLER.login} uid ${CALLER.uid}\\)`));
  assert.match(text, /Received: from client \(\[127\.0\.0\.1\]\)\r\n/);
  assert.ok(text.endsWith('Subject: bs\r\n\r\nover smtp\r\n'), text);
});

test('exit codes: usage 64, bad message 65, bad recipient 67, configuration 78; nothing left in the maildrop', async () => {
  const expect = async (
    args: string[],
    input: string | Buffer,
    code: number,
    stderr: RegExp,
    env?: Record<string, string>,
  ): Promise<void> => {
    const run = await sendmail(args, input, env);
    assert.equal(run.code, code, `${args.join(' ')}: ${run.stderr}`);
    assert.match(run.stderr, stderr);
    assert.equal(run.stderr.trim().split('\n').length, 1, `one line: ${run.stderr}`);
  };
  await expect(['-Z', 'alice'], 'x\n', 64, /^sendmail: unknown option -Z /);
  await expect(['-bd'], '', 64, /sterna serve/);
  await expect([], 'x\n', 64, /no recipients: name them as arguments, or use -t/);
  await expect(['-t'], 'Subject: none\n\nx\n', 65, /-t found no address in the To, Cc or Bcc headers/);
  await expect(['alice'], 'a\0b\n', 65, /NUL octet/);
  await expect(['alice'], `${'x'.repeat(1200)}\n`, 65, /limits\.text_line_bytes \(1000 octets/);
  await expect(['alice'], 'x\n'.repeat(15_000), 65, /larger than limits\.message_bytes \(20000 octets\)/);
  await expect(['bad address@'], 'x\n', 67, /recipient: "bad address@" is not a valid address/);
  await expect(['alice'], 'x\n', 78, /nope\.toml.*cannot read the configuration file/, {
    STERNA_CONFIG: path.join(tmp.dir, 'nope.toml'),
  });
  assert.deepEqual(await maildropFiles(), [], 'every refusal removed its file');
});

test(
  'another user cannot be forged: -f, a hand-written maildrop file, a hard link',
  { skip: IS_ROOT ? false : 'needs root to run as another user' },
  async () => {
    const before = (await maildirMessages(dataDir, ORIGIN, 'alice')).length;
    const f = await sendmail(['-f', `alice@${ORIGIN}`, 'alice'], 'Subject: forged\n\nx\n');
    assert.equal(f.code, 77, f.stderr);
    assert.equal(
      f.stderr,
      `sendmail: nobody may not send as <alice@${ORIGIN}>: leave out -f (your address is nobody@${ORIGIN}), or ask the administrator to add it to [sendmail] allowed_senders\n`,
    );
    // A file the user wrote by hand, claiming alice as the sender: the owner says nobody.
    const record: MaildropRecord = {
      v: 1,
      sender: `alice@${ORIGIN}`,
      recipients: [`alice@${ORIGIN}`],
      via: 'sendmail',
    };
    const drop = async (name: string, body: string, uid: number, gid: number): Promise<string> => {
      const file = path.join(dataDir, name);
      await writeFile(file, Buffer.concat([Buffer.from(body), encodeTrailer(record)]), { mode: 0o600 });
      await chown(file, uid, gid);
      await chmod(file, 0o740);
      return file;
    };
    const forged = await drop(
      '1M929YPN0000AQ9A',
      'Subject: forged\r\n\r\nx\r\n',
      CALLER.uid,
      CALLER_GID ?? 0,
    );
    await rename(forged, path.join(dataDir, 'maildrop', '1M929YPN0000AQ9A'));
    // Root's own file (root may send as anyone), hard-linked into the maildrop: its owner may not have put it there.
    const roots = await drop('1M929YPN0000AQ9B', 'Subject: linked\r\n\r\nx\r\n', 0, 0);
    await link(roots, path.join(dataDir, 'maildrop', '1M929YPN0000AQ9B'));
    // A bare LF: the body rules are DATA's, on this path too.
    record.sender = null;
    const bare = await drop('1M929YPN0000AQ9C', 'Subject: bare\n\nx\r\n', CALLER.uid, CALLER_GID ?? 0);
    await rename(bare, path.join(dataDir, 'maildrop', '1M929YPN0000AQ9C'));
    const refused = await pollUntil(
      async () => (await readdir(path.join(dataDir, 'maildrop-refused'))).sort(),
      (names) => names.length >= 3,
      10_000,
    );
    assert.deepEqual(refused, ['1M929YPN0000AQ9A', '1M929YPN0000AQ9B', '1M929YPN0000AQ9C']);
    assert.deepEqual(await maildropFiles(), []);
    assert.equal((await maildirMessages(dataDir, ORIGIN, 'alice')).length, before, 'nothing delivered');
  },
);

test('a stopped server: the message waits in the maildrop and is delivered at the next start', async () => {
  const before = (await maildirMessages(dataDir, ORIGIN, 'alice')).length;
  await server?.stop();
  server = null;
  const run = await runAsCaller(
    '/bin/sh',
    ['-c', `printf 'Subject: while stopped\\n\\nqueued\\n' | "${sendmailLink}" alice`],
    '',
  );
  assert.equal(run.code, 0, run.stderr);
  const waiting = await maildropFiles();
  assert.equal(waiting.length, 1);
  assert.match(waiting[0] ?? '', /^[0-9A-Z]{16}$/);
  await start(true);
  const msgs = await waitForMessages(dataDir, ORIGIN, 'alice', before + 1);
  assertLocalDelivery(msgs[before], {
    sender: `${CALLER.login}@${ORIGIN}`,
    added: `Message-ID: <QID@${TEST_HOSTNAME}>\r\nDate: ${DATE}\r\nFrom: "${CALLER.login}" <${CALLER.login}@${ORIGIN}>\r\n`,
    message: 'Subject: while stopped\r\n\r\nqueued\r\n',
  });
  assert.deepEqual(await maildropFiles(), [], 'removed once queued');
});

test('a draining server: what sendmail drops waits in the maildrop, as SMTP answers 421, and is delivered at the next start', async () => {
  const before = (await maildirMessages(dataDir, ORIGIN, 'alice')).length;
  if (server === null) await start(true);
  const running = server;
  assert.ok(running !== null);
  const drained = running.app.drain();
  const run = await sendmail(['alice'], 'Subject: while draining\n\nqueued later\n');
  assert.equal(run.code, 0, run.stderr);
  const c = await TestClient.connect(running.ports.smtp);
  await c.expect(421, '4.3.2');
  c.close();
  assert.equal(await drained, true);
  // Three scan intervals and the directory watch's event: the drained server picks nothing up.
  await new Promise((resolve) => setTimeout(resolve, 1_600));
  const waiting = await maildropFiles();
  assert.equal(waiting.length, 1, 'left in the maildrop');
  assert.equal(
    (await maildirMessages(dataDir, ORIGIN, 'alice')).length,
    before,
    'nothing delivered while draining',
  );
  await running.stop();
  server = null;
  await start(true);
  const msgs = await waitForMessages(dataDir, ORIGIN, 'alice', before + 1);
  assert.match(msgs[before]?.toString('utf8') ?? '', /\r\nSubject: while draining\r\n\r\nqueued later\r\n$/);
  assert.deepEqual(await maildropFiles(), [], 'removed once queued');
});
