/**
 * Outbound retries across a restart and past the message lifetime, on real loopback (a DNS
 * server of the test's own on 127.0.0.1, a receiving SMTP server on 127.0.0.2). Next-attempt
 * times live in the spool, so a restarted Sterna resumes deferred recipients, and a recipient
 * that already got 250 is never sent the message again. RFC 5321 4.5.4.1: a recipient still
 * deferred after the maximum lifetime fails, and the sender gets a bounce saying so. A domain
 * that fails as a whole is backed off: its other messages wait instead of each trying it.
 */
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { after, before, test } from 'node:test';
import { parseDsn } from './helpers/dsn-parser.js';
import { renderOutcome } from '../src/message/outcome.js';
import type { TestDnsServer, Zone } from './helpers/dns-server.js';
import { startOutboundPeers, type OutboundPeers } from './helpers/outbound-fixture.js';
import { waitForMessages } from './helpers/maildir.js';
import { liveStates, sendMessage, waitFor } from './helpers/outbound.js';
import type { SmtpSink } from './helpers/smtp-sink.js';
import { startTestServer, type TestServer } from './helpers/server.js';

const ZONE: Zone = {
  'example.test': { MX: [{ preference: 10, exchange: 'mx1.example.test' }] },
  'mx1.example.test': { A: ['127.0.0.2'] },
  'flaky.test': { rcode: 'SERVFAIL' },
  // Its only MX (127.0.0.3) answers every connection with 421.
  'busy.test': { MX: [{ preference: 10, exchange: 'mx.busy.test' }] },
  'mx.busy.test': { A: ['127.0.0.3'] },
};

let peers: OutboundPeers<'sink' | 'busy'>;
let dns: TestDnsServer;
let sink: SmtpSink;
let busy: SmtpSink;

before(async () => {
  peers = await startOutboundPeers({
    zone: ZONE,
    sinks: {
      sink: {
        host: '127.0.0.2',
        respond: (cmd) =>
          cmd.verb === 'RCPT' && /<busy@example\.test>/i.test(cmd.line)
            ? '450 4.2.1 <busy@example.test>: mailbox busy'
            : undefined,
      },
      busy: {
        host: '127.0.0.3',
        respond: (cmd) =>
          cmd.verb === 'GREETING' ? { reply: '421 4.3.2 too busy', close: true } : undefined,
      },
    },
  });
  dns = peers.dns;
  ({ sink, busy } = peers.sinks);
});

after(() => peers.close());

/** The server's TOML: the peers, short connect timeout, no jitter, `queue` as given. */
function config(queue: Record<string, number> = { first_retry_ms: 300 }): string {
  return peers.config({ outbound: { connect_timeout_ms: 2000 }, queue });
}

/** Sends a short fixed message through the smtp listener of `server`; returns its queue id. */
function send(server: TestServer, from: string, to: string[]): Promise<string> {
  return sendMessage(server.ports.smtp, { from, to, body: 'Subject: retry\r\n\r\nagain\r\n' });
}

function delivered(to: string): number {
  return sink.messages().filter((m) => m.rcptTo.includes(to)).length;
}

test('a restart resumes a deferred recipient and never resends to one that already got 250', async () => {
  let server: TestServer | undefined = await startTestServer({ toml: config() });
  const dataDir = server.dataDir;
  try {
    const qid = await send(server, 'alice@sterna.test', ['gus@example.test', 'hal@flaky.test']);
    const first = server;
    await waitFor('the first attempt', () => {
      const st = liveStates(first, qid);
      return st?.[0]?.status === 'delivered' && st[1]?.status === 'deferred';
    });
    assert.equal(delivered('gus@example.test'), 1);
    await server.stop();
    server = undefined;

    dns.setZone({ ...ZONE, 'flaky.test': { MX: [{ preference: 10, exchange: 'mx1.example.test' }] } });
    server = await startTestServer({ toml: config(), dataDir });
    const second = server;
    const states = liveStates(second, qid);
    assert.equal(states?.[0]?.status, 'delivered', 'the 250 survived the restart');
    assert.equal(states?.[1]?.status, 'deferred', 'the deferral and its next attempt survived the restart');
    await waitFor('the retry after the restart', () => liveStates(second, qid) === null);
    assert.equal(delivered('hal@flaky.test'), 1);
    assert.equal(delivered('gus@example.test'), 1, 'no second delivery to the recipient that got 250');
  } finally {
    dns.setZone(ZONE);
    await server?.stop();
    await rm(dataDir, { recursive: true, force: true });
  }
});

test('RFC 5321 4.5.4.1: a recipient deferred past queue.max_lifetime_ms fails, and the sender gets a 4.4.7 bounce', async () => {
  const server = await startTestServer({
    users: [{ address: 'dora@sterna.test', password: 'pw-dora-1' }],
    toml: config({ first_retry_ms: 300, max_lifetime_ms: 1 }),
  });
  try {
    const qid = await send(server, 'dora@sterna.test', ['busy@example.test']);
    const msgs = await waitForMessages(server.dataDir, 'sterna.test', 'dora', 1);
    assert.equal(msgs.length, 1);
    assert.equal(
      server.app.spool.list().find((m) => m.qid === qid),
      undefined,
      'the message is finished',
    );
    const dsn = parseDsn(msgs[0]!);
    assert.equal(dsn.recipients.length, 1);
    assert.equal(dsn.recipients[0]?.['final-recipient'], 'rfc822; busy@example.test');
    assert.equal(dsn.recipients[0]?.['action'], 'failed');
    assert.equal(dsn.recipients[0]?.['status'], '4.4.7');
  } finally {
    await server.stop({ remove: true });
  }
});

test('a destination whose every MX fails is backed off: the next message for it waits without connecting', async () => {
  const server = await startTestServer({ toml: config({ first_retry_ms: 60000 }) });
  try {
    const sessions = busy.sessions.length;
    const first = await send(server, 'alice@sterna.test', ['ivy@busy.test']);
    await waitFor('the first deferral', () => liveStates(server, first)?.[0]?.status === 'deferred');
    assert.equal(busy.sessions.length, sessions + 1);
    const s1 = liveStates(server, first)?.[0];
    assert.ok(s1?.status === 'deferred');
    assert.equal(s1.attempts, 1);
    const why = `451 4.4.1 mx.busy.test[127.0.0.3]:${sink.port} refused the session at greeting: 421 4.3.2 too busy`;
    assert.equal(renderOutcome(s1.outcome), why);

    const second = await send(server, 'alice@sterna.test', ['joe@busy.test']);
    await waitFor('the second deferral', () => liveStates(server, second)?.[0]?.status === 'deferred');
    assert.equal(busy.sessions.length, sessions + 1, 'no new connection while the destination is backed off');
    const s2 = liveStates(server, second)?.[0];
    assert.ok(s2?.status === 'deferred');
    assert.equal(s2.attempts, 0, 'not tried');
    assert.equal(renderOutcome(s2.outcome), why);
    assert.ok(s2.nextAttemptAt >= Date.now() + 50_000, 'waits for the end of the block');
  } finally {
    await server.stop({ remove: true });
  }
});
