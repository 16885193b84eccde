/**
 * Interop with Python's smtplib (Debian package "python3"): submission with STARTTLS and AUTH
 * LOGIN (RFC 6409, 3207, 4954), submissions with implicit TLS and AUTH PLAIN (RFC 8314, 4616),
 * plain ESMTP on the smtp port (RFC 5321), and an 8-bit UTF-8 body with BODY=8BITMIME (RFC 6152)
 * from an SMTPUTF8 sender and to a mailbox with a non-ASCII local part (RFC 6531). Every delivered
 * message is compared byte for byte after the trace headers Sterna prepends (RFC 5321 4.4,
 * RFC 3848 and RFC 6531 4.3 "with" names).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  aliceToBob,
  assertQueuedAndDelivered,
  composeMessage,
  messageIdFor,
  useInteropServer,
  type ClientDelivery,
} from './helpers/interop.js';
import { assertRunOk, describeRun, runTool, writeTempFile, type ToolRun } from './helpers/tools.js';

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

/** The client script, CLIENT_PY, written into the scratch directory at set-up. */
let script: string;
const fx = useInteropServer('python3', {
  tmpPrefix: 'sterna-smtplib-',
  alicePassword: PASSWORD,
  moreUsers: [{ address: 'jörg@sterna.test', password: 'jörg password' }],
  setup: async (env) => {
    script = await writeTempFile(env.tmpDir, 'client.py', CLIENT_PY);
  },
});
const { tool } = fx;

/** One run of CLIENT_PY: the connection mode, the envelope and the MAIL FROM parameters. */
interface Job {
  mode: 'starttls' | 'implicit' | 'plain';
  port: number;
  from: string;
  to: string[];
  auth?: 'LOGIN' | 'PLAIN';
  mailOptions?: string[];
}

/** A Job with one recipient, whose Maildir the test checks. */
type SingleJob = Job & { to: [string] };

async function smtplib(job: Job, msg: Buffer): Promise<ToolRun> {
  const file = await fx.env.messageFile(msg);
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

const message = (subject: string, body: string[]): Buffer =>
  aliceToBob(HELO, 'Mon, 2 Mar 2026 12:00:00 +0000', subject, body);

/**
 * Runs `job` with smtplib, which must succeed; runs `checks` on its transcript, then expects the
 * `count`-th message of its (single) recipient to be `msg` from job.from with `protocol`.
 */
async function sendAndCheck(
  job: SingleJob,
  msg: Buffer,
  count: number,
  protocol: ClientDelivery['protocol'],
  checks: (run: ToolRun) => void = () => undefined,
): Promise<void> {
  const run = await smtplib(job, msg);
  assertRunOk(run);
  checks(run);
  await assertQueuedAndDelivered(fx.env, run, {
    transcript: run.stderr,
    count,
    sender: job.from,
    recipient: job.to[0],
    helo: HELO,
    protocol,
    message: msg,
  });
}

/** alice@sterna.test submits to bob@sterna.test, authenticating with `auth`. */
const aliceToBobJob = (mode: Job['mode'], port: number, auth: 'LOGIN' | 'PLAIN'): SingleJob => ({
  mode,
  port,
  from: 'alice@sterna.test',
  to: ['bob@sterna.test'],
  auth,
});

test(
  'RFC 6409 + 3207 + 4954: smtplib submits with STARTTLS and AUTH LOGIN; bob gets it byte for byte, with ESMTPSA',
  tool,
  async () => {
    const msg = message('smtplib starttls', [
      'Hello Bob,',
      '',
      'sent by smtplib after STARTTLS and AUTH LOGIN.',
    ]);
    const job = aliceToBobJob('starttls', fx.env.ports.submission, 'LOGIN');
    await sendAndCheck(job, msg, 1, 'ESMTPSA', (run) => {
      assert.equal(run.stdout, '{"refused": {}}\n', describeRun(run));
      assert.match(run.stderr, /reply: retcode \(235\); Msg: b'2\.7\.0 /, describeRun(run));
    });
  },
);

test(
  'RFC 8314: smtplib.SMTP_SSL submits over implicit TLS with AUTH PLAIN; delivered with ESMTPSA',
  tool,
  async () => {
    const msg = message('smtplib implicit tls', ['Implicit TLS from the first byte.', 'Second line.']);
    const job = aliceToBobJob('implicit', fx.env.ports.submissions, 'PLAIN');
    await sendAndCheck(job, msg, 2, 'ESMTPSA');
  },
);

test(
  'RFC 5321: smtplib sends plain ESMTP to the smtp port without AUTH; delivered with ESMTP',
  tool,
  async () => {
    const msg = composeMessage({
      from: 'Carol <carol@example.org>',
      to: 'bob@sterna.test',
      subject: 'smtplib plain smtp',
      date: 'Mon, 2 Mar 2026 12:05:00 +0000',
      messageId: '<smtplib-plain@client.python.test>',
      body: [
        'No TLS, no AUTH: an ordinary inbound message.',
        '.and a line with a leading dot, which smtplib stuffs.',
      ],
    });
    const job: SingleJob = {
      mode: 'plain',
      port: fx.env.ports.smtp,
      from: 'carol@example.org',
      to: ['bob@sterna.test'],
    };
    await sendAndCheck(job, msg, 3, 'ESMTP');
  },
);

/** An RFC 6532 message: UTF-8 in header fields and in the 8-bit body. */
function utf8Message(to: string, subject: string): Buffer {
  return composeMessage({
    from: 'Jörg Müller <jörg@example.org>',
    to,
    subject,
    date: 'Mon, 2 Mar 2026 12:10:00 +0000',
    messageId: messageIdFor(subject, HELO),
    headers: [
      'MIME-Version: 1.0',
      'Content-Type: text/plain; charset=utf-8',
      'Content-Transfer-Encoding: 8bit',
    ],
    body: ['Grüße aus Köln! Ça va ? Ελληνικά, 日本語, emoji 🐦.', 'Zeile mit ß und €.'],
  });
}

/** smtplib sends from jörg@example.org to `to` on the smtp port with SMTPUTF8 and BODY=8BITMIME. */
const utf8Job = (to: string): SingleJob => ({
  mode: 'plain',
  port: fx.env.ports.smtp,
  from: 'jörg@example.org',
  to: [to],
  mailOptions: ['SMTPUTF8', 'BODY=8BITMIME'],
});

test(
  'RFC 6531 + 6152: smtplib with SMTPUTF8 and BODY=8BITMIME from jörg@example.org; the UTF-8 message arrives byte for byte, with UTF8SMTP',
  tool,
  async () => {
    const msg = utf8Message('bob@sterna.test', 'smtplib utf8 Grüße');
    await sendAndCheck(utf8Job('bob@sterna.test'), msg, 4, 'UTF8SMTP', (run) => {
      assert.match(
        run.stderr,
        /^send: 'mail FROM:<jörg@example\.org> size=\d+ SMTPUTF8 BODY=8BITMIME\\r\\n'$/m,
        describeRun(run),
      );
    });
  },
);

test(
  'RFC 6531 3.2: smtplib with SMTPUTF8 to a local mailbox with a non-ASCII local part (jörg@sterna.test)',
  tool,
  async () => {
    const msg = utf8Message('Jörg <jörg@sterna.test>', 'smtplib utf8 local part');
    await sendAndCheck(utf8Job('jörg@sterna.test'), msg, 1, 'UTF8SMTP');
  },
);
