/**
 * "grep QID" tells the whole story of an outbound message (issue 4, Logging): arrival, each
 * attempt with the MX host and address, TLS version and the remote reply, the deferral with the
 * delay so far and the next attempt, the delivery, and the end. Runs the real server on loopback
 * (a DNS server of the test's own, a receiving server on 127.0.0.2 that defers the first try)
 * with a JSON logger whose lines the test reads back.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { sendMessage, waitFor } from './helpers/outbound.js';
import { capturedLog, startOutboundFixture, type OutboundFixture } from './helpers/outbound-fixture.js';
import type { TestServer } from './helpers/server.js';

let f: OutboundFixture<'sink'>;
let server: TestServer;
const { log, lines } = capturedLog();
let rcpts = 0;

before(async () => {
  f = await startOutboundFixture({
    zone: {
      'example.test': { MX: [{ preference: 10, exchange: 'mx1.example.test' }] },
      'mx1.example.test': { A: ['127.0.0.2'] },
    },
    sinks: {
      sink: {
        host: '127.0.0.2',
        ehlo: ['PIPELINING'],
        respond: (cmd) =>
          cmd.verb === 'RCPT' && rcpts++ === 0
            ? '451 4.7.1 <ann@example.test>: greylisted, come back later'
            : undefined,
      },
    },
    log,
    queue: { first_retry_ms: 200 },
  });
  server = f.server;
});

after(() => f.close());

test('every line about a message carries its qid: queued, attempt (MX, address, TLS, reply), deferred (delay, next attempt), delivered, finished', async () => {
  const qid = await sendMessage(server.ports.smtp, {
    from: 'zoe@sterna.test',
    to: ['ann@example.test'],
    body: 'Subject: story\r\n\r\ntell it\r\n',
  });
  const story = (): Record<string, unknown>[] => lines.filter((l) => l['qid'] === qid);
  await waitFor(
    () => `the end of the story: ${JSON.stringify(story(), null, 1)}`,
    () => story().some((l) => l['msg'] === 'message finished: every recipient delivered or failed'),
  );
  const s = story();
  const msgs = s.map((l) => l['msg']);
  const find = (msg: string, nth = 0): Record<string, unknown> => {
    const hit = s.filter((l) => l['msg'] === msg)[nth];
    assert.ok(hit !== undefined, `no "${msg}" line #${nth} in ${JSON.stringify(msgs)}`);
    return hit;
  };
  assert.ok(msgs.indexOf('outbound: deferred') < msgs.indexOf('outbound: delivered'));

  const first = find('outbound attempt', 0);
  assert.equal(first['rcpt'], 'ann@example.test');
  assert.equal(first['mx'], 'mx1.example.test');
  assert.equal(first['address'], '127.0.0.2');
  assert.equal(first['tls'], 'none');
  assert.equal(first['reply'], '451 4.7.1 <ann@example.test>: greylisted, come back later');

  const deferred = find('outbound: deferred');
  assert.equal(deferred['reply'], '451 4.7.1 <ann@example.test>: greylisted, come back later');
  assert.equal(typeof deferred['delay'], 'number');
  assert.match(String(deferred['nextAttemptAt']), /^\d{4}-\d\d-\d\dT/);
  assert.match(String(deferred['fix']), /greylisting/, 'the deferral says what the administrator can do');

  const second = find('outbound attempt', 1);
  assert.match(String(second['reply']), /^250 /);
  const delivered = find('outbound: delivered');
  assert.equal(delivered['rcpt'], 'ann@example.test');
  assert.ok(Number(delivered['delay']) >= 0.2, 'the delay so far includes the wait for the retry');
  // The line that says the message was accepted carries the same id.
  assert.ok(
    lines.some((l) => l['qid'] === qid && /queued/i.test(String(l['msg']))),
    'the acceptance is logged with the qid',
  );
});
