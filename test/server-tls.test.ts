/**
 * TLS on the running server, over real sockets: STARTTLS on smtp and submission (RFC 3207),
 * implicit TLS on submissions (RFC 8314), protocol versions (RFC 8996: TLS 1.0 and 1.1 refused),
 * the STARTTLS command-injection defence (RFC 3207 5, CVE-2011-0411), the Received "with ESMTPS"
 * trace (RFC 3848) and certificate reload.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import type net from 'node:net';
import path from 'node:path';
import { after, before, test } from 'node:test';
import tls from 'node:tls';
import { generateSelfSigned, TEST_CERT_NAME, TEST_KEY_NAME } from '../src/server/tls.js';
import { waitForMessages } from './helpers/maildir.js';
import { TestClient } from './helpers/smtp-client.js';
import { startTestServer, TEST_HOSTNAME, type TestServer } from './helpers/server.js';

let server: TestServer;

before(async () => {
  server = await startTestServer({
    users: [{ address: 'alice@sterna.test', password: 'correct horse' }],
  });
});

after(async () => {
  await server.stop({ remove: true });
});

type Listener = 'smtp' | 'submission' | 'submissions';

interface TlsClientOptions {
  minVersion?: tls.SecureVersion;
  maxVersion?: tls.SecureVersion;
  ciphers?: string;
}

type Handshake = { ok: true; socket: tls.TLSSocket } | { ok: false; error: string };

/** Runs a client handshake over `socket` (or a new connection to `port`); bounded by 3 s. */
function handshake(
  target: { socket: net.Socket } | { port: number },
  opts: TlsClientOptions,
): Promise<Handshake> {
  return new Promise((resolve) => {
    const s = tls.connect({
      ...('socket' in target ? { socket: target.socket } : { host: '127.0.0.1', port: target.port }),
      rejectUnauthorized: false,
      servername: 'localhost',
      ...opts,
    });
    const timer = setTimeout(() => {
      s.destroy();
      resolve({ ok: false, error: 'handshake timed out' });
    }, 3000);
    s.once('secureConnect', () => {
      clearTimeout(timer);
      resolve({ ok: true, socket: s });
    });
    s.once('error', (err: Error) => {
      clearTimeout(timer);
      s.destroy();
      resolve({ ok: false, error: err.message });
    });
    s.once('close', () => {
      clearTimeout(timer);
      resolve({ ok: false, error: 'closed during handshake' });
    });
  });
}

/** Reads from a TLS socket until a complete final reply line arrives (bounded). */
function readReply(s: tls.TLSSocket): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`no reply; got ${JSON.stringify(text)}`));
    }, 3000);
    const onData = (chunk: Buffer): void => {
      text += chunk.toString('latin1');
      if (/(^|\r\n)\d{3} [^\r\n]*\r\n$/.test(text)) {
        cleanup();
        resolve(text);
      }
    };
    const cleanup = (): void => {
      clearTimeout(timer);
      s.off('data', onData);
    };
    s.on('data', onData);
  });
}

/** A plain connection on smtp/submission taken up to the 220 of STARTTLS, the raw socket ready for a handshake. */
async function afterStartTls(port: number): Promise<net.Socket> {
  const c = await TestClient.connect(port);
  await c.expect(220);
  await c.cmd('EHLO client.example');
  await c.cmd('STARTTLS').then((r) => assert.equal(r.code, 220));
  const raw = c.socket;
  raw.removeAllListeners('data');
  raw.removeAllListeners('close');
  return raw;
}

/** Opens a TLS session on a listener with the given client options (STARTTLS or implicit). */
async function tlsSession(listener: Listener, opts: TlsClientOptions): Promise<Handshake> {
  if (listener === 'submissions') return handshake({ port: server.ports.submissions }, opts);
  return handshake({ socket: await afterStartTls(server.ports[listener]) }, opts);
}

/** The client's socket once it runs TLS. */
function tlsOf(c: TestClient): tls.TLSSocket {
  const s = c.socket;
  assert.ok(s instanceof tls.TLSSocket, 'TLS is active');
  return s;
}

function keywords(text: string): string[] {
  return text.split('\n').slice(1);
}

test('RFC 3207: STARTTLS on smtp; after TLS, EHLO no longer offers STARTTLS (and AUTH is not offered on smtp)', async () => {
  const c = await TestClient.connect(server.ports.smtp);
  await c.expect(220);
  const before = await c.cmd('EHLO client.example');
  assert.equal(before.code, 250);
  assert.ok(keywords(before.text).includes('STARTTLS'), before.text);
  const ready = await c.cmd('STARTTLS');
  assert.equal(ready.code, 220);
  assert.equal(ready.enhanced, '2.0.0');
  await c.upgrade();
  const afterTls = await c.cmd('EHLO client.example');
  assert.equal(afterTls.code, 250);
  assert.ok(!keywords(afterTls.text).includes('STARTTLS'), afterTls.text);
  assert.ok(!keywords(afterTls.text).some((k) => k.startsWith('AUTH')), afterTls.text);
  const again = await c.cmd('STARTTLS');
  assert.equal(again.code, 503);
  assert.equal(again.enhanced, '5.5.1');
  await c.cmd('QUIT');
  c.close();
});

test('RFC 3207 + 6409: STARTTLS on submission; AUTH is offered only after TLS, STARTTLS only before', async () => {
  const c = await TestClient.connect(server.ports.submission);
  await c.expect(220);
  const before = await c.cmd('EHLO client.example');
  assert.ok(keywords(before.text).includes('STARTTLS'), before.text);
  assert.ok(!keywords(before.text).some((k) => k.startsWith('AUTH')), before.text);
  await c.cmd('STARTTLS').then((r) => assert.equal(r.code, 220));
  await c.upgrade();
  const afterTls = await c.cmd('EHLO client.example');
  assert.ok(!keywords(afterTls.text).includes('STARTTLS'), afterTls.text);
  assert.ok(keywords(afterTls.text).includes('AUTH PLAIN LOGIN'), afterTls.text);
  c.close();
});

test('RFC 8314: on submissions the greeting arrives over TLS, and EHLO offers AUTH but not STARTTLS', async () => {
  const c = await TestClient.connect(server.ports.submissions, { tls: true });
  const greeting = await c.expect(220);
  assert.equal(greeting.text, `${TEST_HOSTNAME} ESMTP Sterna ready`);
  assert.ok(c.socket instanceof tls.TLSSocket);
  assert.equal(c.socket.encrypted, true);
  const ehlo = await c.cmd('EHLO client.example');
  assert.ok(!keywords(ehlo.text).includes('STARTTLS'), ehlo.text);
  assert.ok(keywords(ehlo.text).includes('AUTH PLAIN LOGIN'), ehlo.text);
  c.close();
});

for (const listener of ['smtp', 'submission', 'submissions'] as const) {
  test(`RFC 8996: a TLS 1.0/1.1-only client cannot complete a handshake on ${listener}`, async () => {
    const r = await tlsSession(listener, {
      ciphers: 'DEFAULT@SECLEVEL=0',
      minVersion: 'TLSv1',
      maxVersion: 'TLSv1.1',
    });
    if (r.ok) r.socket.destroy();
    assert.equal(r.ok, false, 'handshake must fail');
    // The server answers with a protocol_version alert (RFC 8446 6.2, alert 70).
    assert.match(r.ok ? '' : r.error, /alert protocol version/);
  });

  for (const version of ['TLSv1.2', 'TLSv1.3'] as const) {
    test(`${version} is accepted on ${listener}, and the session works over it`, async () => {
      const r = await tlsSession(listener, { minVersion: version, maxVersion: version });
      assert.ok(r.ok, r.ok ? '' : r.error);
      const s = r.socket;
      assert.equal(s.getProtocol(), version);
      if (listener === 'submissions') assert.match(await readReply(s), /^220 /);
      s.write('NOOP\r\n');
      assert.equal(await readReply(s), '250 2.0.0 Ok\r\n');
      s.destroy();
    });
  }
}

test('RFC 3207 5 (CVE-2011-0411): commands pipelined after STARTTLS in the same packet are discarded, not answered after the handshake', async () => {
  for (const port of [server.ports.smtp, server.ports.submission]) {
    const c = await TestClient.connect(port);
    await c.expect(220);
    await c.cmd('EHLO client.example');
    c.send('STARTTLS\r\nRSET\r\n');
    await c.expect(220, '2.0.0');
    await c.upgrade();
    // The first reply over TLS must be the one for NOOP; an answer to the injected RSET
    // ("Ok, transaction reset") would come first if the plaintext command survived.
    const first = await c.cmd('NOOP');
    assert.equal(first.code, 250);
    assert.equal(first.text, '2.0.0 Ok');
    const second = await c.cmd('EHLO client.example');
    assert.equal(second.code, 250);
    assert.equal(second.lines[0], `${TEST_HOSTNAME} Hello client.example [127.0.0.1]`);
    c.close();
  }
});

test('RFC 3207 5: the injected command is not run either (an injected MAIL leaves no transaction open)', async () => {
  const c = await TestClient.connect(server.ports.smtp);
  await c.expect(220);
  await c.cmd('EHLO client.example');
  c.send('STARTTLS\r\nMAIL FROM:<evil@example.org>\r\n');
  await c.expect(220, '2.0.0');
  await c.upgrade();
  await c.cmd('EHLO client.example').then((r) => assert.equal(r.code, 250));
  // No transaction: RCPT is out of sequence.
  const rcpt = await c.cmd('RCPT TO:<alice@sterna.test>');
  assert.equal(rcpt.code, 503);
  assert.equal(rcpt.enhanced, '5.5.1');
  c.close();
});

test('RFC 3848: a message received over STARTTLS is traced "with ESMTPS" and names the TLS version and cipher', async () => {
  const c = await TestClient.connect(server.ports.smtp);
  await c.expect(220);
  await c.cmd('EHLO client.example');
  await c.cmd('STARTTLS');
  await c.upgrade();
  const version = tlsOf(c).getProtocol();
  const cipher = tlsOf(c).getCipher().name;
  await c.cmd('EHLO client.example');
  await c.cmd('MAIL FROM:<bob@example.org>').then((r) => assert.equal(r.code, 250));
  await c.cmd('RCPT TO:<alice@sterna.test>').then((r) => assert.equal(r.code, 250));
  await c.cmd('DATA').then((r) => assert.equal(r.code, 354));
  c.send('Subject: over tls\r\n\r\nsecret\r\n.\r\n');
  const queued = await c.expect(250, '2.0.0');
  const qid = /queued as ([A-Z0-9]+)/.exec(queued.text)?.[1] ?? '';
  await c.cmd('QUIT');
  c.close();
  const msgs = await waitForMessages(server.dataDir, 'sterna.test', 'alice', 1);
  const text = msgs.find((m) => m.toString('latin1').includes(qid))?.toString('latin1') ?? '';
  assert.ok(text.includes(`(Sterna) with ESMTPS id ${qid}\r\n`), text);
  assert.ok(text.includes(`\t(version=${version ?? ''} cipher=${cipher})\r\n`), text);
  assert.ok(text.endsWith('Subject: over tls\r\n\r\nsecret\r\n'), text);
});

test('certificate reload: new connections get the new certificate, an open TLS session keeps working', async () => {
  const first = await handshake({ port: server.ports.submissions }, {});
  assert.ok(first.ok);
  const oldFingerprint = first.socket.getPeerCertificate().fingerprint256;
  first.socket.destroy();

  // A session opened before the reload, kept open across it.
  const open = await TestClient.connect(server.ports.smtp);
  await open.expect(220);
  await open.cmd('EHLO client.example');
  await open.cmd('STARTTLS');
  await open.upgrade();
  assert.equal(tlsOf(open).getPeerCertificate().fingerprint256, oldFingerprint);

  const pems = await generateSelfSigned(TEST_HOSTNAME, new Date());
  const dir = path.join(server.dataDir, 'tls');
  await writeFile(path.join(dir, TEST_KEY_NAME), pems.key, { mode: 0o600 });
  await writeFile(path.join(dir, TEST_CERT_NAME), pems.cert);
  await server.app.reload();
  const expected = new X509Certificate(pems.cert).fingerprint256;
  assert.notEqual(expected, oldFingerprint);

  for (const listener of ['smtp', 'submission', 'submissions'] as const) {
    const r = await tlsSession(listener, {});
    assert.ok(r.ok, r.ok ? '' : r.error);
    assert.equal(r.socket.getPeerCertificate().fingerprint256, expected, listener);
    r.socket.destroy();
  }

  await open.cmd('EHLO client.example').then((r) => assert.equal(r.code, 250));
  await open.cmd('MAIL FROM:<bob@example.org>').then((r) => assert.equal(r.code, 250));
  await open.cmd('RCPT TO:<alice@sterna.test>').then((r) => assert.equal(r.code, 250));
  await open.cmd('DATA').then((r) => assert.equal(r.code, 354));
  open.send('Subject: across reload\r\n\r\nstill here\r\n.\r\n');
  await open.expect(250, '2.0.0');
  assert.equal(tlsOf(open).getPeerCertificate().fingerprint256, oldFingerprint);
  const quit = await open.cmd('QUIT');
  assert.equal(quit.code, 221);
  assert.equal(quit.enhanced, '2.0.0');
  open.close();
});
