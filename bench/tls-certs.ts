/**
 * Test certificates for the STARTTLS rows (issue 11): a self-signed RSA-2048 and a self-signed
 * ECDSA P-256 certificate for bench.local, made with openssl(1) in the bench's temp directory,
 * so that Sterna and Postfix serve the very same certificate and key in a row. Keys are mode 0600
 * (Postfix's smtpd reads them as root before it drops privileges).
 * Benchmark code: trusted; writes only under the directory it is given.
 */
import { chmod } from 'node:fs/promises';
import { join } from 'node:path';
import { run } from './machine.js';

export type KeyKind = 'rsa2048' | 'ecdsa-p256';

export interface CertFiles {
  kind: KeyKind;
  certFile: string;
  keyFile: string;
}

export const KEY_LABEL: Record<KeyKind, string> = { rsa2048: 'RSA-2048', 'ecdsa-p256': 'ECDSA P-256' };

/** Writes `<kind>-cert.pem` and `<kind>-key.pem` in dir. */
export async function makeCert(dir: string, kind: KeyKind): Promise<CertFiles> {
  const certFile = join(dir, `${kind}-cert.pem`);
  const keyFile = join(dir, `${kind}-key.pem`);
  const newkey =
    kind === 'rsa2048' ? ['-newkey', 'rsa:2048'] : ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256'];
  const r = await run('openssl', [
    'req',
    '-x509',
    ...newkey,
    '-nodes',
    '-keyout',
    keyFile,
    '-out',
    certFile,
    '-days',
    '30',
    '-subj',
    '/CN=bench.local',
    '-addext',
    'subjectAltName=DNS:bench.local,DNS:localhost,IP:127.0.0.1',
  ]);
  if (r.code !== 0) throw new Error(`openssl req (${kind}): ${r.stderr.trim()}`);
  await chmod(keyFile, 0o600);
  return { kind, certFile, keyFile };
}
