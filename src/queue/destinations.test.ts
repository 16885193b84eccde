import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DestinationQueues, type Admission, type DestinationQueueOptions } from './destinations.js';

const MIN = 60_000;

function queues(over: Partial<DestinationQueueOptions<string>> = {}): {
  q: DestinationQueues<string>;
  unparked: string[];
  clock: { t: number };
} {
  const unparked: string[] = [];
  const clock = { t: 1_000_000 };
  const q = new DestinationQueues<string>({
    total: 10,
    perDestination: 2,
    waitingPerDestination: 2,
    now: () => clock.t,
    random: () => 0,
    backoffBaseMs: MIN,
    backoffMaxMs: 10 * MIN,
    onUnpark: (qid) => unparked.push(qid),
    blockedError: (d) => `451 4.4.1 ${d} backed off`,
    ...over,
  });
  return { q, unparked, clock };
}

function slot(a: Admission<string>): () => void {
  assert.equal(a.kind, 'slot');
  return a.kind === 'slot' ? a.release : () => undefined;
}

test('slots up to perDestination, then a bounded waiting line, then parking', async () => {
  const { q, unparked } = queues();
  const r1 = slot(await q.acquire('a.test', 'Q1'));
  const r2 = slot(await q.acquire('a.test', 'Q2'));
  let granted3: Admission<string> | null = null;
  let granted4: Admission<string> | null = null;
  void q.acquire('a.test', 'Q3').then((a) => (granted3 = a));
  void q.acquire('a.test', 'Q4').then((a) => (granted4 = a));
  assert.equal(q.waiting('a.test'), 2);
  assert.deepEqual(await q.acquire('a.test', 'Q5'), { kind: 'parked' });
  assert.deepEqual(await q.acquire('a.test', 'Q6'), { kind: 'parked' });
  assert.equal(q.parked('a.test'), 2);
  // Another destination is not held up by the full one.
  const rb = slot(await q.acquire('b.test', 'Q7'));
  assert.equal(q.active(), 3);

  r1();
  await Promise.resolve();
  assert.equal(granted3 !== null && (granted3 as Admission<string>).kind, 'slot');
  assert.equal(granted4, null);
  // One place came free in the waiting line: one parked message is handed back, oldest first.
  assert.deepEqual(unparked, ['Q5']);
  r1(); // a second release counts once
  assert.equal(q.active('a.test'), 2);
  r2();
  rb();
  assert.deepEqual(unparked, ['Q5', 'Q6']);
  assert.equal(q.parked(), 0);
});

test('a destination that failed as a whole answers its waiters and hands back its parked messages', async () => {
  const { q, unparked, clock } = queues({ waitingPerDestination: 1 });
  const r1 = slot(await q.acquire('dead.test', 'Q1'));
  slot(await q.acquire('dead.test', 'Q2'));
  const waiter = q.acquire('dead.test', 'Q3');
  assert.deepEqual(await q.acquire('dead.test', 'Q4'), { kind: 'parked' });

  q.failed('dead.test', '451 4.4.1 connect timeout');
  assert.deepEqual(await waiter, {
    kind: 'backed-off',
    until: clock.t + MIN,
    error: '451 4.4.1 connect timeout',
  });
  assert.deepEqual(unparked, ['Q4']);
  assert.deepEqual(await q.acquire('dead.test', 'Q4'), {
    kind: 'backed-off',
    until: clock.t + MIN,
    error: '451 4.4.1 connect timeout',
  });
  r1();
  clock.t += MIN;
  assert.equal(q.blockedUntil('dead.test'), null);
  q.succeeded('dead.test');
  slot(await q.acquire('dead.test', 'Q5'));
});

test('a message parked while every slot in total was taken comes back when any slot frees', async () => {
  const { q, unparked } = queues({ total: 1, waitingPerDestination: 0 });
  const ra = slot(await q.acquire('a.test', 'Q1'));
  assert.deepEqual(await q.acquire('b.test', 'Q2'), { kind: 'parked' });
  ra();
  assert.deepEqual(unparked, ['Q2']);
  slot(await q.acquire('b.test', 'Q2'));
});

test('forget drops a parked message', async () => {
  const { q, unparked } = queues({ perDestination: 1, waitingPerDestination: 0 });
  const r = slot(await q.acquire('a.test', 'Q1'));
  assert.deepEqual(await q.acquire('a.test', 'Q2'), { kind: 'parked' });
  q.forget('Q2');
  assert.equal(q.parked(), 0);
  r();
  assert.deepEqual(unparked, []);
});

test('a waiter gets a slot when the total limit frees, in arrival order across destinations', async () => {
  const { q } = queues({ total: 2, perDestination: 2 });
  const r1 = slot(await q.acquire('a.test', 'Q1'));
  slot(await q.acquire('b.test', 'Q2'));
  const order: string[] = [];
  void q.acquire('c.test', 'Q3').then(() => order.push('Q3'));
  void q.acquire('a.test', 'Q4').then(() => order.push('Q4'));
  r1();
  await Promise.resolve();
  assert.deepEqual(order, ['Q3']);
});

test('a handed-back message keeps a place in the waiting line until its next pass asks for it', async () => {
  const { q, unparked } = queues({ perDestination: 1, waitingPerDestination: 1 });
  const r1 = slot(await q.acquire('a.test', 'Q1'));
  const waiter2 = q.acquire('a.test', 'Q2');
  for (const qid of ['Q3', 'Q4', 'Q5']) assert.deepEqual(await q.acquire('a.test', qid), { kind: 'parked' });

  r1(); // Q2 gets the slot; the free place in the line goes to Q3, and is kept for it
  const r2 = slot(await waiter2);
  assert.deepEqual(unparked, ['Q3']);
  // A newcomer does not take Q3's place: it parks.
  assert.deepEqual(await q.acquire('a.test', 'Q9'), { kind: 'parked' });
  // A second release while Q3 is on its way wakes nobody else (before: Q4 too, to park again).
  r2();
  assert.deepEqual(unparked, ['Q3']);
  const r3 = slot(await q.acquire('a.test', 'Q3'));
  // Q3 used its place; the line has room again on the next release.
  r3();
  assert.deepEqual(unparked, ['Q3', 'Q4']);
  // A pass that ends without asking (held, expired, routed elsewhere) gives its place on.
  q.passEnded('Q4');
  assert.deepEqual(unparked, ['Q3', 'Q4', 'Q5']);
  // passEnded of a message holding nothing changes nothing.
  q.passEnded('Q1');
  assert.deepEqual(unparked, ['Q3', 'Q4', 'Q5']);
  assert.equal(q.parked('a.test'), 1); // Q9
});

test('a handed-back message joins a waiting line that newcomers see as full', async () => {
  const { q, unparked } = queues({ perDestination: 1, waitingPerDestination: 1 });
  const r1 = slot(await q.acquire('a.test', 'Q1'));
  const waiter2 = q.acquire('a.test', 'Q2');
  assert.deepEqual(await q.acquire('a.test', 'Q3'), { kind: 'parked' });
  r1();
  const r2 = slot(await waiter2);
  assert.deepEqual(unparked, ['Q3']);
  let granted: Admission<string> | null = null;
  void q.acquire('a.test', 'Q3').then((a) => (granted = a));
  assert.equal(q.waiting('a.test'), 1);
  r2();
  await Promise.resolve();
  assert.equal(granted !== null && (granted as Admission<string>).kind, 'slot');
});

test('kick: a reserved place whose message never came back lapses, and a stranded parked message is handed back', async () => {
  const { q, unparked, clock } = queues({ perDestination: 1, waitingPerDestination: 1 });
  const r1 = slot(await q.acquire('a.test', 'Q1'));
  const waiter2 = q.acquire('a.test', 'Q2');
  for (const qid of ['Q3', 'Q4']) assert.deepEqual(await q.acquire('a.test', qid), { kind: 'parked' });
  r1();
  const r2 = slot(await waiter2);
  assert.deepEqual(unparked, ['Q3']); // Q3 reserved; say it was held and never asks
  r2();
  assert.deepEqual(unparked, ['Q3']); // the place is still Q3's
  q.kick(30_000);
  assert.deepEqual(unparked, ['Q3']); // not stale yet
  clock.t += 30_001;
  q.kick(30_000);
  assert.deepEqual(unparked, ['Q3', 'Q4']); // lapsed: Q4 gets the place
  q.kick(30_000);
  assert.deepEqual(unparked, ['Q3', 'Q4']);
  assert.equal(q.parked('a.test'), 0);
});
