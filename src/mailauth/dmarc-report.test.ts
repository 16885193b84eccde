/** DMARC aggregate reports: rua URIs (RFC 7489 6.2), the 7.1 check, the schedule, XML escaping. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { DnsResolver, DnsResult } from '../delivery/dns.js';
import { externalDestinationRefusal, nextRunAt, parseReportUri } from './dmarc-report.js';
import { xmlText } from './dmarc-report-xml.js';

test('rua URIs: mailto: only, !size in powers of two, nothing else read as an address', () => {
  assert.deepEqual(parseReportUri('mailto:dmarc@example.org'), { address: 'dmarc@example.org' });
  assert.deepEqual(parseReportUri(' mailto:dmarc@example.org!10m '), {
    address: 'dmarc@example.org',
    limit: 10 * 2 ** 20,
  });
  assert.deepEqual(parseReportUri('MAILTO:a@b.example!512'), { address: 'a@b.example', limit: 512 });
  assert.deepEqual(parseReportUri('mailto:a%2Bb@b.example!1k'), { address: 'a+b@b.example', limit: 1024 });
  for (const bad of [
    'https://reports.example/dmarc',
    'mailto:nobody',
    'mailto:a@b.example?subject=x',
    'mailto:a@b.example!10x',
    'mailto:"a b"@b.example',
    'mailto:a@b.example%0d%0aBcc:c@d.example',
  ])
    assert.equal(parseReportUri(bad), null, bad);
});

/** A resolver that answers TXT from `zone` and counts the lookups. */
function txtOnly(zone: Record<string, DnsResult<string[][]>>): DnsResolver & { asked: string[] } {
  const asked: string[] = [];
  const fail = (): Promise<never> => Promise.reject(new Error('not in this test'));
  return {
    asked,
    mx: fail,
    a: fail,
    aaaa: fail,
    txt: (name) => {
      asked.push(name);
      return Promise.resolve(zone[name] ?? { kind: 'nxdomain' });
    },
  };
}

test('RFC 7489 7.1: same organization needs no record; another needs v=DMARC1 at <domain>._report._dmarc.<dest>', async () => {
  const dns = txtOnly({
    'example.org._report._dmarc.ok.example': { kind: 'ok', records: [['v=DMARC1;']], ttl: 300 },
    'example.org._report._dmarc.wrong.example': { kind: 'ok', records: [['v=spf1 -all']], ttl: 300 },
    'example.org._report._dmarc.down.example': { kind: 'temp', reason: 'timeout' },
  });
  assert.equal(
    await externalDestinationRefusal(dns, 'example.org', 'example.org', 'reports.example.org'),
    null,
  );
  assert.deepEqual(dns.asked, [], 'no lookup inside the organization');
  assert.equal(await externalDestinationRefusal(dns, 'example.org', 'example.org', 'ok.example'), null);
  assert.match(
    (await externalDestinationRefusal(dns, 'example.org', 'example.org', 'wrong.example')) ?? '',
    /holds no "v=DMARC1" record/,
  );
  assert.match(
    (await externalDestinationRefusal(dns, 'example.org', 'example.org', 'none.example')) ?? '',
    /^no TXT record at example\.org\._report\._dmarc\.none\.example/,
  );
  assert.match(
    (await externalDestinationRefusal(dns, 'example.org', 'example.org', 'down.example')) ?? '',
    /failed \(timeout\); not sent this time/,
  );
  // The organizational domain comes from the Public Suffix List: example.co.uk, not co.uk.
  assert.equal(
    await externalDestinationRefusal(dns, 'mail.example.co.uk', 'example.co.uk', 'dmarc.example.co.uk'),
    null,
  );
  assert.notEqual(
    await externalDestinationRefusal(dns, 'example.co.uk', 'example.co.uk', 'other.co.uk'),
    null,
  );
});

test('the daily run: the next hour:00 UTC strictly after now', () => {
  const at = Date.UTC(2026, 11, 5, 10, 20);
  assert.equal(nextRunAt(at, 0), Date.UTC(2026, 11, 6, 0));
  assert.equal(nextRunAt(at, 11), Date.UTC(2026, 11, 5, 11));
  assert.equal(nextRunAt(Date.UTC(2026, 11, 5, 11), 11), Date.UTC(2026, 11, 6, 11));
});

test('report XML: untrusted values are escaped, and characters XML 1.0 cannot carry dropped', () => {
  assert.equal(xmlText('a<b>&"\'c'), 'a&lt;b&gt;&amp;&quot;&apos;c');
  assert.equal(xmlText('sel\u0000ector\u001b'), 'selector');
  assert.equal(xmlText('tab\tok'), 'tab\tok');
});
