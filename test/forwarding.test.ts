/**
 * Forwarded mail over real TCP (docs/mail-auth.md, "Forwarding"): two Sternas and a sink, each
 * on its own loopback address and one shared port, found through the test DNS server's MX
 * records. The forwarder ("A", 127.0.0.1, hostname mx.sterna.test, the SRS domain) gets mail
 * from an outside host (127.0.0.3, the only host orig.example's SPF allows) for a local alias
 * pointing at dest.example, the second Sterna ("B", 127.0.0.2), which checks it with mailauth
 * (SPF, ARC) and may forward it once more to third.example (the sink, 127.0.0.3):
 *
 * - ARC (RFC 8617): the copy carries an ARC set i=1 cv=none, sealed by sterna.test; B reports
 *   arc=pass, and so do dkimpy (python3-dkim) and mailauth; B's own seal is i=2 cv=pass and the
 *   chain still verifies at the sink; an incoming chain that fails is sealed cv=fail.
 * - SRS: the copy's MAIL FROM is SRS0=…@mx.sterna.test, for which B's SPF check passes; B's
 *   copy is SRS1; a bounce to the SRS0 address goes back to alice@orig.example; forged and
 *   expired SRS addresses get 550 5.1.1; <> and local senders are not rewritten.
 */
import assert from 'node:assert/strict';
import { createPrivateKey, createPublicKey } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { generateKey, recordValue, writeKeyFile } from '../src/mailauth/dkim-keys.js';
import { Srs } from '../src/mailauth/srs.js';
import { arcVerifyWithDkimpy, arcVerifyWithMailauth } from './helpers/arc-verify.js';
import type { KeyRecords } from './helpers/dkim-verify.js';
import { startDnsServer, type TestDnsServer } from './helpers/dns-server.js';
import { arcSign, rsaKey, splitTxt, topField, transactOn, type DkimKey } from './helpers/mailauth.js';
import { waitForMessages } from './helpers/maildir.js';
import { outboundToml, waitFor } from './helpers/outbound.js';
import { freePort } from './helpers/process.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { TestClient, assertReply } from './helpers/smtp-client.js';
import { startSmtpSink, type SinkMessage, type SmtpSink } from './helpers/smtp-sink.js';
import { crlfMessage, makeTempDir, requireTool } from './helpers/tools.js';

const dkimpy = requireTool('arcverify');
const OUTSIDE = '127.0.0.3';

let tmp: { dir: string; cleanup(): Promise<void> };
let dns: TestDnsServer;
let a: TestServer;
let b: TestServer;
let sink: SmtpSink;
let relayKey: DkimKey;
const records: KeyRecords = {};
/** The SRS0 address B saw as the sender of the first forwarded copy (for the bounce test). */
let srs0 = '';

/** A [[dkim.keys]] RSA key for `domain`, its record published. */
async function key(domain: string, selector: string): Promise<string> {
  const file = path.join(tmp.dir, `${domain}.${selector}.key`);
  const { pem } = generateKey('rsa');
  await writeKeyFile(file, pem);
  records[`${selector}._domainkey.${domain}`] = recordValue(createPublicKey(createPrivateKey(pem)), 'rsa');
  return `[[dkim.keys]]\ndomain = "${domain}"\nselector = "${selector}"\nkey_file = "${file}"\n`;
}

/** Both servers: the test DNS, one outbound port for every MX, quick retries. */
function common(port: number): string {
  return `${outboundToml({ dnsPort: dns.port, outbound: { port, connect_timeout_ms: 2000 } })}[queue]
first_retry_ms = 200
max_backoff_ms = 200
jitter = 0
`;
}

before(async () => {
  if (dkimpy.skip !== false) return;
  tmp = await makeTempDir('sterna-forwarding-');
  relayKey = await rsaKey(tmp.dir, 'relay');
  records['arc._domainkey.relay.example'] = relayKey.record;
  const keysA = await key('sterna.test', 'fwd');
  const keysB = await key('dest.example', 'hop');
  const txt = Object.fromEntries(Object.entries(records).map(([n, v]) => [n, { TXT: [splitTxt(v)] }]));
  dns = await startDnsServer({
    ...txt,
    'orig.example': {
      TXT: [[`v=spf1 ip4:${OUTSIDE} -all`]],
      MX: [{ preference: 10, exchange: 'mx.orig.example' }],
    },
    'relay.example': { TXT: [[`v=spf1 ip4:${OUTSIDE} -all`]] },
    'mx.orig.example': { A: [OUTSIDE] },
    'third.example': { MX: [{ preference: 10, exchange: 'mx.orig.example' }] },
    // A's SRS domain: its hostname. Its SPF allows A; its MX is A (bounces come back there).
    'mx.sterna.test': {
      TXT: [['v=spf1 ip4:127.0.0.1 -all']],
      MX: [{ preference: 10, exchange: 'mx.sterna.test' }],
      A: ['127.0.0.1'],
    },
    'dest.example': { MX: [{ preference: 10, exchange: 'mx.dest.example' }] },
    'mx.dest.example': { A: ['127.0.0.2'] },
    // B's SRS domain (B sends from whichever loopback address the kernel picks).
    'srs.dest.example': {
      TXT: [['v=spf1 ip4:127.0.0.1 ip4:127.0.0.2 -all']],
      MX: [{ preference: 10, exchange: 'mx.dest.example' }],
    },
  });
  // One port for all three: each [outbound] reaches every other by its MX address.
  const port = await freePort();
  sink = await startSmtpSink({ host: OUTSIDE, port, ehlo: ['PIPELINING', '8BITMIME'] });
  a = await startTestServer({
    listen: `smtp = ["127.0.0.1:${port}"]\nsubmission = []\nsubmissions = []`,
    users: [{ address: 'dora@sterna.test', password: 'pw-dora-1' }],
    toml: `${common(port)}[mailauth]
listeners = ["smtp"]
[aliases]
"fwd@sterna.test" = ["bob@dest.example"]
"far@sterna.test" = ["hop@dest.example"]
${keysA}`,
  });
  b = await startTestServer({
    listen: `smtp = ["127.0.0.2:${port}"]\nsubmission = []\nsubmissions = []`,
    users: [{ address: 'bob@dest.example', password: 'pw-bob-1' }],
    toml: `${common(port)}[transport]
"dest.example" = "local"
[mailauth]
listeners = ["smtp"]
authserv_id = "mx.dest.example"
[forwarding]
srs_domain = "srs.dest.example"
[aliases]
"hop@dest.example" = ["carol@third.example"]
${keysB}`,
  });
});

after(async () => {
  await b?.stop({ remove: true });
  await a?.stop({ remove: true });
  await sink?.close();
  await dns?.close();
  await tmp?.cleanup();
});

/** A message from `from`, with a Subject to find it by. */
function message(from: string, subject: string, extra: string[] = []): Buffer {
  return crlfMessage([
    ...extra,
    `From: <${from}>`,
    'To: <fwd@sterna.test>',
    `Subject: ${subject}`,
    'Message-ID: <' + subject.replace(/\W/g, '') + '@orig.example>',
    '',
    'Hello Bob.',
  ]);
}

/** Sends `msg` to A from `ip` (default the outside host); the end-of-data reply must be 250. */
async function sendToA(from: string, to: string, msg: Buffer, ip = OUTSIDE): Promise<void> {
  const c = await TestClient.connect(portOf(a), { localAddress: ip });
  try {
    await c.expect(220);
    const r = await transactOn(c, { from, to, message: msg, helo: 'client.orig.example' });
    assert.equal(r.code, 250, r.text);
  } finally {
    c.close();
  }
}

function portOf(s: TestServer): number {
  return s.ports.smtp;
}

/** The message in B's mailbox bob whose Subject is `subject`. */
async function atB(subject: string): Promise<Buffer> {
  let found: Buffer | undefined;
  await waitFor(`B to deliver "${subject}"`, async () => {
    const all = await waitForMessages(b.dataDir, 'dest.example', 'bob', 1, 100);
    found = all.find((m) => m.includes(`Subject: ${subject}\r\n`));
    return found !== undefined;
  });
  assert.ok(found !== undefined);
  return found;
}

/** The message the sink got whose Subject is `subject`. */
async function atSink(subject: string): Promise<SinkMessage> {
  let found: SinkMessage | undefined;
  await waitFor(`the sink to receive "${subject}"`, () => {
    found = sink.messages().find((m) => m.body.includes(`Subject: ${subject}\r\n`));
    return found !== undefined;
  });
  assert.ok(found !== undefined);
  return found;
}

function field(msg: Buffer, name: string): string[] {
  const text = msg.toString('utf8');
  const head = text.slice(0, text.indexOf('\r\n\r\n') + 2);
  return [...head.matchAll(new RegExp(`^${name}:[^\\r\\n]*\\r\\n(?:[ \\t][^\\r\\n]*\\r\\n)*`, 'gim'))].map(
    (m) => m[0].replace(/\r\n[ \t]+/g, ' ').trim(),
  );
}

test(
  'outside mail forwarded to another domain: SRS0 sender, SPF passes at the next hop, ARC i=1 verifies',
  { skip: dkimpy.skip },
  async () => {
    await sendToA('alice@orig.example', 'fwd@sterna.test', message('alice@orig.example', 'first hop'));
    const got = await atB('first hop');
    const returnPath = /^Return-Path: <([^>]*)>/.exec(got.toString('utf8'))?.[1] ?? '';
    assert.match(returnPath, /^SRS0=[A-Z2-7]{6}=[A-Z2-7]{2}=orig\.example=alice@mx\.sterna\.test$/);
    srs0 = returnPath;
    // B's own field: SPF checked the SRS sender against A (127.0.0.1), and the chain passed.
    const ar = topField(got).replace(/\r\n[ \t]+/g, ' ');
    assert.match(
      ar,
      /^Authentication-Results: mx\.dest\.example; spf=pass \(domain of SRS0=\S+@mx\.sterna\.test designates 127\.0\.0\.1 as permitted sender\) smtp\.mailfrom=SRS0=/,
    );
    assert.match(ar, /arc=pass \(i=1\)/);
    // The set A added: AAR = A's Authentication-Results (SPF pass for alice from 127.0.0.3).
    const [seal] = field(got, 'ARC-Seal');
    assert.match(seal ?? '', /^ARC-Seal: i=1; a=rsa-sha256; t=\d+; cv=none; d=sterna\.test; s=fwd; b=/);
    assert.match(
      field(got, 'ARC-Message-Signature')[0] ?? '',
      /^ARC-Message-Signature: i=1; a=rsa-sha256; c=relaxed\/relaxed; d=sterna\.test; h=/,
    );
    const [aar] = field(got, 'ARC-Authentication-Results');
    assert.match(
      aar ?? '',
      /^ARC-Authentication-Results: i=1; mx\.sterna\.test; spf=pass \(domain of alice@orig\.example designates 127\.0\.0\.3 as permitted sender\) smtp\.mailfrom=alice@orig\.example;/,
    );
    assert.match(aar ?? '', /arc=none$/);
    // Independent verifiers.
    assert.deepEqual(await arcVerifyWithDkimpy(got, records), { cv: 'pass', comment: 'success', sets: 1 });
    assert.deepEqual(await arcVerifyWithMailauth(got, records), { result: 'pass', i: 1 });
  },
);

test(
  'a second hop seals again: i=2 cv=pass, SRS1 sender, the chain verifies at the last receiver',
  { skip: dkimpy.skip },
  async () => {
    await sendToA('alice@orig.example', 'far@sterna.test', message('alice@orig.example', 'two hops'));
    const got = await atSink('two hops');
    assert.deepEqual(got.rcptTo, ['carol@third.example']);
    assert.match(
      got.mailFrom,
      /^SRS1=[A-Z2-7]{6}=mx\.sterna\.test==[A-Z2-7]{6}=[A-Z2-7]{2}=orig\.example=alice@srs\.dest\.example$/,
    );
    const seals = field(got.body, 'ARC-Seal');
    assert.equal(seals.length, 2);
    assert.match(seals[0] ?? '', /^ARC-Seal: i=2; a=rsa-sha256; t=\d+; cv=pass; d=dest\.example; s=hop; b=/);
    assert.match(
      field(got.body, 'ARC-Authentication-Results')[0] ?? '',
      /^ARC-Authentication-Results: i=2; mx\.dest\.example; spf=pass .*arc=pass \(i=1\)$/,
    );
    assert.deepEqual(await arcVerifyWithDkimpy(got.body, records), {
      cv: 'pass',
      comment: 'success',
      sets: 2,
    });
    assert.deepEqual(await arcVerifyWithMailauth(got.body, records), { result: 'pass', i: 2 });
  },
);

test(
  'an incoming chain: sealed as i=N+1, cv=pass when it verified, cv=fail when it did not',
  { skip: dkimpy.skip },
  async () => {
    const withAr = (subject: string): Buffer =>
      message('alice@relay.example', subject, [
        'Authentication-Results: relay.example; spf=pass smtp.mailfrom=alice@relay.example',
      ]);
    const good = await arcSign(withAr('sealed before'), {
      selector: 'arc',
      domain: 'relay.example',
      key: relayKey,
      srvId: 'relay.example',
    });
    await sendToA('alice@relay.example', 'fwd@sterna.test', good);
    const passed = await atB('sealed before');
    assert.match(
      field(passed, 'ARC-Seal')[0] ?? '',
      /^ARC-Seal: i=2; a=rsa-sha256; t=\d+; cv=pass; d=sterna\.test;/,
    );
    assert.match(topField(passed).replace(/\r\n[ \t]+/g, ' '), /arc=pass \(i=2\)/);
    assert.deepEqual(await arcVerifyWithDkimpy(passed, records), { cv: 'pass', comment: 'success', sets: 2 });

    const sealed = await arcSign(withAr('broken before'), {
      selector: 'arc',
      domain: 'relay.example',
      key: relayKey,
      srvId: 'relay.example',
    });
    const broken = Buffer.from(sealed.toString('utf8').replace('Hello Bob.', 'Hello Eve.'));
    await sendToA('alice@relay.example', 'fwd@sterna.test', broken);
    const failed = await atB('broken before');
    assert.match(
      field(failed, 'ARC-Seal')[0] ?? '',
      /^ARC-Seal: i=2; a=rsa-sha256; t=\d+; cv=fail; d=sterna\.test;/,
    );
    assert.match(field(failed, 'ARC-Authentication-Results')[0] ?? '', /arc=fail/);
    assert.match(topField(failed).replace(/\r\n[ \t]+/g, ' '), /arc=fail/);
    // A chain whose newest seal says cv=fail is over: forwarded again, it gets no third set.
    const again = failed
      .toString('utf8')
      .replace(/^Return-Path: [^\r\n]*\r\nDelivered-To: [^\r\n]*\r\n/, '')
      .replace('Subject: broken before', 'Subject: over already');
    await sendToA('alice@relay.example', 'fwd@sterna.test', Buffer.from(again));
    assert.equal(field(await atB('over already'), 'ARC-Seal').length, 2);
    // dkimpy: a chain whose newest seal says cv=fail is over (no cv); mailauth: fail.
    assert.deepEqual(await arcVerifyWithDkimpy(failed, records), {
      cv: null,
      comment: 'ARC-Seal[2] reported failure, the chain is terminated',
      sets: 2,
    });
  },
);

test('a bounce to the SRS0 address goes back to the original sender', { skip: dkimpy.skip }, async () => {
  assert.notEqual(srs0, '', 'the first test ran');
  const c = await TestClient.connect(portOf(a), { localAddress: '127.0.0.2' });
  try {
    await c.expect(220);
    const dsn = crlfMessage([
      'From: MAILER-DAEMON@mx.dest.example',
      `To: <${srs0}>`,
      'Subject: Undelivered Mail Returned to Sender',
      'Content-Type: multipart/report; report-type=delivery-status; boundary="b"',
      '',
      '--b',
      '',
      'bob@dest.example is full.',
      '--b--',
    ]);
    const r = await transactOn(c, { from: '', to: srs0, message: dsn, helo: 'mx.dest.example' });
    assert.equal(r.code, 250, r.text);
  } finally {
    c.close();
  }
  const back = await atSink('Undelivered Mail Returned to Sender');
  assert.equal(back.mailFrom, '');
  assert.deepEqual(back.rcptTo, ['alice@orig.example']);
});

test('forged and expired SRS addresses are refused with 550 5.1.1', { skip: dkimpy.skip }, async () => {
  const file = path.join(a.dataDir, 'srs', 'secret');
  assert.equal((await stat(file)).mode & 0o777, 0o600, 'the secret file was made with mode 0600');
  const secrets = (await readFile(file, 'utf8'))
    .trim()
    .split('\n')
    .map((l) => Buffer.from(l));
  const old = new Srs({
    domain: 'mx.sterna.test',
    secrets,
    maxAgeDays: 21,
    now: () => Date.now() - 30 * 86_400_000,
  });
  const expired = old.forward('alice@orig.example');
  const valid = new Srs({ domain: 'mx.sterna.test', secrets, maxAgeDays: 21 }).forward('alice@orig.example');
  const hash = valid.split('=')[1] ?? '';
  const forged = valid.replace(`=${hash}=`, `=${hash === 'AAAAAA' ? 'BBBBBB' : 'AAAAAA'}=`);
  const c = await TestClient.connect(portOf(a), { localAddress: '127.0.0.2' });
  try {
    await c.expect(220);
    assert.equal((await c.cmd('EHLO mx.dest.example')).code, 250);
    assert.equal((await c.cmd('MAIL FROM:<>')).code, 250);
    const refusedForged = await c.cmd(`RCPT TO:<${forged}>`);
    assertReply(refusedForged, 550, '5.1.1');
    assert.equal(
      refusedForged.text,
      `5.1.1 Recipient <${forged}> unknown: not a valid SRS address of this server (forged or damaged)`,
    );
    const refusedExpired = await c.cmd(`RCPT TO:<${expired}>`);
    assertReply(refusedExpired, 550, '5.1.1');
    assert.equal(
      refusedExpired.text,
      `5.1.1 Recipient <${expired}> unknown: this SRS address expired (older than 21 days)`,
    );
    assert.equal((await c.cmd(`RCPT TO:<${valid}>`)).code, 250);
  } finally {
    c.close();
  }
});

test('the null sender and local senders are not rewritten', { skip: dkimpy.skip }, async () => {
  await sendToA('', 'fwd@sterna.test', message('mailer-daemon@orig.example', 'null sender'));
  assert.match((await atB('null sender')).toString('utf8'), /^Return-Path: <>\r\n/);
  await sendToA(
    'dora@sterna.test',
    'fwd@sterna.test',
    message('dora@sterna.test', 'local sender'),
    '127.0.0.1',
  );
  assert.match((await atB('local sender')).toString('utf8'), /^Return-Path: <dora@sterna\.test>\r\n/);
});
