/**
 * A flush of more deferred messages than a next hop takes at once delivers them all (issue 8,
 * per-destination queues). With concurrency_per_destination = 2 a next hop runs 2 deliveries
 * and keeps 2 messages waiting; of the 10 in the active window (spool.max_active_messages) the
 * others are parked and handed back as slots free. A parked message must stay flushed until
 * then, or its deferred recipients would wait for their retry time (10 minutes here).
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { sendMessage, waitFor } from './helpers/outbound.js';
import { startOutboundFixture, type OutboundFixture } from './helpers/outbound-fixture.js';
import type { SinkAction, SinkCommand } from './helpers/smtp-sink.js';

let f: OutboundFixture<'one'>;
/** While true, the sink answers every RCPT with a 4xx: the recipients are deferred. */
let busy = true;
const respond = (cmd: SinkCommand): SinkAction | undefined =>
  busy && cmd.verb === 'RCPT' ? '451 4.2.1 mailbox busy, try again later' : undefined;

before(async () => {
  f = await startOutboundFixture({
    zone: {
      'one.test': { MX: [{ preference: 10, exchange: 'mx.one.test' }] },
      'mx.one.test': { A: ['127.0.0.2'] },
    },
    sinks: { one: { host: '127.0.0.2', ehlo: ['PIPELINING'], respond } },
    outbound: { concurrency_per_destination: 2, concurrency_total: 4 },
    queue: { first_retry_ms: 600000 },
    tables: '[spool]\nmax_active_messages = 10\n',
  });
});

after(() => f.close());

test('a flush of more deferred messages than a next hop takes at once delivers them all: parked ones stay flushed', async () => {
  const { server } = f;
  const one = f.sinks.one;
  const body = 'Subject: flushed\r\n\r\ncome now\r\n';
  for (let i = 0; i < 12; i++)
    await sendMessage(server.ports.smtp, { from: 'alice@sterna.test', to: [`c${i}@one.test`], body });
  await waitFor(
    'the 12 messages to be deferred (first retry in 10 minutes)',
    () =>
      server.app.spool.list().length === 12 &&
      server.app.spool.list().every((m) => m.states.every((st) => st.status === 'deferred')),
  );
  busy = false;
  assert.equal((await server.app.manager.flush()).length, 12);
  await waitFor(
    () => `the flushed queue to empty; ${server.app.spool.list().length} left`,
    () => server.app.spool.list().length === 0,
    15_000,
  );
  assert.equal(new Set(one.messages().flatMap((m) => m.rcptTo)).size, 12);
});
