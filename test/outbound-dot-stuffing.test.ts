/**
 * The DATA dot-stuffer on the way out (RFC 5321 4.5.2, the SMTP-smuggling family
 * CVE-2023-51764/51765/51766), end to end on loopback: a message relayed with DATA to a peer
 * that does not offer CHUNKING (the sink on 127.0.0.2, found by MX through the test's DNS) must
 * reach it as exactly one message whose lines are the ones we hold, whatever octets the spool
 * has: a smuggling attempt sent by BDAT and accepted in normalize mode, and a body with bare CR
 * and LF around "." lines written straight into the spool (as a message queued by an older
 * version could be). On the wire: CRLF endings only, and CRLF "." CRLF only at the very end.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startDnsServer, type TestDnsServer } from './helpers/dns-server.js';
import { outboundToml, TEST_OUTBOUND_TIMEOUTS, waitFor, waitGone } from './helpers/outbound.js';
import { TestClient } from './helpers/smtp-client.js';
import { startSmtpSink, type SinkMessage, type SmtpSink } from './helpers/smtp-sink.js';
import { startTestServer, type TestServer } from './helpers/server.js';

let dns: TestDnsServer;
let sink: SmtpSink;
let server: TestServer;

before(async () => {
  dns = await startDnsServer({
    'peer.test': { MX: [{ preference: 10, exchange: 'mx.peer.test' }] },
    'mx.peer.test': { A: ['127.0.0.2'] },
  });
  // No EHLO keywords: no CHUNKING (and no PIPELINING), so the body goes by DATA.
  sink = await startSmtpSink({ host: '127.0.0.2', ehlo: [] });
  server = await startTestServer({
    toml: `${outboundToml({ dnsPort: dns.port, outbound: { port: sink.port, ...TEST_OUTBOUND_TIMEOUTS } })}[smtp]
bare_line_endings = "normalize"
`,
  });
});

after(async () => {
  await server.stop({ remove: true });
  await Promise.all([sink.close(), dns.close()]);
});

/** Waits for message `qid` to leave the spool, then returns the one message the sink got for `rcpt`. */
async function relayed(qid: string, rcpt: string): Promise<SinkMessage> {
  await waitGone(server, qid);
  await waitFor(`the sink to hold a message for ${rcpt}`, () =>
    sink.messages().some((m) => m.rcptTo.includes(rcpt)),
  );
  const got = sink.messages().filter((m) => m.rcptTo.includes(rcpt));
  assert.equal(got.length, 1, 'exactly one message at the peer');
  return got[0]!;
}

/** The wire is safe for any receiver: CRLF endings only, and no end of data before the real one. */
function assertSafeWire(m: SinkMessage): void {
  assert.equal(m.via, 'DATA');
  const wire = m.raw.toString('latin1');
  assert.doesNotMatch(wire, /\r(?!\n)|(?<!\r)\n/, 'a bare CR or LF went out');
  assert.equal(wire.indexOf('\r\n.\r\n'), wire.length - 5, 'an end of data before the end');
}

/** The body the peer decoded, without the Received header Sterna prepends on this hop. */
function afterTrace(m: SinkMessage): string {
  const text = m.body.toString('latin1');
  const trace = /^Received: (?:[^\r\n]*\r\n\t)*[^\r\n]*\r\n/.exec(text);
  assert.ok(trace !== null, text);
  return text.slice(trace[0].length);
}

test('a BDAT smuggling attempt accepted in normalize mode is relayed with DATA as one message, byte for byte', async () => {
  const body =
    'Subject: smuggled\r\n\r\nhello\n.\nMAIL FROM:<evil@x>\r\nRCPT TO:<victim@peer.test>\r\nDATA\r\n' +
    'x\r.\rQUIT\r\n..dots\r\n.\r\n';
  const c = await TestClient.connect(server.ports.smtp);
  await c.expect(220);
  await c.cmd('EHLO client.test').then((r) => assert.equal(r.code, 250));
  await c.cmd('MAIL FROM:<sender@example.org>').then((r) => assert.equal(r.code, 250));
  await c.cmd('RCPT TO:<rcpt@peer.test>').then((r) => assert.equal(r.code, 250));
  c.send(`BDAT ${body.length} LAST\r\n${body}`);
  const queued = await c.expect(250, '2.0.0');
  await c.cmd('QUIT');
  c.close();
  const qid = /queued as (\S+)/.exec(queued.text)?.[1];
  assert.ok(qid !== undefined, queued.text);
  const m = await relayed(qid, 'rcpt@peer.test');
  assertSafeWire(m);
  assert.equal(
    afterTrace(m),
    'Subject: smuggled\r\n\r\nhello\r\n.\r\nMAIL FROM:<evil@x>\r\nRCPT TO:<victim@peer.test>\r\nDATA\r\n' +
      'x\r\n.\r\nQUIT\r\n..dots\r\n.\r\n',
  );
  assert.equal(sink.messages().filter((x) => x.rcptTo.includes('victim@peer.test')).length, 0);
});

test('bare CR and LF around "." lines in the spool go out as CRLF lines, the dots stuffed: one message at the peer', async () => {
  // Written straight into the spool: what a message queued before BDAT had the body rules holds.
  const body =
    'Subject: old\r\n\r\nhello\r.\r\nMAIL FROM:<evil@x>\r\nRCPT TO:<victim@peer.test>\r\na\n.\nb\r.\rend';
  const writer = server.app.spool.begin();
  await writer.write(Buffer.from(body, 'latin1'));
  await writer.commit({
    sender: 'sender@example.org',
    mailParams: {},
    recipients: [{ address: 'old@peer.test', params: {} }],
    client: { ip: '127.0.0.1', port: 25, helo: 'old.example' },
    listener: 'smtp',
    receivedAt: Date.now(),
  });
  const m = await relayed(writer.qid, 'old@peer.test');
  assertSafeWire(m);
  assert.equal(
    m.body.toString('latin1'),
    'Subject: old\r\n\r\nhello\r\n.\r\nMAIL FROM:<evil@x>\r\nRCPT TO:<victim@peer.test>\r\na\r\n.\r\nb\r\n.\r\nend\r\n',
  );
  assert.equal(sink.messages().filter((x) => x.rcptTo.includes('victim@peer.test')).length, 0);
});
