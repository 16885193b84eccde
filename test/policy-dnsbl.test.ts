/**
 * DNSBL, DNSWL and RHSBL ([dnsbl], src/policy/dnsbl.ts) against the test DNS server: a client
 * on 127.0.0.5 (listed) is refused at RCPT with 554 5.7.1 naming the list, one on 127.0.0.6
 * (unlisted) is accepted; Spamhaus's "query refused" answer (127.255.255.254), an answer
 * outside a zone's codes and a SERVFAIL never refuse; a DNSWL listing lowers the score; a
 * listed sender domain is refused; answers are cached; nothing is stored for a refusal.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { reversedName } from '../src/policy/dnsbl.js';
import { startDnsServer, type TestDnsServer } from './helpers/dns-server.js';
import { assertNothingStored, clientFrom } from './helpers/policy.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { assertReply } from './helpers/smtp-client.js';

let dns: TestDnsServer;
let server: TestServer;

before(async () => {
  dns = await startDnsServer({
    // 127.0.0.5: listed by bl.test and by the refused-only zone (which must not count).
    '5.0.0.127.bl.test': { A: ['127.0.0.2'] },
    '5.0.0.127.refusing.test': { A: ['127.255.255.254'] },
    // 127.0.0.7: listed by the strict zone with a code outside its filter, and by a failing zone.
    '7.0.0.127.strict.test': { A: ['127.0.0.4'] },
    '7.0.0.127.broken.test': { rcode: 'SERVFAIL' },
    // 127.0.0.9: listed by the block list and by the allow list: score 2 - 2 = 0.
    '9.0.0.127.bl.test': { A: ['127.0.0.2'] },
    '9.0.0.127.wl.test': { A: ['127.0.10.3'] },
    // Spamhaus answers refused queries with 127.255.255.x: never a listing, even unfiltered.
    '6.0.0.127.refusing.test': { A: ['127.255.255.254'] },
    'spam.example.rhs.test': { A: ['127.0.1.2'] },
  });
  server = await startTestServer({
    toml: `
[dns]
servers = ["127.0.0.1:${dns.port}"]
timeout_ms = 500
tries = 1

[dnsbl]
threshold = 2
[[dnsbl.zones]]
zone = "bl.test"
weight = 2
[[dnsbl.zones]]
zone = "refusing.test"
weight = 5
[[dnsbl.zones]]
zone = "strict.test"
weight = 5
codes = ["127.0.0.2", "127.0.0.10-127.0.0.11"]
[[dnsbl.zones]]
zone = "broken.test"
weight = 5
[[dnsbl.zones]]
zone = "wl.test"
weight = -2
[[dnsbl.zones]]
zone = "rhs.test"
type = "sender"
weight = 2

[mailauth]
listeners = []
`,
  });
});

after(async () => {
  await server?.stop({ remove: true });
  await dns?.close();
});

test('a listed client (127.0.0.5) is refused at RCPT with 554 5.7.1 naming the list; nothing stored', async () => {
  const c = await clientFrom(server, '127.0.0.5');
  assertReply(await c.cmd('MAIL FROM:<someone@example.org>'), 250);
  const r = await c.cmd('RCPT TO:<postmaster@sterna.test>');
  assertReply(r, 554, '5.7.1');
  assert.equal(r.text, '5.7.1 Service unavailable; client [127.0.0.5] blocked using bl.test');
  assertReply(await c.cmd('DATA'), 554, '5.5.1');
  await c.cmd('QUIT');
  c.close();
  assertNothingStored(server);
});

test('the lookups are cached: a second connection from the same client asks nothing new', async () => {
  const before = dns.queries.filter((q) => q.name === '5.0.0.127.bl.test').length;
  assert.equal(before, 1);
  const c = await clientFrom(server, '127.0.0.5');
  await c.cmd('MAIL FROM:<someone@example.org>');
  assertReply(await c.cmd('RCPT TO:<postmaster@sterna.test>'), 554, '5.7.1');
  c.close();
  assert.equal(dns.queries.filter((q) => q.name === '5.0.0.127.bl.test').length, 1);
});

test('unlisted (127.0.0.6, only a "query refused" answer), filtered, failing and allow-listed clients are accepted', async () => {
  for (const from of ['127.0.0.6', '127.0.0.7', '127.0.0.9']) {
    const c = await clientFrom(server, from);
    assertReply(await c.cmd('MAIL FROM:<someone@example.org>'), 250);
    assertReply(await c.cmd('RCPT TO:<postmaster@sterna.test>'), 250, '2.1.5');
    await c.cmd('QUIT');
    c.close();
  }
  assert.ok(
    dns.queries.some((q) => q.name === '7.0.0.127.broken.test'),
    'the failing zone was asked (and its SERVFAIL did not refuse)',
  );
});

test('a sender domain on a RHSBL is refused at RCPT, naming the list', async () => {
  const c = await clientFrom(server, '127.0.0.6');
  assertReply(await c.cmd('MAIL FROM:<boss@spam.example>'), 250);
  const r = await c.cmd('RCPT TO:<postmaster@sterna.test>');
  assertReply(r, 554, '5.7.1');
  assert.equal(r.text, '5.7.1 Service unavailable; sender domain spam.example blocked using rhs.test');
  await c.cmd('QUIT');
  c.close();
  assertNothingStored(server);
});

test('reversed names: IPv4 by octets, IPv6 by nibbles (RFC 5782 2.1, 2.4), IPv4-mapped as IPv4', () => {
  assert.equal(reversedName('192.0.2.99', 'bl.test'), '99.2.0.192.bl.test');
  assert.equal(reversedName('::ffff:192.0.2.99', 'bl.test'), '99.2.0.192.bl.test');
  assert.equal(
    reversedName('2001:db8:1:2:3:4:567:89ab', 'bl.test'),
    'b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.bl.test',
  );
});
