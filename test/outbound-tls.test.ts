/**
 * Outbound SMTP to MX hosts with STARTTLS, per-domain TLS policy, 8BITMIME and SMTPUTF8, end to
 * end on loopback: a DNS server of the test's own on 127.0.0.1 whose MX records name hosts on
 * 127.0.0.2 – 127.0.0.5, receiving SMTP servers (sinks) on those addresses, all on one port
 * ([outbound] port is one value). Covers RFC 3207 (STARTTLS, then EHLO again, nothing sent in
 * clear before the handshake), `[outbound] tls_policy` ("required": defer rather than send in
 * clear; "required-verify" with `tls_ca_file`: the certificate must chain to that CA and name
 * the MX host), opportunistic TLS without verification, RFC 6152 (BODY=8BITMIME, 8-bit octets
 * byte for byte) and RFC 6531 (SMTPUTF8 passed on; a peer without it fails the recipient with
 * 5.6.7 and a bounce, RFC 3464). Trust: test code only.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { waitForBounce } from './helpers/dsn-parser.js';
import { generateSelfSigned } from '../src/server/tls.js';
import { renderOutcome } from '../src/message/outcome.js';
import { maildirMessages } from './helpers/maildir.js';
import { liveStates, sendMessage, TEST_OUTBOUND_TIMEOUTS, waitFor, waitGone } from './helpers/outbound.js';
import { startOutboundFixture, type OutboundFixture } from './helpers/outbound-fixture.js';
import type { SinkSession, SmtpSink } from './helpers/smtp-sink.js';
import type { TestServer } from './helpers/server.js';

let dir: string;
let f: OutboundFixture<'trusted' | 'untrusted' | 'wrongName' | 'plain'>;
/** 127.0.0.2: STARTTLS with a certificate for mx.verify.test (the CA of tls_ca_file); 8BITMIME, SMTPUTF8. */
let trusted: SmtpSink;
/** 127.0.0.3: STARTTLS with a self-signed certificate for mx.untrusted.test, not in tls_ca_file. */
let untrusted: SmtpSink;
/** 127.0.0.4: STARTTLS with the trusted certificate (mx.verify.test), reached as mx.wrongname.test. */
let wrongName: SmtpSink;
/** 127.0.0.5: no STARTTLS; 8BITMIME but no SMTPUTF8. */
let plain: SmtpSink;
let server: TestServer;

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'sterna-outbound-tls-'));
  const notBefore = new Date(Date.now() - 60_000);
  const [certVerify, certUntrusted] = await Promise.all([
    generateSelfSigned('mx.verify.test', notBefore),
    generateSelfSigned('mx.untrusted.test', notBefore),
  ]);
  const caFile = path.join(dir, 'mx-ca.pem');
  await writeFile(caFile, certVerify.cert);
  f = await startOutboundFixture({
    zone: {
      // Opportunistic (the default): STARTTLS, no verification.
      'tls.test': { MX: [{ preference: 10, exchange: 'mx.tls.test' }] },
      'mx.tls.test': { A: ['127.0.0.2'] },
      // Opportunistic to a certificate that neither chains to a known CA nor names the host.
      'opportunistic-bad.test': { MX: [{ preference: 10, exchange: 'mx.opportunistic-bad.test' }] },
      'mx.opportunistic-bad.test': { A: ['127.0.0.3'] },
      // tls_policy "required", MX without STARTTLS.
      'cleartext.test': { MX: [{ preference: 10, exchange: 'mx.cleartext.test' }] },
      'mx.cleartext.test': { A: ['127.0.0.5'] },
      // The same, with the policy key and the recipient's domain in mixed case.
      'mixed-case.test': { MX: [{ preference: 10, exchange: 'mx.cleartext.test' }] },
      // tls_policy "required-verify": good certificate, untrusted certificate, wrong host name.
      'verify.test': { MX: [{ preference: 10, exchange: 'mx.verify.test' }] },
      'mx.verify.test': { A: ['127.0.0.2'] },
      'untrusted.test': { MX: [{ preference: 10, exchange: 'mx.untrusted.test' }] },
      'mx.untrusted.test': { A: ['127.0.0.3'] },
      'wrongname.test': { MX: [{ preference: 10, exchange: 'mx.wrongname.test' }] },
      'mx.wrongname.test': { A: ['127.0.0.4'] },
      // 8BITMIME and SMTPUTF8 offered.
      'remote-8bit.test': { MX: [{ preference: 10, exchange: 'mx.verify.test' }] },
      'remote-utf8.test': { MX: [{ preference: 10, exchange: 'mx.verify.test' }] },
      // SMTPUTF8 not offered.
      'ascii-only.test': { MX: [{ preference: 10, exchange: 'mx.cleartext.test' }] },
      // Keeps a message live (deferred) so that a failed recipient's state can be read back.
      'servfail.test': { rcode: 'SERVFAIL' },
    },
    sinks: {
      trusted: { host: '127.0.0.2', tls: certVerify, ehlo: ['8BITMIME', 'SMTPUTF8'] },
      untrusted: { host: '127.0.0.3', tls: certUntrusted },
      wrongName: { host: '127.0.0.4', tls: certVerify },
      plain: { host: '127.0.0.5', ehlo: ['8BITMIME'] },
    },
    users: [{ address: 'dora@sterna.test', password: 'pw-dora-1' }],
    outbound: { ...TEST_OUTBOUND_TIMEOUTS, connection_reuse_limit: 1, tls_ca_file: caFile },
    queue: { first_retry_ms: 600000 },
    tables: `[outbound.tls_policy]
"cleartext.test" = "required"
"Mixed-Case.TEST" = "required"
"verify.test" = "required-verify"
"untrusted.test" = "required-verify"
"wrongname.test" = "required-verify"
`,
  });
  server = f.server;
  ({ trusted, untrusted, wrongName, plain } = f.sinks);
});

after(async () => {
  await f.close();
  await rm(dir, { recursive: true, force: true });
});

const BODY = 'From: alice@sterna.test\r\nSubject: over TLS\r\n\r\nSealed in transit.\r\n';

/** Sends a message (BODY unless given) through the smtp listener (a trusted network); returns its queue id. */
function send(from: string, to: string[], body: string | Buffer = BODY, mailParams = ''): Promise<string> {
  return sendMessage(server.ports.smtp, { from, to, body, mailParams });
}

/** Waits for the first recipient of `qid` to be deferred and returns its last error. */
async function deferredError(qid: string): Promise<string> {
  await waitFor(`message ${qid} to be deferred`, () => liveStates(server, qid)?.[0]?.status === 'deferred');
  const s = liveStates(server, qid)?.[0];
  assert.ok(s?.status === 'deferred');
  assert.equal(s.attempts, 1);
  return renderOutcome(s.outcome);
}

/** The client lines of the sessions a sink had since `from` (a session count). */
function clientLines(sessions: readonly SinkSession[], from: number): string[] {
  return sessions
    .slice(from)
    .flatMap((s) => s.transcript.filter((l) => l.startsWith('C: ')).map((l) => l.slice(3)));
}

function verbs(lines: readonly string[]): string[] {
  return lines.map((l) => l.split(/[\s:]/, 1)[0]?.toUpperCase() ?? '');
}

/** A body as the sink received it: Sterna's Received header, then exactly the octets sent. */
function assertRelayed(received: Buffer | undefined, sent: Buffer): void {
  assert.ok(received !== undefined, 'the sink received the message');
  assert.ok(received.length > sent.length);
  assert.ok(received.subarray(received.length - sent.length).equals(sent), 'the body arrives byte for byte');
  const added = received.subarray(0, received.length - sent.length).toString('latin1');
  assert.match(added, /^Received: from client\.test \(.*\)\r\n(?:[ \t].*\r\n)*$/);
  assert.match(added, /by mx\.sterna\.test/);
}

/**
 * The message went over one TLS session of `sink` (started after session `from`): STARTTLS, EHLO
 * again, the transaction, nothing sent in clear after the 220 to STARTTLS, the body byte for byte.
 */
function assertDeliveredOverTls(sink: SmtpSink, from: number, rcpt: string, note = ''): void {
  const sessions = sink.sessions.slice(from);
  assert.equal(sessions.length, 1, note);
  assert.equal(sessions[0]?.tls, true);
  assert.equal(sessions[0]?.injectedBytes, 0);
  assert.deepEqual(verbs(clientLines(sessions, 0)).slice(0, 6), [
    'EHLO',
    'STARTTLS',
    'EHLO',
    'MAIL',
    'RCPT',
    'DATA',
  ]);
  const got = sessions[0]?.messages ?? [];
  assert.equal(got.length, 1);
  assert.deepEqual(got[0]?.rcptTo, [rcpt]);
  assertRelayed(got[0]?.body, Buffer.from(BODY));
}

/**
 * The recipient was deferred with `454 4.7.5 TLS handshake with <peer> failed: …` and nothing
 * but EHLO and STARTTLS reached `sink` (no second try in clear). Returns the part after the prefix.
 */
async function assertHandshakeRefused(
  sink: SmtpSink,
  from: number,
  qid: string,
  peer: string,
): Promise<string> {
  const error = await deferredError(qid);
  const prefix = `454 4.7.5 The certificate of ${peer}:${sink.port} failed verification: `;
  assert.equal(error.slice(0, prefix.length), prefix, error);
  const sessions = sink.sessions.slice(from);
  assert.equal(sessions.length, 1, 'no second try in clear');
  assert.deepEqual(verbs(clientLines(sessions, 0)), ['EHLO', 'STARTTLS']);
  assert.equal(sessions[0]?.messages.length, 0);
  const suffix = '; nothing sent (no AUTH, no mail)';
  assert.ok(error.endsWith(suffix), error);
  return error.slice(prefix.length, -suffix.length);
}

/** The recipient was deferred with 454 4.7.4 (no STARTTLS offered) and no MAIL went to `plain`. */
async function assertNotSentInClear(from: number, qid: string): Promise<void> {
  const error = await deferredError(qid);
  assert.equal(
    error,
    `454 4.7.4 TLS is required for mx.cleartext.test[127.0.0.5]:${plain.port}, but it does not offer STARTTLS; not sent in clear`,
  );
  const sessions = plain.sessions.slice(from);
  assert.equal(sessions.length, 1);
  assert.equal(sessions[0]?.tls, false);
  const seen = verbs(clientLines(sessions, 0));
  assert.equal(seen[0], 'EHLO');
  assert.equal(seen.includes('MAIL'), false);
  assert.equal(seen.includes('RCPT'), false);
  assert.equal(seen.includes('DATA'), false);
  assert.equal(sessions[0]?.messages.length, 0);
}

test('RFC 3207: opportunistic STARTTLS to an MX, EHLO again over TLS, the message byte for byte', async () => {
  const from = trusted.sessions.length;
  const qid = await send('alice@sterna.test', ['bob@tls.test']);
  await waitGone(server, qid);
  const sessions = trusted.sessions.slice(from);
  assert.equal(sessions.length, 1);
  const s = sessions[0];
  assert.ok(s !== undefined);
  assert.equal(s.tls, true);
  assert.equal(s.injectedBytes, 0, 'nothing was sent between the 220 to STARTTLS and the handshake');
  assert.equal(s.remoteAddress, '127.0.0.1');
  const lines = clientLines(sessions, 0);
  assert.deepEqual(lines.slice(0, 6), [
    'EHLO mx.sterna.test',
    'STARTTLS',
    'EHLO mx.sterna.test',
    'MAIL FROM:<alice@sterna.test>',
    'RCPT TO:<bob@tls.test>',
    'DATA',
  ]);
  assert.ok(s.transcript.includes('S: 220 2.0.0 Ready to start TLS'));
  assert.equal(s.messages.length, 1);
  assert.equal(s.messages[0]?.mailFrom, 'alice@sterna.test');
  assert.deepEqual(s.messages[0]?.rcptTo, ['bob@tls.test']);
  assertRelayed(s.messages[0]?.body, Buffer.from(BODY));
  assert.equal(server.app.spool.size, 0);
});

test('opportunistic TLS does not verify: an untrusted certificate for another name still gets the mail, encrypted', async () => {
  const from = untrusted.sessions.length;
  const qid = await send('alice@sterna.test', ['carol@opportunistic-bad.test']);
  await waitGone(server, qid);
  assertDeliveredOverTls(
    untrusted,
    from,
    'carol@opportunistic-bad.test',
    'one session: the handshake was not retried in clear',
  );
});

test('tls_policy "required": an MX without STARTTLS defers the recipient with 454 4.7.4; no MAIL in clear', async () => {
  const from = plain.sessions.length;
  await assertNotSentInClear(from, await send('alice@sterna.test', ['dan@cleartext.test']));
});

test('tls_policy: domain names match case-insensitively, in the key and in the recipient', async () => {
  const from = plain.sessions.length;
  await assertNotSentInClear(from, await send('alice@sterna.test', ['ivan@mIXED-case.Test']));
});

test('tls_policy "required-verify" with tls_ca_file: a certificate for the MX name signed by that CA gets the mail', async () => {
  const from = trusted.sessions.length;
  const qid = await send('alice@sterna.test', ['erin@verify.test']);
  await waitGone(server, qid);
  assertDeliveredOverTls(trusted, from, 'erin@verify.test');
});

test('tls_policy "required-verify": a certificate not signed by tls_ca_file defers with 454 4.7.5; no MAIL', async () => {
  const from = untrusted.sessions.length;
  const qid = await send('alice@sterna.test', ['frank@untrusted.test']);
  const reason = await assertHandshakeRefused(untrusted, from, qid, 'mx.untrusted.test[127.0.0.3]');
  assert.match(reason, /self[- ]signed certificate/);
});

test('tls_policy "required-verify": a trusted certificate for another host name defers with 454 4.7.5; no MAIL', async () => {
  const from = wrongName.sessions.length;
  const qid = await send('alice@sterna.test', ['gina@wrongname.test']);
  const reason = await assertHandshakeRefused(wrongName, from, qid, 'mx.wrongname.test[127.0.0.4]');
  assert.match(reason, /mx\.wrongname\.test/);
  assert.match(reason, /altnames/);
});

test('RFC 6152: BODY=8BITMIME is passed on to an MX that offers 8BITMIME, 8-bit octets byte for byte', async () => {
  const body = Buffer.concat([
    Buffer.from('From: alice@sterna.test\r\nSubject: eight bits\r\nMIME-Version: 1.0\r\n'),
    Buffer.from('Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n'),
    Buffer.from('Grüße aus Köln.\r\n', 'utf8'),
    Buffer.from([0x4c, 0x61, 0x74, 0x69, 0x6e, 0x2d, 0x31, 0x3a, 0x20, 0xe9, 0xe8, 0xff, 0x0d, 0x0a]),
  ]);
  const from = trusted.sessions.length;
  const qid = await send('alice@sterna.test', ['hans@remote-8bit.test'], body, ' BODY=8BITMIME');
  await waitGone(server, qid);
  const sessions = trusted.sessions.slice(from);
  assert.equal(sessions.length, 1);
  const lines = clientLines(sessions, 0);
  assert.deepEqual(
    lines.filter((l) => l.startsWith('MAIL ')),
    ['MAIL FROM:<alice@sterna.test> BODY=8BITMIME'],
  );
  const got = sessions[0]?.messages ?? [];
  assert.equal(got.length, 1);
  assert.deepEqual(got[0]?.rcptTo, ['hans@remote-8bit.test']);
  assertRelayed(got[0]?.body, body);
});

const UTF8_BODY = Buffer.from(
  'From: Jörg Müller <alice@sterna.test>\r\nTo: jörg@remote-utf8.test\r\nSubject: Grüße\r\n' +
    'MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHallo Jörg.\r\n',
  'utf8',
);

test('RFC 6531: an SMTPUTF8 message goes to an MX that offers SMTPUTF8 with SMTPUTF8 on MAIL, byte for byte', async () => {
  const from = trusted.sessions.length;
  const qid = await send(
    'alice@sterna.test',
    ['jörg@remote-utf8.test'],
    UTF8_BODY,
    ' BODY=8BITMIME SMTPUTF8',
  );
  await waitGone(server, qid);
  const sessions = trusted.sessions.slice(from);
  assert.equal(sessions.length, 1);
  const lines = clientLines(sessions, 0);
  assert.deepEqual(
    lines.filter((l) => l.startsWith('MAIL ') || l.startsWith('RCPT ')),
    ['MAIL FROM:<alice@sterna.test> BODY=8BITMIME SMTPUTF8', 'RCPT TO:<jörg@remote-utf8.test>'],
  );
  const got = sessions[0]?.messages ?? [];
  assert.equal(got.length, 1);
  assert.deepEqual(got[0]?.rcptTo, ['jörg@remote-utf8.test']);
  assertRelayed(got[0]?.body, UTF8_BODY);
});

test('RFC 6531 3.5: an MX without SMTPUTF8 fails the recipient with 553 5.6.7 and bounces it; no MAIL', async () => {
  const before = (await maildirMessages(server.dataDir, 'sterna.test', 'dora')).length;
  const from = plain.sessions.length;
  const qid = await send(
    'dora@sterna.test',
    ['jörg@ascii-only.test', 'keep@servfail.test'],
    UTF8_BODY,
    ' BODY=8BITMIME SMTPUTF8',
  );
  const expected = `553 5.6.7 mx.cleartext.test[127.0.0.5]:${plain.port} does not support SMTPUTF8, which this message needs (RFC 6531 3.5)`;
  await waitFor('the failure', () => liveStates(server, qid)?.[0]?.status === 'failed');
  const st = liveStates(server, qid);
  assert.ok(st?.[0]?.status === 'failed');
  assert.equal(renderOutcome(st[0].outcome), expected);
  assert.equal(st[1]?.status, 'deferred', 'the other recipient is unaffected');

  const sessions = plain.sessions.slice(from);
  assert.equal(sessions.length, 1);
  const seen = verbs(clientLines(sessions, 0));
  assert.equal(seen[0], 'EHLO');
  assert.equal(seen.includes('MAIL'), false);
  assert.equal(seen.includes('RCPT'), false);
  assert.equal(sessions[0]?.messages.length, 0);

  const dsn = await waitForBounce(server.dataDir, { domain: 'sterna.test', local: 'dora' }, before, qid);
  // RFC 6533 3: a bounce of an SMTPUTF8 message is a global DSN.
  assert.equal(dsn.reportType, 'global-delivery-status');
  assert.equal(dsn.statusType, 'message/global-delivery-status');
  assert.equal(dsn.recipients.length, 1, 'only the failed recipient is reported');
  const r = dsn.recipients[0];
  assert.equal(r?.['final-recipient'], 'utf-8; jörg@ascii-only.test');
  assert.equal(r?.['action'], 'failed');
  assert.equal(r?.['status'], '5.6.7');
  assert.equal(r?.['remote-mta'], 'dns; mx.cleartext.test');
  assert.equal(r?.['diagnostic-code'], `smtp; ${expected}`);
});
