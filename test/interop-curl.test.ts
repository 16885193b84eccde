/**
 * Interop with curl's SMTP client (Debian package "curl"): submission with STARTTLS and AUTH
 * (RFC 6409, 3207, 4954, 4616), submissions with implicit TLS (RFC 8314), plain ESMTP on the smtp
 * port (RFC 5321), and dot-stuffing (RFC 5321 4.5.2): lines that start with "." arrive as sent.
 * Every delivered message is compared byte for byte after the trace headers Sterna prepends
 * (RFC 5321 4.4, RFC 3848 "with" names).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  aliceToBob,
  assertQueuedAndDelivered,
  composeMessage,
  useInteropServer,
  type ClientDelivery,
} from './helpers/interop.js';
import { assertRunOk, describeRun, runTool, type ToolRun } from './helpers/tools.js';

const HELO = 'client.curl.test';
const PASSWORD = 'curl: horse battery';
const fx = useInteropServer('curl', { tmpPrefix: 'sterna-curl-', alicePassword: PASSWORD });
const { tool } = fx;
/** Messages bob has received so far: each test waits for one more. */
let bobCount = 0;

const message = (subject: string, body: string[]): Buffer =>
  aliceToBob(HELO, 'Mon, 2 Mar 2026 11:00:00 +0000', subject, body);

/**
 * Sends `msg` with curl (-v, so the server's replies are on stderr). The self-signed test
 * certificate is not verified (-k).
 */
async function curl(url: string, from: string, msg: Buffer, extra: string[]): Promise<ToolRun> {
  const file = await fx.env.messageFile(msg);
  return runTool('curl', [
    '--silent',
    '--show-error',
    '--verbose',
    '--insecure',
    '--max-time',
    '15',
    '--url',
    url,
    '--mail-from',
    from,
    '--mail-rcpt',
    'bob@sterna.test',
    '--upload-file',
    file,
    ...extra,
  ]);
}

const authAlice = ['--user', `alice@sterna.test:${PASSWORD}`, '--login-options', 'AUTH=PLAIN'];

/**
 * Sends `msg` to bob from `from` (also the expected Return-Path) with curl, which must succeed;
 * runs `checks` on its transcript, then expects bob's next message to be `msg` with `protocol`.
 */
async function sendToBob(
  url: string,
  from: string,
  msg: Buffer,
  extra: string[],
  protocol: ClientDelivery['protocol'],
  checks: (run: ToolRun) => void = () => undefined,
): Promise<void> {
  const run = await curl(url, from, msg, extra);
  assertRunOk(run);
  checks(run);
  bobCount++;
  await assertQueuedAndDelivered(fx.env, run, {
    transcript: run.stderr,
    count: bobCount,
    sender: from,
    recipient: 'bob@sterna.test',
    helo: HELO,
    protocol,
    message: msg,
  });
}

test(
  'RFC 6409 + 3207 + 4954: curl submits with STARTTLS and AUTH PLAIN; bob gets it byte for byte, with ESMTPSA',
  tool,
  async () => {
    const msg = message('curl starttls', ['Hello Bob,', '', 'sent by curl after STARTTLS and AUTH PLAIN.']);
    const url = `smtp://127.0.0.1:${fx.env.ports.submission}/${HELO}`;
    await sendToBob(url, 'alice@sterna.test', msg, ['--ssl-reqd', ...authAlice], 'ESMTPSA', (run) => {
      assert.match(run.stderr, /^> STARTTLS\r?$/m, describeRun(run));
      assert.match(run.stderr, /^< 235 2\.7\.0 /m, describeRun(run));
    });
  },
);

test(
  'RFC 8314: curl submits over implicit TLS (smtps://) with AUTH PLAIN; delivered with ESMTPSA',
  tool,
  async () => {
    const msg = message('curl implicit tls', ['Implicit TLS from the first byte.', 'Second line.']);
    const url = `smtps://127.0.0.1:${fx.env.ports.submissions}/${HELO}`;
    await sendToBob(url, 'alice@sterna.test', msg, authAlice, 'ESMTPSA');
  },
);

test(
  'RFC 5321: curl sends plain ESMTP to the smtp port without AUTH; delivered with ESMTP',
  tool,
  async () => {
    const msg = composeMessage({
      from: 'Carol <carol@example.org>',
      to: 'bob@sterna.test',
      subject: 'curl plain smtp',
      date: 'Mon, 2 Mar 2026 11:05:00 +0000',
      messageId: '<curl-plain@client.curl.test>',
      body: ['No TLS, no AUTH: an ordinary inbound message.'],
    });
    const url = `smtp://127.0.0.1:${fx.env.ports.smtp}/${HELO}`;
    await sendToBob(url, 'carol@example.org', msg, [], 'ESMTP', (run) => {
      assert.doesNotMatch(run.stderr, /^> STARTTLS/m, describeRun(run));
    });
  },
);

test(
  'RFC 5321 4.5.2: lines starting with "." that curl dot-stuffs arrive unstuffed, exactly as written',
  tool,
  async () => {
    const msg = message('curl leading dots', [
      '.a line that starts with a dot',
      '..two dots',
      '.',
      'the line above is a lone dot, which must not end the message',
      '...',
      ' . a space first, not stuffed',
      '.',
    ]);
    const url = `smtp://127.0.0.1:${fx.env.ports.submission}/${HELO}`;
    await sendToBob(url, 'alice@sterna.test', msg, ['--ssl-reqd', ...authAlice], 'ESMTPSA');
  },
);
