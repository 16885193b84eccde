/**
 * Crash test (issue 3; DESIGN.md rule 3; RFC 5321 6.1: a server that has answered 250 to the end
 * of data "MUST NOT lose the message ... because the host later crashes"). Twenty concurrent SMTP
 * clients send a few hundred messages to local mailboxes while the real `sterna serve` process is
 * SIGKILLed at random moments and restarted on the same data directory. At the end every message
 * that got its 250 is in each of its recipients' Maildirs exactly once, no Maildir holds a partial
 * or foreign file, and a message whose 250 the client never saw is either absent or whole.
 *
 * STERNA_CRASH_SEED=<n> replays the same random choices (timing still varies);
 * STERNA_CRASH_KEEP=1 keeps the temporary directory (config, data, logs) for inspection.
 * Test-only code: binds 127.0.0.1 only, writes only under os.tmpdir().
 */
import assert from 'node:assert/strict';
import { mkdir, readdir, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import {
  prepareServeDir,
  readJsonLog,
  sleep,
  snapshotSterna,
  startSternaProcess,
  tail,
  type ServeDir,
  type SternaProcess,
} from './helpers/process.js';
import { TestClient, type TestReply } from './helpers/smtp-client.js';

const HOSTNAME = 'crash.sterna.test';
const DOMAIN = 'sterna.test';
const MAILBOXES = [0, 1, 2, 3, 4].map((i) => `rcpt${i}@${DOMAIN}`);
const CLIENTS = 20;
const KILLS = 4;
/** Each kill comes this long after the (re)started server answered its first greeting. */
const KILL_AFTER_MS = { min: 200, max: 700 };
/** After the last restart, clients go on until this many messages were acknowledged in all ... */
const MIN_ACKNOWLEDGED = 300;
/** ... for at least min and at most max ms ... */
const SEND_AFTER_LAST_RESTART_MS = { min: 500, max: 10_000 };
/** ... and not beyond this much time since the first start (a loaded machine restarts slowly). */
const SENDING_BUDGET_MS = 45_000;
const READY_TIMEOUT_MS = 10_000;
/** Each worker loads the whole server in a process of its own: on a loaded machine, more time. */
const READY_TIMEOUT_PER_WORKER_MS = 10_000;
/** Delivery after the last restart: given up when no file appeared for STALL_MS, or at the latest after this. */
const DELIVERY_TIMEOUT_MS = 25_000;
const STALL_MS = 10_000;
/** Delivery is finished when the Maildirs hold enough files and no file appeared for this long. */
const SETTLE_MS = 1000;
const STOP_TIMEOUT_MS = 10_000;

/** mulberry32: a small seeded PRNG, so a failing run's choices can be replayed. */
function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Attempt {
  /** Unique per attempt; a retry after a lost connection gets a new one. */
  id: string;
  sender: string;
  rcpts: string[];
  /** The message as sent (before dot-stuffing, which it never needs: no line starts with '.'). */
  body: string;
  /** The whole body and the final dot went out (DATA got its 354). */
  dataSent: boolean;
  /** The client read "250 2.0.0 Ok: queued as QID". */
  qid: string | undefined;
}

/** A message with a known length whose last line names it: a cut anywhere is visible. */
function makeBody(id: string, sender: string, lines: number): string {
  let body =
    `Subject: ${id}\r\nFrom: <${sender}>\r\nMessage-ID: <${id}@client.test>\r\n` +
    `X-Crash-Lines: ${lines}\r\n\r\n`;
  for (let i = 0; i < lines; i++) body += `${id} line ${i} ${'0123456789abcdefghij'.repeat(3)}\r\n`;
  return `${body}END-OF-MESSAGE ${id}\r\n`;
}

const SUBJECT_RE = /\r\nSubject: (crash-\d+)\r\n/;

/**
 * A temporary directory with a config (loopback port, JSON log at info, `workers` worker
 * processes, docs/workers.md) and the MAILBOXES as users.
 */
function prepare(workers = 1): Promise<ServeDir> {
  return prepareServeDir({
    prefix: 'sterna-crash-',
    hostname: HOSTNAME,
    domain: DOMAIN,
    mailboxes: MAILBOXES,
    workers,
  });
}

test(
  'RFC 5321 6.1 crash safety: SIGKILL under load loses no acknowledged message and delivers none twice or partially',
  { timeout: 90_000 },
  (t) => crashUnderLoad(t, 1),
);

test(
  'RFC 5321 6.1 crash safety with two workers: SIGKILL of the whole process tree loses nothing, doubles nothing',
  { timeout: 120_000 },
  (t) => crashUnderLoad(t, 2),
);

/**
 * The crash test: CLIENTS clients send while the server is SIGKILLed KILLS times and restarted;
 * then every Maildir is checked. With `workers` > 1 the kill takes the whole process tree (the
 * primary and every worker at once, as `kill -9 -- -PGID` or an init system does).
 */
async function crashUnderLoad(t: TestContext, workers: number): Promise<void> {
  const seed = Number(process.env['STERNA_CRASH_SEED'] ?? Math.floor(Math.random() * 2 ** 31));
  const random = seededRandom(seed);
  const between = (r: { min: number; max: number }): number =>
    r.min + Math.floor(random() * (r.max - r.min + 1));
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
  const { dir, dataDir, configFile, port } = await prepare(workers);
  // Every restart runs the same build, even if dist/ is rebuilt during the test.
  const cli = await snapshotSterna(dir);

  const runs: SternaProcess[] = [];
  let server: SternaProcess | undefined;
  const start = async (): Promise<SternaProcess> => {
    const n = runs.length;
    const p = await startSternaProcess({
      cli,
      configFile,
      smtpPort: port,
      stdoutFile: path.join(dir, `sterna-${n}.log`),
      stderrFile: path.join(dir, `sterna-${n}.err`),
      readyTimeoutMs: READY_TIMEOUT_MS + (workers - 1) * READY_TIMEOUT_PER_WORKER_MS,
      group: workers > 1,
    });
    runs.push(p);
    return p;
  };
  t.after(async () => {
    if (server !== undefined && server.exit === undefined) {
      server.kill('SIGKILL');
      await server.exited;
    }
    if (process.env['STERNA_CRASH_KEEP'] === undefined) await rm(dir, { recursive: true, force: true });
    else t.diagnostic(`kept ${dir}`);
  });
  /** The end of every run's log and stderr, for failure messages. */
  const context = async (): Promise<string> => {
    const parts = [`seed ${seed}, directory ${dir}`];
    for (const r of runs) {
      parts.push(`--- ${r.stdoutFile}\n${await tail(r.stdoutFile, 8)}`);
      const err = await tail(r.stderrFile, 8);
      if (err.trim() !== '') parts.push(`--- ${r.stderrFile}\n${err}`);
    }
    return parts.join('\n');
  };

  // --- load: CLIENTS sessions sending until told to stop -------------------------------------
  const attempts: Attempt[] = [];
  const byId = new Map<string, Attempt>();
  /** Replies a live server should never give here (anything but 220/250/354 as expected). */
  const unexpected: string[] = [];
  let stopSending = false;
  let acknowledged = 0;

  const expectCode = (r: TestReply, code: number, what: string): void => {
    if (r.code !== code) {
      unexpected.push(`${what}: ${r.code} ${r.text}`);
      throw new Error(`unexpected reply to ${what}`);
    }
  };
  const newAttempt = (client: number): Attempt => {
    const id = `crash-${String(attempts.length).padStart(5, '0')}`;
    const sender = `client${client}@example.org`;
    const first = pick(MAILBOXES);
    const rcpts = random() < 0.5 ? [first] : [first, pick(MAILBOXES.filter((m) => m !== first))];
    // Mostly a few KiB; one in ten larger than the spool's 64 KiB chunk records.
    const lines = random() < 0.1 ? between({ min: 900, max: 1800 }) : between({ min: 1, max: 100 });
    const a: Attempt = {
      id,
      sender,
      rcpts,
      body: makeBody(id, sender, lines),
      dataSent: false,
      qid: undefined,
    };
    attempts.push(a);
    byId.set(id, a);
    return a;
  };
  /** One connection: greeting, EHLO, a few transactions, QUIT. Throws when the server dies. */
  const session = async (c: TestClient, client: number): Promise<void> => {
    const greeting = await c.read();
    if (greeting === null) return;
    expectCode(greeting, 220, 'the greeting');
    expectCode(await c.cmd('EHLO client.test'), 250, 'EHLO');
    const transactions = between({ min: 1, max: 8 });
    for (let k = 0; k < transactions && !stopSending; k++) {
      const a = newAttempt(client);
      expectCode(await c.cmd(`MAIL FROM:<${a.sender}>`), 250, `MAIL FROM for ${a.id}`);
      for (const rcpt of a.rcpts) expectCode(await c.cmd(`RCPT TO:<${rcpt}>`), 250, `RCPT TO for ${a.id}`);
      expectCode(await c.cmd('DATA'), 354, `DATA for ${a.id}`);
      c.send(`${a.body}.\r\n`);
      a.dataSent = true;
      const r = await c.read();
      if (r === null) return; // killed before the 250 arrived: not acknowledged
      expectCode(r, 250, `end of data for ${a.id}`);
      const qid = /^2\.0\.0 Ok: queued as ([0-9A-Z]+)$/.exec(r.text)?.[1];
      if (qid === undefined) {
        unexpected.push(`end of data for ${a.id}: 250 ${r.text}`);
        throw new Error('no queue id in the 250');
      }
      a.qid = qid;
      acknowledged++;
    }
    await c.cmd('QUIT');
  };
  const runClient = async (client: number): Promise<void> => {
    while (!stopSending) {
      let c: TestClient;
      try {
        c = await TestClient.connect(port, { timeoutMs: 15_000 });
      } catch {
        await sleep(between({ min: 10, max: 50 })); // the server is down: try again soon
        continue;
      }
      try {
        await session(c, client);
      } catch {
        // The server was killed under this session (or answered wrongly, recorded above).
      } finally {
        c.close();
      }
    }
  };

  // --- kill and restart while the clients send ------------------------------------------------
  const began = Date.now();
  server = await start();
  const clients = Array.from({ length: CLIENTS }, (_, i) => runClient(i));
  const killedAt: number[] = [];
  /** From each SIGKILL to the restarted server's greeting. */
  const restartMs: number[] = [];
  try {
    for (let k = 0; k < KILLS; k++) {
      await sleep(between(KILL_AFTER_MS));
      if (server.exit !== undefined) {
        assert.fail(`sterna exited by itself (${JSON.stringify(server.exit)})\n${await context()}`);
      }
      killedAt.push(acknowledged);
      const killed = Date.now();
      server.kill('SIGKILL');
      assert.deepEqual(await server.exited, { code: null, signal: 'SIGKILL' });
      server = await start();
      restartMs.push(Date.now() - killed);
    }
    const lastStart = Date.now();
    while (
      Date.now() - lastStart < SEND_AFTER_LAST_RESTART_MS.min ||
      (acknowledged < MIN_ACKNOWLEDGED &&
        Date.now() - lastStart < SEND_AFTER_LAST_RESTART_MS.max &&
        Date.now() - began < SENDING_BUDGET_MS)
    ) {
      await sleep(50);
    }
  } finally {
    stopSending = true;
    await Promise.all(clients);
  }
  const sendingMs = Date.now() - began;

  // --- let delivery finish, then stop cleanly -------------------------------------------------
  const acked = attempts.filter((a) => a.qid !== undefined);
  const expectedFiles = acked.reduce((n, a) => n + a.rcpts.length, 0);
  const mailboxRoot = path.join(dataDir, 'mailboxes');
  const countDelivered = async (): Promise<number> => {
    let n = 0;
    for (const address of MAILBOXES) {
      const maildir = path.join(mailboxRoot, DOMAIN, address.slice(0, address.indexOf('@')));
      for (const sub of ['new', 'cur']) n += (await readdir(path.join(maildir, sub)).catch(() => [])).length;
    }
    return n;
  };
  const deliveryStart = Date.now();
  let seen = -1;
  let changedAt = deliveryStart;
  /** Why the wait ended early, if it did. */
  let deliveryStuck: string | undefined;
  for (;;) {
    const n = await countDelivered();
    const now = Date.now();
    if (n !== seen) {
      seen = n;
      changedAt = now;
    }
    if (n >= expectedFiles && now - changedAt >= SETTLE_MS) break;
    if (n < expectedFiles && (now - changedAt >= STALL_MS || now - deliveryStart >= DELIVERY_TIMEOUT_MS)) {
      deliveryStuck =
        `delivery stopped short: ${n} of at least ${expectedFiles} Maildir files after ` +
        `${now - deliveryStart} ms, none new for ${now - changedAt} ms`;
      break;
    }
    await sleep(100);
  }
  const deliveryMs = Date.now() - deliveryStart;
  const exit = await server.stop(STOP_TIMEOUT_MS);
  assert.deepEqual(exit, { code: 0, signal: null }, `SIGTERM must stop sterna cleanly\n${await context()}`);

  // --- what the Maildirs hold ------------------------------------------------------------------
  const problems: string[] = deliveryStuck === undefined ? [] : [deliveryStuck];
  /** id -> mailbox -> copies. */
  const copies = new Map<string, Map<string, number>>();
  let tmpLeftovers = 0;
  const domains = await readdir(mailboxRoot).catch(() => []);
  for (const domain of domains) {
    if (domain !== DOMAIN) problems.push(`unexpected mailbox domain directory ${domain}`);
  }
  const locals = await readdir(path.join(mailboxRoot, DOMAIN)).catch(() => []);
  for (const local of locals) {
    const mailbox = `${local}@${DOMAIN}`;
    if (!MAILBOXES.includes(mailbox)) problems.push(`unexpected Maildir ${local}`);
    const maildir = path.join(mailboxRoot, DOMAIN, local);
    const subdirs = await readdir(maildir).catch((): string[] => []);
    const missing = ['tmp', 'new', 'cur'].filter((sub) => !subdirs.includes(sub));
    if (missing.length > 0) problems.unshift(`Maildir ${maildir} is incomplete: no ${missing.join('/, ')}/`);
    // Maildir: a file in tmp/ is not delivered; a crash between create and rename may leave one.
    tmpLeftovers += (await readdir(path.join(maildir, 'tmp')).catch(() => [])).length;
    for (const sub of ['new', 'cur']) {
      for (const name of await readdir(path.join(maildir, sub)).catch(() => [])) {
        const file = path.join(maildir, sub, name);
        const text = (await readFile(file)).toString('latin1');
        const id = SUBJECT_RE.exec(text)?.[1];
        const a = id === undefined ? undefined : byId.get(id);
        if (a === undefined) {
          problems.push(`${file}: not a whole message of this test (${text.length} bytes, no known Subject)`);
          continue;
        }
        if (!text.endsWith(a.body)) {
          problems.push(
            `${file}: ${a.id} is partial or altered (${text.length} bytes; does not end with its ` +
              `${a.body.length}-byte body and END-OF-MESSAGE line)`,
          );
        }
        if (!text.startsWith(`Return-Path: <${a.sender}>\r\nDelivered-To: ${mailbox}\r\n`)) {
          problems.push(`${file}: ${a.id} lacks "Return-Path: <${a.sender}>" / "Delivered-To: ${mailbox}"`);
        }
        if (a.qid !== undefined && !text.includes(` id ${a.qid}`)) {
          problems.push(
            `${file}: ${a.id} was acknowledged as ${a.qid}, but its Received header names another id`,
          );
        }
        if (!a.rcpts.includes(mailbox)) problems.push(`${file}: ${a.id} is not addressed to ${mailbox}`);
        const perBox = copies.get(a.id) ?? new Map<string, number>();
        perBox.set(mailbox, (perBox.get(mailbox) ?? 0) + 1);
        copies.set(a.id, perBox);
      }
    }
  }
  let unackedDelivered = 0;
  for (const a of attempts) {
    const perBox = copies.get(a.id);
    const counts = a.rcpts.map((r) => perBox?.get(r) ?? 0);
    if (a.qid !== undefined) {
      a.rcpts.forEach((r, i) => {
        if (counts[i] !== 1) {
          problems.push(
            `${a.id} (acknowledged as ${a.qid}) is in ${r} ${counts[i] ?? 0} times, expected once`,
          );
        }
      });
      continue;
    }
    if (perBox === undefined) continue;
    unackedDelivered++;
    if (!a.dataSent) problems.push(`${a.id} was delivered although its body was never sent`);
    a.rcpts.forEach((r, i) => {
      if ((counts[i] ?? 0) > 1)
        problems.push(`${a.id} (not acknowledged) is in ${r} ${counts[i] ?? 0} times`);
    });
    // Delivery starts only after the spool commit, and recovery finishes what it started.
    if (counts.some((n) => n === 0)) {
      problems.push(`${a.id} (not acknowledged) reached only some recipients: ${JSON.stringify(counts)}`);
    }
  }
  for (const u of unexpected) problems.push(`unexpected reply from a live server: ${u}`);

  // --- what the logs say ------------------------------------------------------------------------
  /** Live messages the spool found at each restart. */
  const recoveredLive: number[] = [];
  let truncatedBytes = 0;
  let errorLines = 0;
  /** Deliveries after a restart that found the copy an interrupted attempt had left. */
  let duplicatesAvoided = 0;
  // Nothing here should be deferred: a deferred recipient waits local_delivery.retry_ms (5 min).
  let deferred = 0;
  let firstDeferral: string | undefined;
  for (const [n, r] of runs.entries()) {
    const { records, other } = await readJsonLog(r.stdoutFile);
    for (const rec of records) {
      if (rec.msg === 'delivered' && rec.fields['duplicate'] === true) duplicatesAvoided++;
      if (rec.msg === 'delivery deferred') {
        deferred++;
        firstDeferral ??= `${r.stdoutFile}: ${JSON.stringify(rec.fields)}`;
      }
      if (rec.level >= 60) problems.push(`${r.stdoutFile}: fatal: ${JSON.stringify(rec.fields)}`);
      else if (rec.level >= 50) {
        errorLines++;
        problems.push(`${r.stdoutFile}: error: ${JSON.stringify(rec.fields)}`);
      }
    }
    for (const line of other) problems.push(`${r.stdoutFile}: not a JSON log line: ${line}`);
    const stderr = await readFile(r.stderrFile, 'utf8');
    if (stderr !== '') problems.push(`${r.stderrFile}: ${stderr.slice(0, 500)}`);
    // The application's "spool opened" line carries the RecoveryReport (corrupt is an array);
    // one per spool, so one per worker.
    const opened = records.filter(
      (rec) => rec.msg === 'spool opened' && Array.isArray(rec.fields['corrupt']),
    );
    // A run killed soon after its first greeting may have had a worker still starting; the last
    // run, stopped cleanly, had them all.
    if (opened.length < (n === runs.length - 1 ? workers : 1)) {
      problems.push(
        `${r.stdoutFile}: ${opened.length} "spool opened" lines with the recovery report, too few for ${workers} workers`,
      );
      continue;
    }
    for (const o of opened) {
      const corrupt = o.fields['corrupt'];
      if (Array.isArray(corrupt) && corrupt.length > 0) {
        problems.push(`${r.stdoutFile}: recovery set data aside: ${JSON.stringify(corrupt)}`);
      }
      if (n > 0) {
        const live = o.fields['messages'];
        const cut = o.fields['truncatedBytes'];
        recoveredLive.push(typeof live === 'number' ? live : -1);
        truncatedBytes += typeof cut === 'number' ? cut : 0;
      }
    }
  }

  const unacked = attempts.filter((a) => a.qid === undefined && a.dataSent).length;
  t.diagnostic(
    `seed ${seed}; ${KILLS} SIGKILLs (after ${killedAt.join(', ')} acknowledged), ${runs.length} starts; ` +
      `restarts took ${restartMs.join(', ')} ms; sending ${sendingMs} ms, delivery settled ${deliveryMs} ms later`,
  );
  t.diagnostic(
    `${attempts.length} transactions begun, ${acked.length} acknowledged (${expectedFiles} Maildir files due), ` +
      `${unacked} sent but not acknowledged, of which ${unackedDelivered} delivered whole`,
  );
  t.diagnostic(
    `recovery: live messages found at each restart ${recoveredLive.join(', ')}; ${truncatedBytes} torn ` +
      `bytes cut; ${duplicatesAvoided} redeliveries found their earlier copy; ` +
      `Maildir tmp/ leftovers ${tmpLeftovers}; error log lines ${errorLines}`,
  );
  // The causes first (stalled delivery, deferrals), then the Maildir and log findings.
  if (firstDeferral !== undefined)
    problems.unshift(`${deferred} deliveries deferred; the first: ${firstDeferral}`);
  assert.deepEqual(problems.slice(0, 30), [], `${problems.length} problems\n${await context()}`);
  assert.ok(acked.length >= 100, `too few acknowledged messages to mean anything: ${acked.length}`);
}

test(
  'Maildir: a mailbox whose creation a crash cut short (tmp/ without new/ and cur/) still receives mail',
  { timeout: 30_000 },
  async (t) => {
    const { dir, dataDir, configFile, port } = await prepare();
    const maildir = path.join(dataDir, 'mailboxes', DOMAIN, 'rcpt0');
    await mkdir(path.join(maildir, 'tmp'), { recursive: true });
    const server = await startSternaProcess({
      configFile,
      smtpPort: port,
      stdoutFile: path.join(dir, 'sterna.log'),
      stderrFile: path.join(dir, 'sterna.err'),
      readyTimeoutMs: READY_TIMEOUT_MS,
    });
    t.after(async () => {
      if (server.exit === undefined) {
        server.kill('SIGKILL');
        await server.exited;
      }
      if (process.env['STERNA_CRASH_KEEP'] === undefined) await rm(dir, { recursive: true, force: true });
      else t.diagnostic(`kept ${dir}`);
    });
    const c = await TestClient.connect(port);
    await c.expect(220);
    await c.cmd('EHLO client.test');
    await c.cmd('MAIL FROM:<client@example.org>');
    await c.cmd(`RCPT TO:<rcpt0@${DOMAIN}>`);
    await c.cmd('DATA');
    const body = makeBody('crash-00000', 'client@example.org', 3);
    c.send(`${body}.\r\n`);
    await c.expect(250, '2.0.0');
    await c.cmd('QUIT');
    c.close();
    const deadline = Date.now() + 5000;
    let names: string[] = [];
    while (names.length === 0 && Date.now() < deadline) {
      names = await readdir(path.join(maildir, 'new')).catch(() => []);
      if (names.length === 0) await sleep(50);
    }
    assert.deepEqual(await server.stop(STOP_TIMEOUT_MS), { code: 0, signal: null });
    assert.equal(names.length, 1, `nothing in new/\n${await tail(server.stdoutFile, 5)}`);
    const text = (await readFile(path.join(maildir, 'new', names[0]!))).toString('latin1');
    assert.ok(text.endsWith(body), text);
  },
);
