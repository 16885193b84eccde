/**
 * The admin API over real HTTP against a real server: every route once without the token (401,
 * nothing changed) and once with it; the queue operations seen through the control socket's
 * `sterna queue` as well (one implementation); users changed through the API log in over SMTP;
 * recent events and the story of a message; the listener's configuration rules (no token:
 * loopback only, a config error naming admin.token_file) and TLS on a non-loopback address.
 */
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { request as httpsRequest } from 'node:https';
import path from 'node:path';
import { TLSSocket } from 'node:tls';
import { after, before, describe, test } from 'node:test';
import { ConfigError, parseConfigText } from '../src/config/load.js';
import { authPlain, startAdminServer, type AdminTestServer } from './helpers/admin.js';
import { queueCommand, sendMessage, waitFor } from './helpers/outbound.js';
import { startTestServer } from './helpers/server.js';
import { makeTempDir } from './helpers/tools.js';

const RELAY = '[relay]\ntrusted_networks = ["127.0.0.1/32"]\n';
const USER = { address: 'ann@sterna.test', password: 'ann-secret-1' };

function body(lines: string[]): string {
  return lines.map((l) => `${l}\r\n`).join('');
}

/** Queues one message to a domain nothing answers for: it stays deferred. */
function queueRemote(a: AdminTestServer, from: string, to: string): Promise<string> {
  return sendMessage(a.server.ports.smtp, {
    from,
    to: [to],
    body: body([`From: <${from}>`, `To: <${to}>`, 'Subject: admin api', '', 'hello']),
  });
}

function obj(v: unknown): Record<string, unknown> {
  assert.ok(
    typeof v === 'object' && v !== null && !Array.isArray(v),
    `expected a JSON object, got ${String(v)}`,
  );
  return v as Record<string, unknown>;
}

describe('admin API with a token', () => {
  let a: AdminTestServer;
  const qids: string[] = [];

  before(async () => {
    a = await startAdminServer({ toml: RELAY, users: [USER] });
    for (let i = 0; i < 4; i++)
      qids.push(await queueRemote(a, `sender${i}@sterna.test`, `rcpt${i}@far${i % 2}.test`));
    // Each first attempt fails on DNS (nothing answers): every message deferred.
    await waitFor('four deferred messages', () =>
      a.server.app.spool.list().every((m) => m.states.every((s) => s.status === 'deferred')),
    );
  });
  after(() => a.stop());

  /** Every route: method, path, body, the status with the token. */
  const routes = (): { method: string; path: string; body?: unknown; ok: number }[] => [
    { method: 'GET', path: '/metrics', ok: 200 },
    { method: 'GET', path: '/api/queue', ok: 200 },
    { method: 'GET', path: `/api/queue/${qids[0]}`, ok: 200 },
    { method: 'POST', path: `/api/queue/${qids[0]}/hold`, ok: 200 },
    { method: 'POST', path: `/api/queue/${qids[0]}/release`, ok: 200 },
    { method: 'POST', path: `/api/queue/${qids[0]}/flush`, ok: 200 },
    { method: 'POST', path: '/api/queue/flush', body: { domain: 'far1.test' }, ok: 200 },
    { method: 'POST', path: `/api/queue/${qids[1]}/bounce`, ok: 200 },
    { method: 'DELETE', path: `/api/queue/${qids[2]}`, ok: 200 },
    { method: 'POST', path: '/api/queue/delete-deferred', ok: 200 },
    { method: 'GET', path: '/api/users', ok: 200 },
    {
      method: 'POST',
      path: '/api/users',
      body: { address: 'bob@sterna.test', password: 'bob-secret-1' },
      ok: 201,
    },
    {
      method: 'PUT',
      path: '/api/users/bob@sterna.test/password',
      body: { password: 'bob-secret-2' },
      ok: 200,
    },
    { method: 'DELETE', path: '/api/users/bob@sterna.test', ok: 200 },
    { method: 'GET', path: '/api/recent', ok: 200 },
    { method: 'GET', path: `/api/messages/${qids[3]}/story`, ok: 200 },
  ];

  test('every route refuses a request without the token, or with a wrong one: 401, nothing done', async () => {
    const before = a.server.app.spool.list().length;
    for (const r of routes()) {
      const none = await a.call(r.method, r.path, {
        auth: false,
        ...(r.body !== undefined ? { body: r.body } : {}),
      });
      assert.equal(none.status, 401, `${r.method} ${r.path}: ${none.text}`);
      assert.equal(obj(none.json)['code'], 'unauthorized');
      assert.equal(none.headers.get('www-authenticate'), 'Bearer realm="sterna-admin"');
      const res = await fetch(`${a.base}${r.path}`, {
        method: r.method,
        headers: { authorization: `Bearer ${a.token ?? ''}x` },
      });
      assert.equal(res.status, 401, `${r.method} ${r.path} with a wrong token`);
    }
    assert.equal(a.server.app.spool.list().length, before, 'no queue operation ran');
    assert.equal(a.server.app.manager.isHeld(qids[0] ?? ''), false);
  });

  test('health and readiness answer without the token', async () => {
    const h = await a.call('GET', '/healthz', { auth: false });
    assert.equal(h.status, 200);
    assert.deepEqual(h.json, { status: 'alive' });
    const r = await a.call('GET', '/readyz', { auth: false });
    assert.equal(r.status, 200);
    assert.deepEqual(r.json, { ready: true });
  });

  test('every route with the token, in order; the queue operations agree with `sterna queue`', async () => {
    for (const r of routes()) {
      const res = await a.call(r.method, r.path, r.body !== undefined ? { body: r.body } : {});
      assert.equal(res.status, r.ok, `${r.method} ${r.path}: ${res.text}`);
      if (r.path === '/metrics') {
        assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
        assert.match(res.text, /^sterna_messages_accepted_total 4$/m);
      }
      if (r.path.endsWith('/hold')) {
        assert.deepEqual(res.json, { changed: true });
        const cli = await queueCommand(a.server.config, 'list');
        assert.match(cli.out, new RegExp(`${qids[0]}.*held|held.*${qids[0]}`, 's'), cli.out);
      }
      if (r.path.endsWith('/release')) assert.deepEqual(res.json, { changed: true });
      if (r.path === `/api/queue/${qids[0]}`) {
        const m = obj(res.json);
        assert.equal(m['qid'], qids[0]);
        assert.equal(m['sender'], 'sender0@sterna.test');
        assert.match(String(m['headers']), /^Received: /);
      }
      if (r.path.endsWith('/bounce')) assert.deepEqual(res.json, { bounced: true });
      if (r.method === 'DELETE' && r.path.startsWith('/api/queue/')) {
        assert.deepEqual(res.json, { deleted: qids[2] });
        const cli = await queueCommand(a.server.config, 'show', qids[2] ?? '');
        assert.notEqual(cli.code, 0, 'gone for `sterna queue show` too');
      }
      if (r.path === '/api/users' && r.method === 'POST') {
        assert.deepEqual(res.json, { address: 'bob@sterna.test' });
        assert.equal(await authPlain(a.server.ports.submission, 'bob@sterna.test', 'bob-secret-1'), 235);
      }
      if (r.path.endsWith('/password')) {
        assert.equal(await authPlain(a.server.ports.submission, 'bob@sterna.test', 'bob-secret-1'), 535);
        assert.equal(await authPlain(a.server.ports.submission, 'bob@sterna.test', 'bob-secret-2'), 235);
      }
      if (r.path === '/api/users' && r.method === 'GET')
        assert.deepEqual(res.json, { users: [USER.address] });
      if (r.path.endsWith('/story')) {
        const story = obj(res.json);
        assert.equal(story['qid'], qids[3]);
        const events = story['events'];
        assert.ok(Array.isArray(events));
        const first = obj(events[0]);
        assert.equal(first['kind'], 'queued');
        assert.equal(first['sender'], 'sender3@sterna.test');
        assert.deepEqual(first['recipients'], ['rcpt3@far1.test']);
        const attempt = obj(events[1]);
        assert.equal(attempt['kind'], 'delivery');
        assert.equal(attempt['result'], 'deferred');
        assert.equal(attempt['destination'], 'far1.test');
        assert.equal(story['inQueue'], false, 'deleted by delete-deferred before');
      }
    }
    // After delete-deferred: qids[0] and [3] (flushed, deferred again) are gone too.
    const list = obj((await a.call('GET', '/api/queue')).json);
    assert.ok(typeof list['total'] === 'number');
  });

  test('errors: an unknown queue id is 404, a bad query 400, an existing user 409', async () => {
    const unknown = await a.call('GET', '/api/queue/0000000000000000');
    assert.equal(unknown.status, 404, unknown.text);
    assert.equal(obj(unknown.json)['code'], 'not_found');
    assert.equal((await a.call('POST', '/api/queue/not-a-qid/hold')).status, 404);
    const bad = await a.call('GET', '/api/queue?state=lost');
    assert.equal(bad.status, 400, bad.text);
    const both = await a.call('GET', '/api/queue?offset=1&cursor=0000000000000000');
    assert.equal(both.status, 400, both.text);
    const exists = await a.call('POST', '/api/users', { body: USER });
    assert.equal(exists.status, 409, exists.text);
    assert.equal(obj(exists.json)['code'], 'user_exists');
    const empty = await a.call('POST', '/api/users', { body: { address: 'x@sterna.test', password: '' } });
    assert.equal(empty.status, 400, empty.text);
    assert.equal(obj(empty.json)['message'], 'the password must not be empty');
    assert.equal((await a.call('DELETE', '/api/users/nobody@sterna.test')).status, 404);
  });
});

describe('admin API: queue list filters and pages', () => {
  let a: AdminTestServer;
  const qids: string[] = [];

  before(async () => {
    a = await startAdminServer({ toml: RELAY });
    for (let i = 0; i < 7; i++)
      qids.push(
        await queueRemote(
          a,
          i < 3 ? `alice${i}@sterna.test` : `carol${i}@sterna.test`,
          `u${i}@dest${i % 3}.test`,
        ),
      );
    await waitFor('seven deferred messages', () =>
      a.server.app.spool.list().every((m) => m.states.every((s) => s.status === 'deferred')),
    );
    const held = await a.call('POST', `/api/queue/${qids[6]}/hold`);
    assert.equal(held.status, 200);
  });
  after(() => a.stop());

  const page = async (query: string): Promise<{ total: number; ids: string[]; next: string | null }> => {
    const res = await a.call('GET', `/api/queue${query}`);
    assert.equal(res.status, 200, res.text);
    const p = obj(res.json);
    const items = p['items'];
    assert.ok(Array.isArray(items));
    return {
      total: Number(p['total']),
      ids: items.map((i) => String(obj(i)['qid'])),
      next: typeof p['nextCursor'] === 'string' ? p['nextCursor'] : null,
    };
  };

  test('cursor pages walk the whole queue, oldest first, with the total', async () => {
    const first = await page('?limit=3');
    assert.deepEqual(first, { total: 7, ids: qids.slice(0, 3), next: qids[2] ?? null });
    const second = await page(`?limit=3&cursor=${first.next ?? ''}`);
    assert.deepEqual(second, { total: 7, ids: qids.slice(3, 6), next: qids[5] ?? null });
    const third = await page(`?limit=3&cursor=${second.next ?? ''}`);
    assert.deepEqual(third, { total: 7, ids: qids.slice(6), next: null });
    assert.deepEqual((await page('?limit=2&offset=5')).ids, qids.slice(5, 7));
  });

  test('filters: sender, recipient, domain, state, age', async () => {
    assert.deepEqual((await page('?sender=ALICE')).ids, qids.slice(0, 3));
    assert.deepEqual((await page('?recipient=u4@')).ids, [qids[4]]);
    assert.deepEqual((await page('?domain=dest1.test')).ids, [qids[1], qids[4]]);
    assert.deepEqual((await page('?state=held')).ids, [qids[6]]);
    const deferred = await page('?state=deferred');
    assert.deepEqual(deferred.ids, qids.slice(0, 6));
    assert.equal((await page('?min_age=3600')).total, 0);
    assert.equal((await page('?max_age=3600')).total, 7);
    const combined = await page('?sender=carol&domain=dest0.test&state=deferred');
    assert.deepEqual(combined.ids, [qids[3]]);
    const item = obj((await a.call('GET', `/api/queue?recipient=u4@`)).json)['items'];
    assert.ok(Array.isArray(item));
    const entry = obj(item[0]);
    assert.equal(entry['state'], 'deferred');
    assert.equal(entry['sender'], 'carol4@sterna.test');
  });
});

describe('admin listener configuration', () => {
  test('without a token, loopback only: a non-loopback address is a config error naming admin.token_file', () => {
    assert.throws(
      () => parseConfigText('[admin]\nlisten = ["0.0.0.0:9100"]\n', 'test'),
      (err: unknown) =>
        err instanceof ConfigError &&
        err.problems.some((p) => p.key === 'admin.token_file' && /0\.0\.0\.0:9100/.test(p.message)),
    );
    assert.equal(
      parseConfigText('[admin]\nlisten = ["127.0.0.1:9100", "[::1]:9100"]\n', 'test').admin.token_file,
      '',
    );
    assert.deepEqual(parseConfigText('', 'test').admin.listen, [], 'off by default');
  });

  test('on loopback without a token the API answers without authentication', async () => {
    const a = await startAdminServer({ token: false });
    try {
      const res = await a.call('GET', '/api/queue');
      assert.equal(res.status, 200, res.text);
      assert.deepEqual(res.json, { total: 0, items: [], nextCursor: null });
    } finally {
      await a.stop();
    }
  });

  test('a non-loopback address speaks HTTPS with the server certificate, and wants the token', async () => {
    const token = 'x'.repeat(32);
    const tmp = await makeTempDir('sterna-admin-tls-');
    await writeFile(path.join(tmp.dir, 'token'), token);
    const server = await startTestServer({
      toml: `[admin]\nlisten = ["0.0.0.0:0"]\ntoken_file = "${path.join(tmp.dir, 'token')}"\n`,
    });
    try {
      const addr = server.app.admin[0];
      assert.equal(addr?.tls, true);
      const get = (auth: string | null): Promise<{ status: number; protocol: string }> =>
        new Promise((resolve, reject) => {
          const req = httpsRequest(
            {
              host: '127.0.0.1',
              port: addr?.port ?? 0,
              path: '/api/users',
              rejectUnauthorized: false,
              headers: auth === null ? {} : { authorization: `Bearer ${auth}` },
            },
            (res) => {
              res.resume();
              const sock = res.socket;
              resolve({
                status: res.statusCode ?? 0,
                protocol: sock instanceof TLSSocket ? (sock.getProtocol() ?? '') : 'plain',
              });
            },
          );
          req.on('error', reject);
          req.end();
        });
      const without = await get(null);
      assert.equal(without.status, 401);
      assert.match(without.protocol, /^TLSv1\.[23]$/);
      assert.equal((await get(token)).status, 200);
    } finally {
      await server.stop({ remove: true });
      await tmp.cleanup();
    }
  });
});
