/**
 * The certificate check on files made for the test: a good chain, one expiring soon, one that
 * names another host, a self-signed one, a key that belongs to another certificate, a chain out
 * of order, and one whose CA is not trusted.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { generate } from 'selfsigned';
import { checkCertificate, type CertificatePair } from './certificate.js';
import type { Finding } from './finding.js';

const DAY = 24 * 3600 * 1000;
const NOW = new Date('2026-06-01T00:00:00Z');
let dir: string;
const files: Record<string, string> = {};

type Pems = Awaited<ReturnType<typeof generate>>;

function cert(host: string, days: number, ca?: Pems, keyType: 'rsa' | 'ec' = 'rsa'): Promise<Pems> {
  return generate([{ name: 'commonName', value: host }], {
    ...(keyType === 'rsa' ? { keyType, keySize: 1024 } : { keyType, curve: 'P-256' as const }),
    notBeforeDate: new Date(NOW.getTime() - DAY),
    notAfterDate: new Date(NOW.getTime() + days * DAY),
    ...(ca !== undefined ? { ca: { key: ca.private, cert: ca.cert } } : {}),
    extensions: [
      ca === undefined && host.startsWith('CA')
        ? { name: 'basicConstraints', cA: true, critical: true }
        : { name: 'basicConstraints', cA: false },
      { name: 'subjectAltName', altNames: [{ type: 2, value: host }] },
    ],
  });
}

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'sterna-cert-check-'));
  const ca = await cert('CA test', 3650);
  const good = await cert('mx.test', 90, ca);
  const soon = await cert('mx.test', 10, ca);
  const other = await cert('other.test', 90, ca);
  const self = await cert('mx.test', 90);
  // selfsigned signs with a key of the leaf's type: an EC leaf needs an EC CA.
  const ecCa = await cert('CA ec test', 3650, undefined, 'ec');
  const ec = await cert('mx.test', 90, ecCa, 'ec');
  const put = async (name: string, text: string): Promise<void> => {
    files[name] = path.join(dir, name);
    await writeFile(files[name], text);
  };
  await put('ca.pem', ca.cert);
  await put('good.pem', good.cert + ca.cert);
  await put('good.key', good.private);
  await put('soon.pem', soon.cert);
  await put('soon.key', soon.private);
  await put('other.pem', other.cert);
  await put('other.key', other.private);
  await put('self.pem', self.cert);
  await put('self.key', self.private);
  await put('disorder.pem', ca.cert + good.cert);
  await put('ec.pem', ec.cert + ecCa.cert);
  await put('both-cas.pem', ca.cert + ecCa.cert);
  await put('ec.key', ec.private);
});

after(() => rm(dir, { recursive: true, force: true }));

function check(cert: string, key: string, caFile?: string, pair?: CertificatePair): Promise<Finding[]> {
  return checkCertificate({
    hostname: 'mx.test',
    certFile: files[cert] ?? '',
    keyFile: files[key] ?? '',
    ...(caFile !== undefined ? { caFile: files[caFile] ?? '' } : {}),
    ...(pair !== undefined ? { pair } : {}),
    now: NOW,
  });
}

async function ids(cert: string, key: string, caFile?: string, pair?: CertificatePair): Promise<string[]> {
  return (await check(cert, key, caFile, pair)).map((f) => `${f.severity} ${f.id}`);
}

test('a good chain to a trusted CA is OK; the same without the CA is untrusted', async () => {
  assert.deepEqual(await ids('good.pem', 'good.key', 'ca.pem'), ['ok cert.ok']);
  assert.deepEqual(await ids('good.pem', 'good.key'), ['warning cert.untrusted']);
});

test('fewer than 21 days left is a warning; another host name is an error; self-signed is a warning', async () => {
  assert.deepEqual(await ids('soon.pem', 'soon.key', 'ca.pem'), ['warning cert.expiring']);
  assert.deepEqual(await ids('other.pem', 'other.key', 'ca.pem'), ['error cert.name-mismatch']);
  assert.deepEqual(await ids('self.pem', 'self.key', 'ca.pem'), ['warning cert.self-signed']);
});

test('a key of another certificate and a chain out of order are errors; no file configured is a warning', async () => {
  assert.deepEqual(await ids('good.pem', 'other.key', 'ca.pem'), ['error cert.key-mismatch']);
  assert.deepEqual(await ids('disorder.pem', 'good.key', 'ca.pem'), [
    'error cert.key-mismatch',
    'error cert.name-mismatch',
    'error cert.chain-order',
  ]);
  const none = await checkCertificate({ hostname: 'mx.test', certFile: '', keyFile: '', now: NOW });
  assert.deepEqual(
    none.map((f) => f.id),
    ['cert.test-certificate'],
  );
});

test('the ECDSA pair: checked like the main one, its key must be ECDSA, and findings name its own keys', async () => {
  const ok = await check('ec.pem', 'ec.key', 'both-cas.pem', 'ecdsa');
  assert.deepEqual(
    ok.map((f) => `${f.severity} ${f.id}`),
    ['ok cert.ok'],
  );
  assert.match(ok[0]?.message ?? '', /^the ECDSA certificate names mx\.test, its chain is complete/);
  // The RSA pair given as the ECDSA one.
  const rsa = await check('good.pem', 'good.key', 'ca.pem', 'ecdsa');
  assert.deepEqual(
    rsa.map((f) => `${f.severity} ${f.id}`),
    ['error cert.not-ecdsa'],
  );
  assert.match(rsa[0]?.fix ?? '', /\[tls\] ecdsa_cert_file and ecdsa_key_file/);
  const mismatch = await check('ec.pem', 'good.key', 'both-cas.pem', 'ecdsa');
  assert.deepEqual(
    mismatch.map((f) => `${f.severity} ${f.id}`),
    ['error cert.key-mismatch'],
  );
  assert.equal(mismatch[0]?.fix, 'set [tls] ecdsa_key_file to the key the certificate was made for');
  // Not configured: nothing to say (the main pair alone is the usual setup).
  assert.deepEqual(await ids('', '', 'ca.pem', 'ecdsa'), []);
  // The main pair's findings keep naming cert_file and key_file.
  const main = await check('good.pem', 'other.key', 'ca.pem');
  assert.equal(main[0]?.fix, 'set [tls] key_file to the key the certificate was made for');
});
