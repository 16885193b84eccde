/**
 * Dual certificates ([tls] ecdsa_cert_file / ecdsa_key_file beside cert_file / key_file,
 * docs/tls.md): a real Sterna serves each client the certificate its signature algorithms allow
 * (RFC 8446 4.2.3, 4.4.2.2), over STARTTLS (RFC 3207) and implicit TLS (RFC 8314); a reload
 * picks up a renewed ECDSA certificate; the expiry metric follows the certificate that expires
 * first; and `sterna check-config` / `sterna serve` refuse a bad ECDSA pair with exit 2,
 * naming the key.
 * Test-only code: binds 127.0.0.1 only, writes only under os.tmpdir().
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { TLSSocket, type ConnectionOptions } from 'node:tls';
import { generateSelfSigned } from '../src/server/tls.js';
import { runSterna } from './helpers/run-cli.js';
import { startTestServer, TEST_HOSTNAME } from './helpers/server.js';
import { TestClient } from './helpers/smtp-client.js';

const DAY_MS = 24 * 3600 * 1000;
/** A client that accepts only ECDSA signatures, and one that accepts only RSA ones. */
const ONLY_ECDSA: ConnectionOptions = { sigalgs: 'ecdsa_secp256r1_sha256' };
const ONLY_RSA: ConnectionOptions = { sigalgs: 'rsa_pss_rsae_sha256:rsa_pkcs1_sha256' };

interface PairFiles {
  certFile: string;
  keyFile: string;
  /** SHA-256 fingerprint of the certificate, as getPeerCertificate() shows it. */
  fp: string;
  notAfter: number;
}

async function writePair(
  dir: string,
  name: string,
  keyType: 'ec' | 'rsa',
  notBefore = new Date(Date.now() - 60_000),
): Promise<PairFiles> {
  const pems = await generateSelfSigned(TEST_HOSTNAME, notBefore, keyType);
  const certFile = path.join(dir, `${name}-cert.pem`);
  const keyFile = path.join(dir, `${name}-key.pem`);
  await writeFile(keyFile, pems.key, { mode: 0o600 });
  await writeFile(certFile, pems.cert);
  const x509 = new X509Certificate(pems.cert);
  return { certFile, keyFile, fp: x509.fingerprint256, notAfter: Date.parse(x509.validTo) };
}

const tlsToml = (rsa: PairFiles, ecdsa: PairFiles): string =>
  `[tls]\ncert_file = "${rsa.certFile}"\nkey_file = "${rsa.keyFile}"\n` +
  `ecdsa_cert_file = "${ecdsa.certFile}"\necdsa_key_file = "${ecdsa.keyFile}"\n`;

/** The fingerprint of the certificate the server presents over STARTTLS to a client with `options`. */
async function starttlsCert(port: number, options: ConnectionOptions): Promise<string> {
  const c = await TestClient.connect(port);
  try {
    await c.expect(220);
    assert.equal((await c.cmd('EHLO client.example')).code, 250);
    assert.equal((await c.cmd('STARTTLS')).code, 220);
    const secure = await c.upgrade(options);
    assert.equal((await c.cmd('EHLO client.example')).code, 250);
    return secure.getPeerCertificate().fingerprint256;
  } finally {
    c.close();
  }
}

/** The same on the implicit TLS port: the greeting comes after the handshake. */
async function implicitCert(port: number, options: ConnectionOptions): Promise<string> {
  const c = await TestClient.connect(port, { tls: true, tlsOptions: options });
  try {
    await c.expect(220);
    assert.ok(c.socket instanceof TLSSocket);
    return c.socket.getPeerCertificate().fingerprint256;
  } finally {
    c.close();
  }
}

test('dual certificates: ECDSA to ECDSA clients, RSA to RSA clients, both reloaded', async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'sterna-dual-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const rsa = await writePair(dir, 'rsa', 'rsa');
  // Older: it expires first, so the expiry metric must show it.
  const ecdsa = await writePair(dir, 'ecdsa', 'ec', new Date(Date.now() - 100 * DAY_MS));
  const server = await startTestServer({ dataDir: path.join(dir, 'data'), toml: tlsToml(rsa, ecdsa) });
  t.after(() => server.stop());
  const { smtp, submissions } = server.ports;

  assert.equal(await starttlsCert(smtp, ONLY_ECDSA), ecdsa.fp, 'STARTTLS, ECDSA-only client');
  assert.equal(await starttlsCert(smtp, ONLY_RSA), rsa.fp, 'STARTTLS, RSA-only client');
  assert.equal(await implicitCert(submissions, ONLY_ECDSA), ecdsa.fp, 'implicit TLS, ECDSA-only client');
  assert.equal(await implicitCert(submissions, ONLY_RSA), rsa.fp, 'implicit TLS, RSA-only client');
  // A client that accepts both gets the ECDSA one (OpenSSL's order: the cheaper handshake).
  assert.equal(await starttlsCert(smtp, {}), ecdsa.fp, 'a client accepting both');
  assert.equal(server.app.tls.expiresAt(), ecdsa.notAfter, 'the expiry of the certificate expiring first');

  // The ECDSA certificate renewed in place: a reload (SIGHUP, or the file watch) serves it.
  const renewed = await writePair(dir, 'ecdsa', 'ec');
  await server.app.reload();
  assert.equal(await starttlsCert(smtp, ONLY_ECDSA), renewed.fp, 'the renewed ECDSA certificate');
  assert.equal(await starttlsCert(smtp, ONLY_RSA), rsa.fp, 'the RSA one unchanged');
  assert.equal(server.app.tls.expiresAt(), Math.min(rsa.notAfter, renewed.notAfter));
});

test('a bad ECDSA pair stops check-config and serve with exit 2, naming the key', async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'sterna-dual-bad-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const rsa = await writePair(dir, 'rsa', 'rsa');
  const ecdsa = await writePair(dir, 'ecdsa', 'ec');
  const otherEcdsa = await writePair(dir, 'other', 'ec');
  const configFile = path.join(dir, 'sterna.toml');
  const run = async (command: 'check-config' | 'serve', tlsTable: string): Promise<string> => {
    await writeFile(
      configFile,
      `hostname = "${TEST_HOSTNAME}"\ndata_dir = "${path.join(dir, 'data')}"\n` +
        `[listen]\nsmtp = ["127.0.0.1:0"]\nsubmission = []\nsubmissions = []\n${tlsTable}`,
    );
    const r = await runSterna([command, '--config', configFile]);
    assert.equal(r.code, 2, `${command} exit code; stderr: ${r.stderr}`);
    return r.stderr;
  };

  // The "ECDSA" files hold an RSA pair.
  assert.match(
    await run('check-config', tlsToml(rsa, rsa)),
    /tls\.ecdsa_key_file: the key in .*rsa-key\.pem is rsa, not ECDSA/,
  );
  // The ECDSA key belongs to another certificate; serve stops before it listens.
  const mismatched = { ...ecdsa, keyFile: otherEcdsa.keyFile };
  for (const command of ['check-config', 'serve'] as const) {
    assert.match(
      await run(command, tlsToml(rsa, mismatched)),
      /tls\.ecdsa_key_file: the key in .*other-key\.pem does not belong to the certificate in .*ecdsa-cert\.pem/,
    );
  }
  // Two ECDSA certificates: OpenSSL would serve only one.
  assert.match(
    await run('check-config', tlsToml(otherEcdsa, ecdsa)),
    /tls\.key_file: the key in .* is ECDSA too/,
  );
  // An ECDSA pair alone, or half of one.
  assert.match(
    await run(
      'check-config',
      `[tls]\necdsa_cert_file = "${ecdsa.certFile}"\necdsa_key_file = "${ecdsa.keyFile}"\n`,
    ),
    /tls\.cert_file: must be set when tls\.ecdsa_cert_file is set/,
  );
  assert.match(
    await run(
      'check-config',
      `[tls]\ncert_file = "${rsa.certFile}"\nkey_file = "${rsa.keyFile}"\necdsa_cert_file = "${ecdsa.certFile}"\n`,
    ),
    /tls\.ecdsa_key_file: must be set when tls\.ecdsa_cert_file is set/,
  );
  // And a good pair passes.
  await writeFile(
    configFile,
    `hostname = "${TEST_HOSTNAME}"\ndata_dir = "${path.join(dir, 'data')}"\n${tlsToml(rsa, ecdsa)}`,
  );
  const good = await runSterna(['check-config', '--config', configFile]);
  assert.equal(good.code, 0, good.stderr);
});
