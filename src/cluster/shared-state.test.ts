import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MemoryStore } from '../state/memory.js';
import { IpcChannel, IpcError } from './ipc.js';
import { IpcStateStore, serveStateRequest } from './shared-state.js';

/** Two channel ends joined as node:cluster joins them: asynchronous, JSON in between. */
function pair(): { primary: IpcChannel; worker: IpcChannel } {
  const ends: { primary?: IpcChannel; worker?: IpcChannel } = {};
  const wire = (to: () => IpcChannel | undefined) => (m: object) => {
    const copy: unknown = JSON.parse(JSON.stringify(m));
    setImmediate(() => to()?.receive(copy));
  };
  ends.primary = new IpcChannel(wire(() => ends.worker));
  ends.worker = new IpcChannel(wire(() => ends.primary));
  return { primary: ends.primary, worker: ends.worker };
}

/** A store in the "primary" and two "workers" that reach it over IPC. */
async function cluster(): Promise<{
  a: IpcStateStore;
  b: IpcStateStore;
  store: MemoryStore;
  close: () => void;
}> {
  const store = await MemoryStore.open({ file: null });
  const one = pair();
  const two = pair();
  for (const p of [one, two]) p.primary.handle('state', (body) => serveStateRequest(store, body));
  return {
    a: new IpcStateStore(one.worker, 'memory'),
    b: new IpcStateStore(two.worker, 'memory'),
    store,
    close: () => {
      one.worker.close('test over');
      two.worker.close('test over');
    },
  };
}

test('a rate limit counts the takes of every worker: one view, never over the limit', async () => {
  const { a, b, store, close } = await cluster();
  try {
    const window = { ms: 60_000, kind: 'fixed' } as const;
    const rules = [{ key: 'rate:ip:192.0.2.1', limit: 10 }];
    const results = await Promise.all(
      Array.from({ length: 30 }, (_, i) => (i % 2 === 0 ? a : b).take(rules, 1, window)),
    );
    assert.equal(results.filter((r) => r.ok).length, 10);
    assert.ok(results.filter((r) => !r.ok).every((r) => r.refused === 0 && r.retryAfterMs >= 1000));
    assert.equal(await a.peek('rate:ip:192.0.2.1', window), 10);
    assert.equal(await store.peek('rate:ip:192.0.2.1', window), 10);
    assert.deepEqual(await b.counters('rate:', window), [{ key: 'rate:ip:192.0.2.1', count: 10 }]);
  } finally {
    close();
    await store.close();
  }
});

test('a greylisting record set by one worker is seen by the other, and deleted for both', async () => {
  const { a, b, store, close } = await cluster();
  try {
    assert.equal(await b.get('grey:triplet'), null);
    await a.set('grey:triplet', '1700000000000', 60_000);
    assert.equal(await b.get('grey:triplet'), '1700000000000');
    await b.delete('grey:triplet');
    assert.equal(await a.get('grey:triplet'), null);
    assert.match(a.description, /shared by the workers through the primary/);
  } finally {
    close();
    await store.close();
  }
});

test('a request whose primary is gone fails at once, not after a timeout', async () => {
  const { worker } = pair();
  const store = new IpcStateStore(worker, 'memory');
  const pending = store.get('k');
  worker.close('the primary is gone');
  await assert.rejects(pending, IpcError);
  await assert.rejects(store.get('k'), IpcError);
});

test('failed AUTHs through two workers count once each: the lock-out comes at exactly maxFailures', async () => {
  const { a, b, store, close } = await cluster();
  try {
    const limits = {
      failureDelayMs: 1000,
      maxFailures: 5,
      maxNetworkFailures: 20,
      windowMs: 60_000,
      lockoutMs: 300_000,
      maxDelayMs: 30_000,
    };
    const pairKey = '192.0.2.1\0alice@example.test';
    const delays = await Promise.all(
      Array.from({ length: 4 }, (_, i) => (i % 2 === 0 ? a : b).authFailed('192.0.2.1', pairKey, limits)),
    );
    assert.deepEqual(
      delays.sort((x, y) => x - y),
      [1000, 2000, 4000, 8000],
    );
    assert.equal(await b.authLocked('192.0.2.1', pairKey, limits), false);
    assert.equal(await a.authFailed('192.0.2.1', pairKey, limits), 16_000);
    assert.equal(await b.authLocked('192.0.2.1', pairKey, limits), true);
    assert.equal(await b.authLocked('192.0.2.1', null, limits), false, 'the network is not locked out');
    await a.authSucceeded('192.0.2.1', '192.0.2.1\0bob@example.test', limits);
    assert.equal(await store.authLocked('192.0.2.1', pairKey, limits), true);
  } finally {
    close();
    await store.close();
  }
});
