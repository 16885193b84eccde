/**
 * Outbound delivery end to end, on real loopback: a DNS server of the test's own on 127.0.0.1,
 * receiving SMTP servers (sinks) on 127.0.0.2 and 127.0.0.3, and Sterna pointed at both by
 * [dns] servers and [outbound] port. Covers RFC 5321 5.1 (MX order, fallback to the next MX
 * after a refused connection or a 421), RFC 7505 (null MX), 4xx deferral and retry, 5xx
 * failure, DNS failures (NXDOMAIN fails, SERVFAIL defers), loop detection, and a message with
 * a local and a remote recipient delivered independently; bounces (RFC 3461, 3464, 6522).
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { parseDsn, waitForBounce } from './helpers/dsn-parser.js';
import { renderOutcome } from '../src/message/outcome.js';
import { maildirMessages, waitForMessages } from './helpers/maildir.js';
import {
  liveStates,
  sendMessage,
  TEST_OUTBOUND_TIMEOUTS,
  waitFor,
  waitGone,
  type OutboundMessage,
} from './helpers/outbound.js';
import { startOutboundFixture, type OutboundFixture } from './helpers/outbound-fixture.js';
import type { SinkAction, SinkCommand, SmtpSink } from './helpers/smtp-sink.js';
import type { TestServer } from './helpers/server.js';
import { LAZY_DONE_SYNC_MS } from '../src/queue/spool.js';

let sink: SmtpSink;
let sink3: SmtpSink;
let server: TestServer;
let f: OutboundFixture<'sink' | 'sink3'>;
/** What the sink on 127.0.0.3 does; each test sets it. */
let sink3Respond: (cmd: SinkCommand) => SinkAction | undefined = () => undefined;
/** RCPT TO:<later@example.test> seen so far (the first is refused with 451). */
let laterSeen = 0;

before(async () => {
  f = await startOutboundFixture({
    zone: {
      'example.test': { MX: [{ preference: 10, exchange: 'mx1.example.test' }] },
      'mx1.example.test': { A: ['127.0.0.2'] },
      // The preferred MX refuses connections (nothing listens on 127.0.0.4).
      'refused.test': {
        MX: [
          { preference: 10, exchange: 'down.refused.test' },
          { preference: 20, exchange: 'mx1.example.test' },
        ],
      },
      'down.refused.test': { A: ['127.0.0.4'] },
      // The preferred MX (127.0.0.3) answers 421 at the greeting.
      'busy.test': {
        MX: [
          { preference: 10, exchange: 'mx3.busy.test' },
          { preference: 20, exchange: 'mx1.example.test' },
        ],
      },
      'mx3.busy.test': { A: ['127.0.0.3'] },
      'nullmx.test': { MX: [{ preference: 0, exchange: '.' }] },
      'servfail.test': { rcode: 'SERVFAIL' },
      'loop.test': { MX: [{ preference: 10, exchange: 'self.loop.test' }] },
      'self.loop.test': { A: ['127.0.0.1'] },
    },
    sinks: {
      sink: {
        host: '127.0.0.2',
        respond: (cmd) => {
          if (cmd.verb !== 'RCPT') return undefined;
          if (/<nobody@example\.test>/i.test(cmd.line))
            return '550 5.1.1 <nobody@example.test>: no such user here';
          if (/<later@example\.test>/i.test(cmd.line) && laterSeen++ === 0)
            return '451 4.2.1 <later@example.test>: mailbox busy, try again';
          return undefined;
        },
      },
      sink3: { host: '127.0.0.3', respond: (cmd) => sink3Respond(cmd) },
    },
    users: [{ address: 'dora@sterna.test', password: 'pw-dora-1' }],
    outbound: TEST_OUTBOUND_TIMEOUTS,
    queue: { first_retry_ms: 300 },
  });
  server = f.server;
  ({ sink, sink3 } = f.sinks);
});

after(() => f.close());

const BODY = 'From: alice@sterna.test\r\nSubject: outbound\r\n\r\nHello over there.\r\n';

/** Sends BODY through the smtp listener (the client is a trusted network); returns its queue id. */
function send(
  from: string,
  to: string[],
  params: Pick<OutboundMessage, 'mailParams' | 'rcptParams'> = {},
): Promise<string> {
  return sendMessage(server.ports.smtp, { from, to, body: BODY, ...params });
}

/** A body as the sink received it: Sterna's Received header, then exactly what was sent. */
function assertRelayed(received: Buffer | undefined, sent: string): void {
  assert.ok(received !== undefined, 'the sink received the message');
  const text = received.toString('latin1');
  assert.ok(text.endsWith(sent), 'the body arrives byte for byte');
  const added = text.slice(0, text.length - sent.length);
  assert.match(added, /^Received: from client\.test \(.*\)\r\n(?:[ \t].*\r\n)*$/);
  assert.match(added, /by mx\.sterna\.test/);
}

test('RFC 5321 5.1: mail for a remote domain goes to its MX, byte for byte with a Received header', async () => {
  const before = sink.messages().length;
  const qid = await send('alice@sterna.test', ['bob@example.test']);
  await waitGone(server, qid);
  const got = sink.messages().slice(before);
  assert.equal(got.length, 1);
  assert.equal(got[0]?.mailFrom, 'alice@sterna.test');
  assert.deepEqual(got[0]?.rcptTo, ['bob@example.test']);
  assertRelayed(got[0]?.body, BODY);
  assert.equal(server.app.spool.size, 0);
});

/** How many fdatasyncs the server's spool has made (the sterna_spool_sync_seconds histogram). */
async function spoolSyncs(): Promise<number> {
  // metricsJson() is prom-client's getMetricsAsJSON(), typed unknown for the cluster's IPC.
  const families = (await server.app.metricsJson()) as {
    name: string;
    values: { metricName?: string; value: number }[];
  }[];
  const sync = families.find((f) => f.name === 'sterna_spool_sync_seconds');
  return sync?.values.find((v) => v.metricName === 'sterna_spool_sync_seconds_count')?.value ?? 0;
}

test('RFC 5321 6.1: a relayed message is finished without a sync of its own; the next commit makes it durable', async () => {
  // Early in the file, before any test leaves a deferred message whose retries would sync too.
  await waitFor('the queue to empty', () => server.app.spool.size === 0, 5000);
  const N = 8;
  const before = await spoolSyncs();
  const t0 = Date.now();
  for (let i = 0; i < N; i++)
    await waitGone(server, await send('alice@sterna.test', [`seq${i}@example.test`]));
  const elapsed = Date.now() - t0;
  const syncs = (await spoolSyncs()) - before;
  // One sync per commit, plus at most one lazy sync (LAZY_DONE_SYNC_MS) per second that passed;
  // a DONE that waited for a sync of its own would make it 2 × N.
  const bound = N + 1 + Math.ceil(elapsed / LAZY_DONE_SYNC_MS);
  assert.ok(
    syncs >= N && syncs <= bound,
    `${syncs} fdatasyncs for ${N} relayed messages in ${elapsed} ms (bound ${bound})`,
  );
  assert.ok(bound < 2 * N, `the run was quick enough to tell (${elapsed} ms)`);
});

test('RFC 5321 5.1: a refused connection to the preferred MX falls back to the next MX in the same attempt', async () => {
  const before = sink.messages().length;
  const qid = await send('alice@sterna.test', ['carol@refused.test']);
  await waitGone(server, qid);
  const got = sink.messages().slice(before);
  assert.equal(got.length, 1);
  assert.deepEqual(got[0]?.rcptTo, ['carol@refused.test']);
});

test('RFC 5321 4.2.5: a 421 greeting from the preferred MX falls back to the next MX in the same attempt', async () => {
  sink3Respond = (cmd) =>
    cmd.verb === 'GREETING' ? { reply: '421 4.3.2 busy, come back later', close: true } : undefined;
  const before = sink.messages().length;
  const sessions3 = sink3.sessions.length;
  const qid = await send('alice@sterna.test', ['dan@busy.test']);
  await waitGone(server, qid);
  assert.equal(sink3.sessions.length, sessions3 + 1, 'the preferred MX was tried first');
  assert.equal(sink3.messages().length, 0);
  const got = sink.messages().slice(before);
  assert.equal(got.length, 1);
  assert.deepEqual(got[0]?.rcptTo, ['dan@busy.test']);
});

test('RFC 5321 4.2.5: a 421 to RCPT moves on to the next MX too', async () => {
  sink3Respond = (cmd) =>
    cmd.verb === 'RCPT' ? { reply: '421 4.3.2 shutting down', close: true } : undefined;
  const before = sink.messages().length;
  const qid = await send('alice@sterna.test', ['erin@busy.test']);
  await waitGone(server, qid);
  assert.equal(sink3.messages().length, 0);
  const got = sink.messages().slice(before);
  assert.equal(got.length, 1);
  assert.deepEqual(got[0]?.rcptTo, ['erin@busy.test']);
});

test('4xx at RCPT defers the recipient with the exact reply, and the retry delivers it', async () => {
  const before = sink.messages().length;
  const qid = await send('alice@sterna.test', ['later@example.test']);
  await waitFor('the deferral', () => liveStates(server, qid)?.[0]?.status === 'deferred');
  const s = liveStates(server, qid)?.[0];
  assert.ok(s?.status === 'deferred');
  assert.equal(s.attempts, 1);
  assert.equal(renderOutcome(s.outcome), '451 4.2.1 <later@example.test>: mailbox busy, try again');
  await waitGone(server, qid);
  const got = sink.messages().slice(before);
  assert.equal(got.length, 1, 'delivered once, on the retry');
  assert.deepEqual(got[0]?.rcptTo, ['later@example.test']);
});

/**
 * Sends to `to` and returns its recorded failure. A second recipient in a domain whose DNS
 * fails (deferred) keeps the message live, so the failed state can be read back from the spool.
 */
async function failedError(to: string): Promise<string> {
  const qid = await send('alice@sterna.test', [to, 'keep@servfail.test']);
  await waitFor('the failure', () => liveStates(server, qid)?.[0]?.status === 'failed');
  const s = liveStates(server, qid)?.[0];
  assert.ok(s?.status === 'failed');
  return renderOutcome(s.outcome);
}

test('5xx at RCPT fails the recipient with the remote reply; nothing is sent', async () => {
  const before = sink.messages().length;
  const err = await failedError('nobody@example.test');
  assert.equal(err, '550 5.1.1 <nobody@example.test>: no such user here');
  assert.equal(sink.messages().length, before);
});

test('RFC 7505: a null MX fails the recipient with 556 5.1.10', async () => {
  const err = await failedError('x@nullmx.test');
  assert.equal(err, '556 5.1.10 nullmx.test does not accept mail (null MX, RFC 7505)');
});

test('NXDOMAIN fails the recipient with 5.1.2', async () => {
  const err = await failedError('x@nosuch.test');
  assert.equal(err, '550 5.1.2 nosuch.test does not exist (DNS: no such domain)');
});

test('RFC 5321 5.4.6: an MX that is our own listener address fails as a loop', async () => {
  const err = await failedError('x@loop.test');
  assert.equal(err, '550 5.4.6 mail for loop.test loops back to myself');
});

test('SERVFAIL defers the recipient (a DNS failure that may clear up never bounces)', async () => {
  const qid = await send('alice@sterna.test', ['x@servfail.test']);
  await waitFor('the deferral', () => liveStates(server, qid)?.[0]?.status === 'deferred');
  const s = liveStates(server, qid)?.[0];
  assert.ok(s?.status === 'deferred');
  assert.match(renderOutcome(s.outcome), /^451 4\.4\.3 DNS lookup for servfail\.test failed: /);
  assert.ok(s.nextAttemptAt > Date.now() - 1000);
});

test('a message to a local mailbox and a remote recipient is delivered to both independently', async () => {
  const before = sink.messages().length;
  const qid = await send('alice@sterna.test', ['dora@sterna.test', 'frank@example.test']);
  await waitGone(server, qid);
  const local = await waitForMessages(server.dataDir, 'sterna.test', 'dora', 1);
  assert.equal(local.length, 1);
  assert.ok(local[0]?.toString('latin1').endsWith(BODY));
  const got = sink.messages().slice(before);
  assert.equal(got.length, 1);
  assert.deepEqual(got[0]?.rcptTo, ['frank@example.test']);
  assertRelayed(got[0]?.body, BODY);
});

test('RFC 3464: a 5xx remote failure bounces to the sender with a DSN that carries the exact reply', async () => {
  const before = (await maildirMessages(server.dataDir, 'sterna.test', 'dora')).length;
  const qid = await send('dora@sterna.test', ['nobody@example.test']);
  await waitGone(server, qid);
  const dsn = await waitForBounce(server.dataDir, { domain: 'sterna.test', local: 'dora' }, before, qid);
  assert.equal(dsn.reportType, 'delivery-status');
  assert.equal(dsn.statusType, 'message/delivery-status');
  assert.equal(dsn.perMessage['reporting-mta'], 'dns; mx.sterna.test');
  assert.ok(dsn.perMessage['arrival-date'] !== undefined && dsn.perMessage['arrival-date'] !== '');
  assert.equal(dsn.recipients.length, 1);
  const r = dsn.recipients[0];
  assert.equal(r?.['final-recipient'], 'rfc822; nobody@example.test');
  assert.equal(r?.['action'], 'failed');
  assert.equal(r?.['status'], '5.1.1');
  assert.equal(r?.['remote-mta'], 'dns; mx1.example.test');
  assert.equal(r?.['diagnostic-code'], 'smtp; 550 5.1.1 <nobody@example.test>: no such user here');
  assert.ok(dsn.returned !== null);
  assert.equal(dsn.returned.contentType.split(';')[0], 'text/rfc822-headers');
  assert.match(dsn.returned.content.toString('latin1'), /\r\nSubject: outbound\r\n/);
  assert.ok(
    !dsn.returned.content.toString('latin1').includes('Hello over there.'),
    'RET default: headers only',
  );
});

test('RFC 5321 4.5.5: a failed message from the null sender <> produces no bounce', async () => {
  let commits = 0;
  const unsubscribe = server.app.spool.onCommitted(() => commits++);
  try {
    const qid = await send('', ['nobody@example.test']);
    await waitGone(server, qid);
    await server.app.manager.whenIdle();
    assert.equal(commits, 1, 'only the original message was ever spooled');
  } finally {
    unsubscribe();
  }
});

test('RFC 3461: RET=FULL, ENVID and ORCPT come back in the bounce with the whole message', async () => {
  const before = (await maildirMessages(server.dataDir, 'sterna.test', 'dora')).length;
  const qid = await send('dora@sterna.test', ['nobody@example.test'], {
    mailParams: ' RET=FULL ENVID=env-42',
    rcptParams: ' NOTIFY=FAILURE ORCPT=rfc822;nobody+2Borig@example.test',
  });
  await waitGone(server, qid);
  const msgs = await waitForMessages(server.dataDir, 'sterna.test', 'dora', before + 1);
  const raw = msgs.find((m) => m.toString('latin1').includes(`X-Sterna-Queue-ID: ${qid}`));
  assert.ok(raw !== undefined);
  const dsn = parseDsn(raw);
  assert.equal(dsn.perMessage['original-envelope-id'], 'env-42');
  assert.equal(dsn.recipients[0]?.['original-recipient'], 'rfc822;nobody+orig@example.test');
  assert.equal(dsn.recipients[0]?.['status'], '5.1.1');
  assert.ok(dsn.returned !== null);
  assert.equal(dsn.returned.contentType.split(';')[0], 'message/rfc822');
  assert.ok(dsn.returned.content.toString('latin1').endsWith(BODY), 'the whole original message');
});

test('RFC 3461 4.1: NOTIFY=NEVER suppresses the bounce', async () => {
  let commits = 0;
  const unsubscribe = server.app.spool.onCommitted(() => commits++);
  try {
    const qid = await send('dora@sterna.test', ['nobody@example.test'], { rcptParams: ' NOTIFY=NEVER' });
    await waitGone(server, qid);
    await server.app.manager.whenIdle();
    assert.equal(commits, 1, 'only the original message was ever spooled');
  } finally {
    unsubscribe();
  }
});
