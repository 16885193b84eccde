/**
 * The Dovecot auth client against a scripted fake on a Unix socket: the handshake and the AUTH
 * line we send, OK (with Dovecot's tab-escaping), FAIL, FAIL with "temp", CONT, a dropped
 * connection, a version Dovecot 2.x never speaks, and a Dovecot without PLAIN.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { DovecotAuthClient } from './dovecot.js';
import type { Credentials } from './sasl.js';
import { TemporaryAuthError } from './store.js';

let dir: string;
before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'sterna-dovecot-unit-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

const HANDSHAKE =
  'VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nMECH\tLOGIN\tplaintext\nSPID\t7\nCUID\t1\nCOOKIE\tc0\nDONE\n';

/** A fake Dovecot: sends `handshake`, then answers each AUTH line with `answer(id, line)`. */
async function fake(
  name: string,
  answer: (id: string, line: string) => string | null,
  handshake = HANDSHAKE,
): Promise<{ socket: string; lines: string[]; close(): Promise<void> }> {
  const socket = path.join(dir, name);
  const lines: string[] = [];
  const server = net.createServer((s) => {
    s.on('error', () => undefined);
    s.write(handshake);
    let buf = '';
    s.on('data', (d: Buffer) => {
      buf += d.toString('utf8');
      let nl: number;
      while ((nl = buf.indexOf('\n')) !== -1) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        lines.push(line);
        const [verb, id] = line.split('\t');
        if (verb !== 'AUTH' || id === undefined) continue;
        const out = answer(id, line);
        if (out === null) s.destroy();
        else s.write(out);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(socket, resolve));
  return { socket, lines, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

const creds = (password: string, authzid = ''): Credentials => ({
  kind: 'password',
  authcid: 'alice@example.org',
  authzid,
  password,
});
const CTX = { ip: '192.0.2.7', secured: true };

test('handshake and AUTH line as Postfix sends them; OK gives the (unescaped) user Dovecot returns', async () => {
  const f = await fake('ok', (id) => `OK\t${id}\tuser=Alice\x01tX@example.org\n`);
  const c = new DovecotAuthClient({ socket: f.socket, service: 'smtp', timeoutMs: 2000 });
  assert.deepEqual(await c.verify(creds('pw'), CTX), { ok: true, user: 'Alice\tX@example.org' });
  c.close();
  await f.close();
  assert.match(f.lines[0]!, /^VERSION\t1\t2$/);
  assert.match(f.lines[1]!, /^CPID\t\d+$/);
  const resp = Buffer.from('\0alice@example.org\0pw').toString('base64');
  assert.equal(f.lines[2], `AUTH\t1\tPLAIN\tservice=smtp\tnologin\trip=192.0.2.7\tsecured\tresp=${resp}`);
});

test('FAIL is a failure; FAIL with "temp" and an unknown answer are temporary; CONT is a failure', async () => {
  const answers = [
    'FAIL\t{id}\tuser=alice@example.org\n',
    'FAIL\t{id}\ttemp\treason=db down\n',
    'CONT\t{id}\t\n',
    'HUH\t{id}\n',
  ];
  let n = 0;
  const f = await fake('fail', (id) => answers[n++]!.replace('{id}', id));
  const c = new DovecotAuthClient({ socket: f.socket, service: 'smtp', timeoutMs: 2000 });
  assert.deepEqual(await c.verify(creds('bad'), { ip: 'unknown', secured: false }), { ok: false });
  await assert.rejects(c.verify(creds('pw'), CTX), TemporaryAuthError);
  assert.deepEqual(await c.verify(creds('pw'), CTX), { ok: false });
  await assert.rejects(c.verify(creds('pw'), CTX), TemporaryAuthError);
  c.close();
  await f.close();
  // Without TLS no "secured", and an address that is not an IP is not passed as rip.
  assert.match(f.lines[2]!, /^AUTH\t1\tPLAIN\tservice=smtp\tnologin\tresp=/);
});

test('RFC 4954 5: an authzid other than the user Dovecot returns fails', async () => {
  const f = await fake('authz', (id) => `OK\t${id}\tuser=alice@example.org\n`);
  const c = new DovecotAuthClient({ socket: f.socket, service: 'smtp', timeoutMs: 2000 });
  assert.deepEqual(await c.verify(creds('pw', 'bob@example.org'), CTX), { ok: false });
  assert.deepEqual(await c.verify(creds('pw', 'ALICE@example.org'), CTX), {
    ok: true,
    user: 'alice@example.org',
  });
  c.close();
  await f.close();
});

test('a connection dropped during a request is temporary, and the next request reconnects', async () => {
  let n = 0;
  const f = await fake('drop', (id) => (n++ === 0 ? null : `OK\t${id}\tuser=alice@example.org\n`));
  const c = new DovecotAuthClient({ socket: f.socket, service: 'smtp', timeoutMs: 2000 });
  await assert.rejects(c.verify(creds('pw'), CTX), TemporaryAuthError);
  assert.deepEqual(await c.verify(creds('pw'), CTX), { ok: true, user: 'alice@example.org' });
  c.close();
  await f.close();
});

test('no socket, another protocol version, or no PLAIN mechanism: temporary', async () => {
  const none = new DovecotAuthClient({ socket: path.join(dir, 'nothing'), service: 'smtp', timeoutMs: 2000 });
  await assert.rejects(none.verify(creds('pw'), CTX), /ENOENT/);
  const v2 = await fake('v2', () => '', 'VERSION\t2\t0\nDONE\n');
  const c2 = new DovecotAuthClient({ socket: v2.socket, service: 'smtp', timeoutMs: 2000 });
  await assert.rejects(c2.verify(creds('pw'), CTX), /protocol version 2\.0/);
  c2.close();
  await v2.close();
  const noPlain = await fake('noplain', () => '', 'VERSION\t1\t2\nMECH\tSCRAM-SHA-256\nDONE\n');
  const c3 = new DovecotAuthClient({ socket: noPlain.socket, service: 'smtp', timeoutMs: 2000 });
  await assert.rejects(c3.verify(creds('pw'), CTX), /does not offer PLAIN/);
  c3.close();
  await noPlain.close();
});
