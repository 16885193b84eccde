/**
 * PIPELINING (RFC 2920) on the running server: a batch of commands sent in one write gets its
 * replies in order, one per command, whatever each one's outcome; a whole transaction, body and
 * QUIT included, may arrive in a single write; and input cut at arbitrary places is reassembled.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { maildirMessages, waitForMessages } from './helpers/maildir.js';
import { TestClient, type TestReply } from './helpers/smtp-client.js';
import { startTestServer, type TestServer } from './helpers/server.js';

let server: TestServer;

before(async () => {
  server = await startTestServer({
    users: [
      { address: 'alice@sterna.test', password: 'pw-alice-1' },
      { address: 'bob@sterna.test', password: 'pw-bob-1' },
      { address: 'carol@sterna.test', password: 'pw-carol-1' },
      { address: 'dave@sterna.test', password: 'pw-dave-1' },
      { address: 'eve@sterna.test', password: 'pw-eve-1' },
    ],
  });
});

after(async () => {
  await server.stop({ remove: true });
});

async function replies(c: TestClient, n: number): Promise<TestReply[]> {
  const out: TestReply[] = [];
  for (let i = 0; i < n; i++) {
    const r = await c.read();
    assert.ok(r !== null, `connection closed after ${out.length} replies`);
    out.push(r);
  }
  return out;
}

const codes = (rs: TestReply[]): string[] => rs.map((r) => `${r.code} ${r.enhanced ?? ''}`.trim());

test('RFC 2920 3.1: MAIL, RCPT, a refused RCPT, RCPT and DATA in one write are answered in order', async () => {
  const c = await TestClient.connect(server.ports.smtp);
  await c.expect(220);
  const ehlo = await c.cmd('EHLO client.example');
  assert.ok(ehlo.lines.includes('PIPELINING'), ehlo.text);
  c.send(
    'MAIL FROM:<sender@example.org>\r\n' +
      'RCPT TO:<alice@sterna.test>\r\n' +
      'RCPT TO:<nobody@sterna.test>\r\n' +
      'RCPT TO:<bob@sterna.test>\r\n' +
      'DATA\r\n',
  );
  const rs = await replies(c, 5);
  assert.deepEqual(codes(rs), ['250 2.1.0', '250 2.1.5', '550 5.1.1', '250 2.1.5', '354']);
  assert.equal(rs[2]?.text, '5.1.1 Recipient <nobody@sterna.test> unknown: no such mailbox here');
  c.send('Subject: batch\r\n\r\nbody\r\n.\r\n');
  await c.expect(250, '2.0.0');
  c.close();
  const [a] = await waitForMessages(server.dataDir, 'sterna.test', 'alice', 1);
  const [b] = await waitForMessages(server.dataDir, 'sterna.test', 'bob', 1);
  assert.ok(a?.toString().endsWith('Subject: batch\r\n\r\nbody\r\n'));
  assert.ok(b?.toString().endsWith('Subject: batch\r\n\r\nbody\r\n'));
});

test('RFC 2920 3.1: a DATA whose recipients were all refused gets 554 5.5.1, and the body sent behind it is run as commands', async () => {
  const c = await TestClient.connect(server.ports.smtp);
  await c.expect(220);
  await c.cmd('EHLO client.example');
  c.send('MAIL FROM:<sender@example.org>\r\nRCPT TO:<nobody@sterna.test>\r\nDATA\r\nNOOP\r\n');
  const rs = await replies(c, 4);
  assert.deepEqual(codes(rs), ['250 2.1.0', '550 5.1.1', '554 5.5.1', '250 2.0.0']);
  c.close();
});

test('RFC 2920: EHLO, a whole transaction, its body and QUIT in a single write', async () => {
  const c = await TestClient.connect(server.ports.smtp);
  await c.expect(220);
  c.send(
    'EHLO client.example\r\n' +
      'MAIL FROM:<sender@example.org>\r\n' +
      'RCPT TO:<carol@sterna.test>\r\n' +
      'DATA\r\n' +
      'Subject: one write\r\n\r\n..stuffed\r\nend\r\n.\r\n' +
      'QUIT\r\n',
  );
  const rs = await replies(c, 6);
  assert.deepEqual(codes(rs), ['250', '250 2.1.0', '250 2.1.5', '354', '250 2.0.0', '221 2.0.0']);
  await c.waitClosed();
  const [msg] = await waitForMessages(server.dataDir, 'sterna.test', 'carol', 1);
  assert.ok(msg?.toString().endsWith('Subject: one write\r\n\r\n.stuffed\r\nend\r\n'), msg?.toString());
});

test('RFC 2920: two transactions back to back, the second pipelined after the first body, then QUIT, in one write', async () => {
  const c = await TestClient.connect(server.ports.smtp);
  await c.expect(220);
  await c.cmd('EHLO client.example');
  c.send(
    'MAIL FROM:<sender@example.org>\r\nRCPT TO:<dave@sterna.test>\r\nDATA\r\n' +
      'Subject: first\r\n\r\none\r\n.\r\n' +
      'MAIL FROM:<sender@example.org>\r\nRCPT TO:<dave@sterna.test>\r\nDATA\r\n' +
      'Subject: second\r\n\r\ntwo\r\n.\r\n' +
      'QUIT\r\n',
  );
  const rs = await replies(c, 9);
  assert.deepEqual(codes(rs), [
    '250 2.1.0',
    '250 2.1.5',
    '354',
    '250 2.0.0',
    '250 2.1.0',
    '250 2.1.5',
    '354',
    '250 2.0.0',
    '221 2.0.0',
  ]);
  const q1 = /queued as (\w+)/.exec(rs[3]?.text ?? '')?.[1];
  const q2 = /queued as (\w+)/.exec(rs[7]?.text ?? '')?.[1];
  assert.ok(q1 !== undefined && q2 !== undefined && q1 !== q2);
  await c.waitClosed();
  const msgs = await waitForMessages(server.dataDir, 'sterna.test', 'dave', 2);
  const bodies = msgs.map((m) => m.toString()).sort();
  assert.equal(bodies.length, 2);
  assert.ok(bodies.some((b) => b.includes(`id ${q1}`) && b.endsWith('Subject: first\r\n\r\none\r\n')));
  assert.ok(bodies.some((b) => b.includes(`id ${q2}`) && b.endsWith('Subject: second\r\n\r\ntwo\r\n')));
});

test('input split at every byte is reassembled: commands, CRLF and the end-of-data mark may straddle packets', async () => {
  const c = await TestClient.connect(server.ports.smtp);
  c.socket.setNoDelay(true);
  await c.expect(220);
  const before = (await maildirMessages(server.dataDir, 'sterna.test', 'alice')).length;
  const script =
    'EHLO client.example\r\nMAIL FROM:<sender@example.org>\r\nRCPT TO:<alice@sterna.test>\r\nDATA\r\n' +
    'Subject: dribble\r\n\r\nbyte by byte\r\n.\r\nQUIT\r\n';
  for (const ch of script) {
    c.send(ch);
    await new Promise((r) => setImmediate(r));
  }
  const rs = await replies(c, 6);
  assert.deepEqual(codes(rs), ['250', '250 2.1.0', '250 2.1.5', '354', '250 2.0.0', '221 2.0.0']);
  const msgs = await waitForMessages(server.dataDir, 'sterna.test', 'alice', before + 1);
  assert.equal(msgs.length, before + 1);
  assert.ok(msgs.some((m) => m.toString().endsWith('Subject: dribble\r\n\r\nbyte by byte\r\n')));
});

test('RFC 2920 + error limit: in a batch of 100 RCPTs, replies come in order up to the 10th refusal, then 421 4.7.0 and the close', async () => {
  const c = await TestClient.connect(server.ports.smtp);
  await c.expect(220);
  await c.cmd('EHLO client.example');
  let batch = 'MAIL FROM:<sender@example.org>\r\n';
  for (let i = 0; i < 100; i++) batch += `RCPT TO:<${i % 2 === 0 ? 'alice' : `nobody${i}`}@sterna.test>\r\n`;
  batch += 'RSET\r\n';
  c.send(batch);
  // Refused recipients count as errors: the default limit (10) closes the session mid-batch.
  const rs = await replies(c, 1);
  assert.equal(rs[0]?.code, 250);
  const rest: TestReply[] = [];
  for (;;) {
    const r = await c.read();
    if (r === null) break;
    rest.push(r);
  }
  // Accepted and refused alternate until the 10th refusal; then 421 4.7.0 and nothing more.
  const expected: string[] = [];
  let refused = 0;
  for (let i = 0; i < 100 && refused < 10; i++) {
    if (i % 2 === 0) expected.push('250 2.1.5');
    else {
      expected.push('550 5.1.1');
      refused++;
    }
  }
  expected.push('421 4.7.0');
  assert.deepEqual(codes(rest), expected);
});

test('a client that pipelines a transaction and QUIT, then half-closes (FIN), still gets every reply and the message', async () => {
  const c = await TestClient.connect(server.ports.smtp);
  await c.expect(220);
  const before = (await maildirMessages(server.dataDir, 'sterna.test', 'bob')).length;
  c.send(
    'EHLO client.example\r\nMAIL FROM:<sender@example.org>\r\nRCPT TO:<bob@sterna.test>\r\nDATA\r\n' +
      'Subject: then FIN\r\n\r\nhalf-close\r\n.\r\nQUIT\r\n',
  );
  c.socket.end();
  const rs: TestReply[] = [];
  for (;;) {
    const r = await c.read();
    if (r === null) break;
    rs.push(r);
  }
  assert.deepEqual(codes(rs), ['250', '250 2.1.0', '250 2.1.5', '354', '250 2.0.0', '221 2.0.0']);
  const msgs = await waitForMessages(server.dataDir, 'sterna.test', 'bob', before + 1);
  assert.ok(msgs.some((m) => m.toString().endsWith('Subject: then FIN\r\n\r\nhalf-close\r\n')));
});

test('over TLS, a half-close right after the final dot, without QUIT, still gets the 250 and the message is delivered', async () => {
  const c = await TestClient.connect(server.ports.smtp);
  await c.expect(220);
  await c.cmd('EHLO client.example');
  await c.cmd('STARTTLS');
  await c.upgrade();
  c.send(
    'EHLO client.example\r\nMAIL FROM:<sender@example.org>\r\nRCPT TO:<bob@sterna.test>\r\nDATA\r\n' +
      'Subject: FIN over TLS\r\n\r\nno quit\r\n.\r\n',
  );
  c.socket.end();
  const rs: TestReply[] = [];
  for (;;) {
    const r = await c.read();
    if (r === null) break;
    rs.push(r);
  }
  assert.deepEqual(codes(rs), ['250', '250 2.1.0', '250 2.1.5', '354', '250 2.0.0']);
  const qid = /queued as (\w+)/.exec(rs[4]?.text ?? '')?.[1] ?? '?';
  const deadline = Date.now() + 10_000;
  let msgs: Buffer[] = [];
  while (Date.now() < deadline && !msgs.some((m) => m.toString().includes(` id ${qid}`))) {
    msgs = await maildirMessages(server.dataDir, 'sterna.test', 'bob');
    await new Promise((r) => setTimeout(r, 25));
  }
  assert.ok(msgs.some((m) => m.toString().endsWith('Subject: FIN over TLS\r\n\r\nno quit\r\n')));
});

test('a half-close in the middle of DATA drops the message: no reply for it, nothing delivered', async () => {
  const c = await TestClient.connect(server.ports.smtp);
  await c.expect(220);
  const before = (await maildirMessages(server.dataDir, 'sterna.test', 'eve')).length;
  c.send(
    'EHLO client.example\r\nMAIL FROM:<sender@example.org>\r\nRCPT TO:<eve@sterna.test>\r\nDATA\r\n' +
      'Subject: cut\r\n\r\nno end mark\r\n',
  );
  c.socket.end();
  const rs: TestReply[] = [];
  for (;;) {
    const r = await c.read();
    if (r === null) break;
    rs.push(r);
  }
  assert.deepEqual(codes(rs), ['250', '250 2.1.0', '250 2.1.5', '354']);
  await new Promise((r) => setTimeout(r, 200));
  await server.app.manager.whenIdle();
  assert.equal((await maildirMessages(server.dataDir, 'sterna.test', 'eve')).length, before);
  assert.equal(server.app.spool.size, 0);
});
