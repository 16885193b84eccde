import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startSmtpSink, type SmtpSink } from '../../test/helpers/smtp-sink.js';
import { ConnectionCache, sessionKey, type SessionKeyParts } from './connection-cache.js';
import { SmtpClientSession } from './smtp-client.js';

const TIMEOUTS = {
  connectMs: 5000,
  greetingMs: 5000,
  commandMs: 5000,
  dataInitMs: 5000,
  dataBlockMs: 5000,
  dataEndMs: 5000,
};

const KEY = 'k';

async function connect(sink: SmtpSink): Promise<SmtpClientSession> {
  const s = await SmtpClientSession.connect({
    host: sink.host,
    port: sink.port,
    heloName: 'client.test',
    tls: 'none',
    timeouts: TIMEOUTS,
  });
  if (!(s instanceof SmtpClientSession)) assert.fail(`connect failed: ${JSON.stringify(s)}`);
  return s;
}

async function withSink(fn: (sink: SmtpSink) => Promise<void>): Promise<void> {
  const sink = await startSmtpSink({ ehlo: ['PIPELINING'] });
  try {
    await fn(sink);
  } finally {
    await sink.close();
  }
}

async function waitFor(what: string, check: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** The client lines of the sink's session `i`. */
function commands(sink: SmtpSink, i: number): string[] {
  return (sink.sessions[i]?.transcript ?? []).filter((l) => l.startsWith('C: ')).map((l) => l.slice(3));
}

const PARTS: SessionKeyParts = {
  address: '192.0.2.1',
  port: 25,
  tls: 'opportunistic',
  implicitTls: false,
  servername: 'mx.example.test',
  authUsername: undefined,
  tlsOptions: undefined,
};

test('sessionKey: equal parts give one key; each part, and the TLS options object identity, tells keys apart', () => {
  const ca = { ca: 'PEM' };
  assert.equal(sessionKey(PARTS), sessionKey({ ...PARTS }));
  assert.equal(sessionKey({ ...PARTS, servername: 'MX.Example.TEST' }), sessionKey(PARTS));
  assert.equal(sessionKey({ ...PARTS, tlsOptions: ca }), sessionKey({ ...PARTS, tlsOptions: ca }));
  const variants: SessionKeyParts[] = [
    { ...PARTS, address: '192.0.2.2' },
    { ...PARTS, port: 587 },
    { ...PARTS, tls: 'required' },
    { ...PARTS, implicitTls: true },
    { ...PARTS, servername: undefined },
    { ...PARTS, servername: 'mx2.example.test' },
    { ...PARTS, authUsername: 'relay-user' },
    { ...PARTS, tlsOptions: ca },
    { ...PARTS, tlsOptions: { ca: 'PEM' } },
  ];
  const keys = new Set([sessionKey(PARTS), ...variants.map(sessionKey)]);
  assert.equal(keys.size, variants.length + 1);
});

test('put then take: the same session comes back, last in first out, and only under its key', async () => {
  await withSink(async (sink) => {
    const cache = new ConnectionCache({ reuseLimit: 10, idleMs: 60_000, maxIdle: 10 });
    const a = await connect(sink);
    const b = await connect(sink);
    await cache.put(KEY, a, 1);
    await cache.put(KEY, b, 2);
    assert.equal(cache.size, 2);
    assert.equal(cache.take('other'), null);
    assert.equal(cache.take(KEY), b);
    assert.equal(cache.transactions(b), 2);
    assert.equal(cache.take(KEY), a);
    assert.equal(cache.transactions(a), 1);
    assert.equal(cache.take(KEY), null);
    assert.equal(cache.size, 0);
    assert.deepEqual(commands(sink, 0), ['EHLO client.test'], 'nothing sent while parked');
    await a.quit();
    await b.quit();
    await cache.closeAll();
  });
});

test('reuse limit: a session that ran reuseLimit transactions is closed with QUIT, not parked', async () => {
  await withSink(async (sink) => {
    const cache = new ConnectionCache({ reuseLimit: 3, idleMs: 60_000, maxIdle: 10 });
    const s = await connect(sink);
    await cache.put(KEY, s, 2);
    assert.equal(cache.take(KEY), s);
    await cache.put(KEY, s, 3);
    assert.equal(cache.size, 0);
    assert.equal(cache.take(KEY), null);
    assert.equal(s.closedReason, 'the session was closed by QUIT');
    assert.deepEqual(commands(sink, 0), ['EHLO client.test', 'QUIT']);
    assert.equal(cache.transactions(s), 3);
  });
});

test('reuse off: reuseLimit 1 or idleMs 0 closes every session at once', async () => {
  await withSink(async (sink) => {
    for (const opts of [
      { reuseLimit: 1, idleMs: 60_000, maxIdle: 10 },
      { reuseLimit: 100, idleMs: 0, maxIdle: 10 },
    ]) {
      const cache = new ConnectionCache(opts);
      const s = await connect(sink);
      await cache.put(KEY, s, 1);
      assert.equal(cache.size, 0);
      assert.equal(s.closedReason, 'the session was closed by QUIT');
    }
    assert.deepEqual(commands(sink, 0), ['EHLO client.test', 'QUIT']);
    assert.deepEqual(commands(sink, 1), ['EHLO client.test', 'QUIT']);
  });
});

test('idle timeout: a session unused for idleMs is closed with QUIT and leaves the cache', async () => {
  await withSink(async (sink) => {
    const cache = new ConnectionCache({ reuseLimit: 10, idleMs: 50, maxIdle: 10 });
    const s = await connect(sink);
    const parkedAt = Date.now();
    await cache.put(KEY, s, 1);
    await waitFor('the idle QUIT', () => s.closedReason !== null);
    assert.ok(Date.now() - parkedAt >= 45, 'not before idleMs');
    assert.equal(s.closedReason, 'the session was closed by QUIT');
    assert.equal(cache.size, 0);
    assert.equal(cache.take(KEY), null);
    await waitFor('the sink to see QUIT', () => commands(sink, 0).includes('QUIT'));
    assert.deepEqual(commands(sink, 0), ['EHLO client.test', 'QUIT']);
  });
});

test('a session whose connection closed while idle is skipped (and dropped) by take', async () => {
  await withSink(async (sink) => {
    const cache = new ConnectionCache({ reuseLimit: 10, idleMs: 60_000, maxIdle: 10 });
    const older = await connect(sink);
    const newer = await connect(sink);
    await cache.put(KEY, older, 1);
    await cache.put(KEY, newer, 1);
    // The server side of the newer session (the sink's second) goes away.
    const [, second] = sink.sockets();
    second?.destroy();
    await waitFor('the client to notice', () => newer.closedReason !== null);
    assert.equal(cache.take(KEY), older);
    assert.equal(cache.size, 0);
    assert.equal(cache.take(KEY), null);
    await older.quit();
  });
});

test('maxIdle: parking one session too many QUITs the oldest idle session', async () => {
  await withSink(async (sink) => {
    const cache = new ConnectionCache({ reuseLimit: 10, idleMs: 60_000, maxIdle: 2 });
    const s1 = await connect(sink);
    const s2 = await connect(sink);
    const s3 = await connect(sink);
    await cache.put('a', s1, 1);
    await cache.put('b', s2, 1);
    await cache.put('a', s3, 1);
    assert.equal(cache.size, 2);
    await waitFor('the oldest to be closed', () => s1.closedReason !== null);
    assert.equal(s2.closedReason, null);
    assert.equal(s3.closedReason, null);
    assert.equal(cache.take('a'), s3);
    assert.equal(cache.take('a'), null);
    assert.equal(cache.take('b'), s2);
    await waitFor('the sink to see QUIT', () => commands(sink, 0).includes('QUIT'));
    assert.deepEqual(commands(sink, 0), ['EHLO client.test', 'QUIT']);
    await s2.quit();
    await s3.quit();
  });
});

test('closeAll: every idle session gets QUIT before it resolves; a later put closes at once', async () => {
  await withSink(async (sink) => {
    const cache = new ConnectionCache({ reuseLimit: 10, idleMs: 60_000, maxIdle: 10 });
    const s1 = await connect(sink);
    const s2 = await connect(sink);
    const s3 = await connect(sink);
    await cache.put('a', s1, 1);
    await cache.put('b', s2, 4);
    await cache.closeAll();
    assert.equal(cache.size, 0);
    assert.equal(s1.closedReason, 'the session was closed by QUIT');
    assert.equal(s2.closedReason, 'the session was closed by QUIT');
    assert.deepEqual(commands(sink, 0), ['EHLO client.test', 'QUIT']);
    assert.deepEqual(commands(sink, 1), ['EHLO client.test', 'QUIT']);
    await cache.put('a', s3, 1);
    assert.equal(cache.size, 0);
    assert.equal(s3.closedReason, 'the session was closed by QUIT');
    assert.equal(cache.take('a'), null);
  });
});

test('closeAll: a server that never answers QUIT delays shutdown by quitTimeoutMs at most', async () => {
  const sink = await startSmtpSink({ respond: (c) => (c.verb === 'QUIT' ? { silent: true } : undefined) });
  try {
    const cache = new ConnectionCache({ reuseLimit: 10, idleMs: 60_000, maxIdle: 10, quitTimeoutMs: 100 });
    const s = await connect(sink);
    await cache.put(KEY, s, 1);
    const t0 = Date.now();
    await cache.closeAll();
    const took = Date.now() - t0;
    assert.ok(took >= 90 && took < 2000, `took ${took} ms`);
    assert.equal(s.closedReason, 'the session was closed');
  } finally {
    await sink.close();
  }
});
