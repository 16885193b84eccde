import { test } from 'node:test';
import assert from 'node:assert/strict';
import { clientNetworkKey, formatIpv6, parseIpv6 } from './client-network.js';

test('an IPv4 client counts by its address', () => {
  assert.equal(clientNetworkKey('192.0.2.1'), '192.0.2.1');
  assert.equal(clientNetworkKey('127.0.0.2'), '127.0.0.2');
  assert.notEqual(clientNetworkKey('192.0.2.1'), clientNetworkKey('192.0.2.2'));
});

test('RFC 4291 2.5.4: an IPv6 client counts by its /64, whatever form the address is written in', () => {
  const forms = [
    '2001:db8:1:2::1',
    '2001:db8:1:2:ffff:ffff:ffff:ffff',
    '2001:0db8:0001:0002:0000:0000:0000:0001',
    '2001:DB8:1:2:A:B:C:D',
    '2001:db8:1:2:0:0:0:0',
    '2001:db8:1:2::',
    '2001:db8:1:2::192.0.2.1',
  ];
  for (const a of forms) assert.equal(clientNetworkKey(a), '2001:db8:1:2::/64', a);
  assert.equal(clientNetworkKey('2001:db8:1:3::1'), '2001:db8:1:3::/64');
  assert.equal(clientNetworkKey('2001:db8::1'), '2001:db8::/64');
  assert.equal(clientNetworkKey('2001:0:0:1::5'), '2001:0:0:1::/64');
  assert.equal(clientNetworkKey('::1'), '::/64');
  assert.equal(clientNetworkKey('::'), '::/64');
  assert.equal(clientNetworkKey('fe80:0:0:0:1:2:3:4'), 'fe80::/64');
});

test('RFC 4291 2.5.5.2 and RFC 6052 2.1: IPv4-mapped and NAT64 addresses count as the IPv4 address', () => {
  for (const a of [
    '::ffff:192.0.2.1',
    '::FFFF:192.0.2.1',
    '::ffff:c000:201',
    '0:0:0:0:0:ffff:192.0.2.1',
    '0000:0000:0000:0000:0000:ffff:c000:0201',
    '64:ff9b::192.0.2.1',
    '64:ff9b::c000:201',
  ])
    assert.equal(clientNetworkKey(a), '192.0.2.1', a);
  // Not mapped: another prefix before ffff, or ffff elsewhere.
  assert.equal(clientNetworkKey('::1:ffff:c000:201'), '::/64');
  assert.equal(clientNetworkKey('ffff::c000:201'), 'ffff::/64');
});

test('a zone id is kept: the same link-local /64 on two interfaces is two networks', () => {
  assert.equal(clientNetworkKey('fe80::1%eth0'), 'fe80::/64%eth0');
  assert.equal(clientNetworkKey('fe80::2:3%eth0'), 'fe80::/64%eth0');
  assert.equal(clientNetworkKey('fe80::1%eth1'), 'fe80::/64%eth1');
  assert.equal(clientNetworkKey('fe80::1%2'), 'fe80::/64%2');
});

test('anything that is not an IP address is its own key', () => {
  for (const a of [
    'unknown',
    '',
    '1:2:3',
    '1::2::3',
    '12345::',
    '::ffff:192.0.2',
    'g::1',
    '1.2.3.4::',
    'fe80::1%',
  ])
    assert.equal(clientNetworkKey(a), a, a);
});

test('parseIpv6 accepts RFC 4291 2.2 forms and refuses the rest', () => {
  assert.deepEqual(parseIpv6('1:2:3:4:5:6:7:8'), [1, 2, 3, 4, 5, 6, 7, 8]);
  assert.deepEqual(parseIpv6('1::8'), [1, 0, 0, 0, 0, 0, 0, 8]);
  assert.deepEqual(parseIpv6('1:2:3:4:5:6:7::'), [1, 2, 3, 4, 5, 6, 7, 0]);
  assert.deepEqual(parseIpv6('::2:3:4:5:6:7:8'), [0, 2, 3, 4, 5, 6, 7, 8]);
  assert.deepEqual(parseIpv6('1:2:3:4:5:6:1.2.3.4'), [1, 2, 3, 4, 5, 6, 0x102, 0x304]);
  for (const bad of [
    '1:2:3:4:5:6:7:8:9',
    '1:2:3:4:5:6:7',
    '1::2:3:4:5:6:7:8',
    ':1:2:3:4:5:6:7',
    '1:2:3:4:5:6:7:',
    ':::',
    '::1.2.3',
    '::1.2.3.4.5',
    '::01.2.3.4',
    '1.2.3.4::',
    '::1.2.3.4:1',
  ])
    assert.equal(parseIpv6(bad), null, bad);
});

test('RFC 5952 4: formatIpv6 compresses the longest zero run (the first of equal ones), never a single zero', () => {
  assert.equal(formatIpv6([0x2001, 0xdb8, 0, 0, 1, 0, 0, 1]), '2001:db8::1:0:0:1');
  assert.equal(formatIpv6([0x2001, 0xdb8, 0, 0, 0, 1, 0, 0]), '2001:db8::1:0:0');
  assert.equal(formatIpv6([0x2001, 0xdb8, 0, 1, 1, 1, 1, 1]), '2001:db8:0:1:1:1:1:1');
  assert.equal(formatIpv6([0, 0, 0, 0, 0, 0, 0, 0]), '::');
  assert.equal(formatIpv6([0xabcd, 0, 0, 0, 0, 0, 0, 0]), 'abcd::');
});
