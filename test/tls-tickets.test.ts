/**
 * Session tickets shared by every worker (docs/workers.md, "TLS"; RFC 5077, RFC 8446 4.6.1):
 * `sterna serve` with two workers, the primary handing out connections in turn
 * (NODE_CLUSTER_SCHED_POLICY=rr), so consecutive connections alternate between the workers. A
 * ticket one worker issued must resume on both: over STARTTLS (RFC 3207) and implicit TLS (RFC
 * 8314), and after a worker was killed with SIGKILL and restarted (it gets the current keys
 * from the primary). Which worker served a connection is read from its "TLS established" log
 * line (its `worker` field), and the server's own view of resumption from its `resumed` field.
 * Test-only code: binds 127.0.0.1 only, writes only under os.tmpdir().
 */
import assert from 'node:assert/strict';
import { readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import { TLSSocket } from 'node:tls';
import {
  freePort,
  prepareServeDir,
  startSternaProcess,
  waitForLog,
  type LogRecord,
} from './helpers/process.js';
import { TestClient } from './helpers/smtp-client.js';

const READY_TIMEOUT_MS = 40_000;
/** Connections offering the first session, per round. */
const RESUMES = 10;

const tlsEstablished = (r: LogRecord): boolean => r.msg === 'TLS established';
const primaryRecord = (msg: string, worker?: number) => (r: LogRecord) =>
  r.fields['role'] === 'primary' && r.msg === msg && (worker === undefined || r.fields['worker'] === worker);

interface Handshake {
  /** The client's view: the session it offered was resumed. */
  reused: boolean;
  /** The newest ticket the server handed out on this connection. */
  session: Buffer | undefined;
}

/**
 * One connection: greeting, then (STARTTLS) EHLO, STARTTLS and the handshake offering
 * `session`, or (implicit TLS) the handshake first; then EHLO over TLS (by then the tickets
 * have come) and QUIT.
 */
async function connectTls(port: number, how: 'starttls' | 'implicit', session?: Buffer): Promise<Handshake> {
  const c = await TestClient.connect(port, {
    tls: how === 'implicit',
    ...(how === 'implicit' && session !== undefined ? { tlsOptions: { session } } : {}),
  });
  try {
    await c.expect(220);
    let secure: TLSSocket;
    if (how === 'starttls') {
      assert.equal((await c.cmd('EHLO client.example')).code, 250);
      assert.equal((await c.cmd('STARTTLS')).code, 220);
      secure = await c.upgrade(session !== undefined ? { session } : {});
    } else {
      assert.ok(c.socket instanceof TLSSocket);
      secure = c.socket;
    }
    assert.equal((await c.cmd('EHLO client.example')).code, 250);
    await c.cmd('QUIT');
    return { reused: secure.isSessionReused(), session: c.sessions.at(-1) };
  } finally {
    c.close();
  }
}

test(
  'two workers share session ticket keys: a ticket resumes on both, also after a worker restart',
  { timeout: 180_000 },
  async (t) => {
    const serve = await prepareServeDir({
      prefix: 'sterna-tickets-',
      hostname: 'mx.sterna.test',
      domain: 'sterna.test',
      mailboxes: [],
      workers: 2,
    });
    const tlsPort = await freePort();
    const config = (await readFile(serve.configFile, 'utf8')).replace(
      'submissions = []',
      `submissions = ["127.0.0.1:${tlsPort}"]`,
    );
    await writeFile(serve.configFile, config);
    t.after(() => rm(serve.dir, { recursive: true, force: true }));
    const p = await startSternaProcess({
      configFile: serve.configFile,
      smtpPort: serve.port,
      stdoutFile: path.join(serve.dir, 'sterna.log'),
      stderrFile: path.join(serve.dir, 'sterna.err'),
      readyTimeoutMs: READY_TIMEOUT_MS,
      group: true,
      // The primary hands connections out in turn: consecutive connections alternate workers.
      env: { NODE_CLUSTER_SCHED_POLICY: 'rr' },
    });
    t.after(async () => {
      p.kill('SIGKILL');
      await p.exited;
    });
    await waitForLog(p, primaryRecord('worker ready'), 2);

    /** `n` connections offering `session`, one after the other; each must resume. */
    let handshakes = 0;
    const resumeRound = async (how: 'starttls' | 'implicit', session: Buffer, n: number): Promise<void> => {
      const served: unknown[] = [];
      for (let i = 0; i < n; i++) {
        const h = await connectTls(how === 'starttls' ? serve.port : tlsPort, how, session);
        const logged = await waitForLog(p, tlsEstablished, ++handshakes);
        const record = logged[handshakes - 1]!;
        served.push(record.fields['worker']);
        assert.equal(
          h.reused,
          true,
          `${how} connection ${i} (worker ${String(record.fields['worker'])}) resumed`,
        );
        assert.equal(record.fields['resumed'], true, `the server saw connection ${i} as resumed`);
      }
      assert.deepEqual(
        [...new Set(served)].sort(),
        [0, 1],
        `${how}: both workers served resumed sessions: ${JSON.stringify(served)}`,
      );
    };

    // --- a first full handshake; its ticket then resumes on both workers ---------------------
    const first = await connectTls(serve.port, 'starttls');
    await waitForLog(p, tlsEstablished, ++handshakes);
    assert.equal(first.reused, false);
    assert.ok(first.session !== undefined, 'the server issued a session ticket');
    await resumeRound('starttls', first.session, RESUMES);

    // --- implicit TLS (submissions) builds its handshake the same way: the ticket resumes there too
    await resumeRound('implicit', first.session, 4);

    // --- a worker killed and restarted gets the current keys: the old ticket still resumes ----
    const [ready1] = await waitForLog(p, primaryRecord('worker ready', 1));
    const pid1 = ready1?.fields['pid'];
    assert.equal(typeof pid1, 'number');
    process.kill(Number(pid1), 'SIGKILL');
    await waitForLog(p, primaryRecord('worker ready', 1), 2);
    await resumeRound('starttls', first.session, RESUMES);
  },
);
