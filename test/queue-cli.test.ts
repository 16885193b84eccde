/**
 * `sterna queue` end to end: a real server with a DNS server of the test's own on 127.0.0.1
 * and a receiving SMTP sink on 127.0.0.2. far.test's MX (127.0.0.4) refuses connections, so its
 * messages stay deferred; example.test's MX (the sink) answers 451 to the recipients listed in
 * `refused` until a test lets them through. The commands go through the control socket of the
 * running server, once through the real CLI binary, and at the end through the spool of the
 * stopped server. Bounces are checked as RFC 3464 DSNs.
 */
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { chmod, chown, lstat, mkdir, mkdtemp, rm, stat, symlink, unlink, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, mock, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { queueCommand } from './helpers/outbound.js';
import type { RecipientState } from '../src/message/envelope.js';
import type { QueueEntry, QueueMessageDetail } from '../src/queue/admin.js';
import { parseDsn } from './helpers/dsn-parser.js';
import type { Config } from '../src/config/schema.js';
import {
  controlDirPath,
  controlSocketPath,
  ControlDirError,
  legacyControlSocketPath,
  parseControlRequest,
} from '../src/server/control.js';
import { startDnsServer, type TestDnsServer } from './helpers/dns-server.js';
import { maildirMessages, waitForMessages } from './helpers/maildir.js';
import { liveStates, outboundToml, sendMessage, waitFor } from './helpers/outbound.js';
import { startSmtpSink, type SmtpSink } from './helpers/smtp-sink.js';
import { dataDirsWithCert, startTestServer, type TestServer } from './helpers/server.js';

const CLI = fileURLToPath(new URL('../src/cli/sterna.js', import.meta.url));

let dns: TestDnsServer;
let sink: SmtpSink;
let server: TestServer;
let running = true;
/** Recipients the sink answers 451 to. */
const refused = new Set<string>();
/** Set when the sink got the end of the data for race@example.test and left it unanswered. */
let raceHeld = false;
/** Calls of process.umask while the server started (DESIGN: the control socket needs none). */
let umaskCalls = -1;

before(async () => {
  dns = await startDnsServer({
    'far.test': { MX: [{ preference: 10, exchange: 'mx.far.test' }] },
    'mx.far.test': { A: ['127.0.0.4'] },
    'example.test': { MX: [{ preference: 10, exchange: 'mx1.example.test' }] },
    'mx1.example.test': { A: ['127.0.0.2'] },
  });
  sink = await startSmtpSink({
    host: '127.0.0.2',
    respond: (cmd) => {
      if (cmd.verb === 'DATA-END' && cmd.session.transcript.some((l) => l.includes('<race@example.test>'))) {
        raceHeld = true;
        return { silent: true };
      }
      if (cmd.verb !== 'RCPT') return undefined;
      const addr = /<([^>]*)>/.exec(cmd.line)?.[1]?.toLowerCase() ?? '';
      return refused.has(addr) ? `451 4.2.1 <${addr}>: mailbox busy, try again` : undefined;
    },
  });
  const umask = mock.method(process, 'umask');
  try {
    server = await startServer();
  } finally {
    umaskCalls = umask.mock.callCount();
    umask.mock.restore();
  }
});

/** The test server; with dataDir, a restart on the same data directory. */
function startServer(dataDir?: string): Promise<TestServer> {
  return startTestServer({
    ...(dataDir !== undefined
      ? { dataDir }
      : { users: [{ address: 'dora@sterna.test', password: 'pw-dora-1' }] }),
    toml: `${outboundToml({ dnsPort: dns.port, outbound: { port: sink.port, connect_timeout_ms: 2000 } })}[queue]
first_retry_ms = 150
max_backoff_ms = 300
jitter = 0
`,
  });
}

after(async () => {
  if (running) await server.stop({ remove: true });
  await sink.close();
  await dns.close();
});

const BODY = 'From: dora@sterna.test\r\nSubject: queue-cli\r\n\r\nWaiting in the queue.\r\n';

function send(from: string, to: string[], body = BODY): Promise<string> {
  return sendMessage(server.ports.smtp, { from, to, body });
}

function states(qid: string): RecipientState[] | null {
  return liveStates(server, qid);
}

async function waitDeferred(qid: string): Promise<void> {
  await waitFor(`${qid} to be deferred`, () => states(qid)?.[0]?.status === 'deferred');
}

/**
 * Sends dora's message to `rcpt` and waits until it is deferred: far.test refuses connections;
 * at example.test the sink answers 451 to `rcpt` from now on (until the test deletes it from
 * `refused`).
 */
async function sendDeferred(rcpt: string): Promise<string> {
  if (rcpt.endsWith('@example.test')) refused.add(rcpt);
  const qid = await send('dora@sterna.test', [rcpt]);
  await waitDeferred(qid);
  return qid;
}

/** The attempts so far of a deferred message's first recipient (0 when not deferred). */
function attempts(qid: string): number {
  const st = states(qid)?.[0];
  return st?.status === 'deferred' ? st.attempts : 0;
}

/**
 * Waits until the queue manager has had its chance at every message due at `dueAt`: the time
 * has passed, the deferred message `witness` has been retried twice since (so a retry pass began
 * after it), and the manager is idle (whatever that pass started has ended).
 */
async function waitRetryPassAfter(dueAt: number, witness: string): Promise<void> {
  await waitFor('the retry time', () => Date.now() > dueAt);
  const before = attempts(witness);
  await waitFor(`two retries of ${witness}`, () => attempts(witness) >= before + 2);
  await server.app.manager.whenIdle();
}

/** Runs `sterna queue ARGS` in this process against the test server's configuration. */
function queue(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  return queueWith(server.config, ...args);
}

/** Runs `sterna queue ARGS` in this process with `config`. */
function queueWith(config: Config, ...args: string[]): Promise<{ code: number; out: string; err: string }> {
  return queueCommand(config, ...args);
}

/** The CLI's own --json output of list, checked field by field by the tests. */
function listJson(text: string): QueueEntry[] {
  return JSON.parse(text) as QueueEntry[];
}

/** The CLI's own --json output of show. */
function showJson(text: string): QueueMessageDetail {
  return JSON.parse(text) as QueueMessageDetail;
}

function json(text: string): unknown {
  return JSON.parse(text);
}

test('the server creates its control socket in a directory of mode 0700 of its own, and never calls process.umask', async () => {
  assert.equal(umaskCalls, 0, 'process.umask was called while the server started');
  const dir = await lstat(controlDirPath(server.dataDir));
  assert.equal(dir.isDirectory(), true);
  assert.equal(dir.mode & 0o777, 0o700);
  assert.equal(dir.uid, process.getuid?.());
  assert.equal(controlSocketPath(server.dataDir), path.join(server.dataDir, 'control', 'control.sock'));
  const st = await stat(controlSocketPath(server.dataDir));
  assert.equal(st.isSocket(), true);
  assert.equal(st.mode & 0o777, 0o600);
});

test('a control directory open to others, or a symlink, stops start-up with an error that says what to do', async () => {
  const dataDir = await mkdtemp(path.join(tmpdir(), 'sterna-test-'));
  const dir = controlDirPath(dataDir);
  try {
    await mkdir(dir);
    await chmod(dir, 0o750);
    await assert.rejects(startTestServer({ dataDir }), {
      name: 'ControlDirError',
      message: `${dir} (the control socket's directory) has mode 0750, so other users could reach the control socket; it must be 0700: chmod 700 ${dir}`,
    });
    await rm(dir, { recursive: true });
    await mkdir(path.join(dataDir, 'elsewhere'), { mode: 0o700 });
    await symlink(path.join(dataDir, 'elsewhere'), dir);
    await assert.rejects(startTestServer({ dataDir }), (err: unknown) => {
      assert.ok(err instanceof ControlDirError);
      assert.equal(
        err.message,
        `${dir} (the control socket's directory) is not a directory; remove it and start again`,
      );
      return true;
    });
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
});

test(
  'a control directory of another user stops start-up',
  { skip: process.getuid?.() === 0 ? false : 'needs root (chown)' },
  async () => {
    const dataDir = await mkdtemp(path.join(tmpdir(), 'sterna-test-'));
    const dir = controlDirPath(dataDir);
    try {
      await mkdir(dir, { mode: 0o700 });
      await chown(dir, 65534, 65534);
      await assert.rejects(startTestServer({ dataDir }), {
        name: 'ControlDirError',
        message: `${dir} (the control socket's directory) is owned by uid 65534, not by the server's user (uid 0); remove it, or chown it to the server's user, and start again`,
      });
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  },
);

test('a stale socket an older version left at <data_dir>/control.sock does not stop start-up and is removed; the CLI still asks that path when nothing answers on the new one', async () => {
  const [dataDir] = await dataDirsWithCert(1);
  const legacy = legacyControlSocketPath(dataDir!);
  // A server killed while listening leaves its socket file behind.
  const killed = spawnSync(process.execPath, [
    '-e',
    `require('node:net').createServer().listen(${JSON.stringify(legacy)}, () => process.kill(process.pid, 'SIGKILL'))`,
  ]);
  assert.equal(killed.signal, 'SIGKILL');
  assert.equal((await lstat(legacy)).isSocket(), true);
  const other = await startTestServer({ dataDir: dataDir! });
  try {
    await assert.rejects(lstat(legacy), { code: 'ENOENT' });
    const list = await queueWith(other.config, 'list');
    assert.equal(list.code, 0, list.err);
    assert.equal(list.out, 'queue is empty\n');
  } finally {
    await other.stop();
  }
  // A server of an older version, still running, answers at the legacy path only.
  const old = createServer((s) =>
    s.once('data', () => s.end(`${JSON.stringify({ ok: true, result: { flushed: ['OLD1'] } })}\n`)),
  );
  await new Promise<void>((resolve) => old.listen(legacy, resolve));
  try {
    const flush = await queueWith(other.config, 'flush', '--json');
    assert.equal(flush.code, 0, flush.err);
    assert.deepEqual(json(flush.out), { flushed: ['OLD1'] });
  } finally {
    await new Promise((resolve) => old.close(resolve));
    await rm(dataDir!, { recursive: true, force: true });
  }
});

test('queue list shows a deferred message: id, size, sender, recipient state and last error (text and --json)', async () => {
  const qid = await sendDeferred('bob@far.test');
  const text = await queue('list');
  assert.equal(text.code, 0, text.err);
  const line = text.out.split('\n').find((l) => l.startsWith(qid));
  assert.ok(line !== undefined, text.out);
  assert.match(line, /<dora@sterna\.test>$/);
  assert.match(text.out, /<bob@far\.test> deferred, \d+ attempts?, (next in \d+m?s|due now)\n {8}\S/);

  const json = await queue('list', '--json');
  assert.equal(json.code, 0, json.err);
  const entry = listJson(json.out).find((e) => e.qid === qid);
  assert.ok(entry !== undefined);
  assert.equal(entry.sender, 'dora@sterna.test');
  assert.equal(entry.held, false);
  assert.equal(entry.recipients.length, 1);
  assert.equal(entry.recipients[0]?.address, 'bob@far.test');
  assert.equal(entry.recipients[0]?.status, 'deferred');
  assert.ok((entry.recipients[0]?.lastError ?? '').length > 0);
  assert.equal(entry.size, server.app.spool.list().find((m) => m.qid === qid)?.size);
  assert.match(text.out, new RegExp(` ${entry.size}  <dora@sterna\\.test>`));
});

test('queue show prints the envelope, the recipient states and the header section', async () => {
  const qid = server.app.spool.list()[0]?.qid ?? '';
  const text = await queue('show', qid);
  assert.equal(text.code, 0, text.err);
  assert.match(text.out, new RegExp(`^Queue ID: ${qid}\n`));
  assert.match(text.out, /\nSender: <dora@sterna\.test>\n/);
  assert.match(text.out, /\nClient: 127\.0\.0\.1:\d+ \(HELO client\.test\) on smtp\n/);
  assert.match(text.out, /\nRecipients:\n {4}<bob@far\.test> deferred/);
  assert.match(
    text.out,
    /\nHeaders:\nReceived: from client\.test[^]*\nFrom: dora@sterna\.test\nSubject: queue-cli\n\n$/,
  );

  const json = await queue('show', qid, '--json');
  const d = showJson(json.out);
  assert.equal(d.qid, qid);
  assert.equal(d.envelope.sender, 'dora@sterna.test');
  assert.deepEqual(
    d.envelope.recipients.map((r) => r.address),
    ['bob@far.test'],
  );
  assert.ok(d.headers.endsWith('From: dora@sterna.test\r\nSubject: queue-cli\r\n\r\n'), d.headers);
  assert.ok(d.headers.startsWith('Received: from client.test'), d.headers);
});

test('a held message is not delivered, even when due or flushed; released and flushed it is', async () => {
  const qid = await sendDeferred('hal@example.test');
  const witness = await sendDeferred('wit@example.test');
  const hold = await queue('hold', qid);
  assert.equal(hold.code, 0, hold.err);
  assert.equal(hold.out, `${qid}: held\n`);
  assert.equal((await queue('hold', qid)).out, `${qid}: already held\n`);
  refused.delete('hal@example.test');
  const flush = await queue('flush', qid, '--json');
  assert.equal(flush.code, 0, flush.err);
  assert.deepEqual(json(flush.out), { flushed: [] });
  assert.deepEqual(json((await queue('flush', '--domain', 'example.test', '--json')).out), {
    flushed: [witness],
  });
  const due = states(qid)?.[0];
  assert.equal(due?.status, 'deferred');
  await waitRetryPassAfter(due.nextAttemptAt, witness);
  const delivered = (): boolean => sink.messages().some((m) => m.rcptTo.includes('hal@example.test'));
  assert.equal(delivered(), false);
  assert.equal(states(qid)?.[0]?.status, 'deferred');
  const list = listJson((await queue('list', '--json')).out);
  assert.equal(list.find((e) => e.qid === qid)?.held, true);
  assert.match((await queue('list')).out, new RegExp(`^${qid} .*<dora@sterna\\.test>  \\(held\\)$`, 'm'));

  assert.equal((await queue('release', qid)).out, `${qid}: released\n`);
  const f2 = await queue('flush', qid);
  assert.equal(f2.code, 0, f2.err);
  await waitFor('the released message to reach the sink', delivered);
  await waitFor(`${qid} to leave the spool`, () => states(qid) === null);
  assert.equal(sink.messages().filter((m) => m.rcptTo.includes('hal@example.test')).length, 1);
  refused.delete('wit@example.test');
  await queue('flush', witness);
  await waitFor(`${witness} to leave the spool`, () => states(witness) === null);
});

test('queue delete removes the message: gone from the spool and never delivered, no bounce', async () => {
  const before = (await maildirMessages(server.dataDir, 'sterna.test', 'dora')).length;
  const qid = await sendDeferred('del@example.test');
  const del = await queue('delete', qid, '--json');
  assert.equal(del.code, 0, del.err);
  assert.deepEqual(json(del.out), { deleted: qid });
  assert.equal(states(qid), null);
  refused.delete('del@example.test');
  assert.equal((await queue('flush')).code, 0);
  await server.app.manager.whenIdle(); // every message the flush started has had its attempt
  assert.equal(
    sink.messages().some((m) => m.rcptTo.includes('del@example.test')),
    false,
  );
  assert.equal((await maildirMessages(server.dataDir, 'sterna.test', 'dora')).length, before);
  const again = await queue('delete', qid);
  assert.equal(again.code, 1);
  assert.equal(again.err, `sterna queue delete: no message ${qid} in the queue\n`);
});

test('queue bounce fails the remaining recipients with a DSN to the sender and removes the message', async () => {
  const before = (await maildirMessages(server.dataDir, 'sterna.test', 'dora')).length;
  const qid = await sendDeferred('bnc@example.test');
  const b = await queue('bounce', qid, '--json');
  assert.equal(b.code, 0, b.err);
  assert.deepEqual(json(b.out), { bounced: true });
  assert.equal(states(qid), null);
  const msgs = await waitForMessages(server.dataDir, 'sterna.test', 'dora', before + 1);
  const raw = msgs.find((m) => m.toString('latin1').includes(`X-Sterna-Queue-ID: ${qid}`));
  assert.ok(raw !== undefined, 'the bounce names the original queue id');
  assert.match(raw.toString('latin1'), /^Return-Path: <>\r\n/);
  const dsn = parseDsn(raw);
  assert.equal(dsn.reportType, 'delivery-status');
  assert.equal(dsn.perMessage['reporting-mta'], 'dns; mx.sterna.test');
  assert.equal(dsn.recipients.length, 1);
  assert.equal(dsn.recipients[0]?.['final-recipient'], 'rfc822; bnc@example.test');
  assert.equal(dsn.recipients[0]?.['action'], 'failed');
  assert.equal(dsn.recipients[0]?.['status'], '5.7.0');
  assert.equal(
    sink.messages().some((m) => m.rcptTo.includes('bnc@example.test')),
    false,
  );
  refused.delete('bnc@example.test');
});

test('a delete during a delivery attempt waits for it: the message is delivered once, then not found', async () => {
  const qid = await send('dora@sterna.test', ['race@example.test']);
  await waitFor('the sink to hold the end of the data', () => raceHeld);
  let settled = false;
  const managerDelete = mock.method(server.app.manager, 'delete');
  const pending = queue('delete', qid).finally(() => {
    settled = true;
  });
  await waitFor('the delete to reach the queue manager', () => managerDelete.mock.callCount() === 1);
  managerDelete.mock.restore();
  assert.equal(settled, false, 'delete waits while the attempt runs');
  assert.notEqual(states(qid), null);
  for (const sock of sink.sockets()) sock.write('250 2.0.0 Ok: at last\r\n');
  const del = await pending;
  assert.equal(del.code, 1, del.err);
  assert.equal(del.err, `sterna queue delete: no message ${qid} in the queue\n`);
  assert.equal(states(qid), null);
  // It was sent once (the sink leaves a message it did not answer out of messages(); a session
  // may carry other messages before or after it, as connections are reused).
  const rcpts = sink.sessions
    .flatMap((x) => x.transcript)
    .filter((l) => /^C: RCPT TO:<race@example\.test>/i.test(l));
  assert.equal(rcpts.length, 1);
});

test('usage errors exit 2, an unknown queue id exits 1, --help exits 0', async () => {
  assert.equal((await queue('show')).code, 2);
  assert.equal((await queue('list', 'extra')).code, 2);
  assert.equal((await queue('hold', '--domain', 'x.test', 'ABC')).code, 2);
  assert.equal((await queue('frobnicate')).code, 2);
  assert.equal((await queue('delete', 'ABC', '--failed')).code, 2);
  const missing = await queue('show', 'NOSUCHID');
  assert.equal(missing.code, 1);
  assert.equal(missing.err, 'sterna queue show: no message NOSUCHID in the queue\n');
  for (const op of ['list', 'show', 'flush', 'hold', 'release', 'delete', 'bounce']) {
    const h = await queue(op, '--help');
    assert.equal(h.code, 0);
    assert.ok(h.out.startsWith(`Usage: sterna queue ${op}`), h.out);
  }
});

test('the sterna binary reaches the running server through --config (list --json)', async () => {
  const file = path.join(server.dataDir, 'cli.toml');
  await writeFile(file, `data_dir = "${server.dataDir}"\nhostname = "mx.sterna.test"\n`);
  const r = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile(
      process.execPath,
      [CLI, 'queue', 'list', '--json', '--config', file],
      { timeout: 20_000, env: { ...process.env, STERNA_CONFIG: '' } },
      (err, stdout, stderr) =>
        resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : 1, stdout, stderr }),
    );
  });
  assert.equal(r.code, 0, r.stderr);
  const ids = listJson(r.stdout).map((e) => e.qid);
  assert.deepEqual(
    ids,
    server.app.spool.list().map((m) => m.qid),
  );
});

test('on a stopped server the commands open the spool; a hold made there survives the restart', async () => {
  const far = server.app.spool.list()[0]?.qid ?? '';
  assert.notEqual(far, '');
  const rst = await sendDeferred('rst@example.test');
  await server.stop();
  running = false;
  await assert.rejects(stat(controlSocketPath(server.dataDir)), { code: 'ENOENT' });

  const list = await queue('list', '--json');
  assert.equal(list.code, 0, list.err);
  const rstDue = listJson(list.out).find((e) => e.qid === rst)?.recipients[0]?.nextAttemptAt ?? Infinity;
  assert.deepEqual(
    listJson(list.out).map((e) => [e.qid, e.recipients[0]?.address, e.recipients[0]?.status, e.held]),
    [
      [far, 'bob@far.test', 'deferred', false],
      [rst, 'rst@example.test', 'deferred', false],
    ],
  );
  const flush = await queue('flush');
  assert.equal(flush.code, 0);
  assert.equal(flush.out, 'not running; delivery happens when the server starts\n');
  assert.equal((await queue('hold', rst)).out, `${rst}: held\n`);
  const del = await queue('delete', far);
  assert.equal(del.code, 0, del.err);
  assert.equal(del.out, `${far}: deleted\n`);

  // A spool locked by a live process that does not answer on the socket: said so, exit 1.
  const lock = path.join(server.config.spool.dir, 'LOCK');
  await writeFile(lock, `${process.pid}\n`);
  try {
    const locked = await queue('list');
    assert.equal(locked.code, 1);
    assert.match(
      locked.err,
      /^sterna queue list: no server answers on .*control\.sock, but the spool is locked: /,
    );
  } finally {
    await unlink(lock);
  }

  // Restarted, the server keeps the hold even though the recipient is due and now accepted.
  refused.delete('rst@example.test');
  // Due when the server starts: it would be handed to a worker at once (QueueManager.start).
  await waitFor(`${rst} to be due`, () => Date.now() > rstDue);
  server = await startServer(server.dataDir);
  running = true;
  await server.app.manager.whenIdle();
  assert.equal(states(rst)?.[0]?.status, 'deferred');
  const entries = listJson((await queue('list', '--json')).out);
  assert.deepEqual(
    entries.map((e) => [e.qid, e.held]),
    [[rst, true]],
  );
  assert.equal((await queue('release', rst)).out, `${rst}: released\n`);
  assert.equal((await queue('flush', '--domain', 'EXAMPLE.test')).code, 0);
  await waitFor(`${rst} to be delivered`, () => states(rst) === null);
  assert.equal(sink.messages().filter((m) => m.rcptTo.includes('rst@example.test')).length, 1);
  assert.equal((await queue('list')).out, 'queue is empty\n');
});

test('queue delete --failed removes the deferred queue only: not held ones, nor those with a recipient pending', async () => {
  const deferred = await sendDeferred('dfa@example.test');
  const held = await sendDeferred('dfh@example.test');
  refused.add('mixno@example.test');
  assert.equal((await queue('hold', held)).out, `${held}: held\n`);
  // One recipient delivered, the other deferred: it waits for a retry, so it is in the deferred queue.
  const mixed = await send('dora@sterna.test', ['mixok@example.test', 'mixno@example.test']);
  await waitFor(`${mixed} to be half delivered`, () => {
    const st = states(mixed);
    return st?.[0]?.status === 'delivered' && st[1]?.status === 'deferred';
  });
  // Deferred, then flushed: its retry is under way (the sink holds the end of the data).
  const retrying = await sendDeferred('race@example.test');
  refused.delete('race@example.test');
  raceHeld = false;
  assert.deepEqual(json((await queue('flush', retrying, '--json')).out), { flushed: [retrying] });
  await waitFor('the sink to hold the end of the retried data', () => raceHeld);
  // A message whose first delivery attempt is under way: its recipient is still pending.
  raceHeld = false;
  const pending = await send('dora@sterna.test', ['race@example.test']);
  await waitFor('the sink to hold the end of the data', () => raceHeld);
  assert.equal(states(pending)?.[0]?.status, 'pending');
  assert.equal(states(retrying)?.[0]?.status, 'deferred');

  // The retried message is deferred in the spool: delete waits for its attempt, which delivers it.
  let settled = false;
  const deleting = queue('delete', '--failed', '--json').finally(() => {
    settled = true;
  });
  await waitFor('the messages without an attempt running to be deleted', () => {
    return states(deferred) === null && states(mixed) === null;
  });
  assert.equal(settled, false, 'delete --failed waits while an attempt of a deferred message runs');
  assert.equal(states(pending)?.[0]?.status, 'pending');
  for (const sock of sink.sockets()) sock.write('250 2.0.0 Ok: at last\r\n');
  const del = await deleting;
  assert.equal(del.code, 0, del.err);
  // Delivered meanwhile, the retried message left the queue by itself: not in the list.
  assert.deepEqual(json(del.out), { deleted: [deferred, mixed] });
  assert.equal(states(retrying), null);
  assert.equal(states(held)?.[0]?.status, 'deferred');
  await waitFor(`${pending} to be delivered`, () => states(pending) === null);
  const none = await queue('delete', '--failed');
  assert.equal(none.code, 0, none.err);
  assert.equal(none.out, '0 messages deleted\n');

  // Only far.test from here on: the sink's idle sessions were just sent a stray reply.
  const far = await sendDeferred('zed@far.test');
  const text = await queue('delete', '--failed');
  assert.equal(text.code, 0, text.err);
  assert.equal(text.out, `${far}: deleted\n1 message deleted\n`);
  assert.deepEqual(
    listJson((await queue('list', '--json')).out).map((e) => [e.qid, e.held]),
    [[held, true]],
  );
  assert.equal(
    sink
      .messages()
      .some((m) => m.rcptTo.includes('dfa@example.test') || m.rcptTo.includes('mixno@example.test')),
    false,
  );
});

test('queue delete --failed with a queue id, or on another command, is a usage error (exit 2)', async () => {
  const both = await queue('delete', 'ABC', '--failed');
  assert.equal(both.code, 2);
  assert.ok(both.err.startsWith('sterna queue delete: give a queue id or --failed, not both\n'), both.err);
  const hold = await queue('hold', 'ABC', '--failed');
  assert.equal(hold.code, 2);
  assert.ok(hold.err.startsWith('sterna queue hold: --failed is only for delete\n'), hold.err);
  assert.equal(
    parseControlRequest({ op: 'delete', qid: 'ABC', failed: true }),
    'delete takes a qid or failed, not both',
  );
  assert.equal(parseControlRequest({ op: 'delete', failed: 'yes' }), 'failed must be true');
  assert.equal(parseControlRequest({ op: 'bounce', qid: 'ABC', failed: true }), 'failed is only for delete');
  assert.equal(parseControlRequest({ op: 'delete' }), 'delete needs a qid or failed');
  assert.deepEqual(parseControlRequest({ op: 'delete', failed: true }), { op: 'delete', failed: true });
  const help = await queue('delete', '--help');
  assert.equal(help.code, 0);
  assert.match(help.out, /^ {7}sterna queue delete --failed \[--json\]$/m);
});

test('queue delete --failed on a stopped server removes the deferred messages from the spool, not the held one', async () => {
  const held = server.app.spool.list()[0]?.qid ?? '';
  assert.notEqual(held, '');
  const a = await sendDeferred('amy@far.test');
  const b = await sendDeferred('ben@far.test');
  await server.stop();
  running = false;

  const del = await queue('delete', '--failed');
  assert.equal(del.code, 0, del.err);
  assert.equal(del.out, `${a}: deleted\n${b}: deleted\n2 messages deleted\n`);
  const again = await queue('delete', '--failed', '--json');
  assert.equal(again.code, 0, again.err);
  assert.deepEqual(json(again.out), { deleted: [] });

  // Restarted, the server finds only the held message: the deletions were durable.
  server = await startServer(server.dataDir);
  running = true;
  assert.deepEqual(
    listJson((await queue('list', '--json')).out).map((e) => [e.qid, e.held]),
    [[held, true]],
  );
  assert.equal((await queue('delete', held)).out, `${held}: deleted\n`);
  assert.equal((await queue('list')).out, 'queue is empty\n');
});
