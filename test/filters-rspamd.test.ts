/**
 * Content filter: a real rspamd (Debian's, a private instance, test/helpers/rspamd.ts) asked by
 * Sterna at the end of data, over real SMTP (docs/filters.md): GTUBE refused with rspamd's
 * message on DATA and BDAT alike and nothing stored, a clean message stored byte for byte,
 * rspamd's greylist action deferred, "rewrite subject" applied to the stored message, "add
 * header" delivered to the Junk folder with junk = true, and rspamd stopped → the failure mode
 * (tempfail: 451 4.3.0; accept: stored unchecked).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  aliceMessage,
  assertStoredFromAlice,
  CapturedLog,
  FILTER_CLIENT_TIMEOUT_MS,
  FILTER_USERS as users,
  sendFromAlice,
  type Daemon,
} from './helpers/filters.js';
import { maildirMessages, waitForMessages } from './helpers/maildir.js';
import { transact } from './helpers/mailauth.js';
import {
  GTUBE,
  GTUBE_ADD_HEADER,
  GTUBE_REWRITE_SUBJECT,
  RSPAMD_SOFT_MESSAGE,
  startRspamd,
} from './helpers/rspamd.js';
import { dataDirsWithCert, startTestServer, type TestServer } from './helpers/server.js';
import { assertReply } from './helpers/smtp-client.js';
import { assertDelivered, requireTool } from './helpers/tools.js';
import path from 'node:path';

const rspamdTool = requireTool('rspamd');

/** A message rspamd finds clean: every field it expects, from a sender with no policy. */
const cleanMessage = (subject: string, body: string): Buffer =>
  aliceMessage(subject, body, ['MIME-Version: 1.0', 'Content-Type: text/plain; charset=us-ascii']);

const QID_RE = /queued as ([A-Za-z0-9]+)/;

describe('rspamd filter', { skip: rspamdTool.skip }, () => {
  let rspamd: Daemon;
  let server: TestServer;
  let failAccept: TestServer;
  const log = new CapturedLog();

  before(async () => {
    rspamd = await startRspamd();
    const [d1, d2] = await dataDirsWithCert(2);
    const filter = (onFailure: string): string => `[[filters]]
type = "rspamd"
url = "http://127.0.0.1:${rspamd.port}"
timeout_ms = 60000
on_failure = "${onFailure}"
junk = true
`;
    server = await startTestServer({ dataDir: d1!, toml: filter('tempfail'), log: log.logger, users });
    failAccept = await startTestServer({ dataDir: d2!, toml: filter('accept'), users });
  });

  after(async () => {
    await server?.stop({ remove: true });
    await failAccept?.stop({ remove: true });
    await rspamd?.cleanup();
  });

  for (const bdat of [false, true]) {
    test(`GTUBE is refused with rspamd's message, 550 5.7.1 (${bdat ? 'BDAT' : 'DATA'}); nothing is stored`, async () => {
      const r = await transact(
        server.ports.smtp,
        {
          from: 'spammer@example.com',
          to: 'bob@sterna.test',
          message: cleanMessage(`gtube ${String(bdat)}`, GTUBE),
          bdat,
        },
        { timeoutMs: FILTER_CLIENT_TIMEOUT_MS },
      );
      assertReply(r, 550, '5.7.1');
      assert.equal(r.text, '5.7.1 Gtube pattern');
      assert.equal(server.app.spool.size, 0, 'nothing in the spool');
      assert.deepEqual(await maildirMessages(server.dataDir, 'sterna.test', 'bob'), []);
      const line = log.records.find((x) => x['msg'] === 'filter' && x['verdict'] === 'reject');
      assert.ok(line !== undefined && typeof line['qid'] === 'string' && typeof line['ms'] === 'number');
      assert.equal(line['filter'], 'rspamd');
      log.records.length = 0;
    });
  }

  test('a clean message passes and is stored byte for byte, its verdict logged with the queue id', async () => {
    const message = cleanMessage('lunch', 'Lunch at noon?');
    const r = await sendFromAlice(server.ports.smtp, 'bob@sterna.test', message);
    assertReply(r, 250, '2.0.0');
    const qid = QID_RE.exec(r.text)?.[1] ?? '';
    const [stored] = await waitForMessages(server.dataDir, 'sterna.test', 'bob');
    assertDelivered(stored, {
      sender: 'alice@example.com',
      recipient: 'bob@sterna.test',
      helo: 'client.test',
      protocol: 'ESMTP',
      message,
      qid,
    });
    const [line] = log.filterLines(qid);
    assert.equal(line?.['verdict'], 'accept');
    assert.match(String(line?.['detail']), /^action=no action score=/);
  });

  test("rspamd's soft reject is deferred with rspamd's message, 451 4.7.1; its greylist too", async () => {
    const soft = await sendFromAlice(
      server.ports.smtp,
      'erin@sterna.test',
      cleanMessage('please defer', 'Not now.'),
    );
    assertReply(soft, 451, '4.7.1');
    assert.equal(soft.text, `4.7.1 ${RSPAMD_SOFT_MESSAGE}`);
    const grey = await sendFromAlice(
      server.ports.smtp,
      'erin@sterna.test',
      cleanMessage('please greylist', 'Later.'),
    );
    assertReply(grey, 451, '4.7.1');
    assert.equal(grey.text, '4.7.1 Message deferred by the content filter rspamd; try again later');
    assert.equal(server.app.spool.size, 0);
    assert.deepEqual(await maildirMessages(server.dataDir, 'sterna.test', 'erin'), []);
  });

  test('"rewrite subject": the stored Subject is rspamd\'s, the rest unchanged; junk = true sends it to .Junk', async () => {
    const message = cleanMessage('offer', GTUBE_REWRITE_SUBJECT);
    const r = await sendFromAlice(server.ports.smtp, 'carol@sterna.test', message);
    assertReply(r, 250, '2.0.0');
    const [stored] = await waitForJunk(server, 'carol');
    assert.deepEqual(await maildirMessages(server.dataDir, 'sterna.test', 'carol'), [], 'not in the inbox');
    const want = Buffer.from(
      message.toString('utf8').replace('Subject: offer\r\n', 'Subject: *** SPAM *** offer\r\n'),
    );
    assertStoredFromAlice(stored, 'carol@sterna.test', want);
  });

  test('"add header": X-Spam: Yes on top of the stored message, in .Junk', async () => {
    const message = cleanMessage('prize', GTUBE_ADD_HEADER);
    const r = await sendFromAlice(server.ports.smtp, 'dave@sterna.test', message);
    assertReply(r, 250, '2.0.0');
    const [stored] = await waitForJunk(server, 'dave');
    const text = stored?.toString('utf8') ?? '';
    const head = 'Return-Path: <alice@example.com>\r\nDelivered-To: dave@sterna.test\r\n';
    assert.ok(text.startsWith(`${head}X-Spam: Yes\r\nReceived: `), text);
    assertStoredFromAlice(Buffer.from(text.replace('X-Spam: Yes\r\n', '')), 'dave@sterna.test', message);
  });

  test('rspamd stopped: on_failure = "tempfail" answers 451 4.3.0; on_failure = "accept" stores the message', async () => {
    await rspamd.stop();
    const message = cleanMessage('down', 'Is anyone there?');
    const r = await sendFromAlice(server.ports.smtp, 'bob@sterna.test', message);
    assertReply(r, 451, '4.3.0');
    assert.equal(
      r.text,
      '4.3.0 Message could not be checked: content filter rspamd unavailable; try again later',
    );
    assert.equal(server.app.spool.size, 0);
    const a = await sendFromAlice(failAccept.ports.smtp, 'bob@sterna.test', message);
    assertReply(a, 250, '2.0.0');
    const [stored] = await waitForMessages(failAccept.dataDir, 'sterna.test', 'bob');
    assertStoredFromAlice(stored, 'bob@sterna.test', message);
  });
});

async function waitForJunk(server: TestServer, local: string): Promise<Buffer[]> {
  const junk = await waitForMessages(server.dataDir, 'sterna.test', path.join(local, '.Junk'));
  assert.equal(junk.length, 1, `one message in ${local}'s .Junk folder`);
  return junk;
}
