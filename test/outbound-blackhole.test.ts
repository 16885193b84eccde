/**
 * A dead destination does not hold up the rest of the queue (issue 8, "scheduling belongs to the
 * queue"). 2,000 messages wait for one blackholed domain: its MX accepts no connection and
 * answers no SYN, so every attempt hangs until outbound.connect_timeout_ms. Meanwhile a message
 * for a local mailbox and one for another domain are each delivered within a second of their 250:
 * the blackholed domain holds at most concurrency_per_destination deliveries and as many waiting
 * messages; the rest are parked by its per-destination queue instead of filling the manager's
 * active window (spool.max_active_messages). Once the connections time out, the domain is backed
 * off and every one of its messages is deferred with the timeout as its error, without connecting.
 *
 * The blackhole is a real listening socket (python3) whose accept queue is full: Linux then drops
 * further SYNs, as a firewall that drops packets would.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import net from 'node:net';
import { after, before, test } from 'node:test';
import { renderOutcome } from '../src/message/outcome.js';
import { startDnsServer, type TestDnsServer } from './helpers/dns-server.js';
import { waitForMessages } from './helpers/maildir.js';
import { outboundToml, sendMessage, waitFor } from './helpers/outbound.js';
import { startSmtpSink, type SmtpSink } from './helpers/smtp-sink.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { findTool, requireTool } from './helpers/tools.js';

const BLACKHOLE = '127.0.0.9';
const QUEUED = 2000;
const PER_DESTINATION = 20;

let dns: TestDnsServer;
let sink: SmtpSink;
let server: TestServer;
let blackhole: ChildProcess | null = null;
const fillers: net.Socket[] = [];
const python = requireTool('python3');

/** Connections in SYN_SENT to address:port, read from /proc/net/tcp (state 02). */
async function synSent(address: string, port: number): Promise<number> {
  const hex = address
    .split('.')
    .map((o) => Number(o).toString(16).padStart(2, '0'))
    .reverse()
    .join('')
    .toUpperCase();
  const want = `${hex}:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  const table = await readFile('/proc/net/tcp', 'latin1');
  return table.split('\n').filter((line) => {
    const f = line.trim().split(/\s+/);
    return f[2] === want && f[3] === '02';
  }).length;
}

/** A socket listening on address:port that accepts nothing, its accept queue filled: SYNs are dropped. */
async function startBlackhole(address: string, port: number): Promise<void> {
  const script = [
    'import socket, sys, time',
    's = socket.socket()',
    's.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)',
    `s.bind(('${address}', ${port}))`,
    's.listen(0)',
    'print("listening", flush=True)',
    'sys.stdin.read()',
  ].join('\n');
  const child = spawn(findTool('python3') ?? 'python3', ['-c', script], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  blackhole = child;
  await new Promise<void>((resolve, reject) => {
    child.once('error', reject);
    child.stdout?.once('data', () => resolve());
  });
  // Fill the accept queue (backlog 0 holds one; a few more to be sure it is full).
  for (let i = 0; i < 3; i++) fillers.push(net.connect(port, address).on('error', () => undefined));
  await waitFor('the blackhole to drop SYNs', async () => {
    const probe = net.connect(port, address).on('error', () => undefined);
    const connected = await new Promise<boolean>((resolve) => {
      probe.once('connect', () => resolve(true));
      setTimeout(() => resolve(false), 200);
    });
    if (connected) fillers.push(probe);
    else probe.destroy();
    return !connected;
  });
}

before(async () => {
  if (python.skip !== false) return;
  sink = await startSmtpSink({ host: '127.0.0.2', ehlo: ['PIPELINING'] });
  dns = await startDnsServer({
    'dead.test': { MX: [{ preference: 10, exchange: 'mx.dead.test' }] },
    'mx.dead.test': { A: [BLACKHOLE] },
    'live.test': { MX: [{ preference: 10, exchange: 'mx.live.test' }] },
    'mx.live.test': { A: ['127.0.0.2'] },
  });
  await startBlackhole(BLACKHOLE, sink.port);
  server = await startTestServer({
    users: [{ address: 'alice@sterna.test', password: 'unused' }],
    toml: `${outboundToml({
      dnsPort: dns.port,
      outbound: {
        port: sink.port,
        concurrency_per_destination: PER_DESTINATION,
        concurrency_total: 100,
        connect_timeout_ms: 12_000,
      },
    })}[queue]
first_retry_ms = 600000
jitter = 0
`,
  });
});

after(async () => {
  blackhole?.kill('SIGKILL');
  for (const s of fillers) s.destroy();
  await server?.stop({ remove: true });
  await sink?.close();
  await dns?.close();
});

test(
  `${QUEUED} messages to a blackholed domain delay neither a local delivery nor another domain by more than a second`,
  { ...python, timeout: 60_000 },
  async (t) => {
    assert.equal(server.config.spool.max_active_messages, 1000, 'the default active window');
    const body = Buffer.from('Subject: into the void\r\n\r\nnobody is listening\r\n');
    for (let i = 0; i < QUEUED; i++) {
      const writer = server.app.spool.begin();
      await writer.write(body);
      await writer.commit({
        sender: 'alice@sterna.test',
        mailParams: {},
        recipients: [{ address: `r${i}@dead.test`, params: {} }],
        client: { ip: '127.0.0.1', port: 25, helo: 'client.test' },
        listener: 'smtp',
        receivedAt: Date.now(),
      });
    }
    // The blackholed domain has its full share of connections hanging in SYN_SENT.
    await waitFor(
      'connections to the blackhole',
      async () => (await synSent(BLACKHOLE, sink.port)) >= PER_DESTINATION,
      10_000,
    );

    const localSent = Date.now();
    await sendMessage(server.ports.smtp, {
      from: 'bob@example.org',
      to: ['alice@sterna.test'],
      body: 'Subject: local\r\n\r\nstill here\r\n',
    });
    const local = await waitForMessages(server.dataDir, 'sterna.test', 'alice', 1, 5_000);
    const localDelay = Date.now() - localSent;
    assert.equal(local.length, 1, 'the local message was delivered');

    const remoteSent = Date.now();
    await sendMessage(server.ports.smtp, {
      from: 'alice@sterna.test',
      to: ['carol@live.test'],
      body: 'Subject: live\r\n\r\nanother domain\r\n',
    });
    await waitFor('the live domain to get its message', () => sink.messages().length === 1, 5_000);
    const remoteDelay = Date.now() - remoteSent;

    t.diagnostic(`local delivery ${localDelay} ms, live.test ${remoteDelay} ms after their 250`);
    assert.ok(localDelay < 1000, `local delivery took ${localDelay} ms with the dead domain queued`);
    assert.ok(remoteDelay < 1000, `delivery to live.test took ${remoteDelay} ms with the dead domain queued`);
    // Still hanging: the deliveries above did not wait for the dead domain's timeouts.
    assert.ok((await synSent(BLACKHOLE, sink.port)) >= 1, 'the dead domain was still being tried');

    // Once the connections time out, the domain is backed off and all its messages deferred
    // with the timeout, without a connection each.
    await waitFor(
      'every message to the dead domain to be deferred',
      () =>
        server.app.spool.list().filter((m) => m.states.some((s) => s.status === 'deferred')).length ===
        QUEUED,
      30_000,
    );
    const errors = new Set(
      server.app.spool
        .list()
        .flatMap((m) => m.states)
        .map((s) => (s.status === 'deferred' ? renderOutcome(s.outcome) : s.status)),
    );
    assert.equal(errors.size, 1, [...errors].join(' | '));
    assert.match([...errors][0] ?? '', /4\.4\.1.*(timed out|timeout)/i);
  },
);
