/**
 * NodeDnsResolver against the test DNS server on 127.0.0.1 (never the system resolver), and
 * CachingResolver with a fake clock: TTLs (RFC 1035 3.2.1), negative caching (RFC 2308), no
 * caching of temporary failures.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { reverseName, startDnsServer, type TestDnsServer, type Zone } from '../../test/helpers/dns-server.js';
import {
  CachingResolver,
  DEFAULT_MX_TTL_SECONDS,
  NodeDnsResolver,
  dnsErrorResult,
  type AddressRecord,
  type DnsResolver,
  type DnsResult,
  type MxRecord,
} from './dns.js';

const ZONE: Zone = {
  'example.test': {
    MX: [{ preference: 10, exchange: 'mx.example.test' }],
    A: ['192.0.2.1'],
    AAAA: ['2001:db8::1'],
    TXT: [['v=spf1', ' -all']],
    ttl: 60,
  },
  'null.test': { MX: [{ preference: 0, exchange: '.' }] },
  'alias.example.test': { CNAME: 'example.test' },
  [reverseName('192.0.2.1')]: { PTR: ['Example.Test.'] },
  [reverseName('2001:db8::1')]: { PTR: ['example.test'] },
  'servfail.test': { rcode: 'SERVFAIL' },
  'refused.test': { rcode: 'REFUSED' },
  'drop.test': { drop: true },
};

async function withResolver(fn: (r: NodeDnsResolver, server: TestDnsServer) => Promise<void>): Promise<void> {
  const server = await startDnsServer(ZONE);
  const r = new NodeDnsResolver({ servers: [`127.0.0.1:${server.port}`], timeoutMs: 300, tries: 1 });
  try {
    await fn(r, server);
  } finally {
    r.cancel();
    await server.close();
  }
}

test(
  'NodeDnsResolver returns records with TTLs; MX and TXT get the default TTL',
  { timeout: 5000 },
  async () => {
    await withResolver(async (r) => {
      assert.deepEqual(await r.mx('example.test'), {
        kind: 'ok',
        records: [{ exchange: 'mx.example.test', priority: 10 }],
        ttl: DEFAULT_MX_TTL_SECONDS,
      });
      assert.deepEqual(await r.a('example.test'), {
        kind: 'ok',
        records: [{ address: '192.0.2.1', ttl: 60 }],
        ttl: 60,
      });
      assert.deepEqual(await r.aaaa('example.test'), {
        kind: 'ok',
        records: [{ address: '2001:db8::1', ttl: 60 }],
        ttl: 60,
      });
      assert.deepEqual(await r.txt('example.test'), { kind: 'ok', records: [['v=spf1', ' -all']], ttl: 300 });
      assert.deepEqual(await r.mx('null.test'), {
        kind: 'ok',
        records: [{ exchange: '', priority: 0 }],
        ttl: DEFAULT_MX_TTL_SECONDS,
      });
    });
  },
);

test(
  'NodeDnsResolver maps NXDOMAIN to nxdomain and NODATA to nodata (RFC 2308)',
  { timeout: 5000 },
  async () => {
    await withResolver(async (r) => {
      assert.deepEqual(await r.mx('unknown.test'), { kind: 'nxdomain' });
      assert.deepEqual(await r.a('null.test'), { kind: 'nodata' });
      assert.deepEqual(await r.aaaa('null.test'), { kind: 'nodata' });
    });
  },
);

test(
  'NodeDnsResolver: SERVFAIL, REFUSED and a timeout are temporary, with a reason',
  { timeout: 5000 },
  async () => {
    await withResolver(async (r) => {
      assert.deepEqual(await r.mx('servfail.test'), {
        kind: 'temp',
        reason: 'MX lookup for servfail.test: the DNS server failed (SERVFAIL)',
      });
      assert.deepEqual(await r.a('refused.test'), {
        kind: 'temp',
        reason: 'A lookup for refused.test: the DNS server refused the query (REFUSED)',
      });
      const t0 = Date.now();
      assert.deepEqual(await r.mx('drop.test'), {
        kind: 'temp',
        reason: 'MX lookup for drop.test: the DNS query timed out',
      });
      assert.ok(Date.now() - t0 < 2000, 'bounded by the 300 ms timeout');
    });
  },
);

test('NodeDnsResolver: a server that is not there is a temporary failure', { timeout: 5000 }, async () => {
  const server = await startDnsServer(ZONE);
  const port = server.port;
  await server.close();
  const r = new NodeDnsResolver({ servers: [`127.0.0.1:${port}`], timeoutMs: 200, tries: 1 });
  // Linux answers a datagram to a closed loopback port with ICMP port unreachable.
  assert.deepEqual(await r.mx('example.test'), {
    kind: 'temp',
    reason: 'MX lookup for example.test: could not contact the DNS server (connection refused)',
  });
});

test('dnsErrorResult: unknown errors are temporary; EBADNAME is nxdomain', () => {
  assert.deepEqual(dnsErrorResult(new Error('boom'), 'A', 'x.test'), {
    kind: 'temp',
    reason: 'A lookup for x.test: DNS error: boom',
  });
  assert.deepEqual(dnsErrorResult(Object.assign(new Error('x'), { code: 'EWHATEVER' }), 'MX', 'x.test'), {
    kind: 'temp',
    reason: 'MX lookup for x.test: DNS error EWHATEVER',
  });
  assert.deepEqual(dnsErrorResult(Object.assign(new Error('x'), { code: 'EBADNAME' }), 'MX', 'x.test'), {
    kind: 'nxdomain',
  });
});

/** A resolver answering from a table, counting calls; used to watch what the cache asks. */
class CountingResolver implements DnsResolver {
  calls: string[] = [];
  mxAnswers = new Map<string, DnsResult<MxRecord[]>>();
  aAnswers = new Map<string, DnsResult<AddressRecord[]>>();

  mx(name: string): Promise<DnsResult<MxRecord[]>> {
    this.calls.push(`MX ${name}`);
    return Promise.resolve(this.mxAnswers.get(name) ?? { kind: 'nxdomain' });
  }
  a(name: string): Promise<DnsResult<AddressRecord[]>> {
    this.calls.push(`A ${name}`);
    return Promise.resolve(this.aAnswers.get(name) ?? { kind: 'nxdomain' });
  }
  aaaa(name: string): Promise<DnsResult<AddressRecord[]>> {
    this.calls.push(`AAAA ${name}`);
    return Promise.resolve({ kind: 'nodata' });
  }
}

function fakeClock(): { now: () => number; advance: (ms: number) => void } {
  let t = 1_000_000;
  return { now: () => t, advance: (ms) => (t += ms) };
}

test('CachingResolver keeps an answer for its TTL and asks again after it', async () => {
  const inner = new CountingResolver();
  inner.aAnswers.set('h.test', { kind: 'ok', records: [{ address: '192.0.2.1', ttl: 60 }], ttl: 60 });
  const clock = fakeClock();
  const cache = new CachingResolver(inner, { now: clock.now });
  const fresh = { kind: 'ok', records: [{ address: '192.0.2.1', ttl: 60 }], ttl: 60 };
  assert.deepEqual(await cache.a('h.test'), fresh);
  clock.advance(59_500);
  // Remaining TTL, rounded up.
  assert.deepEqual(await cache.a('H.TEST.'), { ...fresh, ttl: 1 });
  assert.deepEqual(inner.calls, ['A h.test']);
  clock.advance(500);
  assert.deepEqual(await cache.a('h.test'), fresh);
  assert.deepEqual(inner.calls, ['A h.test', 'A h.test']);
});

test(
  'CachingResolver over the real resolver keeps MX answers for the default 300 s',
  { timeout: 5000 },
  async () => {
    await withResolver(async (r, server) => {
      const clock = fakeClock();
      const cache = new CachingResolver(r, { now: clock.now });
      await cache.mx('example.test');
      clock.advance(299_000);
      await cache.mx('example.test');
      assert.equal(server.queries.length, 1);
      clock.advance(1_000);
      await cache.mx('example.test');
      assert.deepEqual(server.queries, [
        { name: 'example.test', type: 'MX', transport: 'udp' },
        { name: 'example.test', type: 'MX', transport: 'udp' },
      ]);
    });
  },
);

test('CachingResolver caches NXDOMAIN and NODATA for the negative TTL only', async () => {
  const inner = new CountingResolver();
  const clock = fakeClock();
  const cache = new CachingResolver(inner, { now: clock.now, negativeTtlSeconds: 30 });
  assert.deepEqual(await cache.mx('gone.test'), { kind: 'nxdomain' });
  assert.deepEqual(await cache.aaaa('h.test'), { kind: 'nodata' });
  clock.advance(29_999);
  assert.deepEqual(await cache.mx('gone.test'), { kind: 'nxdomain' });
  assert.deepEqual(await cache.aaaa('h.test'), { kind: 'nodata' });
  assert.deepEqual(inner.calls, ['MX gone.test', 'AAAA h.test']);
  clock.advance(1);
  await cache.mx('gone.test');
  assert.deepEqual(inner.calls, ['MX gone.test', 'AAAA h.test', 'MX gone.test']);
});

test('CachingResolver never caches temporary failures', async () => {
  const inner = new CountingResolver();
  inner.mxAnswers.set('flaky.test', { kind: 'temp', reason: 'SERVFAIL' });
  const cache = new CachingResolver(inner, { now: fakeClock().now });
  assert.deepEqual(await cache.mx('flaky.test'), { kind: 'temp', reason: 'SERVFAIL' });
  assert.deepEqual(await cache.mx('flaky.test'), { kind: 'temp', reason: 'SERVFAIL' });
  assert.deepEqual(inner.calls, ['MX flaky.test', 'MX flaky.test']);
});

test('CachingResolver: TTL 0 is not cached and maxTtlSeconds caps long TTLs', async () => {
  const inner = new CountingResolver();
  inner.aAnswers.set('zero.test', { kind: 'ok', records: [{ address: '192.0.2.1', ttl: 0 }], ttl: 0 });
  inner.aAnswers.set('long.test', {
    kind: 'ok',
    records: [{ address: '192.0.2.2', ttl: 86400 }],
    ttl: 86400,
  });
  const clock = fakeClock();
  const cache = new CachingResolver(inner, { now: clock.now, maxTtlSeconds: 100 });
  await cache.a('zero.test');
  await cache.a('zero.test');
  await cache.a('long.test');
  clock.advance(100_000);
  await cache.a('long.test');
  assert.deepEqual(inner.calls, ['A zero.test', 'A zero.test', 'A long.test', 'A long.test']);
});

test('CachingResolver is bounded: the least recently used entry goes first', async () => {
  const inner = new CountingResolver();
  const cache = new CachingResolver(inner, { now: fakeClock().now, maxEntries: 2 });
  await cache.mx('a.test');
  await cache.mx('b.test');
  await cache.mx('a.test'); // hit: a.test is now the most recent
  await cache.mx('c.test'); // evicts b.test
  assert.equal(cache.size, 2);
  await cache.mx('a.test');
  await cache.mx('b.test');
  assert.deepEqual(inner.calls, ['MX a.test', 'MX b.test', 'MX c.test', 'MX b.test']);
});

test('CachingResolver shares one query between concurrent lookups of the same name', async () => {
  const inner = new CountingResolver();
  inner.aAnswers.set('h.test', { kind: 'ok', records: [{ address: '192.0.2.1', ttl: 60 }], ttl: 60 });
  const cache = new CachingResolver(inner, { now: fakeClock().now });
  const [x, y] = await Promise.all([cache.a('h.test'), cache.a('H.test')]);
  assert.deepEqual(x, y);
  assert.deepEqual(inner.calls, ['A h.test']);
});

test('CachingResolver.txt is a temporary failure when the wrapped resolver has no txt()', async () => {
  const cache = new CachingResolver(new CountingResolver(), { now: fakeClock().now });
  assert.deepEqual(await cache.txt('x.test'), {
    kind: 'temp',
    reason: 'TXT lookup for x.test: not supported by the resolver',
  });
});

test('NodeDnsResolver looks up PTR (IPv4 and IPv6 reverse names) and CNAME', { timeout: 5000 }, async () => {
  await withResolver(async (r) => {
    assert.equal(reverseName('192.0.2.1'), '1.2.0.192.in-addr.arpa');
    assert.equal(
      reverseName('2001:db8::1'),
      '1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa',
    );
    assert.deepEqual(await r.ptr(reverseName('192.0.2.1')), {
      kind: 'ok',
      records: ['example.test'],
      ttl: DEFAULT_MX_TTL_SECONDS,
    });
    assert.deepEqual(await r.ptr(reverseName('2001:db8::1')), {
      kind: 'ok',
      records: ['example.test'],
      ttl: DEFAULT_MX_TTL_SECONDS,
    });
    assert.deepEqual(await r.ptr(reverseName('192.0.2.99')), { kind: 'nxdomain' });
    assert.deepEqual(await r.cname('alias.example.test'), {
      kind: 'ok',
      records: ['example.test'],
      ttl: DEFAULT_MX_TTL_SECONDS,
    });
    assert.deepEqual(await r.cname('example.test'), { kind: 'nodata' });
    assert.equal((await r.ptr('servfail.test')).kind, 'temp');
  });
});
