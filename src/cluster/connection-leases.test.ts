/**
 * Connection slots leased by the primary (connection-leases.ts): a ledger and several holders
 * wired through queues that deliver each message on a later turn of the event loop, in order, as
 * node:cluster's IPC does.
 */
import assert from 'node:assert/strict';
import { setImmediate as turn } from 'node:timers/promises';
import { test } from 'node:test';
import type { SlotRefusal } from '../server/connection-slots.js';
import { ASK_TIMEOUT_MS, IDLE_RETURN_MS, LeaseHolder, LeaseLedger } from './connection-leases.js';

interface Cluster {
  ledger: LeaseLedger;
  holders: LeaseHolder[];
  /** Messages sent, by kind. */
  sent: Map<string, number>;
  /** Workers whose link is cut (their messages are dropped, as for a dead process). */
  gone: Set<number>;
  /** Workers whose messages to the primary are lost, while the primary's reach them. */
  muted: Set<number>;
  clock: { now: number };
}

function cluster(workers: number, limits: { total: number; perNetwork: number }): Cluster {
  const sent = new Map<string, number>();
  const gone = new Set<number>();
  const muted = new Set<number>();
  const clock = { now: 0 };
  const count = (kind: string): void => {
    sent.set(kind, (sent.get(kind) ?? 0) + 1);
  };
  // One FIFO per direction and worker, each delivered on a later turn, like a pipe.
  const deliver = (fn: () => void): void => {
    setImmediate(fn);
  };
  const holders: LeaseHolder[] = [];
  const ledger: LeaseLedger = new LeaseLedger({
    workers,
    limits,
    reclaimWaitMs: 200,
    link: {
      grant: (w, g) => {
        if (gone.has(w)) return false;
        count('grant');
        deliver(() => holders[w]?.granted(g));
        return true;
      },
      reclaim: (w, key) => {
        if (gone.has(w)) return false;
        count('reclaim');
        deliver(() => holders[w]?.reclaim(key));
        return true;
      },
    },
  });
  for (let w = 0; w < workers; w++)
    holders.push(
      new LeaseHolder({
        now: () => clock.now,
        // Never let a connection in for want of an answer here: that would hide a lost message.
        onAskTimeout: () => assert.fail(`worker ${w}: an ask went unanswered`),
        link: {
          ask: (a) => {
            count('ask');
            if (!gone.has(w) && !muted.has(w)) deliver(() => void ledger.ask(w, a));
          },
          giveBack: (key, n, answered) => {
            count('return');
            if (!gone.has(w) && !muted.has(w)) deliver(() => ledger.giveBack(w, key, n, answered));
          },
        },
      }),
    );
  return { ledger, holders, sent, gone, muted, clock };
}

async function take(h: LeaseHolder, network: string): Promise<SlotRefusal | null> {
  return h.acquire(network);
}

test('per network: across three workers exactly the limit is let in, whatever worker each connection reaches', async () => {
  const c = cluster(3, { total: 1000, perNetwork: 10 });
  const results: (SlotRefusal | null)[] = [];
  // 15 connections from one network, in turn on each worker, one after the other.
  for (let i = 0; i < 15; i++) results.push(await take(c.holders[i % 3]!, '192.0.2.1'));
  assert.equal(results.filter((r) => r === null).length, 10);
  assert.deepEqual(results.slice(10), new Array<SlotRefusal>(5).fill('TOO_MANY_CONNECTIONS_FROM_IP'));
  // Another network is not touched by this one's limit.
  assert.equal(await take(c.holders[0]!, '192.0.2.2'), null);
  // One closes on worker 2: a connection on worker 0 gets its slot (reclaimed from worker 2).
  c.holders[2]!.release('192.0.2.1');
  assert.equal(await take(c.holders[0]!, '192.0.2.1'), null);
  assert.equal(await take(c.holders[1]!, '192.0.2.1'), 'TOO_MANY_CONNECTIONS_FROM_IP');
});

test('in total: the limit holds across workers; the refusal names the total', async () => {
  const c = cluster(2, { total: 7, perNetwork: 100 });
  const results: (SlotRefusal | null)[] = [];
  for (let i = 0; i < 10; i++) results.push(await take(c.holders[i % 2]!, `198.51.100.${i}`));
  assert.equal(results.filter((r) => r === null).length, 7);
  assert.deepEqual(results.slice(7), new Array<SlotRefusal>(3).fill('TOO_MANY_CONNECTIONS'));
});

test('concurrent connections on every worker never exceed the limits, and fill them', async () => {
  const c = cluster(3, { total: 40, perNetwork: 12 });
  const open: { w: number; net: string }[] = [];
  const perNet = new Map<string, number>();
  let maxTotal = 0;
  let maxNet = 0;
  let refused = 0;
  // 300 rounds: each opens on a random worker from one of 5 networks, at once (not awaited one
  // by one), and closes some of the open ones; the counts are checked after every round.
  let seed = 42;
  const rand = (n: number): number => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed % n;
  };
  for (let round = 0; round < 300; round++) {
    const wave = Array.from({ length: 1 + rand(6) }, () => ({ w: rand(3), net: `203.0.113.${rand(5)}` }));
    const answers = await Promise.all(wave.map((x) => take(c.holders[x.w]!, x.net)));
    wave.forEach((x, i) => {
      if (answers[i] !== null) {
        refused++;
        return;
      }
      open.push(x);
      perNet.set(x.net, (perNet.get(x.net) ?? 0) + 1);
    });
    maxTotal = Math.max(maxTotal, open.length);
    for (const n of perNet.values()) maxNet = Math.max(maxNet, n);
    assert.ok(open.length <= 40, `total ${open.length}`);
    for (const [net, n] of perNet) assert.ok(n <= 12, `${net}: ${n}`);
    // The invariant behind it: no worker holds more than the primary counts for it, and the
    // primary never counts more than the limit in all.
    for (const key of [null, ...perNet.keys()]) {
      let leased = 0;
      c.holders.forEach((h, w) => {
        assert.ok(h.holding(key) <= c.ledger.held(w, key), `worker ${w}, ${key ?? 'total'}`);
        leased += c.ledger.held(w, key);
      });
      assert.ok(leased <= (key === null ? 40 : 12), `${key ?? 'total'} leased ${leased}`);
    }
    for (let k = rand(6); k > 0 && open.length > 0; k--) {
      const [x] = open.splice(rand(open.length), 1);
      if (x === undefined) continue;
      c.holders[x.w]!.release(x.net);
      perNet.set(x.net, (perNet.get(x.net) ?? 1) - 1);
    }
  }
  assert.equal(maxTotal, 40, 'the total was reached');
  assert.equal(maxNet, 12, 'a network reached its limit');
  assert.ok(refused > 0);
});

test('a burst on two workers with no slots yet: all let in up to the limit, with a few asks', async () => {
  // As the benchmark's 100 sessions opened at once, after both workers had given back their
  // slots: 97 reach worker 0 and 3 worker 1.
  for (const [limit, burst, admitted] of [
    [20_000, 100, 100],
    [50, 100, 50],
  ] as const) {
    const c = cluster(2, { total: limit, perNetwork: limit });
    const answers = await Promise.all(
      Array.from({ length: burst }, (_, i) => take(c.holders[i % 33 === 32 ? 1 : 0]!, '127.0.0.1')),
    );
    assert.equal(answers.filter((r) => r === null).length, admitted, `limit ${limit}: ${answers.join(' ')}`);
    if (admitted < burst)
      assert.ok(
        answers.every((r) => r === null || r === 'TOO_MANY_CONNECTIONS'),
        answers.join(' '),
      );
    // Not one ask per connection: each grant lets in every waiting one it can.
    assert.ok((c.sent.get('ask') ?? 0) <= 30, `asks: ${c.sent.get('ask')}`);
  }
});

test('a worker with slots lets its connections in without asking the primary', async () => {
  const c = cluster(2, { total: 10_000, perNetwork: 100 });
  const h = c.holders[0]!;
  assert.equal(await take(h, '127.0.0.1'), null);
  const asks = c.sent.get('ask');
  assert.equal(asks, 1);
  // One session at a time, and 20 at once: the first grant covers them all.
  for (let i = 0; i < 200; i++) {
    assert.equal(h.acquire('127.0.0.1'), null, 'answered at once, not a promise');
    h.release('127.0.0.1');
  }
  for (let i = 0; i < 19; i++) assert.equal(h.acquire('127.0.0.1'), null);
  assert.equal(c.sent.get('ask'), asks);
});

test('the slots of a network with no connection go back after IDLE_RETURN_MS; the tables empty', async () => {
  const c = cluster(2, { total: 100, perNetwork: 10 });
  for (let i = 0; i < 50; i++) {
    assert.equal(await take(c.holders[i % 2]!, `192.0.2.${i}`), null);
    c.holders[i % 2]!.release(`192.0.2.${i}`);
  }
  assert.equal(c.ledger.networks, 50);
  c.clock.now += IDLE_RETURN_MS - 1;
  for (const h of c.holders) h.sweep();
  await turn();
  assert.equal(c.ledger.networks, 50, 'not yet');
  c.clock.now += 1;
  for (const h of c.holders) h.sweep();
  await turn();
  assert.equal(c.ledger.networks, 0);
  assert.equal(c.holders[0]!.networks + c.holders[1]!.networks, 0);
  // A network with an open connection keeps its slots.
  assert.equal(await take(c.holders[0]!, '192.0.2.200'), null);
  c.clock.now += 10 * IDLE_RETURN_MS;
  c.holders[0]!.sweep();
  await turn();
  assert.equal(c.ledger.networks, 1);
});

test('a worker that dies gives up its slots; a grant to a worker already gone is not kept', async () => {
  const c = cluster(2, { total: 100, perNetwork: 4 });
  for (let i = 0; i < 4; i++) assert.equal(await take(c.holders[1]!, '192.0.2.9'), null);
  assert.equal(await take(c.holders[0]!, '192.0.2.9'), 'TOO_MANY_CONNECTIONS_FROM_IP');
  c.ledger.dropWorker(1);
  assert.equal(await take(c.holders[0]!, '192.0.2.9'), null);
  // Worker 1 gone for good: a grant for it is not counted.
  c.gone.add(1);
  c.ledger.dropWorker(1);
  await c.ledger.ask(1, { id: 99, network: '192.0.2.10', total: true, net: true });
  assert.equal(c.ledger.held(1, '192.0.2.10'), 0);
  assert.equal(c.ledger.held(1, null), 0);
});

test('a reclaim a worker does not answer ends after the wait; a late answer still counts', async () => {
  const c = cluster(2, { total: 100, perNetwork: 2 });
  assert.equal(await take(c.holders[0]!, '192.0.2.5'), null);
  c.holders[0]!.release('192.0.2.5');
  // Worker 0 holds the network's slot(s) unused; worker 1's messages are held back.
  assert.equal(c.ledger.held(0, '192.0.2.5'), 1);
  assert.equal(await take(c.holders[1]!, '192.0.2.5'), null, 'one slot was still free');
  c.muted.add(0);
  const started = Date.now();
  assert.equal(await take(c.holders[1]!, '192.0.2.5'), 'TOO_MANY_CONNECTIONS_FROM_IP');
  assert.ok(Date.now() - started >= 150, 'waited for the reclaim');
  c.muted.delete(0);
  c.ledger.giveBack(0, '192.0.2.5', 1, true);
  assert.equal(await take(c.holders[1]!, '192.0.2.5'), null, 'the late give-back freed a slot');
});

test('a primary that does not answer lets the connection in after ASK_TIMEOUT_MS, and says so', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  let timeouts = 0;
  const h = new LeaseHolder({
    link: { ask: () => undefined, giveBack: () => undefined },
    onAskTimeout: () => timeouts++,
  });
  const answer = h.acquire('192.0.2.1');
  assert.ok(answer instanceof Promise);
  t.mock.timers.tick(ASK_TIMEOUT_MS);
  assert.equal(await answer, null);
  assert.equal(timeouts, 1);
});
