/**
 * One rule, every path (DESIGN rule 10; docs/filters.md "Every way in"): the content filters run
 * on mail from `sterna sendmail` (the maildrop pickup) and from the HTTP API as they do at the
 * end of an SMTP DATA, each by its `listeners` scope ("sendmail", "http"). A real rspamd
 * (test/helpers/rspamd.ts, its X-Spam-Status field on every message) is asked; the real
 * `sterna sendmail` command and real HTTP requests bring the mail in. GTUBE by sendmail is
 * bounced to the sender with rspamd's reply and nothing reaches the recipient; GTUBE by the API
 * is a 400 with rspamd's words; a clean message passes on each path with rspamd's field on top;
 * a deferral leaves the maildrop file for a retry and is a 503 on the API; "add header" puts it
 * in .Junk; a filter left at the default scope (smtp only) is not asked on these paths.
 */
import assert from 'node:assert/strict';
import { readdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { addApiKey } from '../src/api/keys.js';
import { parseDsn } from './helpers/dsn-parser.js';
import { aliceMessage, CapturedLog, splitTopFields, type Daemon } from './helpers/filters.js';
import { pollUntil } from './helpers/interop.js';
import { maildirMessages, waitForMessages } from './helpers/maildir.js';
import { GTUBE, GTUBE_ADD_HEADER, startRspamd } from './helpers/rspamd.js';
import { runSterna } from './helpers/run-cli.js';
import { startTestServer, TEST_HOSTNAME, type TestServer } from './helpers/server.js';
import { requireTool } from './helpers/tools.js';

const rspamdTool = requireTool('rspamd');
const WAIT_MS = 90_000;

/** A message rspamd finds clean: every field it expects (as test/filters-rspamd.test.ts sends). */
const message = (subject: string, body: string): Buffer =>
  aliceMessage(subject, body, ['MIME-Version: 1.0', 'Content-Type: text/plain; charset=us-ascii']);

describe('content filters on the sendmail and HTTP API paths', { skip: rspamdTool.skip }, () => {
  let rspamd: Daemon;
  let server: TestServer;
  let configFile: string;
  let key: string;
  const log = new CapturedLog();

  before(async () => {
    rspamd = await startRspamd({ spamStatus: true });
    const url = `http://127.0.0.1:${rspamd.port}`;
    server = await startTestServer({
      log: log.logger,
      users: [
        { address: 'alice@sterna.test', password: 'alice-pw-1234' },
        { address: 'bob@sterna.test', password: 'bob-pw-12345' },
      ],
      toml: `[sendmail]
origin = "sterna.test"
scan_interval_ms = 300
[http_api]
listen = ["127.0.0.1:0"]
[[filters]]
type = "rspamd"
name = "local"
url = "${url}"
listeners = ["sendmail", "http"]
timeout_ms = 60000
junk = true
[[filters]]
type = "rspamd"
name = "inbound"
url = "${url}"
timeout_ms = 60000
`,
    });
    configFile = path.join(server.dataDir, 'sendmail.toml');
    await writeFile(
      configFile,
      `hostname = "${TEST_HOSTNAME}"\ndata_dir = "${server.dataDir}"\n[sendmail]\norigin = "sterna.test"\n`,
    );
    ({ key } = await addApiKey(server.config.http_api.keys_file, 'alice@sterna.test', []));
  });

  after(async () => {
    await server?.stop({ remove: true });
    await rspamd?.cleanup();
  });

  const sendmail = async (msg: Buffer, sender = 'alice@sterna.test'): Promise<void> => {
    const run = await runSterna(['sendmail', '-C', configFile, '-f', sender, 'bob@sterna.test'], {
      input: msg,
    });
    assert.equal(run.code, 0, run.stderr);
  };

  const postRaw = (msg: Buffer): Promise<Response> => {
    const api = server.app.httpApi[0];
    assert.ok(api !== undefined);
    return fetch(`http://127.0.0.1:${api.port}/v1/messages/raw?to=bob@sterna.test`, {
      method: 'POST',
      headers: { 'content-type': 'message/rfc822', authorization: `Bearer ${key}` },
      body: msg,
      signal: AbortSignal.timeout(WAIT_MS),
    });
  };

  /** The one log record that matches, once it is there (bounded). */
  const logLine = async (
    match: (r: Record<string, unknown>) => boolean,
  ): Promise<Record<string, unknown>> => {
    const found = await pollUntil(
      () => Promise.resolve(log.records.find(match)),
      (r) => r !== undefined,
      WAIT_MS,
    );
    assert.ok(found !== undefined, 'the expected log line');
    return found;
  };

  /** The maildrop's file names, once it is empty (bounded): the file goes right after the log line. */
  const maildropEmptied = (): Promise<string[]> =>
    pollUntil(
      () => readdir(path.join(server.dataDir, 'maildrop')),
      (names) => names.length === 0,
      10_000,
    );

  /** The filters asked about message qid, by name. */
  const filtersAsked = (qid: string): string[] => log.filterLines(qid).map((l) => String(l['filter']));

  test("sendmail: GTUBE is bounced to the sender with rspamd's reply; the recipient gets nothing; the file is gone", async () => {
    await sendmail(message('gtube by sendmail', GTUBE));
    const rejected = await logLine((r) => r['msg'] === 'rejected' && r['via'] === 'sendmail');
    assert.equal(rejected['code'], 550);
    assert.equal(rejected['enhanced'], '5.7.1');
    const qid = String(rejected['qid']);
    assert.deepEqual(filtersAsked(qid), ['local'], 'only the filter scoped to "sendmail" is asked');
    const [bounce] = await waitForMessages(server.dataDir, 'sterna.test', 'alice', 1, WAIT_MS);
    assert.ok(bounce !== undefined, 'a bounce for alice');
    assert.match(bounce.toString('latin1'), /^Return-Path: <>\r\n/);
    assert.ok(bounce.toString('latin1').includes(`X-Sterna-Queue-ID: ${qid}`));
    const dsn = parseDsn(bounce);
    assert.equal(dsn.recipients.length, 1);
    const [rcpt] = dsn.recipients;
    assert.equal(rcpt?.['final-recipient'], 'rfc822; bob@sterna.test');
    assert.equal(rcpt?.['action'], 'failed');
    assert.equal(rcpt?.['status'], '5.7.1');
    assert.equal(rcpt?.['diagnostic-code'], 'smtp; 550 5.7.1 Gtube pattern');
    assert.deepEqual(await maildirMessages(server.dataDir, 'sterna.test', 'bob'), []);
    assert.deepEqual(await maildropEmptied(), [], 'the file is removed');
    assert.deepEqual(await readdir(path.join(server.dataDir, 'maildrop-refused')), []);
    await rm(path.join(server.dataDir, 'mailboxes', 'sterna.test', 'alice'), { recursive: true });
  });

  test('sendmail: GTUBE from <> is refused without a bounce (RFC 5321 4.5.5); the file is gone', async () => {
    await sendmail(message('gtube from null', GTUBE), '<>');
    const line = await logLine(
      (r) => r['msg'] === 'maildrop file refused by a content filter; from <>, so no bounce',
    );
    assert.equal(line['reply'], '550 5.7.1 Gtube pattern');
    assert.deepEqual(await maildropEmptied(), [], 'the file is removed');
    assert.equal(server.app.spool.size, 0);
    assert.deepEqual(await maildirMessages(server.dataDir, 'sterna.test', 'bob'), []);
  });

  test("sendmail: a clean message passes, rspamd's X-Spam-Status on top", async () => {
    const msg = message('lunch by sendmail', 'Lunch at noon?');
    await sendmail(msg);
    const [stored] = await waitForMessages(server.dataDir, 'sterna.test', 'bob', 1, WAIT_MS);
    const { fields, rest } = splitTopFields(stored, /X-Spam-Status: /);
    assert.match(fields, /^X-Spam-Status: No, score=-?\d+\.\d\d\r\n$/);
    assert.ok(
      rest.toString('utf8').endsWith(msg.toString('utf8')),
      'the message below our fields, unchanged',
    );
    const queued = await logLine((r) => r['msg'] === 'queued' && r['maildrop'] !== undefined);
    assert.deepEqual(filtersAsked(String(queued['qid'])), ['local']);
    await rm(path.join(server.dataDir, 'mailboxes', 'sterna.test', 'bob'), { recursive: true });
  });

  test("sendmail: a deferral (rspamd's soft reject) leaves the file in the maildrop for a retry", async () => {
    await sendmail(message('please defer by sendmail', 'Not now.'));
    const deferred = await logLine((r) => r['msg'] === 'maildrop file deferred: content filter');
    assert.match(String(deferred['reason']), /^content filter: 451 4\.7\.1 /);
    const left = await readdir(path.join(server.dataDir, 'maildrop'));
    assert.equal(left.length, 1, 'the file waits for the next scan');
    assert.equal(left[0], deferred['maildrop']);
    assert.equal(server.app.spool.size, 0);
    await rm(path.join(server.dataDir, 'maildrop', String(left[0])));
  });

  test("HTTP API: GTUBE is 400 content_rejected with rspamd's reply; nothing is queued", async () => {
    const res = await postRaw(message('gtube by api', GTUBE));
    const body = (await res.json()) as { code?: string; message?: string };
    assert.equal(res.status, 400, JSON.stringify(body));
    assert.deepEqual(body, {
      code: 'content_rejected',
      message: 'the content filter refused the message: 550 5.7.1 Gtube pattern',
    });
    const rejected = await logLine((r) => r['msg'] === 'rejected' && r['via'] === 'http');
    assert.deepEqual(filtersAsked(String(rejected['qid'])), ['local']);
    assert.equal(server.app.spool.size, 0);
    assert.deepEqual(await maildirMessages(server.dataDir, 'sterna.test', 'bob'), []);
  });

  test("HTTP API: a deferral is 503 content_deferred with rspamd's words", async () => {
    const res = await postRaw(message('please defer by api', 'Not now.'));
    const body = (await res.json()) as { code?: string; message?: string };
    assert.equal(res.status, 503, JSON.stringify(body));
    assert.equal(body.code, 'content_deferred');
    assert.match(String(body.message), /try again later: 451 4\.7\.1 Try again later, said rspamd$/);
    assert.equal(server.app.spool.size, 0);
  });

  test('HTTP API: a clean message is 202 and stored with X-Spam-Status on top; "add header" goes to .Junk', async () => {
    const msg = message('lunch by api', 'Lunch at noon?');
    const res = await postRaw(msg);
    const { id } = (await res.json()) as { id: string };
    assert.equal(res.status, 202);
    const [stored] = await waitForMessages(server.dataDir, 'sterna.test', 'bob', 1, WAIT_MS);
    const { fields, rest } = splitTopFields(stored, /X-Spam-Status: /);
    assert.match(fields, /^X-Spam-Status: No, score=-?\d+\.\d\d\r\n$/);
    assert.ok(rest.toString('utf8').endsWith(msg.toString('utf8')));
    assert.deepEqual(filtersAsked(id), ['local'], 'the smtp-scoped filter is not asked');

    const junk = await postRaw(message('offer by api', GTUBE_ADD_HEADER));
    assert.equal(junk.status, 202);
    const [junked] = await waitForMessages(
      server.dataDir,
      'sterna.test',
      path.join('bob', '.Junk'),
      1,
      WAIT_MS,
    );
    assert.match(
      junked?.toString('utf8') ?? '',
      /^Return-Path: [^\r]*\r\nDelivered-To: [^\r]*\r\nX-Spam: Yes\r\n/,
    );
    assert.equal((await maildirMessages(server.dataDir, 'sterna.test', 'bob')).length, 1, 'not in the inbox');
  });
});
