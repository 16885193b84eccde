/**
 * Reports to the sender besides bounces (RFC 3461, 3464), and aliases that point to other
 * domains, end to end on loopback (a DNS server of the test's own, receiving SMTP servers on
 * 127.0.0.2 and 127.0.0.3): the delay warning is sent once per recipient, even across a
 * restart, and only to recipients whose NOTIFY asks for it; NOTIFY=SUCCESS gets a "delivered"
 * report for local delivery, a "relayed" one when the next hop has no DSN, and none when the
 * next hop takes the request on; a local alias whose targets are in other domains is forwarded
 * with the same sender and content.
 */
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { after, before, test } from 'node:test';
import type { RecipientState } from '../src/message/envelope.js';
import { parseDsn, type ParsedDsn } from './helpers/dsn-parser.js';
import type { Zone } from './helpers/dns-server.js';
import { maildirMessages, waitForMessages } from './helpers/maildir.js';
import { liveStates, sendMessage, waitFor, waitGone, type OutboundMessage } from './helpers/outbound.js';
import type { SmtpSink } from './helpers/smtp-sink.js';
import { startOutboundPeers, type OutboundPeers } from './helpers/outbound-fixture.js';
import { startTestServer, type TestServer } from './helpers/server.js';

const ZONE: Zone = {
  'example.test': { MX: [{ preference: 10, exchange: 'mx1.example.test' }] },
  'mx1.example.test': { A: ['127.0.0.2'] },
  'dsn.test': { MX: [{ preference: 10, exchange: 'mx.dsn.test' }] },
  'mx.dsn.test': { A: ['127.0.0.3'] },
  'other.test': { MX: [{ preference: 10, exchange: 'mx1.example.test' }] },
};

let peers: OutboundPeers<'sink' | 'dsnSink'>;
/** No DSN extension; refuses <slow@…> with 450 every time. */
let sink: SmtpSink;
/** Offers DSN. */
let dsnSink: SmtpSink;

before(async () => {
  peers = await startOutboundPeers({
    zone: ZONE,
    sinks: {
      sink: {
        host: '127.0.0.2',
        ehlo: ['PIPELINING', '8BITMIME'],
        respond: (cmd) =>
          cmd.verb === 'RCPT' && /<slow@/i.test(cmd.line)
            ? `450 4.2.1 ${/<[^>]*>/.exec(cmd.line)?.[0] ?? ''}: mailbox busy, try later`
            : undefined,
      },
      dsnSink: { host: '127.0.0.3', ehlo: ['PIPELINING', 'DSN'] },
    },
  });
  ({ sink, dsnSink } = peers.sinks);
});

after(() => peers.close());

function config(): string {
  return peers.config({
    outbound: { connect_timeout_ms: 2000 },
    queue: { first_retry_ms: 150, max_backoff_ms: 150, delay_warning_ms: 1 },
    tables: `[aliases]
"fwd@sterna.test" = ["far@example.test", "dora@sterna.test"]
"away@sterna.test" = ["only@example.test"]
`,
  });
}

const USERS = [{ address: 'dora@sterna.test', password: 'pw-dora-1' }];

const BODY = 'From: dora@sterna.test\r\nSubject: reports\r\n\r\nAny news?\r\n';

/** Sends BODY from dora through the smtp listener of `server` (a trusted network); returns its queue id. */
function send(
  server: TestServer,
  to: string[],
  params: Pick<OutboundMessage, 'mailParams' | 'rcptParams'> = {},
): Promise<string> {
  return sendMessage(server.ports.smtp, { from: 'dora@sterna.test', to, body: BODY, ...params });
}

/** The reports about message qid in dora's mailbox, parsed. */
async function reportsAbout(server: TestServer, qid: string): Promise<ParsedDsn[]> {
  const msgs = await maildirMessages(server.dataDir, 'sterna.test', 'dora');
  return msgs
    .filter((m) => m.toString('latin1').includes(`X-Sterna-Queue-ID: ${qid}`))
    .map((m) => parseDsn(m));
}

function attempts(st: RecipientState | undefined): number {
  return st?.status === 'deferred' ? st.attempts : 0;
}

test('RFC 3461: a recipient still deferred after delay_warning_ms gets one delay warning, never a second, even after a restart', async () => {
  let server: TestServer | undefined = await startTestServer({ users: USERS, toml: config() });
  const dataDir = server.dataDir;
  try {
    const first = server;
    const qid = await send(first, ['slow@example.test'], { mailParams: ' ENVID=slow-1' });
    await waitFor('the delay warning', async () => (await reportsAbout(first, qid)).length === 1);
    const [dsn] = await reportsAbout(first, qid);
    assert.ok(dsn !== undefined);
    assert.equal(dsn.reportType, 'delivery-status');
    assert.equal(dsn.perMessage['original-envelope-id'], 'slow-1');
    assert.equal(dsn.recipients.length, 1);
    const r = dsn.recipients[0];
    assert.equal(r?.['final-recipient'], 'rfc822; slow@example.test');
    assert.equal(r?.['action'], 'delayed');
    assert.equal(r?.['status'], '4.2.1');
    assert.ok((r?.['will-retry-until'] ?? '') !== '', 'Will-Retry-Until says when Sterna gives up');
    assert.match(dsn.humanText, /This is only\s+a warning/);
    assert.match(
      dsn.humanText,
      /What was tried: 1 delivery attempt within an hour, the last to\s+mx1\.example\.test\./,
    );
    assert.match(dsn.humanText, /450 4\.2\.1 <slow@example\.test>: mailbox busy, try later/);
    assert.equal(r?.['remote-mta'], 'dns; mx1.example.test');
    assert.equal(r?.['diagnostic-code'], 'smtp; 450 4.2.1 <slow@example.test>: mailbox busy, try later');
    await waitFor('the warning mark on disk', () => {
      const st = liveStates(first, qid)?.[0];
      return st?.status === 'deferred' && st.warned === true;
    });
    const shown = await first.app.manager.show(qid);
    assert.equal(shown.recipients[0]?.delayWarned, true, 'sterna queue show tells the warning was sent');
    // More attempts, no second warning.
    const seen = attempts(liveStates(first, qid)?.[0]);
    await waitFor('three more attempts', () => attempts(liveStates(first, qid)?.[0]) >= seen + 3);
    await first.app.manager.whenIdle();
    assert.equal((await reportsAbout(first, qid)).length, 1, 'one warning, however many attempts');

    await first.stop();
    server = undefined;
    const second = await startTestServer({ toml: config(), dataDir });
    server = second;
    const st = liveStates(second, qid)?.[0];
    assert.ok(st?.status === 'deferred' && st.warned === true, 'the warning mark survived the restart');
    const now = attempts(st);
    await waitFor('two attempts after the restart', () => attempts(liveStates(second, qid)?.[0]) >= now + 2);
    await second.app.manager.whenIdle();
    assert.equal((await reportsAbout(second, qid)).length, 1, 'still one warning after the restart');
    await second.app.manager.delete(qid);
  } finally {
    await server?.stop();
    await rm(dataDir, { recursive: true, force: true });
  }
});

test('RFC 3461 4.1: NOTIFY without DELAY gets no delay warning', async () => {
  const server = await startTestServer({ users: USERS, toml: config() });
  try {
    const qid = await send(server, ['slow@example.test'], { rcptParams: ' NOTIFY=FAILURE' });
    await waitFor('three attempts', () => attempts(liveStates(server, qid)?.[0]) >= 3);
    await server.app.manager.whenIdle();
    assert.equal((await reportsAbout(server, qid)).length, 0);
    const st = liveStates(server, qid)?.[0];
    assert.ok(st?.status === 'deferred' && st.warned === true, 'marked as handled, not looked at again');
    await server.app.manager.delete(qid);
  } finally {
    await server.stop({ remove: true });
  }
});

test('RFC 3461 NOTIFY=SUCCESS: local delivery gets a "delivered" report with status 2.0.0', async () => {
  const server = await startTestServer({ users: USERS, toml: config() });
  try {
    const qid = await send(server, ['dora@sterna.test'], { rcptParams: ' NOTIFY=SUCCESS' });
    // The message itself, then the report.
    await waitForMessages(server.dataDir, 'sterna.test', 'dora', 2);
    const [dsn, ...more] = await reportsAbout(server, qid);
    assert.equal(more.length, 0);
    assert.equal(dsn?.recipients[0]?.['action'], 'delivered');
    assert.equal(dsn.recipients[0]?.['status'], '2.0.0');
    assert.equal(dsn.recipients[0]?.['final-recipient'], 'rfc822; dora@sterna.test');
  } finally {
    await server.stop({ remove: true });
  }
});

test('RFC 3461 6.2.1: NOTIFY=SUCCESS to a next hop without DSN gets a "relayed" report', async () => {
  const server = await startTestServer({ users: USERS, toml: config() });
  try {
    const qid = await send(server, ['ok@example.test'], { rcptParams: ' NOTIFY=SUCCESS,FAILURE' });
    await waitFor('the report', async () => (await reportsAbout(server, qid)).length === 1);
    const [dsn] = await reportsAbout(server, qid);
    assert.equal(dsn?.recipients[0]?.['action'], 'relayed');
    assert.equal(dsn.recipients[0]?.['status'], '2.0.0');
    assert.equal(dsn.recipients[0]?.['remote-mta'], 'dns; mx1.example.test');
    const rcpt = sink.commands().filter((l) => /^RCPT TO:<ok@example\.test>/i.test(l));
    assert.deepEqual(rcpt, ['RCPT TO:<ok@example.test>'], 'no DSN parameters to a server without DSN');
  } finally {
    await server.stop({ remove: true });
  }
});

test('RFC 3461 4.1: NOTIFY=SUCCESS to a next hop with DSN is passed on, and Sterna sends no report', async () => {
  const server = await startTestServer({ users: USERS, toml: config() });
  let commits = 0;
  const unsubscribe = server.app.spool.onCommitted(() => commits++);
  try {
    const qid = await send(server, ['ok@dsn.test'], { rcptParams: ' NOTIFY=SUCCESS' });
    await waitGone(server, qid);
    await server.app.manager.whenIdle();
    assert.equal(commits, 1, 'only the message itself was spooled');
    const rcpt = dsnSink.commands().filter((l) => /^RCPT TO:<ok@dsn\.test>/i.test(l));
    assert.deepEqual(rcpt, ['RCPT TO:<ok@dsn.test> NOTIFY=SUCCESS']);
  } finally {
    unsubscribe();
    await server.stop({ remove: true });
  }
});

test('an alias pointing to another domain is forwarded: same sender, same content, ORCPT the alias', async () => {
  const server = await startTestServer({ users: USERS, toml: config() });
  try {
    const before = sink.messages().length;
    const qid = await send(server, ['fwd@sterna.test']);
    await waitFor('the forwarded copy', () => sink.messages().length === before + 1);
    const [local] = await waitForMessages(server.dataDir, 'sterna.test', 'dora', 1);
    assert.ok(local?.toString('latin1').endsWith(BODY), 'the local target got its copy');
    const out = sink.messages().at(-1);
    assert.equal(out?.mailFrom, 'dora@sterna.test');
    assert.deepEqual(out.rcptTo, ['far@example.test']);
    assert.ok(out.body.toString('latin1').endsWith(BODY), 'byte for byte');
    await waitFor('both messages to finish', () => server.app.spool.list().length === 0);
    assert.equal(liveStates(server, qid), null);
  } finally {
    await server.stop({ remove: true });
  }
});

test("an alias whose only target is remote: its deferral is the forwarded message's, the alias is done", async () => {
  const server = await startTestServer({ users: USERS, toml: config() });
  try {
    const before = sink.messages().length;
    const qid = await send(server, ['away@sterna.test']);
    await waitFor('the forwarded copy', () => sink.messages().length === before + 1);
    assert.deepEqual(sink.messages().at(-1)?.rcptTo, ['only@example.test']);
    await waitFor('both messages to finish', () => server.app.spool.list().length === 0);
    assert.equal(liveStates(server, qid), null);
  } finally {
    await server.stop({ remove: true });
  }
});

test('recipients in two deferred domains: one delay warning lists both, and both marks reach the disk', async () => {
  let server: TestServer | undefined = await startTestServer({ users: USERS, toml: config() });
  const dataDir = server.dataDir;
  try {
    const first = server;
    // Two domains: each group's results are written as soon as it finishes, before the warning.
    const qid = await send(first, ['slow@example.test', 'slow@other.test']);
    await waitFor('the delay warning', async () => (await reportsAbout(first, qid)).length === 1);
    const [dsn] = await reportsAbout(first, qid);
    assert.deepEqual(
      dsn?.recipients.map((r) => [r['final-recipient'], r['action'], r['status']]),
      [
        ['rfc822; slow@example.test', 'delayed', '4.2.1'],
        ['rfc822; slow@other.test', 'delayed', '4.2.1'],
      ],
    );
    await first.app.manager.whenIdle();
    await first.stop();
    server = undefined;
    const second = await startTestServer({ toml: config(), dataDir });
    server = second;
    const st = liveStates(second, qid);
    assert.deepEqual(
      st?.map((x) => x.status === 'deferred' && x.warned === true),
      [true, true],
      'both marks survived the restart',
    );
    const now = attempts(st?.[0]);
    await waitFor('another attempt', () => attempts(liveStates(second, qid)?.[0]) >= now + 1);
    await second.app.manager.whenIdle();
    assert.equal((await reportsAbout(second, qid)).length, 1, 'no second warning');
    await second.app.manager.delete(qid);
  } finally {
    await server?.stop();
    await rm(dataDir, { recursive: true, force: true });
  }
});
