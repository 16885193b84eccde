/**
 * Outbound connection reuse end to end, on real loopback: a DNS server of the test's own on
 * 127.0.0.1, receiving SMTP servers (sinks) on 127.0.0.2 as the MX of reuse.test, and Sternas
 * with different [outbound] connection_reuse_limit settings. Covers several transactions per
 * session with RSET between them (RFC 5321 4.1.1.5, 3.3; RFC 2920 3.1: the RSET leads the
 * pipelined MAIL and RCPT), the reuse limit, and a connection the server closed while idle or
 * drops at RSET: the message goes over a new connection at once, with no deferral.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startDnsServer, type TestDnsServer } from './helpers/dns-server.js';
import { outboundToml, sendMessage, TEST_OUTBOUND_TIMEOUTS, waitFor, waitGone } from './helpers/outbound.js';
import { startSmtpSink, type SinkAction, type SinkCommand, type SmtpSink } from './helpers/smtp-sink.js';
import { dataDirsWithCert, startTestServer, type TestServer } from './helpers/server.js';

let dns: TestDnsServer;
/** Sterna with connection_reuse_limit = 3, and its sink. */
let reuse3: TestServer;
let sink3: SmtpSink;
/** Sterna with connection_reuse_limit = 1 (no reuse), and its sink. */
let reuse1: TestServer;
let sink1: SmtpSink;
/** Sterna with the default limit and a sink whose behaviour each test sets. */
let flaky: TestServer;
let sinkFlaky: SmtpSink;
let flakyRespond: (cmd: SinkCommand) => SinkAction | undefined = () => undefined;

function config(sinkPort: number, reuseLimit: number): string {
  // A deferral would keep the message for 10 minutes: tests that wait for delivery see it.
  return `${outboundToml({
    dnsPort: dns.port,
    outbound: {
      port: sinkPort,
      tls: 'none',
      connection_reuse_limit: reuseLimit,
      connection_idle_ms: 30000,
      recipients_per_transaction: 2,
      ...TEST_OUTBOUND_TIMEOUTS,
    },
  })}[queue]
first_retry_ms = 600000
jitter = 0
`;
}

before(async () => {
  dns = await startDnsServer({
    'reuse.test': { MX: [{ preference: 10, exchange: 'mx.reuse.test' }] },
    'mx.reuse.test': { A: ['127.0.0.2'] },
  });
  sink3 = await startSmtpSink({ host: '127.0.0.2', ehlo: ['PIPELINING'] });
  sink1 = await startSmtpSink({ host: '127.0.0.2', ehlo: ['PIPELINING'] });
  sinkFlaky = await startSmtpSink({ host: '127.0.0.2', ehlo: [], respond: (cmd) => flakyRespond(cmd) });
  const [d3, d1, df] = await dataDirsWithCert(3);
  reuse3 = await startTestServer({ dataDir: d3 ?? '', toml: config(sink3.port, 3) });
  reuse1 = await startTestServer({ dataDir: d1 ?? '', toml: config(sink1.port, 1) });
  flaky = await startTestServer({ dataDir: df ?? '', toml: config(sinkFlaky.port, 100) });
});

after(async () => {
  await Promise.all([reuse3, reuse1, flaky].map((s) => s.stop({ remove: true })));
  await Promise.all([sink3, sink1, sinkFlaky].map((s) => s.close()));
  await dns.close();
});

function body(i: number): string {
  return `From: alice@sterna.test\r\nSubject: reuse ${i}\r\n\r\nMessage number ${i}.\r\n..a dot line\r\n`;
}

/** Sends `text` from alice to `to` and waits for its delivery (a deferral would keep it 10 minutes). */
async function deliver(server: TestServer, to: string, text: string): Promise<void> {
  await waitGone(
    server,
    await sendMessage(server.ports.smtp, { from: 'alice@sterna.test', to: [to], body: text }),
  );
}

/** A body as the sink received it: Sterna's Received header, then exactly what was sent. */
function assertRelayed(received: Buffer | undefined, sent: string): void {
  assert.ok(received !== undefined, 'the sink received the message');
  const text = received.toString('latin1');
  assert.ok(text.endsWith(sent), `the body arrives byte for byte: ${JSON.stringify(text)}`);
  assert.match(
    text.slice(0, text.length - sent.length),
    /^Received: from client\.test \(.*\)\r\n(?:[ \t].*\r\n)*$/,
  );
}

/** The client lines of one sink session, the message data shown as "<DATA>". */
function commands(sink: SmtpSink, session: number): string[] {
  return (sink.sessions[session]?.transcript ?? [])
    .filter((l) => l.startsWith('C: '))
    .map((l) => l.slice(3).replace(/^<\d+ octets of DATA>$/, '<DATA>'));
}

const TRANSACTION = ['MAIL FROM:<alice@sterna.test>', 'RCPT TO:<bob@reuse.test>', 'DATA', '<DATA>'];
const EHLO = 'EHLO mx.sterna.test';

test('RFC 5321 4.1.1.5: five messages to one MX go over 2 sessions (limit 3), RSET before each reused transaction', async () => {
  const sent: string[] = [];
  for (let i = 0; i < 5; i++) {
    sent.push(body(i));
    await deliver(reuse3, 'bob@reuse.test', body(i));
  }
  assert.equal(sink3.sessions.length, 2);
  assert.deepEqual(
    sink3.sessions.map((s) => s.messages.length),
    [3, 2],
  );
  const got = sink3.messages();
  assert.equal(got.length, 5);
  got.forEach((m, i) => {
    assert.deepEqual(m.rcptTo, ['bob@reuse.test']);
    assertRelayed(m.body, sent[i] ?? '');
  });
  // The limit reached: QUIT at once. The second session stays open, idle, for the next message.
  assert.deepEqual(commands(sink3, 0), [
    EHLO,
    ...TRANSACTION,
    'RSET',
    ...TRANSACTION,
    'RSET',
    ...TRANSACTION,
    'QUIT',
  ]);
  assert.deepEqual(commands(sink3, 1), [EHLO, ...TRANSACTION, 'RSET', ...TRANSACTION]);
  // RFC 2920 3.1: with PIPELINING the RSET goes in one write with MAIL and RCPT.
  const withRset = sink3.sessions.flatMap((s) => s.batches.filter((b) => b.includes('RSET')));
  const group = ['RSET', 'MAIL FROM:<alice@sterna.test>', 'RCPT TO:<bob@reuse.test>', 'DATA'];
  assert.deepEqual(withRset, [group, group, group]);
});

test('connection_reuse_limit = 1: every message has a session of its own, no RSET', async () => {
  const sent: string[] = [];
  for (let i = 0; i < 5; i++) {
    sent.push(body(i));
    await deliver(reuse1, 'bob@reuse.test', body(i));
  }
  assert.equal(sink1.sessions.length, 5);
  for (let i = 0; i < 5; i++) {
    assert.deepEqual(commands(sink1, i), [EHLO, ...TRANSACTION, 'QUIT']);
    assert.equal(sink1.sessions[i]?.messages.length, 1);
    assertRelayed(sink1.sessions[i]?.messages[0]?.body, sent[i] ?? '');
  }
});

test('a connection the server closed while idle: the next message goes on a new connection, not deferred', async () => {
  // The server closes the connection right after accepting the first message.
  flakyRespond = (cmd) =>
    cmd.verb === 'DATA-END' && cmd.session.index === 0
      ? { reply: '250 2.0.0 Ok: queued as SINK', close: true }
      : undefined;
  const first = sinkFlaky.sessions.length;
  await deliver(flaky, 'carol@reuse.test', body(10));
  await waitFor('the sink to close its side', () => sinkFlaky.sockets().length === 0);
  await deliver(flaky, 'carol@reuse.test', body(11));
  assert.equal(sinkFlaky.sessions.length, first + 2);
  assert.deepEqual(
    sinkFlaky.sessions.slice(first).map((s) => s.messages.length),
    [1, 1],
  );
  assertRelayed(sinkFlaky.sessions[first]?.messages[0]?.body, body(10));
  assertRelayed(sinkFlaky.sessions[first + 1]?.messages[0]?.body, body(11));
  const flakyTx = ['MAIL FROM:<alice@sterna.test>', 'RCPT TO:<carol@reuse.test>', 'DATA', '<DATA>'];
  assert.deepEqual(commands(sinkFlaky, first), [EHLO, ...flakyTx]);
  assert.deepEqual(commands(sinkFlaky, first + 1), [EHLO, ...flakyTx]);
});

test('a reused connection dropped at RSET (stale): the message goes on a new connection at once, not deferred', async () => {
  // The idle session from the previous test is reused; the server drops it at RSET, without a reply.
  flakyRespond = (cmd) => (cmd.verb === 'RSET' ? { close: true } : undefined);
  const reused = sinkFlaky.sessions.length - 1;
  await deliver(flaky, 'carol@reuse.test', body(12));
  assert.equal(sinkFlaky.sessions.length, reused + 2);
  const flakyTx = ['MAIL FROM:<alice@sterna.test>', 'RCPT TO:<carol@reuse.test>', 'DATA', '<DATA>'];
  assert.deepEqual(commands(sinkFlaky, reused), [EHLO, ...flakyTx, 'RSET']);
  assert.deepEqual(commands(sinkFlaky, reused + 1), [EHLO, ...flakyTx]);
  assert.equal(sinkFlaky.sessions[reused + 1]?.messages.length, 1);
  assertRelayed(sinkFlaky.sessions[reused + 1]?.messages[0]?.body, body(12));
});

test('a message refused at MAIL leaves the connection usable: the next message reuses it, after RSET', async () => {
  flakyRespond = (cmd) =>
    cmd.verb === 'MAIL' && /<refused@/i.test(cmd.line)
      ? '550 5.7.1 <refused@sterna.test>: sender refused'
      : undefined;
  const qid = await sendMessage(flaky.ports.smtp, {
    from: 'refused@sterna.test',
    to: ['carol@reuse.test'],
    body: body(13),
  });
  await waitGone(flaky, qid);
  await deliver(flaky, 'carol@reuse.test', body(14));
  const index = sinkFlaky.sessions.findIndex((x) =>
    x.transcript.includes('C: MAIL FROM:<refused@sterna.test>'),
  );
  assert.notEqual(index, -1);
  const lines = commands(sinkFlaky, index);
  const refused = lines.indexOf('MAIL FROM:<refused@sterna.test>');
  // This server offers no PIPELINING: MAIL alone, refused; then RSET and the next message.
  assert.deepEqual(lines.slice(refused, refused + 6), [
    'MAIL FROM:<refused@sterna.test>',
    'RSET',
    'MAIL FROM:<alice@sterna.test>',
    'RCPT TO:<carol@reuse.test>',
    'DATA',
    '<DATA>',
  ]);
  assertRelayed(sinkFlaky.sessions[index]?.messages.at(-1)?.body, body(14));
});

test('outbound.recipients_per_transaction: five recipients go in transactions of 2, 2 and 1 on one connection', async () => {
  flakyRespond = () => undefined;
  const before = sinkFlaky.messages().length;
  const to = ['r1', 'r2', 'r3', 'r4', 'r5'].map((l) => `${l}@reuse.test`);
  const qid = await sendMessage(flaky.ports.smtp, { from: 'alice@sterna.test', to, body: body(20) });
  await waitGone(flaky, qid);
  const got = sinkFlaky.messages().slice(before);
  assert.deepEqual(
    got.map((m) => m.rcptTo),
    [['r1@reuse.test', 'r2@reuse.test'], ['r3@reuse.test', 'r4@reuse.test'], ['r5@reuse.test']],
  );
  for (const m of got) assertRelayed(m.body, body(20));
  const sessions = new Set(
    sinkFlaky.sessions.filter((x) => x.messages.some((m) => m.rcptTo.includes('r1@reuse.test'))),
  );
  assert.equal(sessions.size, 1);
  const [session] = sessions;
  assert.ok(
    session?.messages.some((m) => m.rcptTo.includes('r5@reuse.test')),
    'one connection for all three',
  );
});
