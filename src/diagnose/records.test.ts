/**
 * The pure pieces of the diagnose checks: tag lists (RFC 6376 3.2, RFC 7489 6.4), the SPF record
 * with the server's addresses added before its "all" (RFC 7208 5.1), and reverse names
 * (RFC 1035 3.5, RFC 3596 2.5) and blocklist labels (RFC 5782 2.4).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { canonicalAddress, reverseName, reversedLabels, spfMechanism } from './addresses.js';
import { withAddresses } from './spf.js';
import { parseTagList, tagValue } from './txt-records.js';

test('tag lists: tags lower case, values trimmed, a trailing ";" allowed, anything else refused', () => {
  assert.deepEqual(parseTagList('v=DMARC1; P=reject ;rua=mailto:a@b.test;'), [
    ['v', 'DMARC1'],
    ['p', 'reject'],
    ['rua', 'mailto:a@b.test'],
  ]);
  assert.equal(tagValue(parseTagList('v=DKIM1; p=') ?? [], 'p'), '');
  assert.equal(parseTagList('v=DMARC1; ; p=none'), null);
  assert.equal(parseTagList('v=DMARC1; p'), null);
  assert.equal(parseTagList('=x'), null);
});

test('the SPF fix adds the missing addresses before "all" or "redirect=", or at the end', () => {
  assert.equal(withAddresses('v=spf1 mx ~all', ['192.0.2.1']), 'v=spf1 mx ip4:192.0.2.1 ~all');
  assert.equal(
    withAddresses('v=spf1 ip4:192.0.2.1 redirect=_spf.example.test', ['192.0.2.1', '2001:DB8::1']),
    'v=spf1 ip4:192.0.2.1 ip6:2001:db8::1 redirect=_spf.example.test',
  );
  assert.equal(withAddresses('v=spf1  a', ['192.0.2.1']), 'v=spf1 a ip4:192.0.2.1');
});

test('addresses: canonical text, reverse names and blocklist labels', () => {
  assert.equal(canonicalAddress('2001:DB8:0:0::10'), '2001:db8::10');
  assert.equal(spfMechanism('192.0.2.1'), 'ip4:192.0.2.1');
  assert.equal(reverseName('192.0.2.1'), '1.2.0.192.in-addr.arpa');
  assert.equal(reverseName('2001:db8::1'), `1.${'0.'.repeat(23)}8.b.d.0.1.0.0.2.ip6.arpa`);
  assert.equal(reversedLabels('::ffff:192.0.2.1'), '1.0.2.0.0.0.0.c.f.f.f.f.' + '0.'.repeat(19) + '0');
});
