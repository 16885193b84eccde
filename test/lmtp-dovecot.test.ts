/**
 * LMTP delivery (RFC 2033) to a real Dovecot (dovecot-lmtpd and dovecot-imapd, a private
 * instance from test/helpers/dovecot.ts): a domain routed with transport "lmtp:unix:PATH" gets
 * its mail over LMTP, and the message is read back over IMAP (curl) byte for byte; a recipient
 * Dovecot does not know gets its 5xx from LMTP, which bounces to the sender with that status; a
 * stopped Dovecot defers the message (4.x), which is delivered once Dovecot is back. With
 * recipient verification (the default, `[lmtp] verify_recipients`), RCPT asks Dovecot's LMTP
 * first: an unknown mailbox is refused in the dialogue (550 5.1.1), nothing is queued, and a
 * stopped Dovecot gives 450 4.4.3 (or acceptance, with verify_unavailable = "accept").
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { waitForBounce } from './helpers/dsn-parser.js';
import { requireDovecot, startDovecot, waitImap, type DovecotInstance } from './helpers/dovecot.js';
import { maildirMessages } from './helpers/maildir.js';
import { liveStates, queueCommand, sendMessage, waitFor, waitGone } from './helpers/outbound.js';
import { freePort } from './helpers/process.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { assertReply, TestClient } from './helpers/smtp-client.js';
import { requireTool } from './helpers/tools.js';

const ANN = { name: 'ann@lmtp.test', password: 'ann imap pass' };
const CAT = { name: 'cat@lmtp.test', password: 'cat imap pass' };
const SENDER = { domain: 'sterna.test', local: 'bob' };

const skip = requireDovecot().skip !== false || requireTool('curl').skip !== false;

let dv: DovecotInstance;
let imapPort: number;
/** Verification off: unknown recipients are accepted and bounce (the LMTP server decides). */
let server: TestServer;
/** The defaults: recipients verified over LMTP at RCPT. */
let verifying: TestServer;

before(async () => {
  if (skip) return;
  imapPort = await freePort();
  dv = await startDovecot({ users: [ANN, CAT], mailboxes: { imapPort } });
  server = await startTestServer({
    users: [{ address: 'bob@sterna.test', password: 'bob pass' }],
    toml: `[transport]
"lmtp.test" = "lmtp:unix:${dv.lmtpSocket}"
[lmtp]
verify_recipients = false
[queue]
first_retry_ms = 300
max_backoff_ms = 600
`,
  });
  verifying = await startTestServer({
    toml: `[transport]
"lmtp.test" = "lmtp:unix:${dv.lmtpSocket}"
`,
  });
});

after(async () => {
  await server?.stop({ remove: true });
  await verifying?.stop({ remove: true });
  await dv?.cleanup();
});

function message(subject: string): string {
  return (
    `From: <bob@sterna.test>\r\nTo: <ann@lmtp.test>\r\nSubject: ${subject}\r\n` +
    `Message-ID: <${subject.replace(/\W/g, '')}@sterna.test>\r\n\r\n` +
    `Hello over LMTP.\r\n.leading dot, and 8-bit-free bytes\r\nLast line\r\n`
  );
}

/**
 * Dovecot adds Return-Path (Delivered-To too, for a single recipient) and its Received; below
 * them is Sterna's Received (naming the queue id), and below that the message as the client sent
 * it, byte for byte.
 */
function assertDelivered(fetched: Buffer, sent: string, qid: string): void {
  const text = fetched.toString('latin1');
  assert.ok(text.endsWith(sent), `the IMAP copy ends with the sent message:\n${text}`);
  const prefix = text.slice(0, text.length - sent.length);
  const folded = '(?:[ \\t][^\\r]*\\r\\n)*';
  const shape = new RegExp(
    `^Return-Path: <bob@sterna\\.test>\\r\\n(?:Delivered-To: [^\\r]*\\r\\n)?` +
      `Received: from mx\\.sterna\\.test\\r\\n${folded}` +
      `Received: from client\\.test [^\\r]*\\r\\n${folded}$`,
  );
  assert.match(prefix, shape);
  assert.ok(prefix.includes(`(Sterna) with ESMTP id ${qid}`), `Sterna's Received names ${qid}:\n${prefix}`);
}

test(
  'a message for a domain routed to LMTP lands in Dovecot and reads back over IMAP byte for byte',
  { skip },
  async () => {
    // Two recipients in one LMTP transaction: one reply each after the final "." (RFC 2033 4.2).
    const sent = message('first over lmtp');
    const qid = await sendMessage(server.ports.smtp, {
      from: 'bob@sterna.test',
      to: [ANN.name, CAT.name],
      body: sent,
    });
    await waitGone(server, qid);
    assertDelivered(await waitImap(imapPort, ANN, 1), sent, qid);
    assertDelivered(await waitImap(imapPort, CAT, 1), sent, qid);
  },
);

test(
  'a recipient Dovecot does not know: its 550 5.1.1 from LMTP bounces to the sender',
  { skip },
  async () => {
    const before = (await maildirMessages(server.dataDir, SENDER.domain, SENDER.local)).length;
    const qid = await sendMessage(server.ports.smtp, {
      from: 'bob@sterna.test',
      to: ['nobody@lmtp.test'],
      body: message('to nobody'),
    });
    const dsn = await waitForBounce(server.dataDir, SENDER, before, qid);
    assert.equal(dsn.recipients.length, 1);
    const r = dsn.recipients[0] ?? {};
    assert.equal(r['final-recipient'], 'rfc822; nobody@lmtp.test');
    assert.equal(r['action'], 'failed');
    assert.equal(r['status'], '5.1.1');
    assert.match(r['diagnostic-code'] ?? '', /^smtp; 550 5\.1\.1 /);
  },
);

/** RCPT replies for `rcpts` in one transaction on `port` (then RSET, QUIT). */
async function rcptReplies(port: number, rcpts: readonly string[]): Promise<[number, string | undefined][]> {
  const c = await TestClient.connect(port);
  try {
    await c.expect(220);
    assertReply(await c.cmd('EHLO client.test'), 250);
    assertReply(await c.cmd('MAIL FROM:<someone@elsewhere.test>'), 250, '2.1.0');
    const out: [number, string | undefined][] = [];
    for (const rcpt of rcpts) {
      const r = await c.cmd(`RCPT TO:<${rcpt}>`);
      out.push([r.code, r.enhanced]);
    }
    await c.cmd('RSET');
    await c.cmd('QUIT');
    return out;
  } finally {
    c.close();
  }
}

test(
  'recipient verification: RCPT for a mailbox Dovecot does not know is refused with 550 5.1.1, a known one accepted',
  { skip },
  async () => {
    assert.deepEqual(await rcptReplies(verifying.ports.smtp, ['nobody@lmtp.test', ANN.name]), [
      [550, '5.1.1'],
      [250, '2.1.5'],
    ]);
    // Refused in the dialogue: the message is taken only for the known mailbox, and no bounce follows.
    const qid = await sendMessage(verifying.ports.smtp, {
      from: 'bob@sterna.test',
      to: [CAT.name],
      body: message('verified recipient'),
    });
    await waitGone(verifying, qid, 10_000);
  },
);

test('a stopped Dovecot defers (4.x); the message is delivered once Dovecot is back', { skip }, async () => {
  await dv.stop();
  const sent = message('while dovecot was down');
  const qid = await sendMessage(server.ports.smtp, { from: 'bob@sterna.test', to: [ANN.name], body: sent });
  await waitFor(`${qid} deferred`, () => liveStates(server, qid)?.[0]?.status === 'deferred');
  const state = liveStates(server, qid)?.[0];
  assert.ok(state?.status === 'deferred');
  // No socket to connect to: the next hop is unreachable, 451 4.4.1, retried.
  assert.equal(state.outcome.code, 451, JSON.stringify(state.outcome));
  assert.equal(state.outcome.enhanced, '4.4.1');
  assert.equal(state.outcome.reason, 'connection-failed');
  assert.ok(state.outcome.text.includes(`unix:${dv.lmtpSocket}`), state.outcome.text);
  await dv.start();
  const flushed = await queueCommand(server.config, 'flush');
  assert.equal(flushed.code, 0, flushed.err);
  await waitGone(server, qid, 10_000);
  assertDelivered(await waitImap(imapPort, ANN, 2), sent, qid);
});

test(
  'recipient verification with Dovecot stopped: 450 4.4.3 for an address not verified before, 250 for one verified lately',
  { skip },
  async () => {
    // ann was verified by the test above (remembered for verify_positive_ms); zed never was.
    await dv.stop();
    try {
      assert.deepEqual(await rcptReplies(verifying.ports.smtp, ['zed@lmtp.test', ANN.name]), [
        [450, '4.4.3'],
        [250, '2.1.5'],
      ]);
    } finally {
      await dv.start();
    }
    // Dovecot back: the unknown address is asked again (a failure to ask is not remembered).
    assert.deepEqual(await rcptReplies(verifying.ports.smtp, ['zed@lmtp.test']), [[550, '5.1.1']]);
  },
);

test('recipient verification with verify_unavailable = "accept": an LMTP server that cannot be asked does not refuse', async () => {
  const s = await startTestServer({
    toml: `[transport]
"lmtp.test" = "lmtp:unix:/nonexistent/sterna-test/lmtp"
[lmtp]
verify_unavailable = "accept"
`,
  });
  try {
    assert.deepEqual(await rcptReplies(s.ports.smtp, ['anyone@lmtp.test']), [[250, '2.1.5']]);
  } finally {
    await s.stop({ remove: true });
  }
});
