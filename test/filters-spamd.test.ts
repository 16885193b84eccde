/**
 * Content filter: a real spamd (Debian's SpamAssassin, a private instance, test/helpers/spamd.ts)
 * asked over the SPAMC protocol at the end of data, over real SMTP (docs/filters.md): GTUBE
 * scored and refused (550 5.7.1, nothing stored) or junked, per the thresholds; a message over
 * junk_score in the Junk folder with SpamAssassin's X-Spam-* fields on top; a clean message
 * stored byte for byte below its X-Spam-* fields, a forged X-Spam-Status removed.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  aliceMessage as message,
  assertStoredFromAlice,
  CapturedLog,
  FILTER_USERS as USERS,
  sendFromAlice,
  splitTopFields,
  type Daemon,
} from './helpers/filters.js';
import { maildirMessages, waitForMessages } from './helpers/maildir.js';
import { GTUBE } from './helpers/rspamd.js';
import { dataDirsWithCert, startTestServer, type TestServer } from './helpers/server.js';
import { assertReply } from './helpers/smtp-client.js';
import { SPAMD_JUNK_WORD, startSpamd } from './helpers/spamd.js';
import { requireTool } from './helpers/tools.js';

const spamdTool = requireTool('spamd');

describe('spamd filter', { skip: spamdTool.skip }, () => {
  let spamd: Daemon;
  let server: TestServer;
  let lenient: TestServer;
  const log = new CapturedLog();

  before(async () => {
    spamd = await startSpamd();
    const [d1, d2] = await dataDirsWithCert(2);
    const filter = (reject: number): string => `[[filters]]
type = "spamd"
address = "127.0.0.1:${spamd.port}"
timeout_ms = 60000
reject_score = ${reject}
junk_score = 5
`;
    server = await startTestServer({ dataDir: d1!, toml: filter(15), log: log.logger, users: USERS });
    lenient = await startTestServer({ dataDir: d2!, toml: filter(5000), users: USERS });
  });

  after(async () => {
    await server?.stop({ remove: true });
    await lenient?.stop({ remove: true });
    await spamd?.cleanup();
  });

  test('GTUBE scores about 1000: over reject_score it is refused, 550 5.7.1, nothing stored', async () => {
    const r = await sendFromAlice(server.ports.smtp, 'bob@sterna.test', message('gtube', GTUBE));
    assertReply(r, 550, '5.7.1');
    assert.equal(r.text, '5.7.1 Message refused by the content filter spamd');
    assert.equal(server.app.spool.size, 0);
    assert.deepEqual(await maildirMessages(server.dataDir, 'sterna.test', 'bob'), []);
    const line = log.records.find((x) => x['msg'] === 'filter');
    assert.equal(line?.['verdict'], 'reject');
    assert.match(String(line?.['detail']), /^score=(999|100\d)(\.\d)? \(spamd: True \/ 5\.0\)$/);
  });

  test('GTUBE under a reject_score above its score goes to the Junk folder', async () => {
    const msg = message('gtube lenient', GTUBE);
    const r = await sendFromAlice(lenient.ports.smtp, 'carol@sterna.test', msg);
    assertReply(r, 250, '2.0.0');
    const [stored] = await waitForMessages(lenient.dataDir, 'sterna.test', 'carol/.Junk');
    const { fields, rest } = splitTopFields(stored, /X-Spam-/);
    assert.match(fields, /^X-Spam-Checker-Version: SpamAssassin /m);
    assert.match(fields, /^X-Spam-Flag: YES\r\n/m);
    assert.match(fields, /^X-Spam-Status: Yes, score=(999|100\d)/m);
    assertStoredFromAlice(rest, 'carol@sterna.test', msg);
  });

  test('a score between junk_score and reject_score: Junk folder, X-Spam-* on top', async () => {
    const msg = message('junk word', `Buy now: ${SPAMD_JUNK_WORD}`);
    const r = await sendFromAlice(server.ports.smtp, 'dave@sterna.test', msg);
    assertReply(r, 250, '2.0.0');
    const [stored] = await waitForMessages(server.dataDir, 'sterna.test', 'dave/.Junk');
    assert.deepEqual(await maildirMessages(server.dataDir, 'sterna.test', 'dave'), [], 'not in the inbox');
    const { fields, rest } = splitTopFields(stored, /X-Spam-/);
    assert.match(fields, /^X-Spam-Status: Yes, score=\d+\.\d required=5\.0 tests=[^\r\n]*/m);
    assert.match(fields, /STERNA_TEST_JUNK/);
    assertStoredFromAlice(rest, 'dave@sterna.test', msg);
  });

  test("a clean message is stored below SpamAssassin's fields; the sender's own X-Spam-Status is gone", async () => {
    const sent = message('hello', 'See you tomorrow.', ['X-Spam-Status: No, forged by the sender']);
    const r = await sendFromAlice(server.ports.smtp, 'bob@sterna.test', sent);
    assertReply(r, 250, '2.0.0');
    const [stored] = await waitForMessages(server.dataDir, 'sterna.test', 'bob');
    const { fields, rest } = splitTopFields(stored, /X-Spam-/);
    assert.match(fields, /^X-Spam-Status: No, score=-?\d+\.\d required=5\.0 /m);
    assert.doesNotMatch(rest.toString(), /forged by the sender/);
    assertStoredFromAlice(
      rest,
      'bob@sterna.test',
      Buffer.from(sent.toString().replace('X-Spam-Status: No, forged by the sender\r\n', '')),
    );
  });
});
