/**
 * Inbound mail authentication over real SMTP (docs/mail-auth.md): SPF, DKIM, DMARC and ARC
 * results in the one Authentication-Results field at the top of the delivered message, forged
 * fields removed, the policy replies, and bad input that must neither crash nor stall a session.
 * Messages are signed by independent signers (dkimpy: dkimsign, arcsign, the dkim module) with
 * keys generated here and published in the test DNS server; nothing asks the system resolver.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startDnsServer, type TestDnsServer, type Zone } from './helpers/dns-server.js';
import { waitForMessages } from './helpers/maildir.js';
import {
  arcSign,
  dkimSign,
  dkimSignWithLength,
  ed25519Key,
  rsaKey,
  splitTxt,
  topField,
  transact,
  transactOn,
  type DkimKey,
} from './helpers/mailauth.js';
import { dotStuff } from './helpers/outbound.js';
import { dataDirsWithCert, startTestServer, TEST_HOSTNAME, type TestServer } from './helpers/server.js';
import { TestClient, assertReply } from './helpers/smtp-client.js';
import { crlfMessage, makeTempDir, requireTool } from './helpers/tools.js';

const dkimpy = requireTool('dkimsign');
const RCPT = 'bob@sterna.test';

let dns: TestDnsServer;
let server: TestServer;
let strict: TestServer;
let keys: { rsa: DkimKey; ed: DkimKey; weak: DkimKey; arc: DkimKey };
let cleanup: () => Promise<void>;
let delivered = 0;
let strictDelivered = 0;

function zone(k: typeof keys): Zone {
  const chain: Zone = {};
  for (let i = 1; i <= 12; i++)
    chain[`c${i}.chain.example`] = { TXT: [[`v=spf1 include:c${i + 1}.chain.example -all`]] };
  return {
    ...chain,
    'pass.example': { TXT: [['v=spf1 ip4:127.0.0.1 -all']] },
    '_dmarc.pass.example': { TXT: [['v=DMARC1; p=reject']] },
    // The key record split at odd places (RFC 7208 3.3 / RFC 6376 3.6.2.2: joined with nothing between).
    'rsa._domainkey.pass.example': { TXT: [splitTxt(k.rsa.record, 7, 100, 3)] },
    'ed._domainkey.pass.example': {
      TXT: [['v=DKIM1; k=ed25519; ', k.ed.record.slice('v=DKIM1; k=ed25519; '.length)]],
    },
    'weak._domainkey.pass.example': { TXT: [[k.weak.record]] },
    'bad._domainkey.pass.example': { TXT: [['v=DKIM1; k=rsa; p=AAAAB3NzaC1yc2EnotakeyAAAA']] },
    'slow._domainkey.pass.example': { drop: true },
    'forged.example': { TXT: [['v=spf1 ip4:192.0.2.1 exp=explain.%{d} -all']] },
    'explain.forged.example': { TXT: [['%{i} is not one of ', "%{d}'s mail servers"]] },
    '_dmarc.forged.example': { TXT: [['v=DMARC1; p=reject']] },
    'quar.example': { TXT: [['v=spf1 ip4:192.0.2.1 -all']] },
    '_dmarc.quar.example': { TXT: [['v=DMARC1; p=quarantine']] },
    'pct.example': { TXT: [['v=spf1 ip4:192.0.2.1 -all']] },
    '_dmarc.pct.example': { TXT: [['v=DMARC1; p=reject; pct=0']] },
    'mail.example.co.uk': { TXT: [['v=spf1 ip4:192.0.2.1 -all']] },
    '_dmarc.example.co.uk': { TXT: [['v=DMARC1; p=none; sp=reject']] },
    'softfail.example': { TXT: [['v=spf1 ~all']] },
    'neutral.example': { TXT: [['v=spf1 ?all']] },
    'none.example': { A: ['192.0.2.9'] },
    'loop.example': { TXT: [['v=spf1 include:loop.example -all']] },
    'void.example': {
      TXT: [['v=spf1 a:nx1.void.example a:nx2.void.example a:nx3.void.example ip4:127.0.0.1 -all']],
    },
    'dead.example': { drop: true },
    'helo.example': { TXT: [['v=spf1 ip4:127.0.0.1 -all']] },
    'fwd.example': { TXT: [['v=spf1 ip4:127.0.0.1 -all']] },
    'relay.example': { TXT: [['v=spf1 ip4:127.0.0.1 -all']] },
    'arc._domainkey.relay.example': { TXT: [splitTxt(k.arc.record, 200)] },
  };
}

before(async () => {
  if (dkimpy.skip !== false) return;
  const tmp = await makeTempDir('sterna-mailauth-');
  cleanup = () => tmp.cleanup();
  keys = {
    rsa: await rsaKey(tmp.dir, 'rsa'),
    ed: await ed25519Key(tmp.dir, 'ed'),
    weak: await rsaKey(tmp.dir, 'weak', 768),
    arc: await rsaKey(tmp.dir, 'arc'),
  };
  dns = await startDnsServer(zone(keys));
  const [d1, d2] = await dataDirsWithCert(2);
  const dnsToml = `[dns]\nservers = ["127.0.0.1:${dns.port}"]\ntimeout_ms = 300\ntries = 1\n`;
  const users = [
    { address: RCPT, password: 'secret-password' },
    { address: 'carol@sterna.test', password: 'secret-password' },
  ];
  server = await startTestServer({ dataDir: d1!, users, toml: `${dnsToml}[mailauth]\ntimeout_ms = 5000\n` });
  strict = await startTestServer({
    dataDir: d2!,
    users,
    toml: `${dnsToml}[mailauth]
timeout_ms = 5000
spf_fail_action = "reject"
temperror_action = "defer"
max_header_bytes = 16384
exempt = ["fwd.example"]
`,
  });
});

after(async () => {
  await server?.stop({ remove: true });
  await strict?.stop({ remove: true });
  await dns?.close();
  await cleanup?.();
});

function message(from: string, extra: string[] = [], body = ['Hello Bob.', '']): Buffer {
  return crlfMessage([
    ...extra,
    `From: Alice <${from}>`,
    `To: ${RCPT}`,
    'Subject: mail authentication',
    'Date: Sat, 05 Dec 2026 10:00:00 +0000',
    `Message-ID: <${Math.random().toString(36).slice(2)}@test>`,
    '',
    ...body,
  ]);
}

/** One transaction on `s` with MAIL FROM `from` and a message from `fromHeader`; returns the final reply. */
function attempt(s: TestServer, from: string, fromHeader = from): ReturnType<typeof transact> {
  return transact(s.ports.smtp, { from, to: RCPT, message: message(fromHeader) });
}

/** A message from alice@pass.example signed by dkimpy with the rsa selector (relaxed/simple). */
function signedByPass(extra: string[] = []): Promise<Buffer> {
  return dkimSign(message('alice@pass.example', extra), {
    selector: 'rsa',
    domain: 'pass.example',
    key: keys.rsa,
  });
}

/** Sends on `s` and returns the delivered message (the n-th in the Maildir). */
async function deliver(
  s: TestServer,
  from: string,
  msg: Buffer,
  opts: { bdat?: boolean; helo?: string } = {},
): Promise<Buffer> {
  const r = await transact(s.ports.smtp, { from, to: RCPT, message: msg, ...opts });
  assertReply(r, 250, '2.0.0');
  const n = s === server ? ++delivered : ++strictDelivered;
  const msgs = await waitForMessages(s.dataDir, 'sterna.test', 'bob', n);
  assert.equal(msgs.length, n, 'message delivered');
  return msgs[n - 1]!;
}

/** The first 8 characters of b= of the n-th DKIM-Signature field, as rendered in header.b. */
function headerB(signed: Buffer, n = 0): string {
  const fields = signed
    .toString('utf8')
    .split(/\r\n(?![ \t])/)
    .filter((f) => /^DKIM-Signature:/i.test(f));
  const b =
    /[;\s]b=([A-Za-z0-9+/=\s]+)/
      .exec(fields[n] ?? '')?.[1]
      ?.replace(/\s+/g, '')
      .slice(0, 8) ?? '';
  return /[/=]/.test(b) ? `"${b}"` : b;
}

function arLines(delivered: Buffer): string[] {
  return topField(delivered)
    .split(/;?\r\n ?/)
    .filter((l) => l !== '');
}

const SPF_PASS =
  'spf=pass (domain of alice@pass.example designates 127.0.0.1 as permitted sender) smtp.mailfrom=alice@pass.example';

describe('mail authentication on the smtp listener', { skip: dkimpy.skip }, () => {
  test('dkimpy rsa-sha256 (relaxed/simple) and ed25519-sha256 (relaxed/relaxed) both pass: exact field at the top', async () => {
    const once = await signedByPass();
    const signed = await dkimSign(once, {
      selector: 'ed',
      domain: 'pass.example',
      key: keys.ed,
      signalg: 'ed25519-sha256',
      bcanon: 'relaxed',
    });
    const got = await deliver(server, 'alice@pass.example', signed);
    assert.equal(
      topField(got),
      `Authentication-Results: ${TEST_HOSTNAME};\r\n` +
        ` ${SPF_PASS};\r\n` +
        ` dkim=pass header.d=pass.example header.s=ed header.a=ed25519-sha256 header.b=${headerB(signed, 0)};\r\n` +
        ` dkim=pass header.d=pass.example header.s=rsa header.a=rsa-sha256 header.b=${headerB(signed, 1)};\r\n` +
        ' dmarc=pass (p=reject sp=reject pct=100 dis=none) header.from=pass.example;\r\n' +
        ' arc=none\r\n',
    );
    // Local delivery's Return-Path and Delivered-To, our field, our Received, then the message as sent.
    const text = got.toString('utf8');
    assert.ok(
      text.startsWith(
        `Return-Path: <alice@pass.example>\r\nDelivered-To: ${RCPT}\r\n${topField(got)}Received: from client.test ([127.0.0.1])`,
      ),
      text,
    );
    assert.ok(got.toString('utf8').endsWith(signed.toString('utf8')));
  });

  test('the same over BDAT (one rule, every path), simple/simple', async () => {
    const signed = await dkimSign(message('alice@pass.example'), {
      selector: 'rsa',
      domain: 'pass.example',
      key: keys.rsa,
      hcanon: 'simple',
    });
    const got = await deliver(server, 'alice@pass.example', signed, { bdat: true });
    assert.deepEqual(arLines(got).slice(1), [
      SPF_PASS,
      `dkim=pass header.d=pass.example header.s=rsa header.a=rsa-sha256 header.b=${headerB(signed)}`,
      'dmarc=pass (p=reject sp=reject pct=100 dis=none) header.from=pass.example',
      'arc=none',
    ]);
  });

  test('a forged Authentication-Results claiming our authserv-id is removed; a foreign one is kept', async () => {
    const forged = [
      `Authentication-Results: ${TEST_HOSTNAME}; dmarc=pass header.from=pass.example`,
      'Authentication-Results: (comment) MX.STERNA.TEST;',
      '  spf=pass smtp.mailfrom=alice@pass.example',
      'Authentication-Results: other.example; spf=pass smtp.mailfrom=x@other.example',
      `Authentication-Results: "${TEST_HOSTNAME}"; dkim=pass`,
    ];
    const msg = message('alice@pass.example', forged);
    const got = await deliver(server, 'alice@pass.example', msg);
    const text = got.toString('utf8');
    const ours = text.split(/\r\n(?![ \t])/).filter((f) => /^Authentication-Results:/i.test(f));
    assert.equal(ours.length, 2, text);
    assert.match(
      ours[0]!,
      new RegExp(`^Authentication-Results: ${TEST_HOSTNAME.replace(/\./g, '\\.')};\r\n spf=pass`),
    );
    assert.equal(ours[1], 'Authentication-Results: other.example; spf=pass smtp.mailfrom=x@other.example');
    assert.ok(!text.includes('dmarc=pass header.from=pass.example'), 'forged field gone');
    assert.ok(!text.includes('MX.STERNA.TEST'), 'forged folded field gone');
    assert.ok(!text.includes('dkim=pass'), 'forged quoted-string field gone');
  });

  test('DMARC p=reject failing: 550 5.7.1 with the domain and the reason, over DATA and BDAT; nothing delivered', async () => {
    for (const bdat of [false, true]) {
      const r = await transact(server.ports.smtp, {
        from: 'alice@forged.example',
        to: RCPT,
        message: message('alice@forged.example'),
        bdat,
      });
      assertReply(r, 550, '5.7.1');
      assert.equal(
        r.text,
        '5.7.1 Message refused: it fails DMARC for forged.example and the domain asks receivers to reject such mail ' +
          '(SPF fail for forged.example, no passing DKIM signature; none aligned with the From domain)',
      );
    }
    // The next good message is the only new one in the Maildir.
    const got = await deliver(server, 'alice@pass.example', message('alice@pass.example'));
    assert.match(topField(got), /dmarc=pass/);
  });

  test('the organizational domain comes from the Public Suffix List: sp=reject of example.co.uk applies to mail.example.co.uk', async () => {
    const r = await attempt(server, 'alice@mail.example.co.uk');
    assertReply(r, 550, '5.7.1');
    assert.match(r.text, /fails DMARC for mail\.example\.co\.uk/);
  });

  test('p=quarantine failing goes to the Junk folder, marked; p=reject with pct=0 becomes quarantine (RFC 7489 6.6.4); a pass stays in new/', async () => {
    const junkRcpt = 'carol@sterna.test';
    const send = async (from: string, msg: Buffer): Promise<void> =>
      assertReply(await transact(server.ports.smtp, { from, to: junkRcpt, message: msg }), 250, '2.0.0');
    await send('alice@quar.example', message('alice@quar.example'));
    await send('alice@pct.example', message('alice@pct.example'));
    const junk = await waitForMessages(server.dataDir, 'sterna.test', 'carol/.Junk', 2);
    assert.equal(junk.length, 2, 'both failing messages in .Junk/new');
    const [q, p] = junk.sort((a, b) =>
      a.includes('quar.example') ? -1 : b.includes('quar.example') ? 1 : 0,
    );
    assert.equal(
      arLines(q!)[3],
      'dmarc=fail (p=quarantine sp=quarantine pct=100 dis=quarantine) header.from=quar.example',
    );
    assert.equal(
      arLines(p!)[3],
      'dmarc=fail (p=reject sp=reject pct=0 dis=quarantine) header.from=pct.example',
    );
    // A passing message for the same mailbox lands in new/, and is the only one there.
    await send('alice@pass.example', await signedByPass());
    const inbox = await waitForMessages(server.dataDir, 'sterna.test', 'carol', 1);
    assert.equal(inbox.length, 1);
    assert.match(arLines(inbox[0]!)[3] ?? '', /^dmarc=pass /);
    assert.equal((await waitForMessages(server.dataDir, 'sterna.test', 'carol/.Junk', 2)).length, 2);
  });

  test('SPF: all seven results, the HELO identity for MAIL FROM:<>', async () => {
    const cases: [string, string][] = [
      ['alice@pass.example', 'spf=pass'],
      ['alice@forged.example', 'spf=fail'],
      ['alice@softfail.example', 'spf=softfail'],
      ['alice@neutral.example', 'spf=neutral'],
      ['alice@none.example', 'spf=none'],
      ['alice@loop.example', 'spf=permerror'],
      ['alice@dead.example', 'spf=temperror'],
    ];
    for (const [from, want] of cases) {
      // From: pass.example with a DKIM pass, so DMARC passes and no policy gets in the way.
      const signed = await signedByPass();
      const got = await deliver(server, from, signed);
      const line = arLines(got)[1] ?? '';
      assert.ok(line.startsWith(`${want} (`), `${from}: ${line}`);
      assert.ok(line.endsWith(` smtp.mailfrom=${from}`), line);
    }
    const signed = await signedByPass();
    const r = await transact(server.ports.smtp, {
      from: '',
      to: RCPT,
      message: signed,
      helo: 'helo.example',
    });
    assertReply(r, 250, '2.0.0');
    const msgs = await waitForMessages(server.dataDir, 'sterna.test', 'bob', ++delivered);
    assert.equal(
      arLines(msgs[delivered - 1]!)[1],
      'spf=pass (domain of postmaster@helo.example designates 127.0.0.1 as permitted sender) smtp.helo=helo.example',
    );
  });

  test('SPF limits: more than 10 lookups and more than 2 void lookups are permerror', async () => {
    for (const [from, why] of [
      ['alice@c1.chain.example', /Too many DNS requests/],
      ['alice@void.example', /Too many void DNS results/],
    ] as const) {
      const signed = await signedByPass();
      const got = await deliver(server, from, signed);
      const line = arLines(got)[1] ?? '';
      assert.ok(line.startsWith('spf=permerror ('), line);
      assert.match(line, why);
    }
  });

  test('DKIM: a key under 1024 bits fails; a key that does not parse is permerror; a DNS timeout is temperror', async () => {
    const base = message('alice@pass.example');
    const weak = await dkimSign(base, { selector: 'weak', domain: 'pass.example', key: keys.weak });
    const bad = await dkimSign(base, { selector: 'bad', domain: 'pass.example', key: keys.rsa });
    const slow = await dkimSign(base, { selector: 'slow', domain: 'pass.example', key: keys.rsa });
    const expect: [Buffer, string][] = [
      [
        weak,
        `dkim=fail (RSA key too short RFC 8301 3.2) header.d=pass.example header.s=weak header.a=rsa-sha256 header.b=${headerB(weak)}`,
      ],
      [
        bad,
        `dkim=permerror (unknown key type) header.d=pass.example header.s=bad header.a=rsa-sha256 header.b=${headerB(bad)}`,
      ],
      [
        slow,
        `dkim=temperror (DNS failure: ETIMEOUT) header.d=pass.example header.s=slow header.a=rsa-sha256 header.b=${headerB(slow)}`,
      ],
    ];
    for (const [msg, want] of expect) {
      const got = await deliver(server, 'alice@pass.example', msg);
      assert.equal(arLines(got)[2], want);
    }
  });

  test('DKIM l=: a signature that leaves appended text unsigned is "policy", not pass (allow_partial_body = false)', async () => {
    const signed = await dkimSignWithLength(message('alice@pass.example'), {
      selector: 'rsa',
      domain: 'pass.example',
      key: keys.rsa,
    });
    const appended = Buffer.concat([signed, Buffer.from('Appended by someone else.\r\n')]);
    const got = await deliver(server, 'alice@pass.example', appended);
    assert.equal(
      arLines(got)[2],
      `dkim=policy (l= leaves part of the body unsigned) header.d=pass.example header.s=rsa header.a=rsa-sha256 header.b=${headerB(signed)}`,
    );
    // Not counted for DMARC: with an SPF that does not align, pass.example's p=reject refuses it.
    const r = await transact(server.ports.smtp, { from: 'alice@quar.example', to: RCPT, message: appended });
    assertReply(r, 550, '5.7.1');
    assert.match(r.text, /no passing DKIM signature/);
    // The whole body signed with l= is a pass.
    const whole = await deliver(server, 'alice@quar.example', signed);
    assert.match(arLines(whole)[2] ?? '', /^dkim=pass header\.d=pass\.example /);
  });

  test('bad input: malformed and duplicate DKIM-Signature fields, a body hash mismatch', async () => {
    const signed = await signedByPass();
    const sig = signed.toString('utf8').split(/\r\n(?![ \t])/)[0]!;
    const withDup = Buffer.concat([
      Buffer.from(`${sig}\r\nDKIM-Signature: v=1; a=rot13; garbage\r\nDKIM-Signature: ;;;==\r\n`),
      signed,
    ]);
    const got = await deliver(server, 'alice@pass.example', withDup);
    const b = headerB(signed);
    assert.deepEqual(arLines(got).slice(2, 6), [
      `dkim=pass header.d=pass.example header.s=rsa header.a=rsa-sha256 header.b=${b}`,
      `dkim=pass header.d=pass.example header.s=rsa header.a=rsa-sha256 header.b=${b}`,
      'dkim=neutral (DKIM-Signature field could not be parsed)',
      'dkim=neutral (DKIM-Signature field could not be parsed)',
    ]);
    const tampered = Buffer.from(signed.toString('utf8').replace('Hello Bob.', 'Hello Eve.'));
    const got2 = await deliver(server, 'alice@pass.example', tampered);
    assert.equal(
      arLines(got2)[2],
      `dkim=fail (body hash did not verify) header.d=pass.example header.s=rsa header.a=rsa-sha256 header.b=${b}`,
    );
  });

  test('ARC: a chain sealed by dkimpy verifies (arc=pass); a body changed after the seal fails (arc=fail)', async () => {
    const withAr = message('alice@relay.example', [
      'Authentication-Results: relay.example; spf=pass smtp.mailfrom=alice@relay.example',
    ]);
    const sealed = await arcSign(withAr, {
      selector: 'arc',
      domain: 'relay.example',
      key: keys.arc,
      srvId: 'relay.example',
    });
    const got = await deliver(server, 'alice@relay.example', sealed);
    assert.equal(arLines(got).at(-1), 'arc=pass (i=1)');
    const broken = Buffer.from(sealed.toString('utf8').replace('Hello Bob.', 'Hello Eve.'));
    const got2 = await deliver(server, 'alice@relay.example', broken);
    assert.match(arLines(got2).at(-1) ?? '', /^arc=fail/);
  });

  test('a 4 MiB body streams through the verifier (dkimpy relaxed/relaxed: pass) while another session is served', async () => {
    const line = `${'0123456789abcdef'.repeat(4)} \t trailing space and tab \t \r\n`;
    const body = Array.from({ length: Math.ceil((4 * 1024 * 1024) / line.length) }, () => line).join('');
    const base = Buffer.concat([message('alice@pass.example', [], []), Buffer.from(body)]);
    const signed = await dkimSign(base, {
      selector: 'rsa',
      domain: 'pass.example',
      key: keys.rsa,
      bcanon: 'relaxed',
    });
    const big = await TestClient.connect(server.ports.smtp);
    const other = await TestClient.connect(server.ports.smtp);
    try {
      await big.expect(220);
      await other.expect(220);
      assertReply(await big.cmd('EHLO client.test'), 250);
      assertReply(await big.cmd('MAIL FROM:<alice@pass.example>'), 250);
      assertReply(await big.cmd(`RCPT TO:<${RCPT}>`), 250);
      assertReply(await big.cmd('DATA'), 354);
      big.send(dotStuff(signed));
      // The other session is answered while the big body is still arriving and being hashed.
      assertReply(await other.cmd('NOOP'), 250, '2.0.0');
      big.send('.\r\n');
      const r = await big.read();
      assert.ok(r !== null);
      assertReply(r, 250, '2.0.0');
    } finally {
      big.close();
      other.close();
    }
    const msgs = await waitForMessages(server.dataDir, 'sterna.test', 'bob', ++delivered);
    assert.equal(
      arLines(msgs[delivered - 1]!)[2],
      `dkim=pass header.d=pass.example header.s=rsa header.a=rsa-sha256 header.b=${headerB(signed)}`,
    );
  });

  test('a DNS server that does not answer: the session goes on, bounded by the DNS timeouts', async () => {
    const c = await TestClient.connect(server.ports.smtp);
    try {
      await c.expect(220);
      const started = Date.now();
      const r = await transactOn(c, {
        from: 'alice@dead.example',
        to: RCPT,
        message: message('alice@dead.example'),
      });
      assertReply(r, 250, '2.0.0');
      assert.ok(Date.now() - started < 5000, 'answered within the DNS timeouts');
      assertReply(await c.cmd('NOOP'), 250, '2.0.0');
    } finally {
      c.close();
    }
    const msgs = await waitForMessages(server.dataDir, 'sterna.test', 'bob', ++delivered);
    const lines = arLines(msgs[delivered - 1]!);
    assert.match(lines[1] ?? '', /^spf=temperror /);
    assert.equal(lines[3], 'dmarc=none header.from=dead.example');
  });
});

describe('mail authentication policy keys', { skip: dkimpy.skip }, () => {
  test('spf_fail_action = "reject": 550 5.7.23 with the domain\'s exp= explanation (RFC 7208 6.2)', async () => {
    const r = await attempt(strict, 'alice@forged.example', 'alice@quar.example');
    assertReply(r, 550, '5.7.23');
    assert.equal(
      r.text,
      "5.7.23 Message refused: SPF fail, forged.example does not allow 127.0.0.1 to send its mail: 127.0.0.1 is not one of forged.example's mail servers",
    );
  });

  test('temperror_action = "defer": 451 4.7.24 when SPF cannot be checked', async () => {
    const r = await attempt(strict, 'alice@dead.example');
    assertReply(r, 451, '4.7.24');
    assert.equal(r.text, '4.7.24 SPF for dead.example could not be checked (DNS failure); try again later');
  });

  test('the allow list: a listed sender domain (SPF pass) is not refused for a failing DMARC p=reject, and is marked', async () => {
    const got = await deliver(strict, 'list@fwd.example', message('alice@forged.example'));
    assert.match(
      arLines(got)[3] ?? '',
      /^dmarc=fail \(p=reject sp=reject pct=100 dis=reject\) header\.from=forged\.example$/,
    );
  });

  test('the allow list: a listed sender domain (SPF pass) failing DMARC p=quarantine stays out of Junk, marked', async () => {
    const got = await deliver(strict, 'list@fwd.example', message('alice@quar.example'));
    assert.equal(
      arLines(got)[3],
      'dmarc=fail (p=quarantine sp=quarantine pct=100 dis=quarantine) header.from=quar.example',
    );
  });

  test('a header section over max_header_bytes is not verified (dkim=permerror) and the session goes on', async () => {
    const huge = Array.from({ length: 400 }, (_, i) => `X-Filler-${i}: ${'x'.repeat(60)}`);
    const signed = await dkimSign(message('alice@pass.example', huge), {
      selector: 'rsa',
      domain: 'pass.example',
      key: keys.rsa,
    });
    const got = await deliver(strict, 'alice@pass.example', signed);
    const lines = arLines(got);
    assert.equal(lines[2], 'dkim=permerror (header section over 16384 octets, not verified)');
    assert.equal(lines[3], 'dmarc=permerror (header section over 16384 octets, not verified)');
  });
});

describe('submission: checks off by default, forged fields still removed', { skip: dkimpy.skip }, () => {
  test('no field added on submission; a forged one with our id is removed there too', async () => {
    const sub = await startTestServer({
      users: [{ address: RCPT, password: 'secret-password' }],
      toml: `[dns]\nservers = ["127.0.0.1:${dns.port}"]\ntimeout_ms = 300\ntries = 1\n`,
      auth: 'allow_plaintext = true',
    });
    try {
      const c = await TestClient.connect(sub.ports.submission);
      try {
        await c.expect(220);
        assertReply(await c.cmd('EHLO client.test'), 250);
        const auth = Buffer.from(`\0${RCPT}\0secret-password`).toString('base64');
        assertReply(await c.cmd(`AUTH PLAIN ${auth}`), 235, '2.7.0');
        const msg = message(RCPT, [`Authentication-Results: ${TEST_HOSTNAME}; dmarc=pass`]);
        assertReply(await c.cmd(`MAIL FROM:<${RCPT}>`), 250);
        assertReply(await c.cmd(`RCPT TO:<${RCPT}>`), 250);
        assertReply(await c.cmd('DATA'), 354);
        c.send(Buffer.concat([msg, Buffer.from('.\r\n')]));
        assertReply(await c.read().then((r) => r ?? assert.fail('closed')), 250, '2.0.0');
      } finally {
        c.close();
      }
      const [got] = await waitForMessages(sub.dataDir, 'sterna.test', 'bob', 1);
      assert.ok(got !== undefined);
      const text = got.toString('utf8');
      assert.ok(!/^Authentication-Results:/im.test(text), text);
      assert.match(topField(got), /^Received: from client\.test /);
    } finally {
      await sub.stop({ remove: true });
    }
  });
});
