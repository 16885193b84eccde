/**
 * Shared fixtures for the spool tests and the crash child: envelopes, deterministic bodies,
 * temporary directories. Test-only code; nothing in src/ imports it.
 */
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Envelope } from '../../message/envelope.js';

export function makeEnvelope(
  recipients: string[] = ['bob@example.org'],
  receivedAt = 1_700_000_000_000,
): Envelope {
  return {
    sender: 'alice@example.com',
    mailParams: { size: 1234, body: '8BITMIME' },
    recipients: recipients.map((address) => ({ address, params: { notify: ['FAILURE'] } })),
    client: { ip: '192.0.2.7', port: 40000, helo: 'client.example.com' },
    listener: 'submission',
    authUser: 'alice',
    tls: { version: 'TLSv1.3', cipher: 'TLS_AES_256_GCM_SHA384' },
    receivedAt,
  };
}

/** A body derived from `seed` alone, so a reader can check it without having kept it. */
export function deterministicBody(seed: string, length: number): Buffer {
  const out = Buffer.allocUnsafe(length);
  let block = createHash('sha256').update(seed).digest();
  for (let off = 0; off < length; off += block.length) {
    block.copy(out, off, 0, Math.min(block.length, length - off));
    block = createHash('sha256').update(block).digest();
  }
  return out;
}

/** Body length for the crash child, derived from the qid: 0 to ~200 KB, mostly small. */
export function bodyLengthFor(qid: string): number {
  const h = createHash('sha256').update(qid).digest();
  const r = h.readUInt16BE(0);
  return r % 8 === 0 ? h.readUInt32BE(2) % 200_000 : r % 3000;
}

export async function readAll(body: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const p of body) parts.push(p);
  return Buffer.concat(parts);
}

export async function withTempDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'sterna-spool-'));
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
