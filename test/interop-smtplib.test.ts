/**
 * Interop with Python's smtplib (Debian package "python3"): submission with STARTTLS and AUTH
 * LOGIN (RFC 6409, 3207, 4954), submissions with implicit TLS and AUTH PLAIN (RFC 8314, 4616),
 * plain ESMTP on the smtp port (RFC 5321), and an 8-bit UTF-8 body with BODY=8BITMIME (RFC 6152)
 * from an SMTPUTF8 sender and to a mailbox with a non-ASCII local part (RFC 6531). Every delivered
 * message is compared byte for byte after the trace headers Sterna prepends (RFC 5321 4.4,
 * RFC 3848 and RFC 6531 4.3 "with" names).
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { maildirPathFor } from '../src/delivery/local/maildir.js';
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

const tool = requireTool('python3');
const HELO = 'client.python.test';
const PASSWORD = 'python horse battery';

/**
 * The client, as a Python script reading one JSON job on stdin. smtplib logs every reply to
 * stderr (debuglevel 1), which is where the test finds "queued as ID". The self-signed test
 * certificate is not verified. The message file's bytes go to sendmail() unchanged: smtplib only
 * dot-stuffs them (a str would be re-encoded and have its line endings rewritten).
 */
const CLIENT_PY = `
import json, smtplib, ssl, sys

# smtplib's debug lines show non-ASCII text as is: write them as UTF-8 whatever the locale.
sys.stderr.reconfigure(encoding="utf-8", errors="backslashreplace")
job = json.load(sys.stdin)
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
with open(job["file"], "rb") as f:
    data = f.read()

if job["mode"] == "implicit":
    s = smtplib.SMTP_SSL("127.0.0.1", job["port"], local_hostname=job["helo"], timeout=15, context=ctx)
else:
    s = smtplib.SMTP("127.0.0.1", job["port"], local_hostname=job["helo"], timeout=15)
s.set_debuglevel(1)
s.ehlo()
if job["mode"] == "starttls":
    s.starttls(context=ctx)
    s.ehlo()
if job.get("auth") == "LOGIN":
    s.user, s.password = job["user"], job["password"]
    s.auth("LOGIN", s.auth_login)
elif job.get("auth") == "PLAIN":
    s.user, s.password = job["user"], job["password"]
    s.auth("PLAIN", s.auth_plain)
refused = s.sendmail(job["from"], job["to"], data, mail_options=job.get("mail_options", []))
s.quit()
print(json.dumps({"refused": refused}))
`;

let server: TestServer;
let tmp: { dir: string; cleanup(): Promise<void> };
let script: string;
let files = 0;

before(async () => {
  if (tool.skip !== false) return;
  server = await startTestServer({
    users: [
      { address: 'alice@sterna.test', password: PASSWORD },
      { address: 'bob@sterna.test', password: 'bob password' },
      { address: 'jörg@sterna.test', password: 'jörg password' },
    ],
  });
  tmp = await makeTempDir('sterna-smtplib-');
  script = await writeTempFile(tmp.dir, 'client.py', CLIENT_PY);
});

after(async () => {
  if (tool.skip !== false) return;
  await server.stop({ remove: true });
  await tmp.cleanup();
});

interface Job {
  mode: 'starttls' | 'implicit' | 'plain';
  port: number;
  from: string;
  to: string[];
  auth?: 'LOGIN' | 'PLAIN';
  mailOptions?: string[];
}

async function smtplib(job: Job, msg: Buffer): Promise<ToolRun> {
  files++;
  const file = await writeTempFile(tmp.dir, `msg-${files}.eml`, msg);
  const input = JSON.stringify({
    mode: job.mode,
    port: job.port,
    helo: HELO,
    from: job.from,
    to: job.to,
    file,
    ...(job.auth !== undefined ? { auth: job.auth, user: 'alice@sterna.test', password: PASSWORD } : {}),
    mail_options: job.mailOptions ?? [],
  });
  // -I: isolated mode, so no PYTHON* variable or user site-packages changes what runs.
  return runTool('python3', ['-I', script], { input });
}

/** A message with its own Date and Message-ID, so submission adds nothing to it. */
function message(subject: string, body: string[]): Buffer {
  return crlfMessage([
    'From: Alice <alice@sterna.test>',
    'To: Bob <bob@sterna.test>',
    `Subject: ${subject}`,
    'Date: Mon, 2 Mar 2026 12:00:00 +0000',
    `Message-ID: <${subject.replace(/[^A-Za-z0-9]/g, '-')}@client.python.test>`,
    '',
    ...body,
  ]);
}

/** Waits for the `count`-th message in a local mailbox of sterna.test and returns it. */
async function nthMessage(local: string, count: number, run: ToolRun): Promise<Buffer | undefined> {
  const dirName = path.basename(maildirPathFor('/', { local, domain: 'sterna.test' }));
  const msgs = await waitForMessages(server.dataDir, 'sterna.test', dirName, count);
  assert.equal(msgs.length, count, `${local}'s Maildir should hold ${count} message(s)\n${describeRun(run)}`);
  return msgs[count - 1];
}

test(
  'RFC 6409 + 3207 + 4954: smtplib submits with STARTTLS and AUTH LOGIN; bob gets it byte for byte, with ESMTPSA',
  tool,
  async () => {
    const msg = message('smtplib starttls', [
      'Hello Bob,',
      '',
      'sent by smtplib after STARTTLS and AUTH LOGIN.',
    ]);
    const run = await smtplib(
      {
        mode: 'starttls',
        port: server.ports.submission,
        from: 'alice@sterna.test',
        to: ['bob@sterna.test'],
        auth: 'LOGIN',
      },
      msg,
    );
    assertRunOk(run);
    assert.equal(run.stdout, '{"refused": {}}\n', describeRun(run));
    assert.match(run.stderr, /reply: retcode \(235\); Msg: b'2\.7\.0 /, describeRun(run));
    const qid = queueIdIn(run.stderr);
    assert.ok(qid !== undefined, describeRun(run));
    assertDelivered(await nthMessage('bob', 1, run), {
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
  'RFC 8314: smtplib.SMTP_SSL submits over implicit TLS with AUTH PLAIN; delivered with ESMTPSA',
  tool,
  async () => {
    const msg = message('smtplib implicit tls', ['Implicit TLS from the first byte.', 'Second line.']);
    const run = await smtplib(
      {
        mode: 'implicit',
        port: server.ports.submissions,
        from: 'alice@sterna.test',
        to: ['bob@sterna.test'],
        auth: 'PLAIN',
      },
      msg,
    );
    assertRunOk(run);
    const qid = queueIdIn(run.stderr);
    assert.ok(qid !== undefined, describeRun(run));
    assertDelivered(await nthMessage('bob', 2, run), {
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
  'RFC 5321: smtplib sends plain ESMTP to the smtp port without AUTH; delivered with ESMTP',
  tool,
  async () => {
    const msg = crlfMessage([
      'From: Carol <carol@example.org>',
      'To: bob@sterna.test',
      'Subject: smtplib plain smtp',
      'Date: Mon, 2 Mar 2026 12:05:00 +0000',
      'Message-ID: <smtplib-plain@client.python.test>',
      '',
      'No TLS, no AUTH: an ordinary inbound message.',
      '.and a line with a leading dot, which smtplib stuffs.',
    ]);
    const run = await smtplib(
      { mode: 'plain', port: server.ports.smtp, from: 'carol@example.org', to: ['bob@sterna.test'] },
      msg,
    );
    assertRunOk(run);
    const qid = queueIdIn(run.stderr);
    assert.ok(qid !== undefined, describeRun(run));
    assertDelivered(await nthMessage('bob', 3, run), {
      sender: 'carol@example.org',
      recipient: 'bob@sterna.test',
      helo: HELO,
      protocol: 'ESMTP',
      message: msg,
      qid,
    });
  },
);

/** An RFC 6532 message: UTF-8 in header fields and in the 8-bit body. */
function utf8Message(to: string, subject: string): Buffer {
  return crlfMessage([
    'From: Jörg Müller <jörg@example.org>',
    `To: ${to}`,
    `Subject: ${subject}`,
    'Date: Mon, 2 Mar 2026 12:10:00 +0000',
    `Message-ID: <${subject.replace(/[^A-Za-z0-9]/g, '-')}@client.python.test>`,
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=utf-8',
    'Content-Transfer-Encoding: 8bit',
    '',
    'Grüße aus Köln! Ça va ? Ελληνικά, 日本語, emoji 🐦.',
    'Zeile mit ß und €.',
  ]);
}

test(
  'RFC 6531 + 6152: smtplib with SMTPUTF8 and BODY=8BITMIME from jörg@example.org; the UTF-8 message arrives byte for byte, with UTF8SMTP',
  tool,
  async () => {
    const msg = utf8Message('bob@sterna.test', 'smtplib utf8 Grüße');
    const run = await smtplib(
      {
        mode: 'plain',
        port: server.ports.smtp,
        from: 'jörg@example.org',
        to: ['bob@sterna.test'],
        mailOptions: ['SMTPUTF8', 'BODY=8BITMIME'],
      },
      msg,
    );
    assertRunOk(run);
    assert.match(
      run.stderr,
      /^send: 'mail FROM:<jörg@example\.org> size=\d+ SMTPUTF8 BODY=8BITMIME\\r\\n'$/m,
      describeRun(run),
    );
    const qid = queueIdIn(run.stderr);
    assert.ok(qid !== undefined, describeRun(run));
    assertDelivered(await nthMessage('bob', 4, run), {
      sender: 'jörg@example.org',
      recipient: 'bob@sterna.test',
      helo: HELO,
      protocol: 'UTF8SMTP',
      message: msg,
      qid,
    });
  },
);

test(
  'RFC 6531 3.2: smtplib with SMTPUTF8 to a local mailbox with a non-ASCII local part (jörg@sterna.test)',
  tool,
  async () => {
    const msg = utf8Message('Jörg <jörg@sterna.test>', 'smtplib utf8 local part');
    const run = await smtplib(
      {
        mode: 'plain',
        port: server.ports.smtp,
        from: 'jörg@example.org',
        to: ['jörg@sterna.test'],
        mailOptions: ['SMTPUTF8', 'BODY=8BITMIME'],
      },
      msg,
    );
    assertRunOk(run);
    const qid = queueIdIn(run.stderr);
    assert.ok(qid !== undefined, describeRun(run));
    assertDelivered(await nthMessage('jörg', 1, run), {
      sender: 'jörg@example.org',
      recipient: 'jörg@sterna.test',
      helo: HELO,
      protocol: 'UTF8SMTP',
      message: msg,
      qid,
    });
  },
);
