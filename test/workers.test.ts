/**
 * [server] workers = 2 (docs/workers.md), run as an operator runs it (`sterna serve`, a primary
 * and two workers on shared listeners, each with its own spool). One server life, step by step:
 * connections reach both workers; a rate limit counts them all (the state store the primary
 * shares); `sterna queue`, the admin API and /metrics see every worker's messages, and an op by
 * queue id reaches the worker that holds it; SIGHUP reaches every worker; a worker that dies is
 * restarted and recovers its spool; SIGTERM stops the tree cleanly; and a restart with one
 * worker drains the spool the second worker left: every message delivered exactly once.
 * Test-only code: binds 127.0.0.1 only, writes only under os.tmpdir().
 */
import assert from 'node:assert/strict';
import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { test } from 'node:test';
import { queueIdPartition } from '../src/queue/ids.js';
import { sendMessage } from './helpers/outbound.js';
import {
  freePort,
  prepareServeDir,
  sleep,
  startRoundRobinSterna,
  waitForLog,
  type LogRecord,
  type SternaProcess,
} from './helpers/process.js';
import { runSterna } from './helpers/run-cli.js';
import { TestClient } from './helpers/smtp-client.js';
import { startSmtpSink, type SmtpSink } from './helpers/smtp-sink.js';

const READY_TIMEOUT_MS = 40_000;
const WAIT_MS = 30_000;
/** Messages per hour from one sender domain: the first 8 and 3 more pass, whichever worker takes them. */
const LIMIT = 11;

const primaryRecord = (msg: string, worker?: number) => (r: LogRecord) =>
  r.fields['role'] === 'primary' && r.msg === msg && (worker === undefined || r.fields['worker'] === worker);

/** `sterna queue list --json`: the queue ids. */
async function queued(configFile: string): Promise<string[]> {
  const r = await runSterna(['queue', 'list', '--json', '--config', configFile]);
  assert.equal(r.code, 0, r.stderr);
  const list: unknown = JSON.parse(r.stdout);
  assert.ok(Array.isArray(list), r.stdout);
  return list.map((e: { qid: string }) => e.qid).sort();
}

test(
  'two workers: shared listeners, one queue view, shared limits, restarts, and no mail orphaned',
  { timeout: 240_000 },
  async (t) => {
    const serve = await prepareServeDir({
      prefix: 'sterna-workers-',
      hostname: 'mx.sterna.test',
      domain: 'sterna.test',
      mailboxes: [],
      workers: 2,
    });
    const relayPort = await freePort(); // nothing listens yet: remote.test mail waits in the queue
    const adminPort = await freePort();
    const base = await readFile(serve.configFile, 'utf8');
    const config = (workers: number, extra = ''): string =>
      base.replace(/workers = \d+/, `workers = ${workers}`) +
      `[relay]\ntrusted_networks = ["127.0.0.1/32"]\n` +
      `[transport]\n"remote.test" = { relay = "[127.0.0.1]:${relayPort}" }\n` +
      `[queue]\nfirst_retry_ms = 600000\n` +
      `[admin]\nlisten = ["127.0.0.1:${adminPort}"]\n` +
      `[rate_limits]\nmessages_per_hour_per_sender_domain = ${LIMIT}\n${extra}`;
    await writeFile(serve.configFile, config(2));
    let server: SternaProcess | undefined;
    /** The relay's sink, started only at the end (until then the mail waits in the queue). */
    const sinks: SmtpSink[] = [];
    t.after(async () => {
      server?.kill('SIGKILL');
      await server?.exited;
      for (const sink of sinks) await sink.close();
      await rm(serve.dir, { recursive: true, force: true });
    });
    // The primary hands connections out in turn, so both workers surely get some.
    const start = (n: number): Promise<SternaProcess> => startRoundRobinSterna(serve, n, READY_TIMEOUT_MS);
    server = await start(0);
    const p = server;
    await waitForLog(p, primaryRecord('worker ready'), 2);

    // --- connections reach both workers; queue ids never collide ------------------------------
    const message = (i: number, from = 'sender@client.test') => ({
      from,
      to: ['someone@remote.test'],
      body: `Subject: workers ${i}\r\nMessage-ID: <w${i}@client.test>\r\n\r\nmessage ${i}\r\n`,
    });
    const qids: string[] = [];
    for (let i = 0; i < 8; i++) qids.push(await sendMessage(serve.port, message(i)));
    const byWorker = [0, 1].map((w) => qids.filter((q) => queueIdPartition(q, 2) === w).length);
    assert.ok(
      byWorker[0]! > 0 && byWorker[1]! > 0,
      `both workers took connections: ${JSON.stringify(byWorker)}`,
    );

    // --- a rate limit counts the messages of every worker (state held by the primary) --------
    const codes: number[] = [];
    for (let i = 0; i < 6; i++) {
      const c = await TestClient.connect(serve.port);
      try {
        await c.expect(220);
        await c.cmd('EHLO client.test');
        const mail = await c.cmd('MAIL FROM:<limited@client.test>');
        codes.push(mail.code);
        if (mail.code !== 250) continue;
        await c.cmd('RCPT TO:<someone@remote.test>');
        await c.cmd('DATA');
        const end = await c.cmd(`Subject: limited ${i}\r\nMessage-ID: <l${i}@client.test>\r\n\r\nhello\r\n.`);
        assert.equal(end.code, 250, end.text);
        qids.push(/queued as (\S+)/.exec(end.text)?.[1] ?? '');
      } finally {
        c.close();
      }
    }
    assert.deepEqual(
      codes,
      [250, 250, 250, 450, 450, 450],
      `messages_per_hour_per_sender_domain = ${LIMIT}: 8 + 3 messages, across both workers`,
    );

    // --- sterna queue: one listing; an op by queue id reaches its owner ------------------------
    assert.deepEqual(await queued(serve.configFile), [...qids].sort());
    const ofWorker1 = qids.find((q) => queueIdPartition(q, 2) === 1)!;
    const ofWorker0 = qids.find((q) => queueIdPartition(q, 2) === 0)!;
    for (const q of [ofWorker0, ofWorker1]) {
      const show = await runSterna(['queue', 'show', q, '--config', serve.configFile]);
      assert.equal(show.code, 0, show.stderr);
      assert.match(show.stdout, new RegExp(q));
    }
    const del = await runSterna(['queue', 'delete', ofWorker1, '--config', serve.configFile]);
    assert.equal(del.code, 0, del.stderr);
    const live = qids.filter((q) => q !== ofWorker1).sort();
    assert.deepEqual(await queued(serve.configFile), live);
    const missing = await runSterna(['queue', 'show', ofWorker1, '--config', serve.configFile]);
    assert.notEqual(missing.code, 0);

    // --- the admin API (worker 0) pages through every worker's queue; /metrics sums them -------
    const admin = `http://127.0.0.1:${adminPort}`;
    const paged: string[] = [];
    let cursor = '';
    for (let i = 0; i < 10; i++) {
      const res = await fetch(`${admin}/api/queue?limit=4${cursor === '' ? '' : `&cursor=${cursor}`}`);
      assert.equal(res.status, 200);
      const page = (await res.json()) as {
        total: number;
        items: { qid: string }[];
        nextCursor: string | null;
      };
      assert.equal(page.total, live.length);
      paged.push(...page.items.map((e) => e.qid));
      if (page.nextCursor === null) break;
      cursor = page.nextCursor;
    }
    assert.deepEqual(paged, live);
    const shown = await fetch(`${admin}/api/queue/${ofWorker0}`);
    assert.equal(shown.status, 200);
    assert.equal((await fetch(`${admin}/api/queue/${ofWorker1}`)).status, 404);
    const metrics = await (await fetch(`${admin}/metrics`)).text();
    const accepted = [...metrics.matchAll(/^sterna_messages_accepted_total(?:\{[^}]*\})? (\d+)$/gm)].reduce(
      (n, m) => n + Number(m[1]),
      0,
    );
    assert.equal(
      accepted,
      qids.length,
      metrics
        .split('\n')
        .filter((l) => l.startsWith('sterna_messages_accepted'))
        .join('\n'),
    );
    assert.match(metrics, new RegExp(`^sterna_queue_messages\\{state="deferred"\\} ${live.length}$`, 'm'));

    // --- SIGHUP reaches every worker ---------------------------------------------------------------
    await writeFile(
      serve.configFile,
      `${config(2)}[aliases]\n"alias@sterna.test" = ["someone@remote.test"]\n`,
    );
    p.kill('SIGHUP');
    for (const w of [0, 1])
      await waitForLog(p, (r) => r.fields['worker'] === w && r.msg === 'SIGHUP: configuration keys applied');

    // --- a worker that dies is restarted and recovers its spool --------------------------------
    const [ready1] = await waitForLog(p, primaryRecord('worker ready', 1));
    const pid1 = ready1?.fields['pid'];
    assert.equal(typeof pid1, 'number');
    process.kill(Number(pid1), 'SIGKILL');
    await waitForLog(p, primaryRecord('worker died; restarting it (it recovers its spool)', 1));
    await waitForLog(p, primaryRecord('worker ready', 1), 2);
    assert.deepEqual(await queued(serve.configFile), live);

    // --- SIGTERM: the primary drains every worker and exits cleanly ----------------------------
    assert.deepEqual(await p.stop(30_000), { code: 0, signal: null });
    assert.throws(
      () => process.kill(-p.pid, 0),
      (err: NodeJS.ErrnoException) => err.code === 'ESRCH',
      'no process of the tree is left',
    );
    assert.deepEqual((await readdir(serve.dataDir)).filter((d) => d.startsWith('spool')).sort(), [
      'spool',
      'spool.1',
    ]);

    // --- one worker now: it drains spool.1 too; every message delivered exactly once -----------
    await writeFile(serve.configFile, config(1));
    const sink = await startSmtpSink({ port: relayPort });
    sinks.push(sink);
    server = await start(1);
    const q = server;
    assert.deepEqual(await queued(serve.configFile), live);
    const flush = await runSterna(['queue', 'flush', '--config', serve.configFile]);
    assert.equal(flush.code, 0, flush.stderr);
    const deadline = Date.now() + WAIT_MS;
    while (sink.messages().length < live.length && Date.now() < deadline) await sleep(50);
    const ids = sink.messages().map((m) => /Message-ID: <([^>]+)>/i.exec(m.body.toString('latin1'))?.[1]);
    assert.equal(new Set(ids).size, live.length, JSON.stringify(ids));
    assert.equal(ids.length, live.length);
    for (;;) {
      if ((await queued(serve.configFile)).length === 0) break;
      assert.ok(Date.now() < deadline, 'the queue empties');
      await sleep(100);
    }
    assert.deepEqual(await q.stop(30_000), { code: 0, signal: null });
  },
);
