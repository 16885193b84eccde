/**
 * The test DNS server, checked through Node's own resolver (c-ares) pointed at it: what c-ares
 * accepts and which error code each kind of answer becomes (RFC 1035, RFC 2308, RFC 7505).
 * Test code only; binds 127.0.0.1.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import dns from 'node:dns';
import { startDnsServer, type TestDnsServer, type Zone } from './dns-server.js';

const ZONE: Zone = {
  'example.test': {
    MX: [
      { preference: 10, exchange: 'mx1.example.test' },
      { preference: 20, exchange: 'mx2.example.test.' },
    ],
    A: ['192.0.2.1', '192.0.2.2'],
    AAAA: ['2001:db8::1', '::ffff:192.0.2.3'],
    TXT: [['v=spf1 -all'], ['part one', 'part two']],
    ttl: 120,
  },
  'Mixed.Case.TEST.': { A: ['192.0.2.9'] },
  'null.test': { MX: [{ preference: 0, exchange: '.' }] },
  'alias.test': { CNAME: 'alias2.test' },
  'alias2.test': { CNAME: 'example.test', ttl: 60 },
  'dangling.test': { CNAME: 'missing.test' },
  'servfail.test': { rcode: 'SERVFAIL' },
  'refused.test': { rcode: 'REFUSED' },
  'nxdomain.test': { rcode: 'NXDOMAIN', A: ['192.0.2.1'] },
  'slow.test': { A: ['192.0.2.7'], delayMs: 150 },
  'drop.test': { A: ['192.0.2.8'], drop: true },
  'big.test': { TXT: Array.from({ length: 12 }, (_, i) => [`${'x'.repeat(200)}${i}`]) },
};

async function withServer(
  zone: Zone,
  fn: (server: TestDnsServer, resolver: dns.promises.Resolver) => Promise<void>,
): Promise<void> {
  const server = await startDnsServer(zone);
  const resolver = new dns.promises.Resolver({ timeout: 300, tries: 1 });
  resolver.setServers([`${server.host}:${server.port}`]);
  try {
    await fn(server, resolver);
  } finally {
    resolver.cancel();
    await server.close();
  }
}

async function errorCode(p: Promise<unknown>): Promise<string | undefined> {
  try {
    await p;
    return undefined;
  } catch (err) {
    return err instanceof Error && 'code' in err && typeof err.code === 'string' ? err.code : 'no code';
  }
}

test('answers MX, A (with TTL), AAAA and TXT records from the zone data', { timeout: 5000 }, async () => {
  await withServer(ZONE, async (_server, r) => {
    assert.deepEqual(await r.resolveMx('example.test'), [
      { exchange: 'mx1.example.test', priority: 10 },
      { exchange: 'mx2.example.test', priority: 20 },
    ]);
    assert.deepEqual(await r.resolve4('example.test', { ttl: true }), [
      { address: '192.0.2.1', ttl: 120 },
      { address: '192.0.2.2', ttl: 120 },
    ]);
    assert.deepEqual(await r.resolve6('example.test'), ['2001:db8::1', '::ffff:192.0.2.3']);
    assert.deepEqual(await r.resolveTxt('example.test'), [['v=spf1 -all'], ['part one', 'part two']]);
  });
});

test(
  'names match without regard to case or a trailing dot; default TTL is 300 s',
  { timeout: 5000 },
  async () => {
    await withServer(ZONE, async (_server, r) => {
      assert.deepEqual(await r.resolve4('mixed.case.test', { ttl: true }), [
        { address: '192.0.2.9', ttl: 300 },
      ]);
      assert.deepEqual(await r.resolve4('EXAMPLE.TEST.'), ['192.0.2.1', '192.0.2.2']);
    });
  },
);

test('RFC 7505 null MX "MX 0 ." reaches Node as exchange ""', { timeout: 5000 }, async () => {
  await withServer(ZONE, async (_server, r) => {
    assert.deepEqual(await r.resolveMx('null.test'), [{ exchange: '', priority: 0 }]);
  });
});

test('CNAME chains: the aliases come first, then the target records, which resolvers follow', async () => {
  await withServer(ZONE, async (_server, r) => {
    // c-ares reports the smallest TTL along the chain (alias2.test has 60 s, the target 120 s).
    assert.deepEqual(await r.resolve4('alias.test', { ttl: true }), [
      { address: '192.0.2.1', ttl: 60 },
      { address: '192.0.2.2', ttl: 60 },
    ]);
    assert.deepEqual(await r.resolveMx('alias.test'), [
      { exchange: 'mx1.example.test', priority: 10 },
      { exchange: 'mx2.example.test', priority: 20 },
    ]);
    assert.deepEqual(await r.resolveCname('alias.test'), ['alias2.test']);
    assert.equal(await errorCode(r.resolve4('dangling.test')), 'ENOTFOUND');
  });
});

test('RFC 2308: unknown name is NXDOMAIN (ENOTFOUND), known name without the type is NODATA (ENODATA)', async () => {
  await withServer(ZONE, async (_server, r) => {
    assert.equal(await errorCode(r.resolveMx('unknown.test')), 'ENOTFOUND');
    assert.equal(await errorCode(r.resolve4('null.test')), 'ENODATA');
    assert.equal(await errorCode(r.resolveMx('mixed.case.test')), 'ENODATA');
  });
});

test('configured rcodes: SERVFAIL → ESERVFAIL, REFUSED → EREFUSED, NXDOMAIN → ENOTFOUND', async () => {
  await withServer(ZONE, async (_server, r) => {
    assert.equal(await errorCode(r.resolveMx('servfail.test')), 'ESERVFAIL');
    assert.equal(await errorCode(r.resolveMx('refused.test')), 'EREFUSED');
    assert.equal(await errorCode(r.resolve4('nxdomain.test')), 'ENOTFOUND');
  });
});

test(
  'delayMs answers late; drop never answers, so the client times out (ETIMEOUT)',
  { timeout: 5000 },
  async () => {
    await withServer(ZONE, async (_server, r) => {
      const t0 = Date.now();
      assert.deepEqual(await r.resolve4('slow.test'), ['192.0.2.7']);
      assert.ok(Date.now() - t0 >= 140, 'the answer waited for delayMs');
      const t1 = Date.now();
      assert.equal(await errorCode(r.resolve4('drop.test')), 'ETIMEOUT');
      assert.ok(Date.now() - t1 < 2000, 'the timeout came from the 300 ms resolver setting');
    });
  },
);

test(
  'an answer over the UDP limit is truncated (TC) and the client gets it over TCP',
  { timeout: 5000 },
  async () => {
    await withServer(ZONE, async (server, r) => {
      const txt = await r.resolveTxt('big.test');
      assert.equal(txt.length, 12);
      assert.deepEqual(txt[11], [`${'x'.repeat(200)}11`]);
      assert.deepEqual(
        server.queries.filter((q) => q.name === 'big.test'),
        [
          { name: 'big.test', type: 'TXT', transport: 'udp' },
          { name: 'big.test', type: 'TXT', transport: 'tcp' },
        ],
      );
    });
  },
);

test('queries are logged in order and setZone replaces the data for later queries', async () => {
  await withServer(ZONE, async (server, r) => {
    assert.deepEqual(await r.resolve4('example.test'), ['192.0.2.1', '192.0.2.2']);
    server.setZone({ 'example.test': { A: ['198.51.100.1'] } });
    assert.deepEqual(await r.resolve4('example.test'), ['198.51.100.1']);
    assert.equal(await errorCode(r.resolveMx('Example.Test')), 'ENODATA');
    assert.deepEqual(server.queries, [
      { name: 'example.test', type: 'A', transport: 'udp' },
      { name: 'example.test', type: 'A', transport: 'udp' },
      { name: 'example.test', type: 'MX', transport: 'udp' },
    ]);
  });
});

test('close() stops answering and frees the port', { timeout: 5000 }, async () => {
  const server = await startDnsServer(ZONE);
  await server.close();
  const r = new dns.promises.Resolver({ timeout: 200, tries: 1 });
  r.setServers([`127.0.0.1:${server.port}`]);
  const code = await errorCode(r.resolve4('example.test'));
  assert.ok(code === 'ECONNREFUSED' || code === 'ETIMEOUT', `got ${String(code)}`);
});
