/**
 * Content filter: milters over real SMTP (docs/filters.md). A real opendkim in sign mode
 * (test/helpers/opendkim.ts) signs a message and its DKIM-Signature is in the stored Maildir
 * file, verified by python3's dkim module; a scripted milter (test/helpers/milter.ts) gives the
 * replies and modifications a real one is hard to make give: a custom reply, reject, tempfail
 * at RCPT, discard, quarantine, every modification (exact stored bytes), a bad reply code, and
 * what Sterna sends it (negotiation, envelope, header fields, body chunks of at most 65535).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Cmd } from '../src/filters/milter-protocol.js';
import {
  aliceMessage as message,
  assertStoredFromAlice,
  CapturedLog,
  FILTER_USERS as USERS,
  sendFromAlice,
  splitTopFields,
} from './helpers/filters.js';
import { maildirMessages, waitForMessages } from './helpers/maildir.js';
import { answer, startScriptedMilter, texts, type ScriptedMilter } from './helpers/milter.js';
import { startOpenDkim, verifyDkim, type OpenDkim } from './helpers/opendkim.js';
import { dataDirsWithCert, startTestServer, type TestServer } from './helpers/server.js';
import { assertReply } from './helpers/smtp-client.js';
import { requireTool } from './helpers/tools.js';

const opendkimTool = requireTool('opendkim');
const milterToml = (name: string, port: number): string => `[[filters]]
type = "milter"
name = "${name}"
address = "inet:127.0.0.1:${port}"
timeout_ms = 30000
`;

describe('opendkim as a milter', { skip: opendkimTool.skip }, () => {
  let opendkim: OpenDkim;
  let server: TestServer;

  before(async () => {
    opendkim = await startOpenDkim('example.com', 'sterna');
    const [d] = await dataDirsWithCert(1);
    server = await startTestServer({
      dataDir: d!,
      toml: milterToml('opendkim', opendkim.port),
      users: USERS,
    });
  });

  after(async () => {
    await server?.stop({ remove: true });
    await opendkim?.cleanup();
  });

  for (const bdat of [false, true]) {
    test(`its DKIM-Signature is in the stored message and verifies (${bdat ? 'BDAT' : 'DATA'})`, async () => {
      const rcpt = bdat ? 'carol' : 'bob';
      const sent = message(`signed ${String(bdat)}`, 'A message opendkim signs.');
      const r = await sendFromAlice(server.ports.smtp, `${rcpt}@sterna.test`, sent, bdat);
      assertReply(r, 250, '2.0.0');
      const [stored] = await waitForMessages(server.dataDir, 'sterna.test', rcpt);
      const { fields, rest } = splitTopFields(stored, /DKIM-Signature: /);
      assert.match(fields, /\bd=example\.com;/);
      assert.match(fields, /\bs=sterna;/);
      assertStoredFromAlice(rest, `${rcpt}@sterna.test`, sent);
      assert.equal(await verifyDkim(stored!, 'sterna._domainkey.example.com', opendkim.record), true);
    });
  }
});

describe('a scripted milter', () => {
  let milter: ScriptedMilter;
  let server: TestServer;
  const log = new CapturedLog();

  before(async () => {
    milter = await startScriptedMilter();
    const [d] = await dataDirsWithCert(1);
    server = await startTestServer({
      dataDir: d!,
      toml: milterToml('scripted', milter.port),
      log: log.logger,
      users: USERS,
    });
  });

  after(async () => {
    await server?.stop({ remove: true });
    await milter?.close();
  });

  const send = (to: string, msg: Buffer, bdat = false) => sendFromAlice(server.ports.smtp, to, msg, bdat);

  test('a custom reply (SMFIR_REPLYCODE) is sent as given; nothing stored', async () => {
    milter.script = { eom: [answer.replyCode('554 5.7.0 Go away, said the milter')] };
    const r = await send('bob@sterna.test', message('custom', 'x'));
    assertReply(r, 554, '5.7.0');
    assert.equal(r.text, '5.7.0 Go away, said the milter');
    assert.equal(server.app.spool.size, 0);
  });

  test('reject → 550 5.7.1; tempfail at RCPT → 451 4.7.1 (BDAT too)', async () => {
    milter.script = { eom: [answer.reject()] };
    const r = await send('bob@sterna.test', message('reject', 'x'));
    assertReply(r, 550, '5.7.1');
    assert.equal(r.text, '5.7.1 Message refused by the content filter scripted');
    milter.script = { at: { [Cmd.RCPT]: [answer.tempfail()] } };
    const t = await send('bob@sterna.test', message('tempfail', 'x'), true);
    assertReply(t, 451, '4.7.1');
    assert.equal(t.text, '4.7.1 Message deferred by the content filter scripted; try again later');
    assert.equal(server.app.spool.size, 0);
    assert.deepEqual(await maildirMessages(server.dataDir, 'sterna.test', 'bob'), []);
  });

  test('discard: 250 with a queue id, nothing stored, logged', async () => {
    milter.script = { eom: [answer.discard()] };
    const r = await send('bob@sterna.test', message('discard', 'x'));
    assertReply(r, 250, '2.0.0');
    const qid = /queued as ([A-Za-z0-9]+)/.exec(r.text)?.[1];
    assert.equal(server.app.spool.size, 0);
    assert.ok(
      log.records.some((x) => x['msg'] === 'discarded' && x['qid'] === qid && x['filter'] === 'scripted'),
    );
    assert.equal(log.filterLines(qid ?? '')[0]?.['verdict'], 'discard');
  });

  test('quarantine: delivered to the Junk folder', async () => {
    milter.script = { eom: [answer.quarantine('looks odd'), answer.continue()] };
    const sent = message('quarantine', 'x');
    assertReply(await send('dave@sterna.test', sent), 250, '2.0.0');
    const [stored] = await waitForMessages(server.dataDir, 'sterna.test', 'dave/.Junk');
    assertStoredFromAlice(stored, 'dave@sterna.test', sent);
  });

  test('add, insert, change and delete header fields, replace the body, add and delete recipients', async () => {
    milter.script = {
      eom: [
        answer.addHeader('X-Added', 'at the end'),
        answer.insertHeader(1, 'X-Inserted', 'after our Received'),
        answer.changeHeader(1, 'Subject', 'changed by the milter'),
        answer.changeHeader(1, 'X-Drop', ''),
        answer.replaceBody('A new body.\nTwo lines.\n'),
        answer.addRcpt('<erin@sterna.test>'),
        answer.deleteRcpt('<bob@sterna.test>'),
        answer.accept(),
      ],
    };
    const r = await send('bob@sterna.test', message('edits', 'The old body.', ['X-Drop: me']));
    assertReply(r, 250, '2.0.0');
    const [stored] = await waitForMessages(server.dataDir, 'sterna.test', 'erin');
    const text = stored?.toString('utf8') ?? '';
    const m =
      /^Return-Path: <alice@example\.com>\r\nDelivered-To: erin@sterna\.test\r\nReceived: from client\.test \(\[127\.0\.0\.1\]\)\r\n(?:\t[^\r\n]*\r\n)+/.exec(
        text,
      );
    assert.ok(m !== null, text);
    assert.equal(
      text.slice(m[0].length),
      [
        'X-Inserted: after our Received',
        'From: Alice <alice@example.com>',
        'To: Bob <bob@sterna.test>',
        'Subject: changed by the milter',
        'Date: Sat, 05 Dec 2026 08:00:00 +0000',
        'Message-ID: <edits@example.com>',
        'X-Added: at the end',
        '',
        'A new body.',
        'Two lines.',
        '',
      ].join('\r\n'),
    );
    assert.deepEqual(await maildirMessages(server.dataDir, 'sterna.test', 'bob'), [], 'bob was deleted');
  });

  test('a reply code that is not 4xx/5xx is a failure: the failure mode answers 451 4.3.0', async () => {
    milter.script = { eom: [answer.replyCode('250 2.0.0 fine')] };
    const r = await send('bob@sterna.test', message('bad code', 'x'));
    assertReply(r, 451, '4.3.0');
    assert.equal(
      r.text,
      '4.3.0 Message could not be checked: content filter scripted unavailable; try again later',
    );
  });

  test('what the milter is sent: v6 negotiation, envelope, macros, fields, body in chunks of 65535', async () => {
    milter.script = {};
    milter.sessions.length = 0;
    const body = 'x'.repeat(998) + '\r\n';
    const sent = message('sizes', body.repeat(150).slice(0, -2));
    const r = await send('bob@sterna.test', sent);
    assertReply(r, 250, '2.0.0');
    const qid = /queued as ([A-Za-z0-9]+)/.exec(r.text)?.[1] ?? '';
    const s = milter.sessions[0] ?? [];
    const cmds = s.filter((p) => p.cmd !== Cmd.MACRO);
    assert.equal(cmds[0]?.cmd, Cmd.OPTNEG);
    assert.equal(cmds[0]?.data.readUInt32BE(0), 6);
    const byCmd = (c: string) => cmds.filter((p) => p.cmd === c);
    const connect = byCmd(Cmd.CONNECT)[0]!;
    assert.equal(connect.data.subarray(0, connect.data.indexOf(0)).toString(), '[127.0.0.1]');
    assert.equal(String.fromCharCode(connect.data[connect.data.indexOf(0) + 1] ?? 0), '4');
    assert.deepEqual(texts(byCmd(Cmd.HELO)[0]), ['client.test']);
    assert.deepEqual(texts(byCmd(Cmd.MAIL)[0]), ['<alice@example.com>']);
    assert.deepEqual(texts(byCmd(Cmd.RCPT)[0]), ['<bob@sterna.test>']);
    const headers = byCmd(Cmd.HEADER).map(texts);
    assert.equal(headers[0]?.[0], 'Received');
    assert.match(headers[0]?.[1] ?? '', /^from client\.test \(\[127\.0\.0\.1\]\)\n\tby mx\.sterna\.test/);
    assert.deepEqual(headers.slice(1), [
      ['From', 'Alice <alice@example.com>'],
      ['To', 'Bob <bob@sterna.test>'],
      ['Subject', 'sizes'],
      ['Date', 'Sat, 05 Dec 2026 08:00:00 +0000'],
      ['Message-ID', '<sizes@example.com>'],
    ]);
    const chunks = byCmd(Cmd.BODY).map((p) => p.data.length);
    assert.deepEqual(chunks, [65535, 65535, 150 * 1000 - 2 * 65535]);
    assert.equal(Buffer.concat(byCmd(Cmd.BODY).map((p) => p.data)).toString(), body.repeat(150));
    assert.equal(cmds.at(-2)?.cmd, Cmd.BODYEOB);
    assert.equal(cmds.at(-1)?.cmd, Cmd.QUIT);
    const mailMacros = s[s.indexOf(byCmd(Cmd.MAIL)[0]!) - 1];
    assert.equal(mailMacros?.cmd, Cmd.MACRO);
    assert.deepEqual(texts({ cmd: 'D', data: (mailMacros?.data ?? Buffer.alloc(0)).subarray(1) }), [
      'i',
      qid,
      '{mail_addr}',
      'alice@example.com',
    ]);
  });
});
