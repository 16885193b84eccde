/**
 * The state store (src/state/): the same behaviour from the in-process store and from Redis
 * (a real redis-server on loopback, test/helpers/redis.ts), with an injected clock: limits
 * taken all or nothing, fixed and sliding windows, records with a TTL, the in-process store's
 * file surviving a restart, and two Redis clients (two nodes) sharing one limit exactly.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { MemoryStore } from '../src/state/memory.js';
import { RedisStore } from '../src/state/redis.js';
import type { CounterWindow, StateStore } from '../src/state/store.js';
import { requireRedis, startRedis, type RedisInstance } from './helpers/redis.js';

const HOUR: CounterWindow = { ms: 3600_000, kind: 'fixed' };
const SLIDING: CounterWindow = { ms: 3600_000, kind: 'sliding' };
/** A clock at the start of an hour, moved by the tests. */
const T0 = 1_800_000_000_000 - (1_800_000_000_000 % 3600_000);

function behaviour(name: string, make: (now: () => number, prefix: string) => Promise<StateStore>): void {
  describe(name, () => {
    let clock = T0;
    let n = 0;
    const fresh = (): Promise<StateStore> => {
      clock = T0;
      return make(() => clock, `t${++n}-${Date.now()}:`);
    };

    test('take: counts up to the limit, then refuses without counting, with the wait until the next window', async () => {
      const s = await fresh();
      try {
        for (let i = 1; i <= 3; i++) {
          const r = await s.take([{ key: 'u:alice', limit: 3 }], 1, HOUR);
          assert.deepEqual([r.ok, r.counts], [true, [i]]);
        }
        clock = T0 + 600_000;
        const refused = await s.take([{ key: 'u:alice', limit: 3 }], 1, HOUR);
        assert.equal(refused.ok, false);
        assert.equal(refused.refused, 0);
        assert.deepEqual(refused.counts, [3]);
        assert.equal(refused.retryAfterMs, 3000_000);
        assert.equal(await s.peek('u:alice', HOUR), 3, 'a refused take adds nothing');
        clock = T0 + 3600_000;
        assert.equal((await s.take([{ key: 'u:alice', limit: 3 }], 1, HOUR)).ok, true, 'a new fixed window');
      } finally {
        await s.close();
      }
    });

    test('take over several rules is all or nothing', async () => {
      const s = await fresh();
      try {
        await s.take([{ key: 'n:192.0.2.1', limit: 10 }], 10, HOUR);
        const r = await s.take(
          [
            { key: 'u:bob', limit: 5 },
            { key: 'n:192.0.2.1', limit: 10 },
          ],
          1,
          HOUR,
        );
        assert.equal(r.ok, false);
        assert.equal(r.refused, 1);
        assert.equal(await s.peek('u:bob', HOUR), 0, 'the rule that had room was not counted either');
      } finally {
        await s.close();
      }
    });

    test('sliding window: the previous hour still weighs by the part of it inside the last hour', async () => {
      const s = await fresh();
      try {
        assert.equal((await s.take([{ key: 'd:example.org', limit: 10 }], 10, SLIDING)).ok, true);
        clock = T0 + 3600_000 + 900_000; // a quarter into the next hour: 10 * 0.75 = 7.5 still count
        assert.equal(await s.peek('d:example.org', SLIDING), 7.5);
        assert.equal((await s.take([{ key: 'd:example.org', limit: 10 }], 2, SLIDING)).ok, true);
        const refused = await s.take([{ key: 'd:example.org', limit: 10 }], 2, SLIDING);
        assert.equal(refused.ok, false);
        // 10 * (1 - f) + 2 + 2 <= 10 once f >= 0.4, i.e. 0.15 h = 540 s from now.
        assert.equal(refused.retryAfterMs, 540_000);
      } finally {
        await s.close();
      }
    });

    test('records: set, get, expiry, delete; counters listed by prefix', async () => {
      const s = await fresh();
      try {
        await s.set('grey:a', '{"first":1}', 60_000);
        assert.equal(await s.get('grey:a'), '{"first":1}');
        clock = T0 + 30_000;
        assert.equal(await s.get('grey:a'), '{"first":1}');
        await s.set('grey:b', 'x', 60_000);
        await s.delete('grey:b');
        assert.equal(await s.get('grey:b'), null);
        await s.take([{ key: 'rl:u:alice', limit: 100 }], 4, HOUR);
        await s.take([{ key: 'rl:n:192.0.2.9', limit: 100 }], 2, HOUR);
        await s.take([{ key: 'other', limit: 100 }], 1, HOUR);
        assert.deepEqual(await s.counters('rl:', HOUR), [
          { key: 'rl:n:192.0.2.9', count: 2 },
          { key: 'rl:u:alice', count: 4 },
        ]);
        if (s instanceof MemoryStore) {
          clock = T0 + 60_001;
          assert.equal(await s.get('grey:a'), null);
        }
      } finally {
        await s.close();
      }
    });
  });
}

behaviour('in-process store', (now) => MemoryStore.open({ file: null, now }));

test('in-process store: its file keeps records and counters across a restart; expired ones are dropped', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'sterna-state-'));
  const file = path.join(dir, 'state', 'state.json');
  let clock = T0;
  try {
    const a = await MemoryStore.open({ file, now: () => clock, fsync: false });
    await a.set('grey:keep', 'k', 3600_000);
    await a.set('grey:short', 's', 1000);
    await a.take([{ key: 'u:alice', limit: 10 }], 3, HOUR);
    await a.close();
    clock = T0 + 2000;
    const b = await MemoryStore.open({ file, now: () => clock, fsync: false });
    assert.equal(await b.get('grey:keep'), 'k');
    assert.equal(await b.get('grey:short'), null);
    assert.equal(await b.peek('u:alice', HOUR), 3);
    await b.set('grey:new', 'n', 3600_000);
    await b.close();
    assert.doesNotMatch(await readFile(file, 'utf8'), /grey:short/, 'expired entries are not written again');
    // A damaged file is set aside; the store starts empty instead of trusting it.
    await writeFile(file, '{"version":1,"counters":[["x","not a number",1]],"records":[]}');
    const c = await MemoryStore.open({ file, now: () => clock, fsync: false });
    assert.equal(await c.peek('x', HOUR), 0);
    await c.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

describe('Redis store', { skip: requireRedis().skip }, () => {
  let redis: RedisInstance;
  before(async () => {
    redis = await startRedis();
  });
  after(async () => {
    await redis?.stop();
  });

  behaviour('Redis store (real redis-server)', (now, prefix) =>
    Promise.resolve(new RedisStore({ url: redis.url, prefix, timeoutMs: 2000, now })),
  );

  test('two clients (two nodes) racing for one limit: exactly the limit passes', async () => {
    const prefix = `race-${Date.now()}:`;
    const a = new RedisStore({ url: redis.url, prefix, timeoutMs: 2000 });
    const b = new RedisStore({ url: redis.url, prefix, timeoutMs: 2000 });
    try {
      const rule = [{ key: 'u:mallory', limit: 25 }];
      const results = await Promise.all(
        Array.from({ length: 60 }, (_, i) => (i % 2 === 0 ? a : b).take(rule, 1, HOUR)),
      );
      assert.equal(results.filter((r) => r.ok).length, 25);
      assert.equal(await a.peek('u:mallory', HOUR), 25);
    } finally {
      await a.close();
      await b.close();
    }
  });

  test('a Redis that does not answer makes take() reject within the timeout', async () => {
    const s = new RedisStore({ url: 'redis://127.0.0.1:9', prefix: 'x:', timeoutMs: 200 });
    try {
      const started = Date.now();
      await assert.rejects(s.take([{ key: 'k', limit: 1 }], 1, HOUR));
      assert.ok(Date.now() - started < 5000);
    } finally {
      await s.close();
    }
  });
});
