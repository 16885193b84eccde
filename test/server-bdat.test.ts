/**
 * BDAT (RFC 3030 CHUNKING) on the running server: chunks are taken byte for byte (no dot
 * handling, any octet), the delivered message is exactly their concatenation after the trace
 * headers, and a refused BDAT still consumes its chunk so the session stays in sync.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { maildirMessages, waitForMessages } from './helpers/maildir.js';
import { TestClient } from './helpers/smtp-client.js';
import { startTestServer, type TestServer } from './helpers/server.js';

let server: TestServer;

before(async () => {
  server = await startTestServer({
    users: [
      { address: 'alice@sterna.test', password: 'pw-alice-1' },
      { address: 'bob@sterna.test', password: 'pw-bob-1' },
      { address: 'carol@sterna.test', password: 'pw-carol-1' },
    ],
    toml: '[limits]\ncommand_timeout_ms = 2000\ndata_block_timeout_ms = 2000\n',
  });
});

after(async () => {
  await server.stop({ remove: true });
});

async function open(rcpt: string): Promise<TestClient> {
  const c = await TestClient.connect(server.ports.smtp);
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

test('RFC 3030 + 6152: BDAT carries 8-bit octets, lone CR/LF and NUL-free binary-ish data untouched', async () => {
  const c = await open('bob@sterna.test');
  const header = Buffer.from('Subject: binary\r\nContent-Transfer-Encoding: 8bit\r\n\r\n', 'latin1');
  const bytes: number[] = [];
  for (let i = 1; i < 256; i++) bytes.push(i);
  const payload = Buffer.concat([header, Buffer.from(bytes), Buffer.from('\r\n.\r\n\n.\n\r.\r\r\n')]);
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
