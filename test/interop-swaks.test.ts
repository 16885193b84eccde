/**
 * Interop with swaks (Debian package "swaks"), a real SMTP client: submission with STARTTLS and
 * AUTH (RFC 6409, 3207, 4954, 4616), submissions with implicit TLS (RFC 8314), plain ESMTP on the
 * smtp port (RFC 5321), and a wrong password refused with 535 5.7.8 (RFC 4954 6). Every delivered
 * message is compared byte for byte after the trace headers Sterna prepends (RFC 5321 4.4,
 * RFC 3848 "with" names).
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
import { waitForMessages } from './helpers/maildir.js';
import { assertRunOk, describeRun, queueIdIn, runTool, type ToolRun } from './helpers/tools.js';

const HELO = 'client.swaks.test';
const PASSWORD = 'swaks horse battery';
const fx = useInteropServer('swaks', { tmpPrefix: 'sterna-swaks-', alicePassword: PASSWORD });
const { tool } = fx;
/** Messages bob has received so far: each test waits for one more. */
let bobCount = 0;

const message = (subject: string, body: string[]): Buffer =>
  aliceToBob(HELO, 'Mon, 2 Mar 2026 10:00:00 +0000', subject, body);

/**
 * Runs swaks with `msg` as the DATA portion. swaks treats its data as lines without a final line
 * break (it appends CRLF "." CRLF itself), so the file holds the message minus its last CRLF.
 */
async function swaks(port: number, msg: Buffer, extra: string[]): Promise<ToolRun> {
  assert.ok(msg.subarray(-2).equals(Buffer.from('\r\n')), 'test messages end with CRLF');
  const file = await fx.env.messageFile(msg.subarray(0, -2));
  return runTool('swaks', [
    '--server',
    '127.0.0.1',
    '--port',
    String(port),
    '--ehlo',
    HELO,
    '--to',
    'bob@sterna.test',
    '--data',
    `@${file}`,
    '--timeout',
    '15',
    ...extra,
  ]);
}

const authAlice = (password: string): string[] => [
  '--from',
  'alice@sterna.test',
  '--auth',
  'PLAIN',
  '--auth-user',
  'alice@sterna.test',
  '--auth-password',
  password,
];

/**
 * Sends `msg` to bob with swaks, which must succeed; runs `checks` on its transcript, then expects
 * bob's next message to be `msg` from `sender` with `protocol`.
 */
async function sendToBob(
  port: number,
  msg: Buffer,
  extra: string[],
  sender: string,
  protocol: ClientDelivery['protocol'],
  checks: (run: ToolRun) => void = () => undefined,
): Promise<void> {
  const run = await swaks(port, msg, extra);
  assertRunOk(run);
  checks(run);
  bobCount++;
  await assertQueuedAndDelivered(fx.env, run, {
    transcript: run.stdout,
    count: bobCount,
    sender,
    recipient: 'bob@sterna.test',
    helo: HELO,
    protocol,
    message: msg,
  });
}

test(
  'RFC 6409 + 3207 + 4954: swaks submits with STARTTLS and AUTH PLAIN; bob gets it byte for byte, with ESMTPSA',
  tool,
  async () => {
    const msg = message('swaks starttls', [
      'Hello Bob,',
      '',
      'sent with STARTTLS and AUTH PLAIN.',
      '-- ',
      'Alice',
    ]);
    const extra = ['--tls', ...authAlice(PASSWORD)];
    await sendToBob(fx.env.ports.submission, msg, extra, 'alice@sterna.test', 'ESMTPSA', (run) => {
      assert.match(run.stdout, /^<~ {2}235 2\.7\.0 /m, describeRun(run));
    });
  },
);

test(
  'RFC 8314: swaks submits over implicit TLS (submissions) with AUTH PLAIN; delivered with ESMTPSA',
  tool,
  async () => {
    const msg = message('swaks implicit tls', ['Implicit TLS from the first byte.', 'Second line.']);
    const extra = ['--tls-on-connect', ...authAlice(PASSWORD)];
    await sendToBob(fx.env.ports.submissions, msg, extra, 'alice@sterna.test', 'ESMTPSA');
  },
);

test(
  'RFC 5321: swaks sends plain ESMTP to the smtp port without AUTH; delivered with ESMTP',
  tool,
  async () => {
    const msg = composeMessage({
      from: 'Carol <carol@example.org>',
      to: 'bob@sterna.test',
      subject: 'swaks plain smtp',
      date: 'Mon, 2 Mar 2026 10:05:00 +0000',
      messageId: '<swaks-plain@client.swaks.test>',
      body: ['No TLS, no AUTH: an ordinary inbound message.'],
    });
    const extra = ['--from', 'carol@example.org'];
    await sendToBob(fx.env.ports.smtp, msg, extra, 'carol@example.org', 'ESMTP');
  },
);

test('RFC 4954 6: swaks with a wrong password gets 535 5.7.8 and nothing is delivered', tool, async () => {
  const msg = message('swaks wrong password', ['This must not arrive.']);
  const run = await swaks(fx.env.ports.submission, msg, ['--tls', ...authAlice('not the password')]);
  assert.notEqual(run.code, 0, describeRun(run));
  assert.ok(!run.timedOut, describeRun(run));
  assert.match(run.stdout, /^<~\* 535 5\.7\.8 /m, describeRun(run));
  assert.equal(queueIdIn(run.stdout), undefined, describeRun(run));
  const msgs = await waitForMessages(fx.env.server.dataDir, 'sterna.test', 'bob', bobCount + 1, 300);
  assert.equal(msgs.length, bobCount, 'no message was delivered');
});
