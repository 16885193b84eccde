/**
 * Interop with curl's SMTP client (Debian package "curl"): submission with STARTTLS and AUTH
 * (RFC 6409, 3207, 4954, 4616), submissions with implicit TLS (RFC 8314), plain ESMTP on the smtp
 * port (RFC 5321), and dot-stuffing (RFC 5321 4.5.2): lines that start with "." arrive as sent.
 * Every delivered message is compared byte for byte after the trace headers Sterna prepends
 * (RFC 5321 4.4, RFC 3848 "with" names).
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

const tool = requireTool('curl');
const HELO = 'client.curl.test';
const PASSWORD = 'curl: horse battery';

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
  tmp = await makeTempDir('sterna-curl-');
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
    'Date: Mon, 2 Mar 2026 11:00:00 +0000',
    `Message-ID: <${subject.replace(/[^A-Za-z0-9]/g, '-')}@client.curl.test>`,
    '',
    ...body,
  ]);
}

/**
 * Sends `msg` with curl (-v, so the server's replies are on stderr). The self-signed test
 * certificate is not verified (-k).
 */
async function curl(url: string, from: string, msg: Buffer, extra: string[]): Promise<ToolRun> {
  files++;
  const file = await writeTempFile(tmp.dir, `msg-${files}.eml`, msg);
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
  'RFC 6409 + 3207 + 4954: curl submits with STARTTLS and AUTH PLAIN; bob gets it byte for byte, with ESMTPSA',
  tool,
  async () => {
    const msg = message('curl starttls', ['Hello Bob,', '', 'sent by curl after STARTTLS and AUTH PLAIN.']);
    const run = await curl(`smtp://127.0.0.1:${server.ports.submission}/${HELO}`, 'alice@sterna.test', msg, [
      '--ssl-reqd',
      ...authAlice,
    ]);
    assertRunOk(run);
    assert.match(run.stderr, /^> STARTTLS\r?$/m, describeRun(run));
    assert.match(run.stderr, /^< 235 2\.7\.0 /m, describeRun(run));
    const qid = queueIdIn(run.stderr);
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
  'RFC 8314: curl submits over implicit TLS (smtps://) with AUTH PLAIN; delivered with ESMTPSA',
  tool,
  async () => {
    const msg = message('curl implicit tls', ['Implicit TLS from the first byte.', 'Second line.']);
    const run = await curl(
      `smtps://127.0.0.1:${server.ports.submissions}/${HELO}`,
      'alice@sterna.test',
      msg,
      authAlice,
    );
    assertRunOk(run);
    const qid = queueIdIn(run.stderr);
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
  'RFC 5321: curl sends plain ESMTP to the smtp port without AUTH; delivered with ESMTP',
  tool,
  async () => {
    const msg = crlfMessage([
      'From: Carol <carol@example.org>',
      'To: bob@sterna.test',
      'Subject: curl plain smtp',
      'Date: Mon, 2 Mar 2026 11:05:00 +0000',
      'Message-ID: <curl-plain@client.curl.test>',
      '',
      'No TLS, no AUTH: an ordinary inbound message.',
    ]);
    const run = await curl(`smtp://127.0.0.1:${server.ports.smtp}/${HELO}`, 'carol@example.org', msg, []);
    assertRunOk(run);
    assert.doesNotMatch(run.stderr, /^> STARTTLS/m, describeRun(run));
    const qid = queueIdIn(run.stderr);
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
    const run = await curl(`smtp://127.0.0.1:${server.ports.submission}/${HELO}`, 'alice@sterna.test', msg, [
      '--ssl-reqd',
      ...authAlice,
    ]);
    assertRunOk(run);
    const qid = queueIdIn(run.stderr);
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
