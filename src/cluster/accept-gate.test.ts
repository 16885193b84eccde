import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AcceptGate, SCALE_DOWN_MS, startLoadReports, type LoadSource } from './accept-gate.js';

function gate(count: number, perWorker = 2): { g: AcceptGate; clock: { now: number } } {
  const clock = { now: 1_000_000 };
  const g = new AcceptGate({ count, connectionsPerWorker: perWorker, now: () => clock.now });
  for (let i = 0; i < count; i++) g.setAlive(i, true);
  return { g, clock };
}

const accepting = (g: AcceptGate, count: number): number[] =>
  Array.from({ length: count }, (_, i) => i).filter((i) => g.accepts(i));

test('light load stays on worker 0; more load brings in the next workers at once, in index order', () => {
  const { g } = gate(4);
  assert.deepEqual(accepting(g, 4), [0]);
  g.report(0, 1.2); // one session at a time
  assert.deepEqual(accepting(g, 4), [0]);
  g.report(0, 2); // exactly connectionsPerWorker
  assert.deepEqual(accepting(g, 4), [0]);
  g.report(0, 2.1);
  assert.deepEqual(accepting(g, 4), [0, 1]);
  g.report(1, 3.9); // 6 in all
  assert.deepEqual(accepting(g, 4), [0, 1, 2]);
  g.report(2, 100);
  assert.deepEqual(accepting(g, 4), [0, 1, 2, 3], 'never more than the workers');
});

test('a worker leaves only after the load has stayed lower for SCALE_DOWN_MS', () => {
  const { g, clock } = gate(2);
  g.report(0, 10);
  assert.deepEqual(accepting(g, 2), [0, 1]);
  assert.equal(g.recheckInMs, null);
  g.report(0, 0.5);
  g.report(1, 0);
  assert.deepEqual(accepting(g, 2), [0, 1], 'not at once');
  assert.equal(g.recheckInMs, SCALE_DOWN_MS);
  clock.now += SCALE_DOWN_MS - 1;
  g.recheck();
  assert.deepEqual(accepting(g, 2), [0, 1]);
  // Load back up meanwhile: the countdown starts over.
  g.report(0, 5);
  clock.now += 10;
  assert.equal(g.recheckInMs, null);
  g.report(0, 0);
  clock.now += SCALE_DOWN_MS;
  g.recheck();
  assert.deepEqual(accepting(g, 2), [0]);
  assert.equal(g.recheckInMs, null);
});

test('the first live workers take connections: a dead worker 0 is replaced at once', () => {
  const clock = { now: 0 };
  const g = new AcceptGate({ count: 3, connectionsPerWorker: 2, now: () => clock.now });
  assert.deepEqual(accepting(g, 3), [], 'no worker is ready yet');
  g.setAlive(2, true);
  assert.deepEqual(accepting(g, 3), [2], 'the first ready one takes them');
  g.setAlive(0, true);
  g.setAlive(1, true);
  assert.deepEqual(accepting(g, 3), [0]);
  g.setAlive(0, false);
  assert.deepEqual(accepting(g, 3), [1]);
  g.setAlive(0, true);
  assert.deepEqual(accepting(g, 3), [0]);
  assert.throws(() => new AcceptGate({ count: 2, connectionsPerWorker: 0 }), RangeError);
});

test('a worker reports its average load when it changes, and a burst of connections at once', async () => {
  let occupancy = 0;
  const source: LoadSource = { takeOccupancy: () => occupancy, onOpened: undefined };
  const sent: number[] = [];
  const stop = startLoadReports(source, (open) => sent.push(open), 2);
  try {
    source.onOpened?.(3);
    assert.deepEqual(sent, [], 'below twice connectionsPerWorker');
    source.onOpened?.(4);
    assert.deepEqual(sent, [4], 'a burst is sent at once');
    source.onOpened?.(5);
    assert.deepEqual(sent, [4], 'once');
    occupancy = 1.04;
    await new Promise((resolve) => setTimeout(resolve, 600));
    assert.deepEqual(sent, [4, 1], 'then the average, in tenths, once while it holds');
    occupancy = 0;
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.deepEqual(sent, [4, 1, 0]);
  } finally {
    stop();
  }
  assert.equal(source.onOpened, undefined);
});
