/**
 * A connection lost after the whole message went out (the final "." of DATA, or BDAT LAST) and
 * before its reply, end to end on loopback: the first MX may already hold the message (RFC 5321
 * 6.1), so Sterna must not hand it to the second MX in the same attempt (a duplicate). The
 * recipient is deferred with "may be delivered twice" (Postfix: "lost connection ... while
 * sending end of data -- message may be sent more than once"), shown by `sterna queue list`, and
 * delivered once on the normal retry. Peers: a DNS server of the test's own on 127.0.0.1, two MX
 * sinks per domain (127.0.0.2 / 127.0.0.3 with DATA, 127.0.0.4 / 127.0.0.5 with CHUNKING).
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Zone } from './helpers/dns-server.js';
import type { QueueEntry } from '../src/queue/admin.js';
import { startOutboundFixture, type OutboundFixture } from './helpers/outbound-fixture.js';
import { liveStates, queueCommand, TEST_OUTBOUND_TIMEOUTS, waitFor, waitGone } from './helpers/outbound.js';
import type { SinkAction, SinkCommand, SmtpSink } from './helpers/smtp-sink.js';

/** The retry delay: long enough to see that the retry is not immediate, short for the test. */
const RETRY_MS = 1500;

let f: OutboundFixture<'mx1' | 'mx2' | 'bdat1' | 'bdat2'>;
/** Recipients whose first end of data the preferred MX answered with `action`; later ones get 250. */
const seen = new Set<string>();
/** What the preferred MX does at the first end of data of each recipient. */
let firstEnd: SinkAction = { close: true };

/** At the end of data ('DATA-END', or the 'BDAT' after BDAT LAST) of a recipient's first message: `firstEnd`. */
function respond(cmd: SinkCommand): SinkAction | undefined {
  const last = cmd.verb === 'BDAT' && / LAST$/i.test(cmd.session.transcript.at(-1) ?? '');
  if (cmd.verb !== 'DATA-END' && !last) return undefined;
  // The transaction's recipient: the last RCPT of the session (a reused connection has several).
  const rcpt = [...cmd.session.transcript].reverse().find((l) => l.startsWith('C: RCPT TO:')) ?? '';
  if (seen.has(rcpt)) return undefined;
  seen.add(rcpt);
  return firstEnd;
}

/** Two MX hosts for `domain`: mx1.DOMAIN on `first`, mx2.DOMAIN on `second`. */
function twoMx(domain: string, first: string, second: string): Zone {
  return {
    [domain]: {
      MX: [
        { preference: 10, exchange: `mx1.${domain}` },
        { preference: 20, exchange: `mx2.${domain}` },
      ],
    },
    [`mx1.${domain}`]: { A: [first] },
    [`mx2.${domain}`]: { A: [second] },
  };
}

before(async () => {
  const chunking = ['PIPELINING', 'CHUNKING'];
  f = await startOutboundFixture({
    zone: {
      ...twoMx('twice.test', '127.0.0.2', '127.0.0.3'),
      ...twoMx('chunked.test', '127.0.0.4', '127.0.0.5'),
    },
    sinks: {
      mx1: { host: '127.0.0.2', ehlo: ['PIPELINING'], respond },
      mx2: { host: '127.0.0.3' },
      bdat1: { host: '127.0.0.4', ehlo: chunking, respond },
      bdat2: { host: '127.0.0.5', ehlo: chunking },
    },
    outbound: { ...TEST_OUTBOUND_TIMEOUTS, data_end_timeout_ms: 600 },
    queue: { first_retry_ms: RETRY_MS },
  });
});

after(() => f.close());

/**
 * Sends one message to `rcpt`, whose preferred MX (`first`) reads it all and then does
 * `firstEnd`; checks the deferral (spool and `sterna queue list --json`), that `second` saw
 * nothing, and that the retry delivers it once, to `first`.
 */
async function lostAtEnd(rcpt: string, first: SmtpSink, second: SmtpSink, action: SinkAction): Promise<void> {
  firstEnd = action;
  const before2 = second.sessions.length;
  const server = f.server;
  const qid = await f.send({
    from: 'alice@sterna.test',
    to: [rcpt],
    body: 'Subject: once only\r\n\r\nOne copy, please.\r\n',
  });
  await waitFor(
    () =>
      `the deferral: ${JSON.stringify(liveStates(server, qid))} ${JSON.stringify(first.sessions.map((s) => s.transcript))}`,
    () => liveStates(server, qid)?.[0]?.status === 'deferred',
  );
  const deferredAt = Date.now();
  const state = liveStates(server, qid)?.[0];
  assert.ok(state?.status === 'deferred');
  assert.equal(state.attempts, 1);
  assert.ok(
    state.nextAttemptAt >= deferredAt + RETRY_MS - 500,
    'retried on the normal schedule, not at once',
  );
  assert.equal(second.sessions.length, before2, 'the second MX was not even connected to');

  const list = await queueCommand(server.config, 'list', '--json');
  assert.equal(list.code, 0, list.err);
  const entry = (JSON.parse(list.out) as QueueEntry[]).find((e) => e.qid === qid);
  assert.equal(entry?.recipients[0]?.status, 'deferred');
  assert.match(entry?.recipients[0]?.lastError ?? '', /^451 4\.4\.2 .*-- message may be delivered twice$/);

  await waitGone(server, qid, RETRY_MS + 8000);
  assert.equal(
    first.messages().filter((m) => m.rcptTo.includes(rcpt)).length,
    1,
    'delivered once, on the retry',
  );
  assert.equal(second.messages().filter((m) => m.rcptTo.includes(rcpt)).length, 0);
  assert.equal(second.sessions.length, before2, 'the second MX never saw the message');
}

test('DATA: the first MX reads the message and closes without a reply; deferred, never sent to the second MX', async () => {
  await lostAtEnd('ann@twice.test', f.sinks.mx1, f.sinks.mx2, { close: true });
});

test('DATA: the first MX never replies to the end of data (client timeout); deferred, never sent to the second MX', async () => {
  await lostAtEnd('ben@twice.test', f.sinks.mx1, f.sinks.mx2, { silent: true });
});

test('BDAT LAST: the first MX reads the last chunk and closes without a reply; deferred, never sent to the second MX', async () => {
  await lostAtEnd('cy@chunked.test', f.sinks.bdat1, f.sinks.bdat2, { close: true });
});

test('BDAT LAST: the first MX never replies to BDAT LAST (client timeout); deferred, never sent to the second MX', async () => {
  await lostAtEnd('dee@chunked.test', f.sinks.bdat1, f.sinks.bdat2, { silent: true });
});
