/**
 * The reply path's cost on the running server, counted rather than timed: the replies to a
 * batch of pipelined commands leave in ONE socket write (RFC 2920 3.2), a lone command's reply
 * leaves at once, and a client that closes right after QUIT (as Postfix's smtp-source does)
 * costs no socket error (an Error object and its stack trace) on the server.
 * Counting needs the server in this process: the test patches net.Socket's write to record
 * every write by connection.
 */
import assert from 'node:assert/strict';
import { Socket } from 'node:net';
import { Writable } from 'node:stream';
import { after, before, test } from 'node:test';
import { pino } from 'pino';
import { TestClient } from './helpers/smtp-client.js';
import { startTestServer, type TestServer } from './helpers/server.js';

let server: TestServer;
/** Every line the server logged (debug level). */
const logLines: string[] = [];
/** The server's socket writes, by the client's port (the server socket's remote port). */
const writes = new Map<number, string[]>();
/** The server's socket for each client port (the last one that wrote). */
const sockets = new Map<number, Socket>();

before(async () => {
  // Counts every write on a socket of this process; the server's sockets are told apart by
  // their remote port, which is the test client's local port. Socket.prototype.write is
  // stream.Writable's, inherited: an own property on Socket.prototype shadows it.
  Object.defineProperty(Socket.prototype, 'write', {
    configurable: true,
    writable: true,
    value: function (this: Socket, ...args: Parameters<Writable['write']>): boolean {
      const port = this.remotePort;
      if (port !== undefined) {
        const list = writes.get(port) ?? [];
        list.push(String(args[0]));
        writes.set(port, list);
        sockets.set(port, this);
      }
      return Writable.prototype.write.apply(this, args);
    },
  });
  const capture = new Writable({
    write(chunk: Buffer, _encoding, done) {
      logLines.push(chunk.toString('utf8'));
      done();
    },
  });
  server = await startTestServer({
    users: [{ address: 'alice@sterna.test', password: 'pw-alice-1' }],
    log: pino({ level: 'debug' }, capture),
  });
});

after(async () => {
  // net.Socket has no write of its own (it is stream.Writable's): removing ours restores it.
  delete (Socket.prototype as Partial<Socket>).write;
  await server.stop({ remove: true });
});

/** The server's writes on the connection of client `c`. */
function serverWrites(c: TestClient): string[] {
  const port = c.socket.localPort;
  assert.ok(port !== undefined);
  return writes.get(port) ?? [];
}

test('RFC 2920 3.2: the five replies to MAIL, RCPT x3, DATA sent in one write go out in one socket write', async () => {
  const c = await TestClient.connect(server.ports.smtp);
  await c.expect(220);
  await c.cmd('EHLO client.example');
  const before = serverWrites(c).length;
  c.send(
    'MAIL FROM:<sender@example.org>\r\n' +
      'RCPT TO:<alice@sterna.test>\r\n' +
      'RCPT TO:<nobody@sterna.test>\r\n' +
      'RCPT TO:<alice@sterna.test>\r\n' +
      'DATA\r\n',
  );
  for (const code of [250, 250, 550, 250, 354]) await c.expect(code);
  const batch = serverWrites(c).slice(before);
  assert.equal(batch.length, 1, `one write for the batch, got ${JSON.stringify(batch)}`);
  assert.match(
    batch[0] ?? '',
    /^250 2\.1\.0 [^\r]*\r\n250 2\.1\.5 [^\r]*\r\n550 5\.1\.1 [^\r]*\r\n250 2\.1\.5 [^\r]*\r\n354 [^\r]*\r\n$/,
  );
  c.send('Subject: batch\r\n\r\nbody\r\n.\r\n');
  await c.expect(250, '2.0.0');
  c.close();
});

test('RFC 2920 3.2: a lone command is answered at once, in its own write, without waiting for more input', async () => {
  const c = await TestClient.connect(server.ports.smtp);
  await c.expect(220);
  await c.cmd('EHLO client.example');
  const before = serverWrites(c).length;
  // Nothing else is sent until the reply is in: a reply held for more input would never come.
  const r = await c.cmd('NOOP');
  assert.equal(r.code, 250);
  assert.deepEqual(serverWrites(c).slice(before), ['250 2.0.0 Ok\r\n']);
  c.close();
});

test('after QUIT the server closes at once: a client that resets after the 221 causes no socket error on it', async () => {
  const errorsBefore = logLines.filter((l) => l.includes('"msg":"socket error"')).length;
  const c = await TestClient.connect(server.ports.smtp);
  await c.expect(220);
  await c.cmd('EHLO client.example');
  await c.cmd('QUIT');
  const port = c.socket.localPort;
  const serverSide = port === undefined ? undefined : sockets.get(port);
  assert.ok(serverSide !== undefined);
  // A client that closes without waiting (smtp-source) makes the same RST: a server still
  // reading after its 221 gets ECONNRESET, an Error with its stack trace, on every connection.
  c.socket.resetAndDestroy();
  if (!serverSide.closed) await new Promise((resolve) => serverSide.once('close', resolve));
  const errors = logLines.filter((l) => l.includes('"msg":"socket error"'));
  assert.equal(errors.length, errorsBefore, errors.slice(errorsBefore).join(''));
});
