/**
 * Bounded outbound concurrency (issue 4): outbound.concurrency_per_destination caps the
 * deliveries to one domain that run at once, outbound.concurrency_total caps all of them, and a
 * delivery waiting for a slot gets one as soon as another ends (none is left behind). Real
 * server and receiving servers on loopback; the receivers hold back their reply to the end of
 * data, so deliveries pile up and the open connections can be counted.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { sendMessage, waitFor } from './helpers/outbound.js';
import { startOutboundFixture, type OutboundFixture } from './helpers/outbound-fixture.js';
import type { SinkCommand, SmtpSink } from './helpers/smtp-sink.js';
import type { TestServer } from './helpers/server.js';

let f: OutboundFixture<'one' | 'two'>;
let one: SmtpSink;
let two: SmtpSink;
let server: TestServer;
/** While true, the sinks keep their reply to the end of data: the delivery stays in flight. */
let holding = true;
const hold = (cmd: SinkCommand): { silent: true } | undefined =>
  holding && cmd.verb === 'DATA-END' ? { silent: true } : undefined;

before(async () => {
  f = await startOutboundFixture({
    zone: {
      'one.test': { MX: [{ preference: 10, exchange: 'mx.one.test' }] },
      'mx.one.test': { A: ['127.0.0.2'] },
      'two.test': { MX: [{ preference: 10, exchange: 'mx.two.test' }] },
      'mx.two.test': { A: ['127.0.0.3'] },
    },
    sinks: {
      one: { host: '127.0.0.2', ehlo: ['PIPELINING'], respond: hold },
      two: { host: '127.0.0.3', ehlo: ['PIPELINING'], respond: hold },
    },
    outbound: { concurrency_per_destination: 3, concurrency_total: 4 },
    queue: { first_retry_ms: 600000 },
  });
  server = f.server;
  ({ one, two } = f.sinks);
});

after(() => f.close());

/** Deliveries in flight at a sink: sessions that sent their data and wait for the reply. */
function waiting(sink: SmtpSink): number {
  return sink.sessions.filter((s) => s.transcript.at(-1)?.startsWith('C: <') === true).length;
}

test('at most concurrency_per_destination deliveries to one domain and concurrency_total in all; every message delivered once the slots free', async () => {
  const body = 'Subject: slots\r\n\r\nwait for it\r\n';
  for (let i = 0; i < 6; i++)
    await sendMessage(server.ports.smtp, { from: 'alice@sterna.test', to: [`a${i}@one.test`], body });
  for (let i = 0; i < 6; i++)
    await sendMessage(server.ports.smtp, { from: 'alice@sterna.test', to: [`b${i}@two.test`], body });
  // The limits fill up: 3 to one domain, and only 1 more (4 in total) to the other.
  await waitFor('the slots to fill', () => waiting(one) + waiting(two) === 4);
  // Every other message has asked its next hop's queue for a slot and waits (or is parked):
  // nothing more can start until a slot is released, so the counts below are final.
  const queued = (hop: string): number => {
    const q = server.app.manager.nextHopQueue(hop);
    return q.waiting + q.parked;
  };
  await waitFor(
    () =>
      `the other 8 messages to queue for a slot: ${JSON.stringify([
        server.app.manager.nextHopQueue('one.test'),
        server.app.manager.nextHopQueue('two.test'),
      ])}`,
    () => queued('one.test') + queued('two.test') === 8,
  );
  assert.equal(waiting(one) + waiting(two), 4, 'concurrency_total = 4');
  assert.ok(waiting(one) <= 3 && waiting(two) <= 3, `per destination: ${waiting(one)} and ${waiting(two)}`);
  assert.equal(one.sockets().length + two.sockets().length, 4, 'no connection beyond the limits');
  // Release: the held replies, and no more holding. Every message gets through.
  holding = false;
  for (const sock of [...one.sockets(), ...two.sockets()]) sock.write('250 2.0.0 Ok: queued\r\n');
  // Sterna saw a 250 for every message: the queue empties.
  await waitFor(
    () => `the queue to empty; ${server.app.spool.list().length} left`,
    () => server.app.spool.list().length === 0,
    15_000,
  );
  // The sink records only the messages it answered itself: all but the 4 answered by hand.
  const rcpts = [...one.messages(), ...two.messages()].flatMap((m) => m.rcptTo).sort();
  assert.equal(rcpts.length, 8);
  assert.equal(new Set(rcpts).size, 8, 'no message delivered twice');
});
