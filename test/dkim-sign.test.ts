/**
 * Outbound DKIM signing end to end, over real TCP: mail comes in by every path (submission with
 * AUTH by DATA and by BDAT, a trusted network on port 25, the HTTP API, `sterna sendmail`, and
 * Sterna's own bounce), is relayed to a receiving sink by MX from the test DNS server, and the
 * octets the sink received are verified by two independent verifiers from Debian: dkimpy
 * (python3-dkim) and `opendkim -t`. Both keys of the domain sign (rsa-sha256 and
 * ed25519-sha256), relaxed/relaxed, From oversigned. Also: 8-bit mail (RFC 6152) to a next hop
 * with and without 8BITMIME, and mail that must not be signed.
 */
import assert from 'node:assert/strict';
import { createPrivateKey, createPublicKey } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { addApiKey } from '../src/api/keys.js';
import { generateKey, recordValue, writeKeyFile, type DkimAlgorithm } from '../src/mailauth/dkim-keys.js';
import { verifyWithDkimpy, verifyWithOpendkim, type KeyRecords } from './helpers/dkim-verify.js';
import { ALL_ACTIONS, answer, startScriptedMilter, type ScriptedMilter } from './helpers/milter.js';
import { parseDsn } from './helpers/dsn-parser.js';
import { dotStuff, sendMessage, waitFor } from './helpers/outbound.js';
import { startOutboundFixture, type OutboundFixture } from './helpers/outbound-fixture.js';
import { STERNA_CLI } from './helpers/process.js';
import type { SinkMessage } from './helpers/smtp-sink.js';
import { TestClient } from './helpers/smtp-client.js';
import { describeRun, makeTempDir, requireTool, runTool } from './helpers/tools.js';

const tools = [requireTool('python3'), requireTool('opendkim')].find((r) => r.skip !== false) ?? {
  skip: false,
};

const ALICE = { address: 'alice@signed.test', password: 'alice-password' };
let tmp: { dir: string; cleanup(): Promise<void> };
let f: OutboundFixture<'modern' | 'old'>;
/** A content filter on submission that changes nothing unless a test scripts it. */
let milter: ScriptedMilter;
const records: KeyRecords = {};

/** A key for `domain`, written 0600 where the configuration points; its record is published. */
async function key(domain: string, selector: string, algorithm: DkimAlgorithm): Promise<string> {
  const file = path.join(tmp.dir, `${domain}.${selector}.key`);
  const { pem } = generateKey(algorithm);
  await writeKeyFile(file, pem);
  records[`${selector}._domainkey.${domain}`] = recordValue(
    createPublicKey(createPrivateKey(pem)),
    algorithm,
  );
  return `[[dkim.keys]]\ndomain = "${domain}"\nselector = "${selector}"\nalgorithm = "${algorithm}"\nkey_file = "${file}"\n`;
}

before(async () => {
  tmp = await makeTempDir('sterna-dkim-sign-');
  milter = await startScriptedMilter();
  const filter = `[[filters]]\ntype = "milter"\nname = "rewriter"\naddress = "inet:127.0.0.1:${milter.port}"\nlisteners = ["submission"]\ntimeout_ms = 30000\n`;
  const keys =
    (await key('signed.test', 'rsa1', 'rsa')) +
    (await key('signed.test', 'ed1', 'ed25519')) +
    // Bounces come from MAILER-DAEMON@mx.sterna.test: signed by the parent domain's key.
    (await key('sterna.test', 'bounce', 'ed25519'));
  f = await startOutboundFixture({
    zone: {
      'dest.test': { MX: [{ preference: 10, exchange: 'mx.dest.test' }] },
      'mx.dest.test': { A: ['127.0.0.2'] },
      'old.test': { MX: [{ preference: 10, exchange: 'mx.old.test' }] },
      'mx.old.test': { A: ['127.0.0.3'] },
    },
    sinks: {
      modern: {
        host: '127.0.0.2',
        ehlo: ['8BITMIME', 'PIPELINING', 'CHUNKING'],
        respond: (c) =>
          c.verb === 'RCPT' && c.line.includes('<refused@') ? '550 5.1.1 no such user' : undefined,
      },
      // A next hop without 8BITMIME (nor CHUNKING: the body goes by DATA).
      old: { host: '127.0.0.3', ehlo: ['PIPELINING'] },
    },
    tables: `[http_api]\nlisten = ["127.0.0.1:0"]\n[sendmail]\norigin = "signed.test"\nscan_interval_ms = 200\n${keys}${filter}`,
    users: [ALICE],
    auth: 'allow_plaintext = true',
  });
});

after(async () => {
  await f?.close();
  await milter?.close();
  await tmp?.cleanup();
});

/** The message whose Subject is `subject`, once the sink `sink` has it. */
async function received(subject: string, sink: 'modern' | 'old' = 'modern'): Promise<SinkMessage> {
  let found: SinkMessage | undefined;
  await waitFor(`the sink to receive "${subject}"`, () => {
    found = f.sinks[sink].messages().find((m) => m.body.includes(`Subject: ${subject}\r\n`));
    return found !== undefined;
  });
  assert.ok(found !== undefined);
  return found;
}

/** The bounce (MAIL FROM <>) to `address`, once the sink at dest.test has it. */
async function bounceTo(address: string): Promise<SinkMessage> {
  let found: SinkMessage | undefined;
  await waitFor(`the bounce to ${address}`, () => {
    found = f.sinks.modern.messages().find((m) => m.mailFrom === '' && m.rcptTo.includes(address));
    return found !== undefined;
  });
  assert.ok(found !== undefined);
  return found;
}

/** A message from `from` (default alice) to bob at dest.test, with an optional 8-bit line. */
function message(subject: string, extra = '', from = 'alice@signed.test'): Buffer {
  return Buffer.from(
    [
      `From: Alice <${from}>`,
      'To: Bob <bob@dest.test>',
      `Subject: ${subject}`,
      'MIME-Version: 1.0',
      'Content-Type: text/plain; charset=utf-8',
      '',
      'Hello Bob,',
      '.a line that starts with a dot',
      'trailing spaces   ',
      ...(extra !== '' ? [extra] : []),
      '',
      '',
    ].join('\r\n'),
    'utf8',
  );
}

/**
 * Port 25 from the trusted network, no AUTH: MAIL FROM and the From field are `from`; the
 * message is `message(subject, extra, from)`.
 */
function viaTrusted(from: string, to: string, subject: string, extra = ''): Promise<string> {
  return sendMessage(f.server.ports.smtp, { from, to: [to], body: message(subject, extra, from) });
}

/** Both signatures of the domain verify with dkimpy and opendkim; From is oversigned. */
async function assertDualSigned(m: SinkMessage, name: string): Promise<void> {
  const top = m.body.toString('latin1');
  assert.match(top, /^DKIM-Signature: v=1; a=rsa-sha256; c=relaxed\/relaxed; d=signed\.test;/);
  const py = await verifyWithDkimpy(m.body, records);
  assert.deepEqual(
    py.map((s) => [s.a, s.d, s.s, s.ok]),
    [
      ['rsa-sha256', 'signed.test', 'rsa1', true],
      ['ed25519-sha256', 'signed.test', 'ed1', true],
    ],
    JSON.stringify(py),
  );
  for (const s of py) {
    const names = s.h.split(':').map((h) => h.trim().toLowerCase());
    assert.equal(names.filter((h) => h === 'from').length, 2, `From oversigned: h=${s.h}`);
    for (const h of ['to', 'subject', 'mime-version', 'content-type']) assert.ok(names.includes(h), s.h);
    assert.ok(!names.includes('received'), s.h);
  }
  assert.deepEqual(await verifyWithOpendkim(m.body, records, tmp.dir, name), [
    'pass ed25519-sha256 signed.test ed1',
    'pass rsa-sha256 signed.test rsa1',
  ]);
}

/** Submission with AUTH PLAIN; the message by DATA, or by one BDAT LAST. */
async function submit(msg: Buffer, opts: { bdat?: boolean; to?: string } = {}): Promise<void> {
  const c = await TestClient.connect(f.server.ports.submission);
  try {
    await c.expect(220);
    assert.equal((await c.cmd('EHLO client.test')).code, 250);
    const plain = Buffer.from(`\0${ALICE.address}\0${ALICE.password}`).toString('base64');
    assert.equal((await c.cmd(`AUTH PLAIN ${plain}`)).code, 235);
    assert.equal((await c.cmd(`MAIL FROM:<${ALICE.address}>`)).code, 250);
    assert.equal((await c.cmd(`RCPT TO:<${opts.to ?? 'bob@dest.test'}>`)).code, 250);
    if (opts.bdat === true) {
      c.send(Buffer.concat([Buffer.from(`BDAT ${msg.length} LAST\r\n`), msg]));
    } else {
      assert.equal((await c.cmd('DATA')).code, 354);
      c.send(Buffer.concat([dotStuff(msg), Buffer.from('.\r\n')]));
    }
    await c.expect(250, '2.0.0');
  } finally {
    c.close();
  }
}

test(
  'submission with AUTH (DATA): signed with rsa-sha256 and ed25519-sha256, both verified by dkimpy and opendkim',
  tools,
  async () => {
    await submit(message('by DATA'));
    const m = await received('by DATA');
    await assertDualSigned(m, 'data');
    // The signatures are at the very top, above our Received field, and the rest is untouched.
    const text = m.body.toString('latin1');
    const received1 = text.indexOf('\r\nReceived: ');
    assert.ok(received1 > 0 && !text.slice(0, received1).includes('Received:'));
    assert.ok(m.body.subarray(-message('by DATA').length).equals(message('by DATA')));
  },
);

test(
  'a content filter that rewrites the message (milter change header): the signature covers the stored form',
  tools,
  async () => {
    milter.script = {
      actions: ALL_ACTIONS,
      eom: [answer.changeHeader(1, 'Subject', 'changed by the milter'), answer.continue()],
    };
    try {
      await submit(message('before the milter'));
    } finally {
      milter.script = {};
    }
    const m = await received('changed by the milter');
    assert.ok(!m.body.includes('before the milter'));
    await assertDualSigned(m, 'rewritten');
  },
);

test('submission with AUTH (BDAT): signed the same way', tools, async () => {
  await submit(message('by BDAT'), { bdat: true });
  await assertDualSigned(await received('by BDAT'), 'bdat');
});

test(
  'a trusted network without AUTH is signed (dkim.sign_trusted_networks); a From without a key is not',
  tools,
  async () => {
    await viaTrusted('alice@signed.test', 'bob@dest.test', 'trusted');
    await assertDualSigned(await received('trusted'), 'trusted');
    await viaTrusted('carol@dest.test', 'bob@dest.test', 'no key');
    const m = await received('no key');
    assert.ok(!m.body.includes('DKIM-Signature:'), m.body.toString());
  },
);

test('the HTTP API signs what it composes', tools, async () => {
  const { key: apiKey } = await addApiKey(f.server.config.http_api.keys_file, ALICE.address, []);
  const port = f.server.app.httpApi[0]?.port;
  const res = await fetch(`http://127.0.0.1:${port}/v1/messages`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${apiKey}` },
    body: JSON.stringify({
      from: 'alice@signed.test',
      to: ['bob@dest.test'],
      subject: 'by API',
      text: 'Grüße\n',
    }),
  });
  assert.equal(res.status, 202, await res.text());
  await assertDualSigned(await received('by API'), 'api');
});

test('sterna sendmail mail is signed', tools, async () => {
  const config = path.join(tmp.dir, 'sendmail.toml');
  await writeFile(
    config,
    `hostname = "mx.sterna.test"\ndata_dir = ${JSON.stringify(f.server.dataDir)}\n[sendmail]\norigin = "signed.test"\n`,
  );
  const run = await runTool(process.execPath, [STERNA_CLI, 'sendmail', '-i', 'bob@dest.test'], {
    input: message('by sendmail'),
    env: { STERNA_CONFIG: config },
  });
  assert.equal(run.code, 0, describeRun(run));
  await assertDualSigned(await received('by sendmail'), 'sendmail');
});

test(
  "Sterna's own bounce is signed (dkim.sign_own_mail), with the key of the hostname's parent domain",
  tools,
  async () => {
    await viaTrusted('sender@dest.test', 'refused@dest.test', 'to be refused');
    const bounce = await bounceTo('sender@dest.test');
    assert.ok(bounce.body.toString('latin1').startsWith('DKIM-Signature: v=1; a=ed25519-sha256;'));
    const py = await verifyWithDkimpy(bounce.body, records);
    assert.deepEqual(
      py.map((s) => [s.a, s.d, s.s, s.ok]),
      [['ed25519-sha256', 'sterna.test', 'bounce', true]],
    );
    assert.deepEqual(await verifyWithOpendkim(bounce.body, records, tmp.dir, 'bounce'), [
      'pass ed25519-sha256 sterna.test bounce',
    ]);
  },
);

test(
  '8-bit signed mail: sent as is with BODY=8BITMIME where 8BITMIME is offered, and still verifies',
  tools,
  async () => {
    await viaTrusted('alice@signed.test', 'bob@dest.test', 'eight bit', 'Grüße aus Köln');
    const m = await received('eight bit');
    assert.ok(m.body.includes(Buffer.from('Grüße aus Köln\r\n', 'utf8')));
    assert.ok(
      f.sinks.modern
        .commands()
        .some((l) => l.startsWith('MAIL FROM:<alice@signed.test>') && l.includes('BODY=8BITMIME')),
    );
    await assertDualSigned(m, 'eightbit');
  },
);

test(
  '8-bit signed mail to a next hop without 8BITMIME is not sent, never converted: a bounce says why (5.6.3)',
  tools,
  async () => {
    // The client does not declare BODY=8BITMIME: the signer sees the 8-bit octets anyway.
    // From alice (signed); MAIL FROM owner@dest.test, where the bounce goes.
    await sendMessage(f.server.ports.smtp, {
      from: 'owner@dest.test',
      to: ['bob@old.test'],
      body: message('eight bit to old', 'Grüße aus Köln'),
    });
    const bounce = await bounceTo('owner@dest.test');
    assert.equal(f.sinks.old.messages().length, 0, 'nothing reached the old server');
    assert.ok(!f.sinks.old.commands().some((l) => l.startsWith('MAIL')), 'not even MAIL FROM');
    const dsn = parseDsn(bounce.body);
    assert.equal(dsn.recipients[0]?.['status'], '5.6.3');
    assert.equal(dsn.recipients[0]?.['action'], 'failed');
    assert.match(
      dsn.recipients[0]?.['diagnostic-code'] ?? '',
      new RegExp(
        `^smtp; 554 5\\.6\\.3 mx\\.old\\.test\\[127\\.0\\.0\\.3\\]:${f.port} does not accept 8-bit mail \\(no 8BITMIME\\), and this message is DKIM-signed: converting it to 7 bit would break its signature, so it was not sent`,
      ),
    );
    assert.ok(dsn.humanText.replace(/\s+/g, ' ').includes('accepts only 7-bit mail'), dsn.humanText);

    // 7-bit signed mail goes to the same server, and unsigned 8-bit mail still goes as it is.
    await viaTrusted('alice@signed.test', 'bob@old.test', 'seven bit to old');
    await assertDualSigned(await received('seven bit to old', 'old'), 'sevenbit-old');
    await viaTrusted('carol@dest.test', 'bob@old.test', 'unsigned eight bit to old', 'Grüße');
    const unsigned = await received('unsigned eight bit to old', 'old');
    assert.ok(!unsigned.body.includes('DKIM-Signature:'));
    assert.ok(unsigned.body.includes(Buffer.from('Grüße\r\n', 'utf8')));
  },
);
