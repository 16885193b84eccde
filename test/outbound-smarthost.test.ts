/**
 * Relay hosts (smarthosts) from the `transport` table, end to end on loopback: a relay named by
 * host (A lookup, no MX) with STARTTLS verified against a given CA and AUTH (RFC 4954) whose
 * password comes from a file; a relay with tls = "required" that offers no STARTTLS (deferred,
 * nothing sent in clear, RFC 3207 / RFC 8314 policy); "*" catching a domain without any
 * DNS record while local domains stay local; and a dead relay backed off once for every domain
 * it serves, not once per domain. AUTH credentials only ever go to a relay whose certificate
 * verifies (STARTTLS or implicit TLS), unless the entry opts out with auth_over_unverified_tls,
 * and then every delivery logs a warning.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { generateSelfSigned } from '../src/server/tls.js';
import { renderOutcome } from '../src/message/outcome.js';
import type { TestDnsServer } from './helpers/dns-server.js';
import { capturedLog, startOutboundFixture, type OutboundFixture } from './helpers/outbound-fixture.js';
import { waitForMessages } from './helpers/maildir.js';
import {
  liveStates,
  outboundToml,
  sendMessage,
  TEST_OUTBOUND_TIMEOUTS,
  waitFor,
  waitGone,
} from './helpers/outbound.js';
import type { SmtpSink } from './helpers/smtp-sink.js';
import { startTestServer, type TestServer } from './helpers/server.js';

const PASSWORD = 'relay pass-word 7';

let dir: string;
let dns: TestDnsServer;
/** STARTTLS + AUTH, reached by host name smarthost.test. */
let smart: SmtpSink;
/** No STARTTLS; its destination requires TLS. */
let clear: SmtpSink;
/** The "*" relay. */
let star: SmtpSink;
/** STARTTLS + AUTH with a self-signed certificate that is not in the CA file (an impostor). */
let forged: SmtpSink;
/** Implicit TLS + AUTH with that untrusted certificate. */
let forgedImplicit: SmtpSink;
/** Implicit TLS + AUTH with a certificate from the CA file. */
let implicitGood: SmtpSink;
/** STARTTLS + AUTH, untrusted certificate, reached by an entry that opts out of verification. */
let optOut: SmtpSink;
let server: TestServer;
/** The server's log lines (JSON). */
const captured = capturedLog();
const logLines = captured.lines;
let f: OutboundFixture<'smart' | 'clear' | 'star' | 'forged' | 'forgedImplicit' | 'implicitGood' | 'optOut'>;

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'sterna-smarthost-'));
  const cert = await generateSelfSigned('smarthost.test', new Date(Date.now() - 60_000));
  const smtpsCert = await generateSelfSigned('smtps.smarthost.test', new Date(Date.now() - 60_000));
  const forgedCert = await generateSelfSigned('forged.test', new Date(Date.now() - 60_000));
  const caFile = path.join(dir, 'ca.pem');
  const pwFile = path.join(dir, 'relay-password');
  await writeFile(caFile, `${cert.cert}\n${smtpsCert.cert}\n`);
  await writeFile(pwFile, `${PASSWORD}\n`);
  const auth = { username: 'relay-user', password: PASSWORD };
  const credentials = `auth_user = "relay-user", auth_password_file = "${pwFile}", tls_ca_file = "${caFile}"`;
  f = await startOutboundFixture({
    zone: {
      'smarthost.test': { A: ['127.0.0.2'] },
      'forged.test': { A: ['127.0.0.7'] },
      'smtps.smarthost.test': { A: ['127.0.0.8'] },
    },
    // Relays are named with their own ports in [transport].
    sinks: {
      smart: { host: '127.0.0.2', tls: cert, auth, ownPort: true },
      clear: { host: '127.0.0.3', ownPort: true },
      star: { host: '127.0.0.5', ownPort: true },
      forged: { host: '127.0.0.7', tls: forgedCert, auth, ownPort: true },
      forgedImplicit: { host: '127.0.0.7', tls: forgedCert, implicitTls: true, auth, ownPort: true },
      implicitGood: { host: '127.0.0.8', tls: smtpsCert, implicitTls: true, auth, ownPort: true },
      optOut: { host: '127.0.0.9', tls: forgedCert, auth, ownPort: true },
    },
    log: captured.log,
    users: [{ address: 'dora@sterna.test', password: 'pw-dora-1' }],
    outbound: TEST_OUTBOUND_TIMEOUTS,
    queue: { first_retry_ms: 600000 },
    tables: (p) => `[transport]
"smart.test" = { relay = "smarthost.test:${p.smart.port}", tls = "required-verify", tls_ca_file = "${caFile}", auth_user = "relay-user", auth_password_file = "${pwFile}" }
"cleartext.test" = { relay = "[127.0.0.3]:${p.clear.port}", tls = "required" }
"forged.test" = { relay = "forged.test:${p.forged.port}", tls = "required-verify", ${credentials} }
"forged-smtps.test" = { relay = "forged.test:${p.forgedImplicit.port}", implicit_tls = true, ${credentials} }
"smtps.test" = { relay = "smtps.smarthost.test:${p.implicitGood.port}", implicit_tls = true, ${credentials} }
"optout.test" = { relay = "[127.0.0.9]:${p.optOut.port}", tls = "required", auth_over_unverified_tls = true, ${credentials} }
"*" = { relay = "[127.0.0.5]:${p.star.port}" }
`,
  });
  ({ dns, server } = f);
  ({ smart, clear, star, forged, forgedImplicit, implicitGood, optOut } = f.sinks);
});

after(async () => {
  await f.close();
  await rm(dir, { recursive: true, force: true });
});

const BODY = 'From: alice@sterna.test\r\nSubject: via the smarthost\r\n\r\nRelayed, not sent by MX.\r\n';

/** Sends BODY from alice to `to` through the smtp listener (a trusted network); returns its queue id. */
function send(to: string): Promise<string> {
  return sendMessage(server.ports.smtp, { from: 'alice@sterna.test', to: [to], body: BODY });
}

function assertBody(received: Buffer | undefined): void {
  assert.ok(received !== undefined, 'the relay received the message');
  const text = received.toString('latin1');
  assert.ok(text.endsWith(BODY), 'the body arrives byte for byte');
  assert.match(text.slice(0, text.length - BODY.length), /^Received: from client\.test /);
}

test('transport relay: a smarthost named by host gets the mail over verified STARTTLS with AUTH', async () => {
  const qid = await send('bob@smart.test');
  await waitGone(server, qid);
  const got = smart.messages();
  assert.equal(got.length, 1);
  assert.deepEqual(got[0]?.rcptTo, ['bob@smart.test']);
  assertBody(got[0]?.body);
  const session = smart.sessions.find((s) => s.messages.length > 0);
  assert.equal(session?.tls, true);
  assert.equal(session?.authUser, 'relay-user');
  assert.equal(session?.injectedBytes, 0);
  // The relay host was looked up by address; the recipient domain's MX never was.
  assert.equal(
    dns.queries.some((q) => q.name === 'smart.test'),
    false,
  );
  assert.ok(dns.queries.some((q) => q.name === 'smarthost.test' && q.type === 'A'));
});

test('transport relay: tls = "required" and no STARTTLS offered: deferred, nothing sent in clear', async () => {
  const qid = await send('carol@cleartext.test');
  await waitFor(`message ${qid} to be deferred`, () => liveStates(server, qid)?.[0]?.status === 'deferred');
  const state = liveStates(server, qid)?.[0];
  assert.ok(state?.status === 'deferred');
  assert.match(renderOutcome(state.outcome), /^454 4\.7\.4 /);
  assert.equal(clear.messages().length, 0);
  const verbs = clear.commands().map((l) => l.split(/[\s:]/, 1)[0]?.toUpperCase());
  assert.equal(verbs.includes('MAIL'), false);
  assert.equal(verbs.includes('RCPT'), false);
});

/**
 * The recipient is deferred because `relay`'s certificate failed verification, and the relay saw
 * no AUTH (nor MAIL): the password never left Sterna.
 */
async function assertNoAuthToUnverified(relay: SmtpSink, to: string, peer: string): Promise<void> {
  const qid = await send(to);
  await waitFor(`message ${qid} to be deferred`, () => liveStates(server, qid)?.[0]?.status === 'deferred');
  const state = liveStates(server, qid)?.[0];
  assert.ok(state?.status === 'deferred');
  assert.match(
    renderOutcome(state.outcome),
    new RegExp(
      `^454 4\\.7\\.5 The certificate of ${peer.replace(/[.[\]]/g, '\\$&')}:${relay.port} failed verification: .*self[- ]signed.*; nothing sent \\(no AUTH, no mail\\)$`,
    ),
  );
  const verbs = relay.commands().map((l) => l.split(/[\s:]/, 1)[0]?.toUpperCase());
  assert.equal(verbs.includes('AUTH'), false, 'no AUTH command reached the relay');
  assert.equal(verbs.includes('MAIL'), false);
  assert.ok(relay.sessions.every((x) => x.authUser === null));
  assert.equal(relay.messages().length, 0);
}

test('a relay with credentials and tls = "required-verify": a certificate not in tls_ca_file gets no AUTH; deferred', async () => {
  await assertNoAuthToUnverified(forged, 'ann@forged.test', 'forged.test[127.0.0.7]');
  assert.ok(forged.commands().includes('STARTTLS'));
});

test('an implicit-TLS relay with credentials verifies by default: a certificate not in tls_ca_file gets no AUTH; deferred', async () => {
  await assertNoAuthToUnverified(forgedImplicit, 'ben@forged-smtps.test', 'forged.test[127.0.0.7]');
});

test('an implicit-TLS relay with credentials and a certificate from tls_ca_file gets AUTH and the mail', async () => {
  const qid = await send('cy@smtps.test');
  await waitGone(server, qid);
  const got = implicitGood.messages();
  assert.equal(got.length, 1);
  assertBody(got[0]?.body);
  const session = implicitGood.sessions.find((x) => x.messages.length > 0);
  assert.equal(session?.tls, true);
  assert.equal(session?.authUser, 'relay-user');
});

test('auth_over_unverified_tls = true: the credentials go over unverified TLS, and the delivery logs a warning', async () => {
  const qid = await send('dee@optout.test');
  await waitGone(server, qid);
  assert.equal(optOut.messages().length, 1);
  assert.equal(optOut.sessions.find((x) => x.messages.length > 0)?.authUser, 'relay-user');
  const warning = logLines.find(
    (l) => l['qid'] === qid && l['level'] === 40 && String(l['msg']).includes('auth_over_unverified_tls'),
  );
  assert.ok(warning !== undefined, 'a warning names the opt-out');
  assert.equal(warning['relay'], `[127.0.0.9]:${optOut.port}`);
  assert.equal(
    logLines.some((l) => JSON.stringify(l).includes(PASSWORD)),
    false,
    'the password is never logged',
  );
});

test('transport "*": a domain with no DNS records at all goes to the catch-all relay; local stays local', async () => {
  const qid = await send('eve@nowhere-in-dns.example');
  await waitGone(server, qid);
  const got = star.messages();
  assert.equal(got.length, 1);
  assert.deepEqual(got[0]?.rcptTo, ['eve@nowhere-in-dns.example']);
  assertBody(got[0]?.body);
  assert.equal(
    dns.queries.some((q) => q.name === 'nowhere-in-dns.example'),
    false,
  );

  await send('dora@sterna.test');
  const local = await waitForMessages(server.dataDir, 'sterna.test', 'dora');
  assert.equal(local.length, 1);
  assert.equal(star.messages().length, 1);
});

test('a relay that fails is backed off for every domain it serves: the next domain waits without connecting', async () => {
  // A "relay" on 127.0.0.6 that drops every connection before the greeting.
  let connections = 0;
  const dead = net.createServer((socket) => {
    connections++;
    socket.destroy();
  });
  await new Promise<void>((resolve) => dead.listen(0, '127.0.0.6', resolve));
  const address = dead.address();
  assert.ok(address !== null && typeof address === 'object');
  const local = await startTestServer({
    toml: `${outboundToml({ dnsPort: dns.port, outbound: TEST_OUTBOUND_TIMEOUTS })}[queue]
first_retry_ms = 600000
jitter = 0
[transport]
"*" = { relay = "[127.0.0.6]:${address.port}", tls = "none" }
`,
  });
  try {
    const one = await sendMessage(local.ports.smtp, {
      from: 'alice@sterna.test',
      to: ['a@one.test'],
      body: BODY,
    });
    await waitFor(
      'the first domain to be deferred',
      () => liveStates(local, one)?.[0]?.status === 'deferred',
    );
    assert.equal(connections, 1);
    const first = liveStates(local, one)?.[0];
    assert.ok(first?.status === 'deferred');
    assert.match(renderOutcome(first.outcome), /^451 4\.4\.1 /);

    const two = await sendMessage(local.ports.smtp, {
      from: 'alice@sterna.test',
      to: ['b@two.test'],
      body: BODY,
    });
    await waitFor(
      'the second domain to be deferred',
      () => liveStates(local, two)?.[0]?.status === 'deferred',
    );
    const second = liveStates(local, two)?.[0];
    assert.ok(second?.status === 'deferred');
    assert.equal(connections, 1, 'the backed-off relay was not tried again for another domain');
    assert.equal(
      renderOutcome(second.outcome),
      renderOutcome(first.outcome),
      "the relay's last error stands for the waiting domain",
    );
    assert.equal(second.attempts, 0, 'not tried, so no attempt counted');
    assert.ok(second.nextAttemptAt >= first.nextAttemptAt - 60_000, 'it waits for the back-off to end');
  } finally {
    await local.stop({ remove: true });
    await new Promise((resolve) => dead.close(resolve));
  }
});
