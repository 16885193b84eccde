import assert from 'node:assert/strict';
import { test } from 'node:test';
import { NetworkList } from './networks.js';

test('a network list matches subnets, single addresses and IPv4-mapped IPv6, and keeps its answers', () => {
  const list = new NetworkList(['192.0.2.0/24', '198.51.100.7', '2001:db8::/32']);
  const cases: [string, boolean][] = [
    ['192.0.2.1', true],
    ['192.0.3.1', false],
    ['198.51.100.7', true],
    ['198.51.100.8', false],
    ['::ffff:192.0.2.200', true],
    ['::ffff:203.0.113.1', false],
    ['2001:db8::25', true],
    ['2001:db9::25', false],
  ];
  // Twice: the second pass is answered from what the list remembered.
  for (let pass = 0; pass < 2; pass++)
    for (const [ip, expected] of cases) assert.equal(list.has(ip), expected, `${ip} (pass ${pass})`);
});

test('a network list answers correctly after it forgets (more addresses than it remembers)', () => {
  const list = new NetworkList(['10.0.0.0/16']);
  for (let i = 0; i < 10_000; i++) {
    const ip = `10.${i % 2}.${(i >> 8) & 255}.${i & 255}`;
    assert.equal(list.has(ip), i % 2 === 0, ip);
  }
  assert.equal(list.has('10.0.0.1'), true);
  assert.equal(list.has('10.1.0.1'), false);
});

test('an empty network list holds nothing', () => {
  assert.equal(new NetworkList([]).has('127.0.0.1'), false);
});
