/**
 * Helpers for the mail authentication tests: DKIM keys generated per run (never checked in),
 * their DNS TXT records, signing with independent signers (dkimpy's dkimsign and arcsign, from
 * Debian python3-dkim), and an SMTP transaction that returns the final reply whatever it is
 * (DATA or BDAT), for the refusal tests. Test code only.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { dotStuff } from './outbound.js';
import { TestClient, type TestReply } from './smtp-client.js';
import { describeRun, runTool } from './tools.js';

export interface DkimKey {
  /** The private key file dkimpy reads (PEM for RSA, the base64 seed for ed25519). */
  file: string;
  /** The selector's TXT record value ("v=DKIM1; k=...; p=..."). */
  record: string;
}

/** An RSA key of `bits` (PKCS#1 PEM) and its DNS record. */
export async function rsaKey(dir: string, name: string, bits = 2048): Promise<DkimKey> {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: bits });
  const file = path.join(dir, `${name}.pem`);
  await writeFile(file, privateKey.export({ type: 'pkcs1', format: 'pem' }));
  const p = publicKey.export({ type: 'spki', format: 'der' }).toString('base64');
  return { file, record: `v=DKIM1; k=rsa; p=${p}` };
}

/** An ed25519 key (RFC 8463: the DNS record holds the raw 32-octet public key). */
export async function ed25519Key(dir: string, name: string): Promise<DkimKey> {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const jwkPriv = privateKey.export({ format: 'jwk' });
  const jwkPub = publicKey.export({ format: 'jwk' });
  assert.ok(jwkPriv.d !== undefined && jwkPub.x !== undefined);
  const file = path.join(dir, `${name}.key`);
  await writeFile(file, Buffer.from(jwkPriv.d, 'base64url').toString('base64'));
  return { file, record: `v=DKIM1; k=ed25519; p=${Buffer.from(jwkPub.x, 'base64url').toString('base64')}` };
}

/** A TXT record split into character-strings at the given (odd) sizes, the rest last. */
export function splitTxt(value: string, ...sizes: number[]): string[] {
  const out: string[] = [];
  let at = 0;
  for (const n of sizes) {
    out.push(value.slice(at, at + n));
    at += n;
  }
  while (at < value.length) {
    out.push(value.slice(at, at + 255));
    at += 255;
  }
  return out;
}

export interface SignOptions {
  selector: string;
  domain: string;
  key: DkimKey;
  signalg?: 'rsa-sha256' | 'ed25519-sha256' | 'rsa-sha1';
  hcanon?: 'simple' | 'relaxed';
  bcanon?: 'simple' | 'relaxed';
}

/** Signs `message` with dkimpy's dkimsign; returns the DKIM-Signature field and the message. */
export async function dkimSign(message: Buffer, o: SignOptions): Promise<Buffer> {
  const run = await runTool(
    'dkimsign',
    [
      o.selector,
      o.domain,
      o.key.file,
      '--signalg',
      o.signalg ?? 'rsa-sha256',
      '--hcanon',
      o.hcanon ?? 'relaxed',
      '--bcanon',
      o.bcanon ?? 'simple',
    ],
    { input: message },
  );
  assert.equal(run.code, 0, describeRun(run));
  return Buffer.from(run.stdout, 'utf8');
}

/** Signs with dkimpy's library and l= (the signed body length), for the l= tests. */
export async function dkimSignWithLength(message: Buffer, o: SignOptions): Promise<Buffer> {
  const script = [
    'import sys, dkim',
    'm = sys.stdin.buffer.read()',
    `k = open(${JSON.stringify(o.key.file)}, 'rb').read()`,
    `s = dkim.sign(m, b${JSON.stringify(o.selector)}, b${JSON.stringify(o.domain)}, k, length=True)`,
    'sys.stdout.buffer.write(s + m)',
  ].join('\n');
  const run = await runTool('python3', ['-c', script], { input: message });
  assert.equal(run.code, 0, describeRun(run));
  return Buffer.from(run.stdout, 'utf8');
}

/** Adds an ARC set with dkimpy's arcsign (the message must carry an A-R field for srvId). */
export async function arcSign(
  message: Buffer,
  o: { selector: string; domain: string; key: DkimKey; srvId: string },
): Promise<Buffer> {
  const run = await runTool('arcsign', [o.selector, o.domain, o.key.file, o.srvId], { input: message });
  assert.equal(run.code, 0, describeRun(run));
  return Buffer.from(run.stdout, 'utf8');
}

export interface Transaction {
  from: string;
  to: string;
  /** The message, CRLF line ends. */
  message: Buffer;
  /** Send the message with BDAT (one LAST chunk) instead of DATA. */
  bdat?: boolean;
  helo?: string;
}

/** One transaction on the smtp listener; returns the reply to the end of data, whatever it is. */
export async function transact(
  port: number,
  t: Transaction,
  opts: { timeoutMs?: number } = {},
): Promise<TestReply> {
  const c = await TestClient.connect(port, opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {});
  try {
    await c.expect(220);
    return await transactOn(c, t);
  } finally {
    c.close();
  }
}

/** The same, on an open session after its greeting; leaves the session open. */
export async function transactOn(c: TestClient, t: Transaction): Promise<TestReply> {
  const ehlo = await c.cmd(`EHLO ${t.helo ?? 'client.test'}`);
  assert.equal(ehlo.code, 250, ehlo.text);
  const mail = await c.cmd(`MAIL FROM:<${t.from}>`);
  assert.equal(mail.code, 250, mail.text);
  const rcpt = await c.cmd(`RCPT TO:<${t.to}>`);
  assert.equal(rcpt.code, 250, rcpt.text);
  if (t.bdat === true) {
    c.send(Buffer.concat([Buffer.from(`BDAT ${t.message.length} LAST\r\n`), t.message]));
    const r = await c.read();
    assert.ok(r !== null, 'connection closed before the BDAT reply');
    return r;
  }
  const data = await c.cmd('DATA');
  assert.equal(data.code, 354, data.text);
  c.send(Buffer.concat([dotStuff(t.message), Buffer.from('.\r\n')]));
  const r = await c.read();
  assert.ok(r !== null, 'connection closed before the end-of-data reply');
  return r;
}

/**
 * The first header field of a delivered message after the fields local delivery adds above
 * everything (Return-Path and Delivered-To, RFC 5321 4.4), continuation lines included.
 */
export function topField(message: Buffer): string {
  const text = message.toString('utf8').replace(/^Return-Path: [^\r\n]*\r\nDelivered-To: [^\r\n]*\r\n/, '');
  const m = /^[^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*/.exec(text);
  return m?.[0] ?? '';
}
