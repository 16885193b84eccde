/**
 * The mailauth resolver (resolver.ts): node:dns error codes, and failed lookups (the ordinary
 * answer for most senders) made without capturing a stack trace.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { DnsResolver } from '../delivery/dns.js';
import { LookupError, mailauthResolver } from './resolver.js';

const dns: DnsResolver = {
  mx: () => Promise.resolve({ kind: 'nodata' }),
  a: () => Promise.resolve({ kind: 'ok', records: [{ address: '192.0.2.1', ttl: 60 }], ttl: 60 }),
  aaaa: () => Promise.resolve({ kind: 'temp', reason: 'SERVFAIL' }),
  txt: () => Promise.resolve({ kind: 'nxdomain' }),
};

test('lookups fail with node:dns codes, and the errors carry no stack trace (they are the normal case)', async () => {
  const resolve = mailauthResolver(dns, Date.now() + 60_000, Date.now);
  const cases: [string, string][] = [
    ['TXT', 'ENOTFOUND'],
    ['MX', 'ENODATA'],
    ['AAAA', 'ETIMEOUT'],
  ];
  for (const [type, code] of cases) {
    const err: unknown = await resolve('example.org', type).then(
      () => null,
      (e: unknown) => e,
    );
    assert.ok(err instanceof LookupError, `${type}: ${String(err)}`);
    assert.equal(err.code, code);
    assert.equal(err.stack, `Error: ${err.message}`, `${type}: no frames captured`);
  }
  assert.deepEqual(await resolve('example.org', 'A'), ['192.0.2.1']);
  // The global limit is left as it was.
  assert.ok(Error.stackTraceLimit > 0);
  assert.ok((new Error('x').stack ?? '').includes('\n    at '));
});
