/**
 * Rate limits ([rate_limits], src/policy/rate-limits.ts) on real servers: connections per
 * minute per client network (421 4.7.0, closed), messages per hour per authenticated user with
 * a per-user override (450 4.7.1 at MAIL), recipients per hour per client network (450 4.7.1 at
 * RCPT), the HTTP API counting against the same per-user limit (429), `sterna limits` showing
 * the counts, `sterna queue hold --user` holding a user's queued mail in one step, and two
 * Sterna processes sharing one Redis enforcing one limit. Nothing is stored for a refusal.
 */
import assert from 'node:assert/strict';
import { appendFile, readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { addApiKey } from '../src/api/keys.js';
import { runQueueCommand } from '../src/cli/queue-command.js';
import type { RateCount } from '../src/policy/rate-limits.js';
import type { QueueEntry } from '../src/queue/admin.js';
import { MaildropWriter } from '../src/queue/maildrop-writer.js';
import { capturedLog } from './helpers/outbound-fixture.js';
import { waitFor } from './helpers/outbound.js';
import { clientFrom, greetedFrom, sendSimple } from './helpers/policy.js';
import { prepareServeDir, startSternaProcess, type SternaProcess } from './helpers/process.js';
import { requireRedis, startRedis, type RedisInstance } from './helpers/redis.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { assertReply, TestClient } from './helpers/smtp-client.js';

const plain = (user: string, pass: string): string => Buffer.from(`\0${user}\0${pass}`).toString('base64');

async function cli(server: TestServer, args: string[]): Promise<{ code: number; out: string; err: string }> {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = '';
  let err = '';
  stdout.on('data', (d: Buffer) => (out += d.toString()));
  stderr.on('data', (d: Buffer) => (err += d.toString()));
  const code = await runQueueCommand(args, { stdout, stderr, config: server.config });
  return { code, out, err };
}

describe('rate limits on one server', () => {
  let server: TestServer;

  before(async () => {
    server = await startTestServer({
      users: [
        { address: 'alice@sterna.test', password: 'pw-alice' },
        { address: 'bob@sterna.test', password: 'pw-bob' },
      ],
      auth: 'on_smtp_listener = true\nallow_plaintext = true',
      toml: `
[rate_limits]
connections_per_minute = 2
messages_per_hour_per_user = 2
recipients_per_hour_per_network = 3
[rate_limits.users."bob@sterna.test"]
messages_per_hour = 1

[http_api]
listen = ["127.0.0.1:0"]
`,
    });
  });

  after(async () => {
    await server?.stop({ remove: true });
  });

  test('connections per minute per client network: the third gets 421 4.7.0 naming the limit', async () => {
    for (let i = 0; i < 2; i++) (await greetedFrom(server, '127.0.0.5')).close();
    const c = await TestClient.connect(server.ports.smtp, { localAddress: '127.0.0.5' });
    const r = await c.expect(421, '4.7.0');
    assert.match(
      r.text,
      /^4\.7\.0 mx\.sterna\.test too many connections from your network \(2 per minute, rate_limits\.connections_per_minute\); try again in \d+ seconds$/,
    );
    await c.waitClosed();
    (await greetedFrom(server, '127.0.0.6')).close();
  });

  test('messages per hour per user: 450 4.7.1 at MAIL, per-user override, nothing stored; limits and hold --user', async () => {
    const c = await clientFrom(server, '127.0.0.10');
    assertReply(await c.cmd(`AUTH PLAIN ${plain('alice@sterna.test', 'pw-alice')}`), 235);
    // Remote recipients: with no DNS the messages stay queued (deferred), so they can be held.
    assert.equal(await sendSimple(c, 'alice@sterna.test', 'x@remote.example'), 250);
    assert.equal(await sendSimple(c, 'alice@sterna.test', 'y@remote.example'), 250);
    const refused = await c.cmd('MAIL FROM:<alice@sterna.test>');
    assertReply(refused, 450, '4.7.1');
    assert.match(
      refused.text,
      /^4\.7\.1 Too many messages from user alice@sterna\.test \(2 per hour, rate_limits\.messages_per_hour_per_user\); try again in \d+ seconds$/,
    );
    c.close();
    assert.equal(server.app.spool.list().length, 2, 'the refused message was not stored');

    const b = await clientFrom(server, '127.0.0.11');
    assertReply(await b.cmd(`AUTH PLAIN ${plain('bob@sterna.test', 'pw-bob')}`), 235);
    assert.equal(await sendSimple(b, 'bob@sterna.test', 'z@remote.example'), 250);
    const bob = await b.cmd('MAIL FROM:<bob@sterna.test>');
    assertReply(bob, 450, '4.7.1');
    assert.match(bob.text, /\(1 per hour, rate_limits\.users\."bob@sterna\.test"\.messages_per_hour\)/);
    b.close();

    const limits = await cli(server, ['limits', '--json']);
    assert.equal(limits.code, 0, limits.err);
    const counts = JSON.parse(limits.out) as RateCount[];
    const alice = counts.find((x) => x.scope === 'user' && x.subject === 'alice@sterna.test');
    assert.deepEqual(alice && { what: alice.what, count: alice.count, limit: alice.limit }, {
      what: 'messages per hour',
      count: 2,
      limit: 2,
    });
    assert.match((await cli(server, ['limits'])).out, /messages per hour\s+user\s+1\s+1\s+bob@sterna\.test/);

    const hold = await cli(server, ['hold', '--user', 'alice@sterna.test']);
    assert.equal(hold.code, 0, hold.err);
    assert.match(hold.out, /2 messages held\n$/);
    const list = JSON.parse((await cli(server, ['list', '--json'])).out) as QueueEntry[];
    assert.deepEqual(list.map((e) => [e.authUser, e.held]).sort(), [
      ['alice@sterna.test', true],
      ['alice@sterna.test', true],
      ['bob@sterna.test', false],
    ]);
  });

  test('recipients per hour per client network: the fourth RCPT gets 450 4.7.1', async () => {
    const c = await clientFrom(server, '127.0.0.12');
    assertReply(await c.cmd('MAIL FROM:<someone@example.org>'), 250);
    for (let i = 0; i < 3; i++) assertReply(await c.cmd('RCPT TO:<postmaster@sterna.test>'), 250);
    const r = await c.cmd('RCPT TO:<postmaster@sterna.test>');
    assertReply(r, 450, '4.7.1');
    assert.match(
      r.text,
      /Too many recipients from network 127\.0\.0\.12 \(3 per hour, rate_limits\.recipients_per_hour_per_network\)/,
    );
    c.close();
  });

  test('the HTTP API counts against the same per-user limit: 429 once SMTP used it up', async () => {
    const a = server.app.httpApi[0];
    assert.ok(a !== undefined);
    const { key } = await addApiKey(server.config.http_api.keys_file, 'alice@sterna.test', []);
    const res = await fetch(`http://127.0.0.1:${a.port}/v1/messages`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
      body: JSON.stringify({ from: 'alice@sterna.test', to: 'x@remote.example', subject: 's', text: 'x' }),
    });
    const body = (await res.json()) as { code?: string; message?: string };
    assert.equal(res.status, 429, JSON.stringify(body));
    assert.equal(body.code, 'rate_limited');
    assert.match(body.message ?? '', /rate_limits\.messages_per_hour_per_user/);
    assert.ok(Number(res.headers.get('retry-after')) > 0);
    assert.equal(server.app.spool.list().length, 3, 'nothing stored for the refused API message');
  });
});

test('the maildrop (sterna sendmail) counts against the per-user limit; a file over it waits in the maildrop', async () => {
  const { log, lines } = capturedLog();
  const server = await startTestServer({
    log,
    toml: `[sendmail]\norigin = "sterna.test"\nscan_interval_ms = 200\n[rate_limits]\nmessages_per_hour_per_user = 1\n`,
  });
  try {
    const maildrop = path.join(server.dataDir, 'maildrop');
    const ids: string[] = [];
    for (const subject of ['one', 'two']) {
      const w = new MaildropWriter(maildrop);
      await w.write(Buffer.from(`Subject: ${subject}\r\n\r\nbody\r\n`));
      await w.commit({ v: 1, sender: null, recipients: ['x@remote.example'], via: 'sendmail' });
      ids.push(w.id);
    }
    await waitFor('a maildrop file deferred by the rate limit', () =>
      lines.some((l) => l['msg'] === 'maildrop file deferred: rate limit reached'),
    );
    const deferred = lines.find((l) => l['msg'] === 'maildrop file deferred: rate limit reached');
    assert.match(
      String(deferred?.['reason']),
      /^rate_limits\.messages_per_hour_per_user \(1 per hour for [^@]+@sterna\.test\)/,
    );
    assert.equal(server.app.spool.list().length, 1, 'one message queued, the other not stored');
    const left = (await readdir(maildrop)).filter((n) => ids.includes(n));
    assert.equal(left.length, 1, 'the deferred file stays in the maildrop for a later scan');
  } finally {
    await server.stop({ remove: true });
  }
});

describe('two Sterna processes sharing one Redis', { skip: requireRedis().skip }, () => {
  let redis: RedisInstance;
  const dirs: string[] = [];
  const procs: SternaProcess[] = [];
  const ports: number[] = [];

  before(async () => {
    redis = await startRedis();
    for (const name of ['a', 'b']) {
      const node = await prepareServeDir({
        prefix: `sterna-shared-${name}-`,
        hostname: `${name}.sterna.test`,
        domain: 'sterna.test',
        mailboxes: ['postmaster@sterna.test'],
      });
      dirs.push(node.dir);
      await appendFile(
        node.configFile,
        `[state]\nredis = "${redis.url}"\n[rate_limits]\nmessages_per_hour_per_sender_domain = 3\n`,
      );
      procs.push(
        await startSternaProcess({
          configFile: node.configFile,
          smtpPort: node.port,
          stdoutFile: path.join(node.dir, 'out.log'),
          stderrFile: path.join(node.dir, 'err.log'),
          readyTimeoutMs: 30_000,
        }),
      );
      ports.push(node.port);
    }
  });

  after(async () => {
    for (const p of procs) await p.stop();
    await redis?.stop();
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  test('one limit across both nodes: the fourth message of the domain is refused, on either node', async () => {
    const codes: number[] = [];
    for (const port of [ports[0], ports[1], ports[0], ports[1], ports[0]]) {
      const c = await TestClient.connect(port ?? 0);
      await c.expect(220);
      await c.cmd('EHLO client.example');
      const r = await c.cmd('MAIL FROM:<news@shared.example>');
      codes.push(r.code);
      if (r.code === 450) assert.match(r.text, /rate_limits\.messages_per_hour_per_sender_domain/);
      c.close();
    }
    assert.deepEqual(codes, [250, 250, 250, 450, 450]);
  });
});
