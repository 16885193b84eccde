/**
 * The signing writer without a server: what reaches the spool writer (the prefix, the envelope),
 * which origins are signed, the header-size bound, abort, a message with no body, a large body
 * streamed without holding the event loop. Signatures are checked with mailauth's verifier here;
 * test/dkim-sign.test.ts checks them with dkimpy and opendkim over real SMTP.
 */
import assert from 'node:assert/strict';
import { createPrivateKey, createPublicKey } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { dkimVerify } from 'mailauth';
import { parseConfigText } from '../config/load.js';
import type { Envelope } from '../message/envelope.js';
import { silentLogger } from '../observability/log.js';
import { DkimKeyStore, generateKey, recordValue, writeKeyFile } from './dkim-keys.js';
import { DkimSigning, type SignableWriter } from './dkim-sign.js';

let dir: string;
let store: DkimKeyStore;
const records = new Map<string, string>();

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'sterna-dkim-sign-unit-'));
  let toml = `data_dir = ${JSON.stringify(dir)}\n`;
  for (const [selector, algorithm] of [
    ['r', 'rsa'],
    ['e', 'ed25519'],
  ] as const) {
    const { pem } = generateKey(algorithm);
    const file = path.join(dir, `${selector}.key`);
    await writeKeyFile(file, pem);
    records.set(
      `${selector}._domainkey.example.org`,
      recordValue(createPublicKey(createPrivateKey(pem)), algorithm),
    );
    toml += `[[dkim.keys]]\ndomain = "example.org"\nselector = "${selector}"\nalgorithm = "${algorithm}"\nkey_file = "${file}"\n`;
  }
  store = await DkimKeyStore.load(parseConfigText(toml, 'test.toml', { hostname: 'mx.example.org' }));
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A spool writer that keeps what it is given. */
class MemoryWriter implements SignableWriter {
  readonly qid = 'Q1';
  readonly chunks: Buffer[] = [];
  committed: { envelope: Envelope; prefix: Buffer | undefined } | null = null;
  aborted = false;

  get size(): number {
    return this.chunks.reduce((n, c) => n + c.length, 0);
  }

  write(chunk: Buffer): Promise<void> {
    this.chunks.push(chunk);
    return Promise.resolve();
  }

  commit(envelope: Envelope, prefix?: Buffer): Promise<void> {
    this.committed = { envelope, prefix };
    return Promise.resolve();
  }

  abort(): void {
    this.aborted = true;
  }

  /** The stored message as readers get it: the prefix first. */
  stored(): Buffer {
    return Buffer.concat([this.committed?.prefix ?? Buffer.alloc(0), ...this.chunks]);
  }
}

const ENVELOPE: Envelope = {
  sender: 'a@example.org',
  mailParams: {},
  recipients: [{ address: 'b@example.net', params: {} }],
  client: { ip: '127.0.0.1', port: 1, helo: 'c' },
  listener: 'submission',
  receivedAt: 0,
};

function signing(
  o: Partial<{ signTrustedNetworks: boolean; signOwnMail: boolean; maxHeaderBytes: number }> = {},
): DkimSigning {
  return new DkimSigning(
    store,
    { signTrustedNetworks: true, signOwnMail: true, maxHeaderBytes: 64 * 1024, ...o },
    silentLogger(),
  );
}

async function verify(message: Buffer): Promise<string[]> {
  const res = await dkimVerify(message, {
    resolver: (name: string) => {
      const r = records.get(name);
      if (r === undefined)
        return Promise.reject(Object.assign(new Error('no record'), { code: 'ENOTFOUND' }));
      return Promise.resolve([[r]]);
    },
  });
  return res.results.map((r) => `${r.status.result} ${r.signingDomain ?? ''} ${r.selector ?? ''}`);
}

async function feed(w: SignableWriter, message: Buffer, chunk = 7): Promise<void> {
  for (let at = 0; at < message.length; at += chunk) await w.write(message.subarray(at, at + chunk));
}

const MSG = Buffer.from(
  'Received: from x by y; Sat, 5 Dec 2026 07:00:00 +0000\r\nFrom: A <a@example.org>\r\nTo: b@example.net\r\nSubject: hi\r\n\r\nbody\r\n',
);

test('signs with both keys into the prefix, before the given prefix; the envelope says signed', async () => {
  const inner = new MemoryWriter();
  const w = signing().wrap(inner, 'authenticated');
  await feed(w, MSG);
  await w.commit(ENVELOPE, Buffer.from('Authentication-Results: x; none\r\n'));
  const prefix = inner.committed?.prefix?.toString() ?? '';
  assert.match(
    prefix,
    /^DKIM-Signature: v=1; a=rsa-sha256; c=relaxed\/relaxed; d=example\.org;\r\n h=Subject: To: From:From;/,
  );
  assert.match(prefix, /\r\nDKIM-Signature: v=1; a=ed25519-sha256;/);
  assert.ok(prefix.endsWith('\r\nAuthentication-Results: x; none\r\n'));
  assert.equal(inner.committed?.envelope.dkimSigned, true);
  assert.equal(inner.committed?.envelope.mailParams.body, undefined, '7-bit stays undeclared');
  assert.ok(Buffer.concat(inner.chunks).equals(MSG), 'the message itself is stored unchanged');
  assert.deepEqual(await verify(inner.stored()), ['pass example.org r', 'pass example.org e']);
});

test('t= is read from the clock once: a signature made while the clock moves on still verifies', async () => {
  // mailauth formats the field twice (the signed form, then the emitted one); each reading of
  // Date.now() here is 0.7 s after the last, so two readings never round to the same second.
  const realNow = Date.now;
  let clock = realNow.call(Date);
  Date.now = () => (clock += 700);
  const inner = new MemoryWriter();
  try {
    const w = signing().wrap(inner, 'authenticated');
    await feed(w, MSG);
    await w.commit(ENVELOPE);
  } finally {
    Date.now = realNow;
  }
  assert.deepEqual(await verify(inner.stored()), ['pass example.org r', 'pass example.org e']);
  const t = /\bt=(\d+);/.exec(inner.committed?.prefix?.toString() ?? '')?.[1];
  assert.ok(t !== undefined && Math.abs(Number(t) - realNow.call(Date) / 1000) < 60, `t=${t ?? ''}`);
});

test('8-bit octets make the signed envelope BODY=8BITMIME', async () => {
  const inner = new MemoryWriter();
  const w = signing().wrap(inner, 'authenticated');
  await feed(w, Buffer.concat([MSG, Buffer.from('Grüße\r\n')]));
  await w.commit(ENVELOPE);
  assert.equal(inner.committed?.envelope.mailParams.body, '8BITMIME');
  assert.deepEqual(await verify(inner.stored()), ['pass example.org r', 'pass example.org e']);
});

test('which origins are signed: trusted networks and own mail by their switches', () => {
  const inner = new MemoryWriter();
  const on = signing();
  const off = signing({ signTrustedNetworks: false, signOwnMail: false });
  assert.notEqual(on.wrap(inner, 'trusted-network'), inner);
  assert.notEqual(on.wrap(inner, 'own-mail'), inner);
  assert.equal(off.wrap(inner, 'trusted-network'), inner);
  assert.equal(off.wrap(inner, 'own-mail'), inner);
  assert.notEqual(off.wrap(inner, 'authenticated'), inner);
  assert.notEqual(off.wrap(inner, 'local-user'), inner);
  assert.equal(on.wrap(inner, null), inner);
});

test('a From without a key, a header section over the limit: committed unsigned', async () => {
  const other = new MemoryWriter();
  const w1 = signing().wrap(other, 'authenticated');
  await feed(w1, Buffer.from(MSG.toString().replace('a@example.org', 'a@elsewhere.test')));
  await w1.commit(ENVELOPE);
  assert.equal(other.committed?.prefix, undefined);
  assert.equal(other.committed?.envelope.dkimSigned, undefined);

  const big = new MemoryWriter();
  const w2 = signing({ maxHeaderBytes: 16 * 1024 }).wrap(big, 'authenticated');
  const long = `X-Long: ${'y'.repeat(20 * 1024)}\r\n`;
  await feed(w2, Buffer.concat([Buffer.from(long), MSG]), 4096);
  await w2.commit(ENVELOPE);
  assert.equal(big.committed?.prefix, undefined);
  assert.equal(big.size, long.length + MSG.length, 'stored in full');
});

test('a message that is all header section is signed as having an empty body', async () => {
  const inner = new MemoryWriter();
  const w = signing().wrap(inner, 'authenticated');
  await feed(w, Buffer.from('From: a@example.org\r\nSubject: no body\r\n'));
  await w.commit(ENVELOPE);
  // bh= of the empty body (RFC 6376 3.4.4 relaxed: no body at all), sha256 of nothing.
  const prefix = inner.committed?.prefix?.toString() ?? '';
  assert.equal(
    [...prefix.matchAll(/bh=47DEQpj8HBSa\+\/TImW\+5JCeuQeRkm5NMpJWZG3hSuFU=;/g)].length,
    2,
    prefix,
  );
  // mailauth's verifier skips a message without an empty line (as its signer does); with one
  // added, which canonicalizes to the same empty body, it verifies. (dkimpy verifies it as is.)
  assert.deepEqual(await verify(Buffer.concat([inner.stored(), Buffer.from('\r\n')])), [
    'pass example.org r',
    'pass example.org e',
  ]);
});

test('abort releases the spool writer', async () => {
  const inner = new MemoryWriter();
  const w = signing().wrap(inner, 'authenticated');
  await feed(w, MSG.subarray(0, 30));
  w.abort();
  assert.equal(inner.aborted, true);
});

test('a 16 MiB body is hashed as it streams: the event loop keeps turning', async () => {
  const inner = new MemoryWriter();
  const w = signing().wrap(inner, 'authenticated');
  let longest = 0;
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    longest = Math.max(longest, now - last);
    last = now;
  }, 5);
  const line = Buffer.from(`${'x'.repeat(76)}\r\n`);
  const chunk = Buffer.concat(Array.from({ length: (64 * 1024) / line.length }, () => line));
  await w.write(MSG);
  for (let i = 0; i < 256; i++) {
    await w.write(chunk);
    await new Promise((r) => setImmediate(r)); // as a socket's next read would come
  }
  await w.commit(ENVELOPE);
  clearInterval(timer);
  inner.chunks.length = 0; // only the prefix matters below
  assert.match(inner.committed?.prefix?.toString() ?? '', /^DKIM-Signature: /);
  assert.ok(longest < 250, `the longest pause of the event loop was ${Math.round(longest)} ms`);
});
