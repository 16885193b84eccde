/**
 * RFC 5321 5.1 route resolution (and RFC 7505 null MX) against the test DNS server on
 * 127.0.0.1, through the real NodeDnsResolver; never the system resolver.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startDnsServer, type TestDnsServer, type Zone } from '../../test/helpers/dns-server.js';
import { CachingResolver, NodeDnsResolver, type DnsResolver } from './dns.js';
import { resolveMx, type ResolveMxOptions } from './mx.js';

const OWN = new Set(['192.0.2.99', '2001:db8::99']);

const ZONE: Zone = {
  // Preference order; records listed out of order.
  'pref.test': {
    MX: [
      { preference: 20, exchange: 'mx2.pref.test' },
      { preference: 10, exchange: 'mx1.pref.test' },
      { preference: 30, exchange: 'mx3.pref.test' },
    ],
  },
  'mx1.pref.test': { A: ['192.0.2.1'], AAAA: ['2001:db8::1'] },
  'mx2.pref.test': { A: ['192.0.2.2', '192.0.2.3'] },
  'mx3.pref.test': { AAAA: ['2001:db8::3'] },
  // Ties.
  'tie.test': {
    MX: [
      { preference: 10, exchange: 'a.tie.test' },
      { preference: 10, exchange: 'b.tie.test' },
      { preference: 10, exchange: 'c.tie.test' },
      { preference: 5, exchange: 'first.tie.test' },
    ],
  },
  'a.tie.test': { A: ['192.0.2.11'] },
  'b.tie.test': { A: ['192.0.2.12'] },
  'c.tie.test': { A: ['192.0.2.13'] },
  'first.tie.test': { A: ['192.0.2.10'] },
  // Implicit MX.
  'implicit.test': { A: ['192.0.2.20'], AAAA: ['2001:db8::20'], TXT: [['v=spf1 -all']] },
  'bare.test': { TXT: [['no mail here']] },
  // Null MX.
  'nullmx.test': { MX: [{ preference: 0, exchange: '.' }], A: ['192.0.2.30'] },
  'mixednull.test': {
    MX: [
      { preference: 0, exchange: '.' },
      { preference: 10, exchange: 'mx1.pref.test' },
    ],
  },
  // Failures.
  'servfail.test': { rcode: 'SERVFAIL' },
  'slow.test': { MX: [{ preference: 10, exchange: 'mx1.pref.test' }], delayMs: 3000 },
  'drop.test': { drop: true },
  'tempaddr.test': {
    MX: [
      { preference: 10, exchange: 'broken.tempaddr.test' },
      { preference: 20, exchange: 'ghost.tempaddr.test' },
    ],
  },
  'broken.tempaddr.test': { rcode: 'SERVFAIL' },
  'partial.test': {
    MX: [
      { preference: 10, exchange: 'broken.tempaddr.test' },
      { preference: 20, exchange: 'mx2.pref.test' },
    ],
  },
  'noaddr.test': {
    MX: [
      { preference: 10, exchange: 'ghost.noaddr.test' },
      { preference: 20, exchange: 'bare.test' },
    ],
  },
  // CNAME as MX target, IP literal as MX target.
  'cname.test': { MX: [{ preference: 10, exchange: 'alias.cname.test' }] },
  'alias.cname.test': { CNAME: 'real.cname.test' },
  'real.cname.test': { A: ['192.0.2.40'] },
  'literal.test': { MX: [{ preference: 10, exchange: '192.0.2.50' }] },
  // Loops.
  'me.test': { A: ['192.0.2.99'], AAAA: ['2001:db8::99'] },
  'loop.test': {
    MX: [
      { preference: 10, exchange: 'me.test' },
      { preference: 20, exchange: 'mx2.pref.test' },
    ],
  },
  'backup.test': {
    MX: [
      { preference: 30, exchange: 'mx3.pref.test' },
      { preference: 20, exchange: 'me.test' },
      { preference: 20, exchange: 'mx2.pref.test' },
      { preference: 10, exchange: 'mx1.pref.test' },
    ],
  },
  'implicitloop.test': { A: ['192.0.2.99'] },
  // Many MX hosts, and a host listed twice.
  'many.test': {
    MX: Array.from({ length: 12 }, (_, i) => ({ preference: 10 + i, exchange: `h${i}.many.test` })),
  },
  ...Object.fromEntries(
    Array.from({ length: 12 }, (_, i) => [`h${i}.many.test`, { A: [`198.51.100.${i}`] }]),
  ),
  'dup.test': {
    MX: [
      { preference: 20, exchange: 'mx2.pref.test' },
      { preference: 10, exchange: 'MX2.pref.test.' },
    ],
  },
};

let server: TestDnsServer;
let dns: NodeDnsResolver;

before(async () => {
  server = await startDnsServer(ZONE);
  dns = new NodeDnsResolver({ servers: [`127.0.0.1:${server.port}`], timeoutMs: 300, tries: 1 });
});

after(async () => {
  dns.cancel();
  await server.close();
});

/** random() that returns the given values in turn (then 0), so tie orders are reproducible. */
function sequence(...values: number[]): () => number {
  let i = 0;
  return () => values[i++] ?? 0;
}

function opts(extra: Partial<ResolveMxOptions> = {}): ResolveMxOptions {
  return { random: sequence(), isOwnAddress: (ip) => OWN.has(ip), ...extra };
}

test('RFC 5321 5.1: MX hosts are tried in preference order, IPv6 before IPv4 for each', async () => {
  assert.deepEqual(await resolveMx('pref.test', dns, opts()), {
    kind: 'hosts',
    implicit: false,
    hosts: [
      { name: 'mx1.pref.test', preference: 10, addresses: ['2001:db8::1', '192.0.2.1'] },
      { name: 'mx2.pref.test', preference: 20, addresses: ['192.0.2.2', '192.0.2.3'] },
      { name: 'mx3.pref.test', preference: 30, addresses: ['2001:db8::3'] },
    ],
  });
});

test('preferIpv6: false puts IPv4 addresses first', async () => {
  const route = await resolveMx('PREF.test.', dns, opts({ preferIpv6: false }));
  assert.equal(route.kind, 'hosts');
  assert.deepEqual(route.kind === 'hosts' ? route.hosts[0] : undefined, {
    name: 'mx1.pref.test',
    preference: 10,
    addresses: ['192.0.2.1', '2001:db8::1'],
  });
});

test('RFC 5321 5.1: equal preferences are ordered by the injected random, lower ones first', async () => {
  const names = async (random: () => number): Promise<string[]> => {
    const route = await resolveMx('tie.test', dns, opts({ random }));
    return route.kind === 'hosts' ? route.hosts.map((h) => h.name) : [];
  };
  // One draw per record, in answer order: a, b, c, first.
  assert.deepEqual(await names(sequence(0.9, 0.1, 0.5, 0.7)), [
    'first.tie.test',
    'b.tie.test',
    'c.tie.test',
    'a.tie.test',
  ]);
  assert.deepEqual(await names(sequence(0.2, 0.6, 0.4, 0)), [
    'first.tie.test',
    'a.tie.test',
    'c.tie.test',
    'b.tie.test',
  ]);
  // A seeded generator: every order of the three tied hosts shows up.
  let seed = 12345;
  const lcg = (): number => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed / 2147483648;
  };
  const orders = new Set<string>();
  for (let i = 0; i < 60; i += 1) orders.add((await names(lcg)).join(','));
  assert.equal(orders.size, 6);
});

test('RFC 5321 5.1: no MX records (NODATA) means the implicit MX: the domain itself', async () => {
  assert.deepEqual(await resolveMx('implicit.test', dns, opts()), {
    kind: 'hosts',
    implicit: true,
    hosts: [{ name: 'implicit.test', preference: 0, addresses: ['2001:db8::20', '192.0.2.20'] }],
  });
});

test('implicit MX without any address is no-address (permanent)', async () => {
  assert.deepEqual(await resolveMx('bare.test', dns, opts()), {
    kind: 'no-address',
    reason: 'bare.test has no MX record and bare.test: no A or AAAA record',
  });
});

test('implicit MX whose address lookups fail temporarily is temp', async () => {
  // The test zone's rcode applies to every type, so MX NODATA comes from this wrapper.
  const mxNodata: DnsResolver = {
    mx: () => Promise.resolve({ kind: 'nodata' }),
    a: (n) => dns.a(n),
    aaaa: (n) => dns.aaaa(n),
  };
  assert.deepEqual(await resolveMx('broken.tempaddr.test', mxNodata, opts()), {
    kind: 'temp',
    reason:
      'AAAA lookup for broken.tempaddr.test: the DNS server failed (SERVFAIL); ' +
      'A lookup for broken.tempaddr.test: the DNS server failed (SERVFAIL)',
  });
});

test('RFC 7505: a lone "MX 0 ." is a null MX, even when the domain has an A record', async () => {
  assert.deepEqual(await resolveMx('nullmx.test', dns, opts()), { kind: 'null-mx' });
});

test('RFC 7505: a "." mixed with real MX records is ignored', async () => {
  assert.deepEqual(await resolveMx('mixednull.test', dns, opts()), {
    kind: 'hosts',
    implicit: false,
    hosts: [{ name: 'mx1.pref.test', preference: 10, addresses: ['2001:db8::1', '192.0.2.1'] }],
  });
});

test('NXDOMAIN on the MX query is nxdomain (permanent, 5.1.2)', async () => {
  assert.deepEqual(await resolveMx('does-not-exist.test', dns, opts()), { kind: 'nxdomain' });
});

test('SERVFAIL on the MX query is temp', async () => {
  assert.deepEqual(await resolveMx('servfail.test', dns, opts()), {
    kind: 'temp',
    reason: 'MX lookup for servfail.test: the DNS server failed (SERVFAIL)',
  });
});

test('a slow or unanswered MX query is temp within the resolver timeout', { timeout: 5000 }, async () => {
  const t0 = Date.now();
  const [slow, dropped] = await Promise.all([
    resolveMx('slow.test', dns, opts()),
    resolveMx('drop.test', dns, opts()),
  ]);
  assert.deepEqual(slow, { kind: 'temp', reason: 'MX lookup for slow.test: the DNS query timed out' });
  assert.deepEqual(dropped, { kind: 'temp', reason: 'MX lookup for drop.test: the DNS query timed out' });
  assert.ok(Date.now() - t0 < 2000, `took ${Date.now() - t0} ms`);
});

test('an MX host whose lookups fail temporarily is skipped; the next one is used', async () => {
  assert.deepEqual(await resolveMx('partial.test', dns, opts()), {
    kind: 'hosts',
    implicit: false,
    hosts: [{ name: 'mx2.pref.test', preference: 20, addresses: ['192.0.2.2', '192.0.2.3'] }],
  });
});

test('no MX host with an address: temp if any lookup failed temporarily', async () => {
  assert.deepEqual(await resolveMx('tempaddr.test', dns, opts()), {
    kind: 'temp',
    reason:
      'AAAA lookup for broken.tempaddr.test: the DNS server failed (SERVFAIL); ' +
      'A lookup for broken.tempaddr.test: the DNS server failed (SERVFAIL)',
  });
});

test('no MX host with an address and every answer negative: no-address (permanent)', async () => {
  assert.deepEqual(await resolveMx('noaddr.test', dns, opts()), {
    kind: 'no-address',
    reason:
      'no MX host of noaddr.test has an address (ghost.noaddr.test: no such host, bare.test: no A or AAAA record)',
  });
});

test('an MX target that is a CNAME is followed (RFC 5321 5.1 forbids it; accepted)', async () => {
  assert.deepEqual(await resolveMx('cname.test', dns, opts()), {
    kind: 'hosts',
    implicit: false,
    hosts: [{ name: 'alias.cname.test', preference: 10, addresses: ['192.0.2.40'] }],
  });
});

test('an MX target that is an IP literal is used as the address without a lookup', async () => {
  const before = server.queries.length;
  assert.deepEqual(await resolveMx('literal.test', dns, opts()), {
    kind: 'hosts',
    implicit: false,
    hosts: [{ name: '192.0.2.50', preference: 10, addresses: ['192.0.2.50'] }],
  });
  assert.deepEqual(server.queries.slice(before), [{ name: 'literal.test', type: 'MX', transport: 'udp' }]);
});

test('a domain address literal is delivered to that address, with no DNS query', async () => {
  const before = server.queries.length;
  assert.deepEqual(await resolveMx('[192.0.2.60]', dns, opts()), {
    kind: 'hosts',
    implicit: true,
    hosts: [{ name: '192.0.2.60', preference: 0, addresses: ['192.0.2.60'] }],
  });
  assert.deepEqual(await resolveMx('[IPv6:2001:db8::60]', dns, opts()), {
    kind: 'hosts',
    implicit: true,
    hosts: [{ name: '2001:db8::60', preference: 0, addresses: ['2001:db8::60'] }],
  });
  assert.deepEqual(await resolveMx('[192.0.2.99]', dns, opts()), {
    kind: 'loop',
    reason: 'mail for [192.0.2.99] loops back to myself (192.0.2.99)',
  });
  assert.equal(server.queries.length, before);
});

test('RFC 5321 5.1: when we are the best MX, the mail loops (5.4.6)', async () => {
  assert.deepEqual(await resolveMx('loop.test', dns, opts()), {
    kind: 'loop',
    reason: 'mail for loop.test loops back to myself: me.test (MX preference 10) is this server',
  });
});

test('RFC 5321 5.1: as a backup MX, only hosts with a lower preference value than ours remain', async () => {
  assert.deepEqual(await resolveMx('backup.test', dns, opts()), {
    kind: 'hosts',
    implicit: false,
    hosts: [{ name: 'mx1.pref.test', preference: 10, addresses: ['2001:db8::1', '192.0.2.1'] }],
  });
});

test('implicit MX pointing at one of our addresses is a loop', async () => {
  assert.deepEqual(await resolveMx('implicitloop.test', dns, opts()), {
    kind: 'loop',
    reason: 'mail for implicitloop.test loops back to myself: it has no MX and 192.0.2.99 is this server',
  });
});

test('the MX list is capped (default 10, or maxMx), keeping the best preferences', async () => {
  const names = async (o: ResolveMxOptions): Promise<string[]> => {
    const route = await resolveMx('many.test', dns, o);
    return route.kind === 'hosts' ? route.hosts.map((h) => h.name) : [];
  };
  assert.deepEqual(
    await names(opts()),
    Array.from({ length: 10 }, (_, i) => `h${i}.many.test`),
  );
  assert.deepEqual(await names(opts({ maxMx: 3 })), ['h0.many.test', 'h1.many.test', 'h2.many.test']);
});

test('a host listed twice appears once, at its best preference', async () => {
  assert.deepEqual(await resolveMx('dup.test', dns, opts()), {
    kind: 'hosts',
    implicit: false,
    hosts: [{ name: 'mx2.pref.test', preference: 10, addresses: ['192.0.2.2', '192.0.2.3'] }],
  });
});

test('through CachingResolver, a second resolution asks the DNS server nothing', async () => {
  let t = 0;
  const cached = new CachingResolver(dns, { now: () => t });
  const first = await resolveMx('pref.test', cached, opts());
  const before = server.queries.length;
  t += 10_000;
  assert.deepEqual(await resolveMx('pref.test', cached, opts()), first);
  assert.equal(server.queries.length, before);
  // After the TTL of the address records (300 s default in the test zone), they are asked again.
  t += 300_000;
  await resolveMx('pref.test', cached, opts());
  assert.deepEqual(
    server.queries
      .slice(before)
      .map((q) => `${q.type} ${q.name}`)
      .sort(),
    [
      'A mx1.pref.test',
      'A mx2.pref.test',
      'A mx3.pref.test',
      'AAAA mx1.pref.test',
      'AAAA mx2.pref.test',
      'AAAA mx3.pref.test',
      'MX pref.test',
    ],
  );
});
