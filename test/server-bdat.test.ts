/**
 * BDAT (RFC 3030 CHUNKING) on the running server: chunks carry no dot handling, the delivered
 * message is exactly their concatenation after the trace headers, and a refused BDAT still
 * consumes its chunk so the session stays in sync. A BDAT body gets exactly DATA's body rules
 * and replies (DESIGN rule 10): bare LF or CR (smtp.bare_line_endings, reject or normalize),
 * NUL, line length, the Received count, across chunk boundaries; and data_total_timeout_ms
 * bounds a BDAT message as it bounds DATA. Also RFC 5322 2.2.3: a client's first line that
 * starts with white space cannot join Sterna's Received field, by DATA or by BDAT.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { maildirMessages, waitForMessages } from './helpers/maildir.js';
import { TestClient } from './helpers/smtp-client.js';
import { dataDirsWithCert, startTestServer, type TestServer } from './helpers/server.js';

/** smtp.bare_line_endings = "reject" (the default). */
let server: TestServer;
/** smtp.bare_line_endings = "normalize", and a short limits.data_total_timeout_ms. */
let normalize: TestServer;

const users = ['alice', 'bob', 'carol', 'dave', 'erin', 'frank'].map((name) => ({
  address: `${name}@sterna.test`,
  password: `pw-${name}-1`,
}));

/** The normalize server's data_total_timeout_ms: its messages take a few ms, the timeout test waits it out. */
const TOTAL_MS = 1500;

before(async () => {
  const dirs = await dataDirsWithCert(2);
  [server, normalize] = await Promise.all([
    startTestServer({
      dataDir: dirs[0]!,
      users,
      toml: '[limits]\ncommand_timeout_ms = 2000\ndata_block_timeout_ms = 2000\n',
    }),
    startTestServer({
      dataDir: dirs[1]!,
      users,
      toml: `[limits]\ndata_total_timeout_ms = ${TOTAL_MS}\n[smtp]\nbare_line_endings = "normalize"\n`,
    }),
  ]);
});

after(async () => {
  await Promise.all([server.stop({ remove: true }), normalize.stop({ remove: true })]);
});

async function open(rcpt: string, on: TestServer = server): Promise<TestClient> {
  const c = await TestClient.connect(on.ports.smtp);
  await c.expect(220);
  const ehlo = await c.cmd('EHLO client.example');
  assert.ok(ehlo.lines.includes('CHUNKING'), ehlo.text);
  await c.cmd('MAIL FROM:<sender@example.org>').then((r) => assert.equal(r.code, 250));
  await c.cmd(`RCPT TO:<${rcpt}>`).then((r) => assert.equal(r.code, 250));
  return c;
}

/** The delivered message without the headers Sterna prepends (Return-Path, Delivered-To, Received). */
function stripTrace(msg: Buffer): Buffer {
  const text = msg.toString('latin1');
  const m =
    /^Return-Path: [^\r\n]*\r\nDelivered-To: [^\r\n]*\r\nReceived: (?:[^\r\n]*\r\n\t)*[^\r\n]*\r\n/.exec(
      text,
    );
  assert.ok(m !== null, text);
  return msg.subarray(m[0].length);
}

test('RFC 3030 2: two chunks then BDAT LAST; the delivered message is their exact concatenation', async () => {
  const c = await open('alice@sterna.test');
  const one = 'Subject: chunks\r\n\r\nfirst ';
  const two = '.line with a dot\r\n.\r\nnot the end\r\n';
  const three = 'last chunk\r\n';
  c.send(`BDAT ${one.length}\r\n${one}`);
  const r1 = await c.expect(250, '2.0.0');
  assert.equal(r1.text, `2.0.0 Ok: ${one.length} octets received`);
  c.send(`BDAT ${two.length}\r\n${two}`);
  await c.expect(250, '2.0.0');
  c.send(`BDAT ${three.length} LAST\r\n${three}`);
  const done = await c.expect(250, '2.0.0');
  assert.match(done.text, /^2\.0\.0 Ok: queued as [A-Z0-9]+$/);
  await c.cmd('QUIT').then((r) => assert.equal(r.code, 221));
  c.close();
  const [msg] = await waitForMessages(server.dataDir, 'sterna.test', 'alice', 1);
  assert.ok(msg !== undefined);
  assert.equal(stripTrace(msg).toString('latin1'), one + two + three);
});

test('RFC 3030 + 6152: BDAT carries every 8-bit octet but CR, LF and NUL untouched, and "." lines as content', async () => {
  const c = await open('bob@sterna.test');
  const header = Buffer.from('Subject: binary\r\nContent-Transfer-Encoding: 8bit\r\n\r\n', 'latin1');
  const bytes: number[] = [];
  for (let i = 1; i < 256; i++) if (i !== 0x0a && i !== 0x0d) bytes.push(i);
  const payload = Buffer.concat([header, Buffer.from(bytes), Buffer.from('\r\n.\r\n..\r\n.x\r\n')]);
  const cut = 100;
  c.send(Buffer.concat([Buffer.from(`BDAT ${cut}\r\n`), payload.subarray(0, cut)]));
  await c.expect(250, '2.0.0');
  const rest = payload.subarray(cut);
  c.send(Buffer.concat([Buffer.from(`BDAT ${rest.length} LAST\r\n`), rest]));
  await c.expect(250, '2.0.0');
  c.close();
  const [msg] = await waitForMessages(server.dataDir, 'sterna.test', 'bob', 1);
  assert.ok(msg !== undefined);
  assert.deepEqual(stripTrace(msg), payload);
});

test('RFC 3030 2: a chunk and its BDAT command may arrive in one write with the next commands pipelined behind', async () => {
  const c = await open('carol@sterna.test');
  const body = 'Subject: pipelined bdat\r\n\r\nhello\r\n';
  c.send(`BDAT ${body.length} LAST\r\n${body}NOOP\r\nQUIT\r\n`);
  await c.expect(250, '2.0.0');
  const noop = await c.expect(250, '2.0.0');
  assert.equal(noop.text, '2.0.0 Ok');
  await c.expect(221, '2.0.0');
  await c.waitClosed();
  const [msg] = await waitForMessages(server.dataDir, 'sterna.test', 'carol', 1);
  assert.ok(msg !== undefined);
  assert.equal(stripTrace(msg).toString('latin1'), body);
});

test('RFC 3030 2: an empty last chunk (BDAT 0 LAST) ends the message at once', async () => {
  const c = await open('carol@sterna.test');
  const before = (await maildirMessages(server.dataDir, 'sterna.test', 'carol')).length;
  const body = 'Subject: zero\r\n\r\nthen an empty chunk\r\n';
  c.send(`BDAT ${body.length}\r\n${body}`);
  await c.expect(250, '2.0.0');
  c.send('BDAT 0 LAST\r\n');
  const done = await c.expect(250, '2.0.0');
  assert.match(done.text, /queued as/);
  c.close();
  const msgs = await waitForMessages(server.dataDir, 'sterna.test', 'carol', before + 1);
  assert.equal(msgs.length, before + 1);
});

test('RFC 3030 2: BDAT without MAIL is refused with 503 5.5.1, its chunk is consumed and the session stays in sync', async () => {
  const c = await TestClient.connect(server.ports.smtp);
  await c.expect(220);
  await c.cmd('EHLO client.example');
  // The chunk looks like commands: none of it may be run.
  const chunk = 'RSET\r\nMAIL FROM:<evil@example.org>\r\n';
  c.send(`BDAT ${chunk.length} LAST\r\n${chunk}`);
  const r = await c.expect(503, '5.5.1');
  assert.equal(r.text, '5.5.1 Bad sequence of commands: send MAIL FROM first');
  const noop = await c.cmd('NOOP');
  assert.equal(noop.code, 250);
  assert.equal(noop.text, '2.0.0 Ok');
  // No transaction was opened by the chunk's content.
  const rcpt = await c.cmd('RCPT TO:<alice@sterna.test>');
  assert.equal(rcpt.code, 503);
  assert.equal(rcpt.enhanced, '5.5.1');
  c.close();
});

test('RFC 3030 2: BDAT with no recipients is refused with 554 5.5.1 and the session stays in sync', async () => {
  const c = await TestClient.connect(server.ports.smtp);
  await c.expect(220);
  await c.cmd('EHLO client.example');
  await c.cmd('MAIL FROM:<sender@example.org>').then((r) => assert.equal(r.code, 250));
  c.send('BDAT 5 LAST\r\nabcde');
  await c.expect(554, '5.5.1');
  await c.cmd('NOOP').then((r) => assert.equal(r.code, 250));
  c.close();
});

test('RFC 3030 3: DATA after BDAT in one transaction is refused with 503 5.5.1', async () => {
  const c = await open('alice@sterna.test');
  c.send('BDAT 3\r\nabc');
  await c.expect(250, '2.0.0');
  const data = await c.cmd('DATA');
  assert.equal(data.code, 503);
  assert.equal(data.enhanced, '5.5.1');
  c.close();
});

// ---- the body rules, shared with DATA ------------------------------------------------------

/** Sends `body` as one BDAT LAST chunk to a fresh transaction for `rcpt`; returns the reply. */
async function bdatLast(rcpt: string, body: Buffer | string, on: TestServer = server) {
  const c = await open(rcpt, on);
  const bytes = typeof body === 'string' ? Buffer.from(body, 'latin1') : body;
  c.send(Buffer.concat([Buffer.from(`BDAT ${bytes.length} LAST\r\n`), bytes]));
  const r = await c.read();
  assert.ok(r !== null, 'connection closed');
  return { c, r };
}

/** The next reply is NOOP's: nothing of the chunk was run as a command, no reply is pending. */
async function assertInSync(c: TestClient): Promise<void> {
  const noop = await c.cmd('NOOP');
  assert.equal(noop.code, 250);
  assert.equal(noop.text, '2.0.0 Ok');
}

/** Waits until the server's deliveries settle, then checks that `local` got nothing and nothing is queued. */
async function assertNothingDelivered(on: TestServer, local: string): Promise<void> {
  await on.app.manager.whenIdle();
  assert.equal((await maildirMessages(on.dataDir, 'sterna.test', local)).length, 0);
  assert.equal(on.app.spool.size, 0);
}

/** Sends `body` to `rcpt` as two chunks cut at every position in turn (BDAT n, BDAT m LAST); each is queued. */
async function queueAtEveryCut(on: TestServer, rcpt: string, body: string): Promise<void> {
  for (let cut = 0; cut <= body.length; cut++) {
    const c = await open(rcpt, on);
    const one = body.slice(0, cut);
    const two = body.slice(cut);
    c.send(`BDAT ${one.length}\r\n${one}`);
    await c.expect(250, '2.0.0');
    c.send(`BDAT ${two.length} LAST\r\n${two}`);
    await c.expect(250, '2.0.0');
    await assertInSync(c);
    c.close();
  }
}

/** One BDAT LAST chunk for dave is refused with `code` `enhanced`; the session stays in sync, nothing is kept. */
async function assertRefused(body: string, code: number, enhanced: string): Promise<string> {
  const { c, r } = await bdatLast('dave@sterna.test', body);
  assert.equal(`${r.code} ${r.enhanced}`, `${code} ${enhanced}`, r.text);
  await assertInSync(c);
  c.close();
  await assertNothingDelivered(server, 'dave');
  return r.text;
}

test('DESIGN rule 10, reject mode: BDAT bodies with a bare LF, a bare CR or a NUL get the DATA replies 550 5.6.11 / 550 5.6.0', async () => {
  const cases: [string, string, string][] = [
    ['bare LF (smuggling)', 'hello\n.\nMAIL FROM:<evil@x>\r\nRCPT TO:<alice@sterna.test>\r\n', '5.6.11'],
    ['bare CR', 'hello\r.\rworld\r\n', '5.6.11'],
    ['NUL', 'Subject: x\r\n\r\nnul \0 here\r\n', '5.6.0'],
  ];
  for (const [name, body, enhanced] of cases) {
    const text = await assertRefused(body, 550, enhanced);
    // The same words as DATA's refusal of the same bytes.
    const viaData = await open('dave@sterna.test');
    await viaData.cmd('DATA').then((d) => assert.equal(d.code, 354));
    viaData.send(`${body}.\r\n`);
    assert.equal((await viaData.read())?.text, text, name);
    viaData.close();
  }
});

test('RFC 5321 4.5.3.1.6 over BDAT: a line longer than 1000 octets split over two chunks is refused at the chunk that breaks it', async () => {
  const c = await open('dave@sterna.test');
  const half = 'a'.repeat(600);
  c.send(`BDAT ${half.length}\r\n${half}`);
  await c.expect(250, '2.0.0');
  c.send(`BDAT ${half.length + 2}\r\n${half}\r\n`);
  const r = await c.expect(550, '5.6.0');
  assert.equal(
    r.text,
    '5.6.0 Message has a line longer than 1000 octets (RFC 5321 4.5.3.1.6), message refused',
  );
  // RFC 3030 2: the transaction is over; the LAST chunk belongs to none.
  c.send('BDAT 3 LAST\r\nx\r\n');
  await c.expect(503, '5.5.1');
  await assertInSync(c);
  c.close();
  await assertNothingDelivered(server, 'dave');
});

test('RFC 5321 6.3 over BDAT: more Received headers than limits.received_headers is 554 5.4.6', async () => {
  const received = 'Received: from a.example by b.example; Thu, 15 Jan 2026 10:30:00 +0000\r\n';
  const text = await assertRefused(`${received.repeat(101)}\r\nloop\r\n`, 554, '5.4.6');
  assert.equal(text, '5.4.6 Too many Received headers (101): mail loop suspected');
});

test('RFC 3030: a CR that ends one chunk and the LF that starts the next are one CRLF; every cut of a small body is accepted alike', async () => {
  const body = 'Subject: cut\r\n\r\na\r\nb\r\n';
  await queueAtEveryCut(server, 'erin@sterna.test', body);
  const msgs = await waitForMessages(server.dataDir, 'sterna.test', 'erin', body.length + 1);
  assert.equal(msgs.length, body.length + 1);
  for (const msg of msgs) assert.equal(stripTrace(msg).toString('latin1'), body);
});

test('RFC 3030, reject mode: a CR at the very end of the LAST chunk is a bare CR (550 5.6.11)', async () => {
  await assertRefused('Subject: x\r\n\r\nends in CR\r', 550, '5.6.11');
});

test('normalize mode: a BDAT smuggling body is stored as DATA would store it, CRLF only, at every cut into two chunks', async () => {
  const body = 'S: x\r\n\r\nhi\n.\nMAIL FROM:<e@x>\r\nx\r.\ry\r\n';
  const expected = 'S: x\r\n\r\nhi\r\n.\r\nMAIL FROM:<e@x>\r\nx\r\n.\r\ny\r\n';
  // Every cut, so a CR and its LF (or a lone CR and the "." after it) sit on either side.
  await queueAtEveryCut(normalize, 'frank@sterna.test', body);
  // The same bytes by DATA.
  const d = await open('frank@sterna.test', normalize);
  await d.cmd('DATA').then((r) => assert.equal(r.code, 354));
  d.send(`${body}.\r\n`);
  await d.expect(250, '2.0.0');
  d.close();
  const count = body.length + 2;
  const msgs = await waitForMessages(normalize.dataDir, 'sterna.test', 'frank', count);
  assert.equal(msgs.length, count);
  for (const msg of msgs) assert.equal(stripTrace(msg).toString('latin1'), expected);
  await normalize.app.manager.whenIdle();
  assert.equal((await maildirMessages(normalize.dataDir, 'sterna.test', 'alice')).length, 0);
});

test('RFC 5321 4.5.3.2.6 for BDAT: data_total_timeout_ms bounds the whole message, commands between chunks included (421 4.4.2)', async () => {
  const c = await open('frank@sterna.test', normalize);
  const started = Date.now();
  c.send('BDAT 12\r\nSubject: x\r\n');
  await c.expect(250, '2.0.0');
  // NOOPs keep the command timeout from firing: only the message's total time can end this.
  let last = null;
  for (let i = 0; i < 100 && last === null; i++) {
    c.send('NOOP\r\n');
    const r = await c.read();
    assert.ok(r !== null, 'closed without a reply');
    if (r.code === 250) await new Promise((resolve) => setTimeout(resolve, 100));
    else last = r;
  }
  assert.ok(last !== null, 'no timeout within 100 NOOPs');
  assert.equal(last.code, 421);
  assert.equal(last.enhanced, '4.4.2');
  assert.equal(last.text, '4.4.2 mx.sterna.test timeout, closing connection');
  assert.ok(Date.now() - started >= TOTAL_MS, `closed after ${Date.now() - started} ms`);
  await c.waitClosed();
  await normalize.app.manager.whenIdle();
  assert.equal(normalize.app.spool.size, 0);
});

test('RFC 5322 2.2.3: a first line starting with space or tab ends the header section, by DATA and by BDAT', async () => {
  for (const lead of [' ', '\t']) {
    const body = `${lead}by evil.example; appended to the trace\r\nSubject: lead\r\n\r\nbody\r\n`;
    const viaBdat = await open('carol@sterna.test');
    const before = (await maildirMessages(server.dataDir, 'sterna.test', 'carol')).length;
    viaBdat.send(`BDAT ${body.length} LAST\r\n${body}`);
    await viaBdat.expect(250, '2.0.0');
    viaBdat.close();
    const viaData = await open('carol@sterna.test');
    await viaData.cmd('DATA').then((r) => assert.equal(r.code, 354));
    viaData.send(`${body}.\r\n`);
    await viaData.expect(250, '2.0.0');
    viaData.close();
    const msgs = await waitForMessages(server.dataDir, 'sterna.test', 'carol', before + 2);
    for (const msg of msgs.slice(before)) {
      // Our fields end with an empty line; the client's lines follow, unchanged, as the body.
      assert.equal(stripTrace(msg).toString('latin1'), `\r\n${body}`);
      const text = msg.toString('latin1');
      const headers = text.slice(0, text.indexOf('\r\n\r\n') + 2);
      assert.doesNotMatch(headers, /evil/);
    }
  }
});
