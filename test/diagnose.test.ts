/**
 * `sterna diagnose` run as the operator runs it (the real command, a child process) against the
 * test DNS server: a good zone where every check is OK, and a broken one with a fault planted
 * for each check (no MX, null MX, an MX naming an IP address or an alias, SPF missing the
 * address, two SPF records, DMARC missing or invalid, a 512-bit DKIM key, PTR missing or not
 * confirmed, an expired certificate, a blocklist listing and a refused blocklist query …), each
 * found with its severity and fix, in the JSON and the text output, and the exit codes.
 * Addresses are documentation ones (RFC 5737, RFC 3849): nothing connects to them.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { generate } from 'selfsigned';
import { reverseName, startDnsServer, type TestDnsServer, type Zone } from './helpers/dns-server.js';
import { runSterna } from './helpers/run-cli.js';
import type { Finding } from '../src/diagnose/finding.js';

const DAY = 24 * 3600 * 1000;

/** A DKIM key record of an RSA key of `bits`, in character-strings of at most 255 bytes. */
function dkimRecord(bits: number): string[] {
  const { publicKey } = generateKeyPairSync('rsa', { modulusLength: bits });
  const record = `v=DKIM1; k=rsa; p=${publicKey.export({ format: 'der', type: 'spki' }).toString('base64')}`;
  return record.match(/.{1,255}/g) ?? [];
}

const GOOD_ZONE: Zone = {
  'good.test': {
    MX: [{ preference: 10, exchange: 'mx.good.test' }],
    TXT: [['v=spf1 ip4:192.0.2.10 ip6:2001:db8::10 -all'], ['google-site-verification=x']],
  },
  'mx.good.test': { A: ['192.0.2.10'], AAAA: ['2001:db8::10'] },
  [reverseName('192.0.2.10')]: { PTR: ['mx.good.test'] },
  [reverseName('2001:db8::10')]: { PTR: ['mx.good.test'] },
  'sel1._domainkey.good.test': { TXT: [dkimRecord(2048)] },
  '_dmarc.good.test': { TXT: [['v=DMARC1; p=reject; rua=mailto:dmarc@good.test']] },
  '_mta-sts.good.test': { TXT: [['v=STSv1; id=20261205']] },
  '_smtp._tls.good.test': { TXT: [['v=TLSRPTv1; rua=mailto:tls@good.test']] },
};

const BROKEN_ZONE: Zone = {
  // No MX and no address; an SPF record that leaves the server's addresses out; no DMARC.
  'broken.test': { TXT: [['v=spf1 ip4:198.51.100.1 -all']] },
  'sel1._domainkey.broken.test': { TXT: [dkimRecord(512)] },
  '_smtp._tls.broken.test': { TXT: [['v=TLSRPTv1; rua=ftp://reports.broken.test']] },
  // Two SPF records; a DMARC record without a valid p=.
  'twospf.test': {
    MX: [{ preference: 10, exchange: 'mx.broken.test' }],
    TXT: [['v=spf1 -all'], ['v=spf1 ip4:192.0.2.20 -all']],
  },
  '_dmarc.twospf.test': { TXT: [['v=DMARC1; p=bogus']] },
  'nullmx.test': { MX: [{ preference: 0, exchange: '.' }] },
  // Its MX is another server.
  'elsewhere.test': { MX: [{ preference: 10, exchange: 'mx.good.test' }] },
  'literal.test': {
    MX: [
      { preference: 10, exchange: '192.0.2.20' },
      { preference: 20, exchange: 'alias.broken.test' },
    ],
  },
  'alias.broken.test': { CNAME: 'mx.broken.test' },
  // The host name lacks the second address; one PTR names a host that does not resolve back,
  // the other address has none.
  'mx.broken.test': { A: ['192.0.2.20'] },
  [reverseName('192.0.2.20')]: { PTR: ['other.example'] },
  // Listed on one list; the other refuses the queries (Spamhaus style).
  '20.2.0.192.bl.test': { A: ['127.0.0.2'], TXT: [['listed for testing']] },
  '20.2.0.192.refusing.test': { A: ['127.255.255.254'] },
  '21.2.0.192.refusing.test': { A: ['127.255.255.254'] },
};

let dns: TestDnsServer;
let dir: string;
let goodConfig: string;
let brokenConfig: string;
let caFile: string;

interface Report {
  hostname: string;
  domains: string[];
  addresses: string[];
  addressSource: string;
  findings: Finding[];
  summary: { ok: number; warning: number; error: number };
}

/** `sterna diagnose --json` with `config`, the DKIM selector sel1, the test CA and `more` arguments. */
function diagnoseJson(config: string, ...more: string[]): ReturnType<typeof runSterna> {
  return runSterna([
    'diagnose',
    '--config',
    config,
    '--dkim-selector',
    'sel1',
    '--ca-file',
    caFile,
    '--json',
    ...more,
  ]);
}

function parseReport(text: string): Report {
  const parsed: unknown = JSON.parse(text);
  assert.ok(typeof parsed === 'object' && parsed !== null && 'findings' in parsed, text);
  return parsed as Report; // shape checked field by field by the tests below
}

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'sterna-diagnose-'));
  dns = await startDnsServer({ ...GOOD_ZONE, ...BROKEN_ZONE });
  const now = Date.now();
  const ca = await generate([{ name: 'commonName', value: 'Sterna Diagnose Test CA' }], {
    keyType: 'rsa',
    keySize: 2048,
    notBeforeDate: new Date(now - DAY),
    notAfterDate: new Date(now + 3650 * DAY),
    extensions: [
      { name: 'basicConstraints', cA: true, critical: true },
      { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
    ],
  });
  const leaf = (host: string, from: number, until: number): ReturnType<typeof generate> =>
    generate([{ name: 'commonName', value: host }], {
      keyType: 'rsa',
      keySize: 2048,
      notBeforeDate: new Date(from),
      notAfterDate: new Date(until),
      ca: { key: ca.private, cert: ca.cert },
      extensions: [
        { name: 'basicConstraints', cA: false },
        { name: 'subjectAltName', altNames: [{ type: 2, value: host }] },
      ],
    });
  const good = await leaf('mx.good.test', now - DAY, now + 90 * DAY);
  const expired = await leaf('mx.broken.test', now - 400 * DAY, now - 10 * DAY);
  caFile = path.join(dir, 'ca.pem');
  await writeFile(caFile, ca.cert);
  const files = {
    goodCert: path.join(dir, 'good-cert.pem'),
    goodKey: path.join(dir, 'good-key.pem'),
    brokenCert: path.join(dir, 'broken-cert.pem'),
    brokenKey: path.join(dir, 'broken-key.pem'),
  };
  await writeFile(files.goodCert, good.cert + ca.cert);
  await writeFile(files.goodKey, good.private);
  await writeFile(files.brokenCert, expired.cert);
  await writeFile(files.brokenKey, expired.private);
  const config = (o: {
    host: string;
    domains: string[];
    cert: string;
    key: string;
    /** [tls] ecdsa_cert_file and ecdsa_key_file, if any. */
    ecdsa?: { cert: string; key: string };
    extra: string;
  }): string => `
hostname = "${o.host}"
data_dir = "${path.join(dir, 'data')}"
local_domains = ${JSON.stringify(o.domains)}
[tls]
cert_file = "${o.cert}"
key_file = "${o.key}"
${o.ecdsa === undefined ? '' : `ecdsa_cert_file = "${o.ecdsa.cert}"\necdsa_key_file = "${o.ecdsa.key}"`}
[dns]
servers = ["127.0.0.1:${dns.port}"]
timeout_ms = 2000
tries = 1
[diagnose]
${o.extra}
`;
  goodConfig = path.join(dir, 'good.toml');
  brokenConfig = path.join(dir, 'broken.toml');
  await writeFile(
    goodConfig,
    config({
      host: 'mx.good.test',
      domains: ['localhost', 'mx.good.test', 'good.test'],
      cert: files.goodCert,
      key: files.goodKey,
      extra: 'public_addresses = ["192.0.2.10", "2001:DB8:0::10"]\ndnsbl_zones = ["bl.test"]',
    }),
  );
  await writeFile(
    brokenConfig,
    config({
      host: 'mx.broken.test',
      domains: ['broken.test', 'twospf.test', 'nullmx.test', 'literal.test', 'elsewhere.test'],
      cert: files.brokenCert,
      key: files.brokenKey,
      // An RSA pair where the ECDSA one belongs: diagnose checks the second pair too.
      ecdsa: { cert: files.goodCert, key: files.goodKey },
      extra: 'public_addresses = ["192.0.2.20", "192.0.2.21"]\ndnsbl_zones = ["bl.test", "refusing.test"]',
    }),
  );
});

after(async () => {
  await dns.close();
  await rm(dir, { recursive: true, force: true });
});

test('a good zone: every check OK, exit code 0, in JSON and in text', async () => {
  const r = await diagnoseJson(goodConfig);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  const report = parseReport(r.stdout);
  assert.deepEqual(
    report.domains,
    ['good.test'],
    'without DOMAIN: the local domains but localhost and the host name',
  );
  assert.deepEqual(report.addresses, ['192.0.2.10', '2001:db8::10']);
  assert.equal(report.addressSource, 'configuration');
  const notOk = report.findings.filter((f) => f.severity !== 'ok');
  assert.deepEqual(notOk, [], JSON.stringify(notOk, null, 1));
  assert.deepEqual(
    report.findings.map((f) => `${f.id} ${f.subject}`),
    [
      'host.ok mx.good.test',
      'mx.ok good.test',
      'ptr.ok 192.0.2.10',
      'ptr.ok 2001:db8::10',
      'spf.pass good.test',
      'spf.pass good.test',
      'dkim.ok sel1._domainkey.good.test',
      'dmarc.ok _dmarc.good.test',
      'mta-sts.ok _mta-sts.good.test',
      'tls-rpt.ok _smtp._tls.good.test',
      `cert.ok ${path.join(dir, 'good-cert.pem')}`,
      'dnsbl.clean 192.0.2.10',
      'dnsbl.clean 2001:db8::10',
    ],
  );
  const find = (id: string): Finding | undefined => report.findings.find((f) => f.id === id);
  assert.equal(find('mx.ok')?.message, 'MX 10 mx.good.test (192.0.2.10, 2001:db8::10), this server');
  assert.equal(find('dkim.ok')?.message, 'selector "sel1" publishes a valid key (RSA, 2048 bits)');
  assert.equal(
    find('spf.pass')?.message,
    'SPF of good.test allows 192.0.2.10: "v=spf1 ip4:192.0.2.10 ip6:2001:db8::10 -all" (0 of 10 DNS lookups)',
  );
  assert.deepEqual(report.summary, { ok: 13, warning: 0, error: 0 });

  const text = await runSterna([
    'diagnose',
    'good.test',
    '--config',
    goodConfig,
    '--dkim-selector=sel1',
    '--ca-file',
    caFile,
  ]);
  assert.equal(text.code, 0, text.stderr);
  const lines = text.stdout.split('\n');
  assert.equal(lines[0], 'Diagnosis of good.test on mx.good.test');
  assert.equal(lines[1], 'Public addresses: 192.0.2.10, 2001:db8::10 (from [diagnose] public_addresses)');
  assert.ok(
    lines.includes(
      'OK      dmarc        _dmarc.good.test: DMARC p=reject, aggregate reports to mailto:dmarc@good.test',
    ),
    text.stdout,
  );
  assert.equal(lines.at(-2), '13 checks OK, 0 warnings, 0 errors');
});

test('a broken zone: each planted fault is found with its severity and its fix; exit code 1', async () => {
  const r = await diagnoseJson(brokenConfig);
  assert.equal(r.code, 1, r.stdout + r.stderr);
  const report = parseReport(r.stdout);
  assert.deepEqual(report.domains, [
    'broken.test',
    'twospf.test',
    'nullmx.test',
    'literal.test',
    'elsewhere.test',
  ]);
  const one = (id: string, subject: string): Finding => {
    const hits = report.findings.filter((f) => f.id === id && f.subject === subject);
    assert.equal(hits.length, 1, `one ${id} about ${subject} in ${JSON.stringify(report.findings, null, 1)}`);
    return hits[0] ?? assert.fail();
  };
  const expect = (id: string, subject: string, severity: string, fix?: string): Finding => {
    const f = one(id, subject);
    assert.equal(f.severity, severity, `${id}: ${f.message}`);
    if (fix !== undefined) assert.equal(f.fix, fix);
    return f;
  };
  // MX
  expect('mx.missing', 'broken.test', 'error', 'publish: broken.test. IN MX 10 mx.broken.test.');
  expect('mx.null', 'nullmx.test', 'error');
  expect(
    'mx.elsewhere',
    'elsewhere.test',
    'warning',
    'if this server should receive mail for elsewhere.test, publish: elsewhere.test. IN MX 10 mx.broken.test.',
  );
  expect('mx.ip-literal', 'literal.test', 'error');
  expect(
    'mx.cname',
    'literal.test',
    'warning',
    'point the MX at the real name: literal.test. IN MX 20 mx.broken.test.',
  );
  // host name and reverse DNS
  expect('host.address-missing', 'mx.broken.test', 'warning', 'publish: mx.broken.test. IN A 192.0.2.21');
  expect('ptr.not-confirmed', '192.0.2.20', 'error');
  expect('ptr.missing', '192.0.2.21', 'error');
  // SPF
  expect(
    'spf.not-allowed',
    'broken.test',
    'error',
    'publish: broken.test. IN TXT "v=spf1 ip4:198.51.100.1 ip4:192.0.2.20 ip4:192.0.2.21 -all"',
  );
  expect('spf.multiple', 'twospf.test', 'error');
  expect(
    'spf.missing',
    'nullmx.test',
    'error',
    'publish: nullmx.test. IN TXT "v=spf1 ip4:192.0.2.20 ip4:192.0.2.21 -all"',
  );
  // DKIM, DMARC, MTA-STS, TLS-RPT
  const weak = expect('dkim.weak-key', 'sel1._domainkey.broken.test', 'error');
  assert.match(weak.message, /has 512 bits/);
  expect('dkim.missing', 'sel1._domainkey.twospf.test', 'error');
  expect(
    'dmarc.missing',
    '_dmarc.broken.test',
    'warning',
    'publish: _dmarc.broken.test. IN TXT "v=DMARC1; p=none; rua=mailto:postmaster@broken.test" (p=none only asks for reports; move to p=quarantine or p=reject once they show only your own servers)',
  );
  expect('dmarc.syntax', '_dmarc.twospf.test', 'error');
  expect('mta-sts.missing', '_mta-sts.broken.test', 'warning');
  expect('tls-rpt.syntax', '_smtp._tls.broken.test', 'error');
  expect('tls-rpt.missing', '_smtp._tls.twospf.test', 'warning');
  // certificate and blocklists
  expect('cert.expired', path.join(dir, 'broken-cert.pem'), 'error');
  expect(
    'cert.not-ecdsa',
    path.join(dir, 'good-cert.pem'),
    'error',
    'put an ECDSA certificate and key in [tls] ecdsa_cert_file and ecdsa_key_file, or leave them empty',
  );
  const listed = expect('dnsbl.listed', '192.0.2.20', 'error');
  assert.equal(
    listed.message,
    '192.0.2.20 is listed on bl.test (127.0.0.2): "listed for testing"; receivers that use the list refuse mail from it',
  );
  expect('dnsbl.clean', '192.0.2.21', 'ok');
  const refused = report.findings.filter((f) => f.id === 'dnsbl.refused');
  assert.deepEqual(
    refused.map((f) => [f.subject, f.severity]),
    [
      ['192.0.2.20', 'warning'],
      ['192.0.2.21', 'warning'],
    ],
    'a refused query is "could not check", not a listing',
  );
  assert.match(
    refused[0]?.message ?? '',
    /^could not check refusing\.test: it refused the query \(answer 127\.255\.255\.254/,
  );
  assert.deepEqual(report.summary, {
    ok: report.findings.filter((f) => f.severity === 'ok').length,
    warning: report.findings.filter((f) => f.severity === 'warning').length,
    error: report.findings.filter((f) => f.severity === 'error').length,
  });

  const text = await runSterna(['diagnose', 'broken.test', '--config', brokenConfig, '--dnsbl', 'bl.test']);
  assert.equal(text.code, 1);
  const lines = text.stdout.split('\n');
  const at = lines.findIndex((l) =>
    l.startsWith('ERROR   spf          broken.test: the SPF record of broken.test does not allow'),
  );
  assert.ok(at > 0, text.stdout);
  assert.equal(
    lines[at + 1],
    '                     fix: publish: broken.test. IN TXT "v=spf1 ip4:198.51.100.1 ip4:192.0.2.20 ip4:192.0.2.21 -all"',
  );
  assert.ok(
    lines.includes(
      'WARNING dkim         broken.test: no DKIM selector to check: none was given and the configuration names none; mail that is not DKIM-signed fails DMARC whenever SPF does (forwarding), and Gmail and Yahoo ask bulk senders for both',
    ),
    text.stdout,
  );
});

test('DKIM selectors come from [[dkim.keys]], each checked in its own domain; retired keys are not checked', async () => {
  const withKeys = path.join(dir, 'keys.toml');
  await writeFile(
    withKeys,
    `${await readFile(goodConfig, 'utf8')}
[[dkim.keys]]
domain = "good.test"
selector = "sel1"
[[dkim.keys]]
domain = "Broken.Test"
selector = "sel1"
state = "publish"
[[dkim.keys]]
domain = "broken.test"
selector = "old"
state = "retired"
`,
  );
  const dkimOf = async (domain: string): Promise<[string, string, string][]> => {
    const r = await runSterna(['diagnose', domain, '--config', withKeys, '--ca-file', caFile, '--json']);
    return parseReport(r.stdout)
      .findings.filter((f) => f.check === 'dkim')
      .map((f) => [f.id, f.subject, f.severity]);
  };
  // No --dkim-selector: good.test's own key is checked, and only in good.test.
  assert.deepEqual(await dkimOf('good.test'), [['dkim.ok', 'sel1._domainkey.good.test', 'ok']]);
  // broken.test's "publish" key is checked (its 512-bit record is found); its retired one is not.
  assert.deepEqual(await dkimOf('broken.test'), [['dkim.weak-key', 'sel1._domainkey.broken.test', 'error']]);
  // A domain without keys in the configuration still has none to check.
  assert.deepEqual(await dkimOf('twospf.test'), [['dkim.no-selector', 'twospf.test', 'warning']]);
});

test('--address replaces the configured addresses; usage and configuration errors exit 2', async () => {
  const r = await runSterna([
    'diagnose',
    'good.test',
    '--config',
    goodConfig,
    '--address',
    '192.0.2.99',
    '--json',
  ]);
  const report = parseReport(r.stdout);
  assert.equal(report.addressSource, 'option');
  assert.deepEqual(report.addresses, ['192.0.2.99']);
  assert.equal(r.code, 1, 'no PTR and not in SPF');
  assert.equal(report.findings.find((f) => f.id === 'ptr.missing')?.subject, '192.0.2.99');

  const bad = await runSterna(['diagnose', '--config', goodConfig, '--address', 'nope']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /^sterna diagnose: --address: "nope" is not an IP address\n/);
  const unknown = await runSterna(['diagnose', '--config', goodConfig, '--frobnicate']);
  assert.equal(unknown.code, 2);
  const badConfig = path.join(dir, 'bad.toml');
  await writeFile(badConfig, '[diagnose]\npublic_addresses = ["not an address"]\n');
  const conf = await runSterna(['diagnose', '--config', badConfig]);
  assert.equal(conf.code, 2);
  assert.match(conf.stderr, /diagnose\.public_addresses/);
});
