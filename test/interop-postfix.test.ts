/**
 * Interop with Debian's Postfix on loopback, both ways (RFC 5321): Sterna delivers into a private
 * Postfix through a bracketed relay in its transport table (Postfix keeps the mail in a virtual
 * Maildir), and Postfix relays to Sterna through its relayhost (Sterna keeps it in its Maildir).
 * The message arrives byte for byte after the trace headers each hop adds; Postfix stores a
 * mailbox file with LF line ends, so that side is compared with CRLF turned into LF.
 * Skipped loudly without Postfix or root; fails under CI=true.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { pollUntil } from './helpers/interop.js';
import { freePort, requirePostfix, startPostfix, type PostfixInstance } from './helpers/postfix.js';
import { waitForMessages } from './helpers/maildir.js';
import { TestClient } from './helpers/smtp-client.js';
import { startTestServer, type TestServer } from './helpers/server.js';

const need = requirePostfix();

let pf: PostfixInstance | undefined;
let server: TestServer | undefined;

before(async () => {
  if (need.skip !== false) return;
  const pfPort = await freePort();
  server = await startTestServer({
    users: [{ address: 'dora@sterna.test', password: 'pw-dora-1' }],
    toml: `[relay]
trusted_networks = ["127.0.0.1/32"]
[outbound]
connect_timeout_ms = 5000
greeting_timeout_ms = 10000
command_timeout_ms = 10000
data_end_timeout_ms = 10000
[queue]
first_retry_ms = 1000
jitter = 0
[transport]
"pf.test" = { relay = "[127.0.0.1]:${pfPort}" }
`,
  });
  pf = await startPostfix({
    virtualDomain: 'pf.test',
    mailboxes: ['bob'],
    relayhost: `[127.0.0.1]:${server.ports.smtp}`,
    port: pfPort,
  });
});

after(async () => {
  await server?.stop({ remove: true });
  await pf?.stop();
});

/** A message with every header Postfix would otherwise add, a dot-stuffed line and 8-bit-free text. */
function message(to: string, tag: string): string {
  return [
    'From: Alice <alice@sterna.test>',
    `To: <${to}>`,
    `Subject: interop ${tag}`,
    'Date: Sun, 29 Nov 2026 12:00:00 +0000',
    `Message-ID: <${tag}.interop@sterna.test>`,
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=us-ascii',
    '',
    `Hello across the ${tag} hop.`,
    '.a line that starts with a dot',
    '..two dots',
    'trailing spaces   ',
    '\tleading tab',
    '',
    'last line',
    '',
  ].join('\r\n');
}

/** Sends one message over SMTP to 127.0.0.1:port; returns the final reply text. */
async function sendTo(port: number, to: string, body: string): Promise<string> {
  const c = await TestClient.connect(port);
  await c.expect(220);
  assert.equal((await c.cmd('EHLO client.test')).code, 250);
  const mail = await c.cmd('MAIL FROM:<alice@sterna.test>');
  assert.equal(mail.code, 250, mail.text);
  const rcpt = await c.cmd(`RCPT TO:<${to}>`);
  assert.equal(rcpt.code, 250, rcpt.text);
  assert.equal((await c.cmd('DATA')).code, 354);
  c.send(`${body.replace(/^\./gm, '..')}.\r\n`);
  const done = await c.expect(250);
  await c.cmd('QUIT');
  c.close();
  return done.text;
}

/**
 * What the hops added before the message: asserts that the delivered file, read as latin1 text,
 * ends with `expected` byte for byte, and returns the text before it.
 */
function addedBefore(delivered: Buffer | undefined, expected: string): string {
  const text = delivered?.toString('latin1') ?? '';
  assert.ok(text.endsWith(expected), `byte for byte after the trace headers:\n${text}`);
  return text.slice(0, text.length - expected.length);
}

/** Only trace and delivery headers before the message: Return-Path, Received, Delivered-To. */
const TRACE_ONLY = /^(?:(?:Return-Path|Received|Delivered-To|X-Original-To):[^\n]*\n(?:[ \t][^\n]*\n)*)*$/;

test(
  'interop: Sterna delivers into Postfix through a bracketed relay; the body arrives byte for byte',
  { skip: need.skip },
  async () => {
    assert.ok(server !== undefined && pf !== undefined);
    const body = message('bob@pf.test', 'sterna-to-postfix');
    await sendTo(server.ports.smtp, 'bob@pf.test', body);
    const postfix = pf; // a const keeps the narrowing inside the closure below
    const got = await pollUntil(
      () => postfix.maildir('bob'),
      (files) => files.length > 0,
      20_000,
    );
    assert.equal(got.length, 1, `Postfix's Maildir got the message; maillog:\n${await pf.log()}`);
    // Postfix writes mailbox files with LF line ends.
    const added = addedBefore(got[0], body.replace(/\r\n/g, '\n'));
    assert.match(added, TRACE_ONLY);
    assert.match(added, /^Delivered-To: bob@pf\.test\n/m);
    assert.match(added, /by pf-mx\.pf\.test \(Postfix\)/);
    assert.match(added, /by mx\.sterna\.test/);
  },
);

test(
  'interop: Postfix relays to Sterna through its relayhost; the body arrives byte for byte',
  { skip: need.skip },
  async () => {
    assert.ok(server !== undefined && pf !== undefined);
    const body = message('dora@sterna.test', 'postfix-to-sterna');
    const queued = await sendTo(pf.port, 'dora@sterna.test', body);
    assert.match(queued, /queued as/);
    await pf.flush();
    const got = await waitForMessages(server.dataDir, 'sterna.test', 'dora', 1, 20_000);
    assert.equal(got.length, 1, `Sterna's Maildir got the message; Postfix maillog:\n${await pf.log()}`);
    const added = addedBefore(got[0], body).replace(/\r\n/g, '\n');
    assert.match(added, TRACE_ONLY);
    assert.match(added, /by pf-mx\.pf\.test \(Postfix\)/);
    assert.match(added, /from pf-mx\.pf\.test/);
  },
);
