/**
 * Interop with swaks (Debian package "swaks"), a real SMTP client: submission with STARTTLS and
 * AUTH (RFC 6409, 3207, 4954, 4616), submissions with implicit TLS (RFC 8314), plain ESMTP on the
 * smtp port (RFC 5321), and a wrong password refused with 535 5.7.8 (RFC 4954 6). Every delivered
 * message is compared byte for byte after the trace headers Sterna prepends (RFC 5321 4.4,
 * RFC 3848 "with" names).
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { waitForMessages } from './helpers/maildir.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import {
  assertDelivered,
  assertRunOk,
  crlfMessage,
  describeRun,
  makeTempDir,
  queueIdIn,
  requireTool,
  runTool,
  writeTempFile,
  type ToolRun,
} from './helpers/tools.js';

const tool = requireTool('swaks');
const HELO = 'client.swaks.test';
const PASSWORD = 'swaks horse battery';

let server: TestServer;
let tmp: { dir: string; cleanup(): Promise<void> };
/** Messages bob has received so far: each test waits for one more. */
let bobCount = 0;
let files = 0;

before(async () => {
  if (tool.skip !== false) return;
  server = await startTestServer({
    users: [
      { address: 'alice@sterna.test', password: PASSWORD },
      { address: 'bob@sterna.test', password: 'bob password' },
    ],
  });
  tmp = await makeTempDir('sterna-swaks-');
});

after(async () => {
  if (tool.skip !== false) return;
  await server.stop({ remove: true });
  await tmp.cleanup();
});

/** A message with its own Date and Message-ID, so submission adds nothing to it. */
function message(subject: string, body: string[]): Buffer {
  return crlfMessage([
    'From: Alice <alice@sterna.test>',
    'To: Bob <bob@sterna.test>',
    `Subject: ${subject}`,
    'Date: Mon, 2 Mar 2026 10:00:00 +0000',
    `Message-ID: <${subject.replace(/[^A-Za-z0-9]/g, '-')}@client.swaks.test>`,
    '',
    ...body,
  ]);
}

/**
 * Runs swaks with `msg` as the DATA portion. swaks treats its data as lines without a final line
 * break (it appends CRLF "." CRLF itself), so the file holds the message minus its last CRLF.
 */
async function swaks(port: number, msg: Buffer, extra: string[]): Promise<ToolRun> {
  assert.ok(msg.subarray(-2).equals(Buffer.from('\r\n')), 'test messages end with CRLF');
  files++;
  const file = await writeTempFile(tmp.dir, `msg-${files}.eml`, msg.subarray(0, -2));
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

async function nextBobMessage(run: ToolRun): Promise<Buffer | undefined> {
  bobCount++;
  const msgs = await waitForMessages(server.dataDir, 'sterna.test', 'bob', bobCount);
  assert.equal(
    msgs.length,
    bobCount,
    `bob's Maildir should hold ${bobCount} message(s)\n${describeRun(run)}`,
  );
  return msgs[bobCount - 1];
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
    const run = await swaks(server.ports.submission, msg, ['--tls', ...authAlice(PASSWORD)]);
    assertRunOk(run);
    assert.match(run.stdout, /^<~ {2}235 2\.7\.0 /m, describeRun(run));
    const qid = queueIdIn(run.stdout);
    assert.ok(qid !== undefined, describeRun(run));
    assertDelivered(await nextBobMessage(run), {
      sender: 'alice@sterna.test',
      recipient: 'bob@sterna.test',
      helo: HELO,
      protocol: 'ESMTPSA',
      message: msg,
      qid,
    });
  },
);

test(
  'RFC 8314: swaks submits over implicit TLS (submissions) with AUTH PLAIN; delivered with ESMTPSA',
  tool,
  async () => {
    const msg = message('swaks implicit tls', ['Implicit TLS from the first byte.', 'Second line.']);
    const run = await swaks(server.ports.submissions, msg, ['--tls-on-connect', ...authAlice(PASSWORD)]);
    assertRunOk(run);
    const qid = queueIdIn(run.stdout);
    assert.ok(qid !== undefined, describeRun(run));
    assertDelivered(await nextBobMessage(run), {
      sender: 'alice@sterna.test',
      recipient: 'bob@sterna.test',
      helo: HELO,
      protocol: 'ESMTPSA',
      message: msg,
      qid,
    });
  },
);

test(
  'RFC 5321: swaks sends plain ESMTP to the smtp port without AUTH; delivered with ESMTP',
  tool,
  async () => {
    const msg = crlfMessage([
      'From: Carol <carol@example.org>',
      'To: bob@sterna.test',
      'Subject: swaks plain smtp',
      'Date: Mon, 2 Mar 2026 10:05:00 +0000',
      'Message-ID: <swaks-plain@client.swaks.test>',
      '',
      'No TLS, no AUTH: an ordinary inbound message.',
    ]);
    const run = await swaks(server.ports.smtp, msg, ['--from', 'carol@example.org']);
    assertRunOk(run);
    const qid = queueIdIn(run.stdout);
    assert.ok(qid !== undefined, describeRun(run));
    assertDelivered(await nextBobMessage(run), {
      sender: 'carol@example.org',
      recipient: 'bob@sterna.test',
      helo: HELO,
      protocol: 'ESMTP',
      message: msg,
      qid,
    });
  },
);

test('RFC 4954 6: swaks with a wrong password gets 535 5.7.8 and nothing is delivered', tool, async () => {
  const msg = message('swaks wrong password', ['This must not arrive.']);
  const run = await swaks(server.ports.submission, msg, ['--tls', ...authAlice('not the password')]);
  assert.notEqual(run.code, 0, describeRun(run));
  assert.ok(!run.timedOut, describeRun(run));
  assert.match(run.stdout, /^<~\* 535 5\.7\.8 /m, describeRun(run));
  assert.equal(queueIdIn(run.stdout), undefined, describeRun(run));
  const msgs = await waitForMessages(server.dataDir, 'sterna.test', 'bob', bobCount + 1, 300);
  assert.equal(msgs.length, bobCount, 'no message was delivered');
});
