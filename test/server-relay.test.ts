/**
 * Relay control on the smtp listener of the running server (RFC 5321 3.6, 3.9, 4.1.3, 4.5.1;
 * fail closed, DESIGN rule 6): local recipients must exist, other domains are refused unless the
 * client is authenticated or in relay.trusted_networks, postmaster is always accepted, and the
 * classic tricks (percent hack, quoted "@", source routes, bang paths, double "@", trailing dot)
 * are refused or routed to their real destination, never relayed.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, test } from 'node:test';
import { waitForMessages } from './helpers/maildir.js';
import { TestClient } from './helpers/smtp-client.js';
import { dataDirsWithCert, startTestServer, TEST_HOSTNAME, type TestServer } from './helpers/server.js';

let server: TestServer;
let trusted: TestServer;

before(async () => {
  const dirs = await dataDirsWithCert(2);
  [server, trusted] = await Promise.all([
    startTestServer({ dataDir: dirs[0]!, users: [{ address: 'alice@sterna.test', password: 'pw-alice-1' }] }),
    startTestServer({ dataDir: dirs[1]!, toml: '[relay]\ntrusted_networks = ["127.0.0.1/32"]\n' }),
  ]);
});

after(async () => {
  await Promise.all([server.stop({ remove: true }), trusted.stop({ remove: true })]);
});

async function transaction(s: TestServer): Promise<TestClient> {
  const c = await TestClient.connect(s.ports.smtp);
  await c.expect(220);
  await c.cmd('EHLO client.example');
  await c.cmd('MAIL FROM:<sender@example.org>').then((r) => assert.equal(r.code, 250));
  return c;
}

async function rcpt(c: TestClient, path: string): Promise<{ code: number; enhanced: string | undefined }> {
  const r = await c.cmd(`RCPT TO:${path}`);
  return { code: r.code, enhanced: r.enhanced };
}

test('RFC 5321 3.6: an unknown local user gets 550 5.1.1, another domain without AUTH gets 554 5.7.1', async () => {
  const c = await transaction(server);
  const unknown = await c.cmd('RCPT TO:<nobody@sterna.test>');
  assert.equal(unknown.code, 550);
  assert.equal(unknown.enhanced, '5.1.1');
  assert.equal(unknown.text, '5.1.1 Recipient <nobody@sterna.test> unknown: no such mailbox here');
  const relay = await c.cmd('RCPT TO:<someone@example.com>');
  assert.equal(relay.code, 554);
  assert.equal(relay.enhanced, '5.7.1');
  assert.match(relay.text, /^5\.7\.1 Relay access denied: <someone@example\.com> is not a local domain/);
  // Loopback is not trusted by default either: the session gets no further.
  const data = await c.cmd('DATA');
  assert.equal(data.code, 554);
  assert.equal(data.enhanced, '5.5.1');
  c.close();
});

test('RFC 5321 4.5.1: postmaster@<local domain> and <postmaster> are accepted, in any case', async () => {
  const c = await transaction(server);
  for (const p of ['<postmaster@sterna.test>', '<postmaster>', '<Postmaster>', '<POSTMASTER@localhost>']) {
    assert.deepEqual(await rcpt(c, p), { code: 250, enhanced: '2.1.5' }, p);
  }
  await c.cmd('DATA').then((r) => assert.equal(r.code, 354));
  c.send('Subject: to postmaster\r\n\r\nhello\r\n.\r\n');
  await c.expect(250, '2.0.0');
  c.close();
});

test('RFC 5321 4.5.1: mail sent straight to <postmaster> lands in the postmaster mailbox', async () => {
  const c = await transaction(server);
  assert.deepEqual(await rcpt(c, '<postmaster>'), { code: 250, enhanced: '2.1.5' });
  await c.cmd('DATA').then((r) => assert.equal(r.code, 354));
  c.send('Subject: straight to postmaster\r\n\r\nhello\r\n.\r\n');
  await c.expect(250, '2.0.0');
  c.close();
  const pm = await waitForMessages(server.dataDir, TEST_HOSTNAME, 'postmaster', 1, 3000);
  assert.ok(pm.some((m) => m.toString().endsWith('Subject: straight to postmaster\r\n\r\nhello\r\n')));
});

/** [path, code, enhanced code]: the refusal each trick gets. */
const TRICKS: [string, number, string][] = [
  // Percent hack, quoted "@", bang path: only the part after the last "@" is the domain, so
  // these are local parts of sterna.test that name no mailbox.
  ['<alice%other.test@sterna.test>', 550, '5.1.1'],
  ['<"alice@other.test"@sterna.test>', 550, '5.1.1'],
  ['<other.test!alice@sterna.test>', 550, '5.1.1'],
  // Source routes are ignored (RFC 5321 4.1.1.3, C): the real destination is another domain.
  ['<@sterna.test:alice@other.test>', 554, '5.7.1'],
  ['<@sterna.test,@mx.sterna.test:alice@other.test>', 554, '5.7.1'],
  // Not addresses at all.
  ['<alice@other.test@sterna.test>', 553, '5.1.3'],
  ['<alice@sterna.test@other.test>', 553, '5.1.3'],
  ['<alice@sterna.test.>', 553, '5.1.3'],
  ['alice@other.test', 501, '5.5.2'],
  // An address literal is not one of our domains, even our own address.
  ['<alice@[192.0.2.1]>', 554, '5.7.1'],
  ['<alice@[127.0.0.1]>', 554, '5.7.1'],
];

for (const [p, code, enhanced] of TRICKS) {
  test(`relay trick ${p} is refused with ${code} ${enhanced}, never relayed`, async () => {
    const c = await transaction(server);
    assert.deepEqual(await rcpt(c, p), { code, enhanced }, p);
    // Nothing was accepted, so there is nothing to send.
    const data = await c.cmd('DATA');
    assert.equal(data.code, 554);
    assert.equal(data.enhanced, '5.5.1');
    c.close();
  });
}

test('a quoted local part that unquotes to a mailbox, and ALICE@Sterna.TEST, are delivered to alice', async () => {
  const c = await transaction(server);
  assert.deepEqual(await rcpt(c, '<ALICE@Sterna.TEST>'), { code: 250, enhanced: '2.1.5' });
  await c.cmd('DATA').then((r) => assert.equal(r.code, 354));
  c.send('Subject: mixed case\r\n\r\ncase\r\n.\r\n');
  await c.expect(250, '2.0.0');
  await c.cmd('MAIL FROM:<sender@example.org>');
  assert.deepEqual(await rcpt(c, '<"alice"@sterna.test>'), { code: 250, enhanced: '2.1.5' });
  await c.cmd('DATA').then((r) => assert.equal(r.code, 354));
  c.send('Subject: quoted\r\n\r\nquoted\r\n.\r\n');
  await c.expect(250, '2.0.0');
  c.close();
  const msgs = (await waitForMessages(server.dataDir, 'sterna.test', 'alice', 2)).map((m) => m.toString());
  assert.equal(msgs.length, 2);
  assert.ok(msgs.some((m) => m.endsWith('Subject: mixed case\r\n\r\ncase\r\n')));
  assert.ok(msgs.some((m) => m.endsWith('Subject: quoted\r\n\r\nquoted\r\n')));
});

/** A plain dialog from a chosen source address; returns "code enhanced" for each reply. */
async function dialogFrom(port: number, localAddress: string, commands: string[]): Promise<string[]> {
  const socket = net.connect({ host: '127.0.0.1', port, localAddress });
  socket.on('error', () => undefined);
  socket.setTimeout(10_000, () => socket.destroy());
  let buf = '';
  const waiters: ((line: string) => void)[] = [];
  const lines: string[] = [];
  socket.on('data', (d: Buffer) => {
    buf += d.toString('latin1');
    let i: number;
    while ((i = buf.indexOf('\r\n')) !== -1) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 2);
      if (/^\d{3} /.test(line)) {
        const w = waiters.shift();
        if (w !== undefined) w(line);
        else lines.push(line);
      }
    }
  });
  const next = (): Promise<string> =>
    lines.length > 0 ? Promise.resolve(lines.shift()!) : new Promise((r) => waiters.push(r));
  const out: string[] = [];
  await next(); // greeting
  for (const cmd of commands) {
    socket.write(`${cmd}\r\n`);
    const line = await next();
    out.push(
      line
        .split(' ')
        .slice(0, line.startsWith('354') ? 1 : 2)
        .join(' '),
    );
  }
  socket.destroy();
  return out;
}

test('relay.trusted_networks = ["127.0.0.1/32"]: that client may relay, a client from 127.0.0.2 may not', async () => {
  const fromTrusted = await dialogFrom(trusted.ports.smtp, '127.0.0.1', [
    'EHLO client.example',
    'MAIL FROM:<app@example.org>',
    'RCPT TO:<someone@example.com>',
    'DATA',
    'Subject: relayed\r\n\r\nout\r\n.',
  ]);
  assert.deepEqual(fromTrusted.slice(1), ['250 2.1.0', '250 2.1.5', '354', '250 2.0.0']);
  const fromOther = await dialogFrom(trusted.ports.smtp, '127.0.0.2', [
    'EHLO client.example',
    'MAIL FROM:<app@example.org>',
    'RCPT TO:<someone@example.com>',
  ]);
  assert.deepEqual(fromOther.slice(1), ['250 2.1.0', '554 5.7.1']);
});
