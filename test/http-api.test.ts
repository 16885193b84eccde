/**
 * The HTTP submission API over real HTTP (node's fetch) against a real server: a JSON message
 * built by the MIME composer lands in the Maildir with the right structure (read back with
 * python3's email package), a raw message, every error status with its code, the sender rule,
 * the size limit, bad keys, the bare-LF refusal shared with DATA, idempotency across a restart,
 * the rate limit, HTTPS off loopback, and the keys' secret never reaching the log.
 */
import assert from 'node:assert/strict';
import { readFile, stat } from 'node:fs/promises';
import https from 'node:https';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { addApiKey, deleteApiKey } from '../src/api/keys.js';
import { createLogger } from '../src/observability/log.js';
import { TEST_CERT_NAME } from '../src/server/tls.js';
import { waitForMessages } from './helpers/maildir.js';
import { waitForLog } from './helpers/process.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { TestClient } from './helpers/smtp-client.js';
import { requireTool, runTool } from './helpers/tools.js';

const USERS = [
  { address: 'alice@sterna.test', password: 'alice-pw', sendAs: ['alerts@sterna.test'] },
  { address: 'bob@sterna.test', password: 'bob-pw' },
  { address: 'carol@sterna.test', password: 'carol-pw' },
];
const TOML = `[limits]
message_bytes = 20000
recipients = 5
[http_api]
listen = ["127.0.0.1:0"]
messages_per_minute = 3
`;

let server: TestServer;
let logFile: string;
const secrets: string[] = [];

function baseUrl(s: TestServer = server): string {
  const a = s.app.httpApi[0];
  assert.ok(a !== undefined, 'the API listener is bound');
  return `http://127.0.0.1:${a.port}`;
}

async function newKey(
  user = 'alice@sterna.test',
  senders: string[] = [],
  s: TestServer = server,
): Promise<string> {
  const { key } = await addApiKey(s.config.http_api.keys_file, user, senders);
  secrets.push(key);
  return key;
}

function post(
  key: string | null,
  body: unknown,
  opts: { path?: string; headers?: Record<string, string>; s?: TestServer } = {},
): Promise<Response> {
  const raw = Buffer.isBuffer(body) || typeof body === 'string';
  return fetch(`${baseUrl(opts.s)}${opts.path ?? '/v1/messages'}`, {
    method: 'POST',
    headers: {
      'content-type': raw ? 'message/rfc822' : 'application/json',
      ...(key !== null ? { authorization: `Bearer ${key}` } : {}),
      ...opts.headers,
    },
    body: raw ? body : JSON.stringify(body),
  });
}

async function expectError(res: Response, status: number, code: string): Promise<string> {
  const body = (await res.json()) as { code?: unknown; message?: unknown };
  assert.equal(res.status, status, JSON.stringify(body));
  assert.equal(body.code, code, JSON.stringify(body));
  assert.equal(typeof body.message, 'string');
  return String(body.message);
}

async function expectQueued(res: Response): Promise<string> {
  const body = (await res.json()) as { id?: unknown };
  assert.equal(res.status, 202, JSON.stringify(body));
  assert.equal(typeof body.id, 'string');
  return String(body.id);
}

before(async () => {
  const dir = await import('node:fs/promises').then((fs) => fs.mkdtemp('/tmp/sterna-api-log-'));
  logFile = path.join(dir, 'log.json');
  server = await startTestServer({
    users: USERS,
    toml: TOML,
    log: createLogger({ level: 'debug', format: 'json', destination: logFile }),
  });
});

after(async () => {
  await server.stop({ remove: true });
});

const PARSE_MIME = `
import email, email.policy, json, sys
m = email.message_from_binary_file(sys.stdin.buffer, policy=email.policy.default)
def walk(p):
    d = {"type": p.get_content_type(), "filename": p.get_filename()}
    if p.is_multipart():
        d["parts"] = [walk(x) for x in p.iter_parts()]
    else:
        c = p.get_content()
        d["content"] = c if isinstance(c, str) else c.decode("latin-1")
    return d
out = walk(m)
out["headers"] = {k: str(v) for k, v in m.items() if k not in ("Received",)}
out["received"] = [str(v) for v in m.get_all("Received", [])]
out["bcc"] = m.get("Bcc")
print(json.dumps(out))
`;

interface MimePart {
  type: string;
  filename: string | null;
  content?: string;
  parts?: MimePart[];
}

test('a JSON message with text, html and an attachment lands in the Maildir as multipart/mixed', async (t) => {
  const py = requireTool('python3');
  if (py.skip !== false) return t.skip(py.skip);
  const key = await newKey();
  const attachment = Buffer.from('%PDF-1.4 not really\x00\x01\x02\xff', 'latin1');
  const id = await expectQueued(
    await post(key, {
      from: { name: 'Alice Ä', address: 'alice@sterna.test' },
      to: ['bob@sterna.test'],
      bcc: 'carol@sterna.test',
      replyTo: 'alerts@sterna.test',
      subject: 'Report ✓',
      text: 'Hello Bob\nplain part',
      html: '<p>Hello <b>Bob</b></p>',
      attachments: [
        { filename: 'report.pdf', content: attachment.toString('base64'), contentType: 'application/pdf' },
      ],
      headers: { 'X-Campaign': 'weekly' },
    }),
  );
  const [msg] = await waitForMessages(server.dataDir, 'sterna.test', 'bob');
  assert.ok(msg !== undefined, 'delivered to bob');
  const run = await runTool('python3', ['-c', PARSE_MIME], { input: msg });
  assert.equal(run.code, 0, run.stderr);
  const parsed = JSON.parse(run.stdout) as MimePart & {
    headers: Record<string, string>;
    received: string[];
    bcc: string | null;
  };
  assert.equal(parsed.type, 'multipart/mixed');
  const [alt, att] = parsed.parts ?? [];
  assert.equal(alt?.type, 'multipart/alternative');
  assert.deepEqual(
    alt?.parts?.map((p) => [p.type, p.content?.replace(/\r?\n$/, '')]),
    [
      ['text/plain', 'Hello Bob\nplain part'],
      ['text/html', '<p>Hello <b>Bob</b></p>'],
    ],
  );
  assert.equal(att?.type, 'application/pdf');
  assert.equal(att?.filename, 'report.pdf');
  assert.equal(att?.content, attachment.toString('latin1'));
  assert.equal(parsed.headers['From'], 'Alice Ä <alice@sterna.test>');
  assert.equal(parsed.headers['To'], 'bob@sterna.test');
  assert.equal(parsed.headers['Reply-To'], 'alerts@sterna.test');
  assert.equal(parsed.headers['Subject'], 'Report ✓');
  assert.equal(parsed.headers['X-Campaign'], 'weekly');
  assert.equal(parsed.headers['Message-ID'], `<${id}@mx.sterna.test>`);
  assert.match(parsed.headers['Date'] ?? '', /^\w{3}, \d{1,2} \w{3} \d{4} \d\d:\d\d:\d\d \+0000$/);
  assert.equal(parsed.bcc, null, 'Bcc is never written into the message');
  // Our Received first (then Maildir delivery's own, if any, before it), naming the user and the key.
  const ours = parsed.received.find((r) => r.includes(`id ${id}`)) ?? '';
  assert.match(
    ours,
    /^from \[127\.0\.0\.1\] \(HTTP API client\)\s+by mx\.sterna\.test \(Sterna\) with HTTP id /,
  );
  assert.match(ours, /\(authenticated user alice@sterna\.test, API key [0-9a-f]{12}\)/);
  // The Bcc recipient got the same message.
  const [carol] = await waitForMessages(server.dataDir, 'sterna.test', 'carol');
  assert.ok(carol?.includes(`Message-ID: <${id}@mx.sterna.test>`));
});

test('a raw message (message/rfc822) is queued as sent, with Message-ID and Date added when missing', async () => {
  const key = await newKey();
  const raw = 'From: alice@sterna.test\r\nTo: bob@sterna.test\r\nSubject: raw one\r\n\r\nraw body line\r\n';
  const id = await expectQueued(await post(key, raw, { path: '/v1/messages/raw?to=bob@sterna.test' }));
  const msgs = await waitForMessages(server.dataDir, 'sterna.test', 'bob', 2);
  const msg = msgs.map((m) => m.toString('utf8')).find((m) => m.includes(`id ${id}`));
  assert.ok(msg !== undefined);
  const headerEnd = msg.indexOf('From: alice@sterna.test\r\n');
  assert.ok(msg.slice(headerEnd).startsWith(raw.slice(0, raw.indexOf('\r\n\r\n') + 2)));
  assert.ok(msg.endsWith('\r\n\r\nraw body line\r\n'));
  assert.match(msg, new RegExp(`\r\nMessage-ID: <${id}@mx\\.sterna\\.test>\r\n`));
  assert.match(msg, /\r\nDate: \w{3}, /);
  assert.match(msg, /for <bob@sterna\.test>;/);
});

test('RFC 8601 5: a raw message loses an Authentication-Results field that claims our authserv-id, as on SMTP', async () => {
  const key = await newKey();
  const forged = `Authentication-Results: ${server.config.hostname}; dmarc=pass header.from=sterna.test\r\n`;
  const other = 'Authentication-Results: elsewhere.example; spf=fail\r\n';
  const raw = `${forged}${other}From: alice@sterna.test\r\nSubject: forged\r\n\r\nforged results\r\n`;
  const id = await expectQueued(await post(key, raw, { path: '/v1/messages/raw?to=bob@sterna.test' }));
  let msg: string | undefined;
  for (let i = 0; i < 200 && msg === undefined; i++) {
    const msgs = await waitForMessages(server.dataDir, 'sterna.test', 'bob', 1);
    msg = msgs.map((m) => m.toString('utf8')).find((m) => m.includes(`id ${id}`));
    if (msg === undefined) await new Promise((r) => setTimeout(r, 25));
  }
  assert.ok(msg !== undefined, 'delivered');
  assert.ok(!msg.includes(forged), 'the forged field is gone');
  assert.ok(msg.includes(other), "another host's field stays");
});

test('raw: recipients and sender from the Sterna-Envelope-* headers; the sender rule applies to them', async () => {
  const key = await newKey();
  const raw = 'Subject: hdr\r\n\r\nbody\r\n';
  await expectQueued(
    await post(key, raw, {
      path: '/v1/messages/raw',
      headers: { 'sterna-envelope-to': 'carol@sterna.test', 'sterna-envelope-from': 'alerts@sterna.test' },
    }),
  );
  await expectError(
    await post(key, raw, {
      path: '/v1/messages/raw',
      headers: { 'sterna-envelope-to': 'carol@sterna.test', 'sterna-envelope-from': 'bob@sterna.test' },
    }),
    403,
    'sender_not_allowed',
  );
  await expectError(await post(key, raw, { path: '/v1/messages/raw' }), 400, 'no_recipients');
});

test('a bare LF in a raw message gets the refusal DATA gives (the one decoder rule)', async () => {
  const key = await newKey();
  const raw = 'From: alice@sterna.test\r\nSubject: x\r\n\r\nsmuggled\n.\nMAIL FROM:<x@y>\r\n';
  const message = await expectError(
    await post(key, raw, { path: '/v1/messages/raw?to=bob@sterna.test' }),
    400,
    'bare_line_ending',
  );
  assert.match(message, /bare CR or LF/);
  // The same bytes over SMTP DATA: refused by the same rule (550 5.6.11).
  const c = await TestClient.connect(server.ports.smtp);
  await c.expect(220);
  await c.cmd('EHLO client.example');
  assert.equal((await c.cmd('MAIL FROM:<x@example.org>')).code, 250);
  assert.equal((await c.cmd('RCPT TO:<bob@sterna.test>')).code, 250);
  assert.equal((await c.cmd('DATA')).code, 354);
  c.send(`${raw}.\r\n`);
  await c.expect(550, '5.6.11');
  await c.cmd('QUIT');
});

test('401: no key, a malformed key, an unknown key, a deleted key; the key never reaches the log', async () => {
  const raw = 'Subject: x\r\n\r\nx\r\n';
  const res = await post(null, raw, { path: '/v1/messages/raw?to=bob@sterna.test' });
  assert.equal(res.headers.get('www-authenticate'), 'Bearer realm="sterna"');
  await expectError(res, 401, 'unauthorized');
  await expectError(await post('nonsense', { from: 'alice@sterna.test' }), 401, 'invalid_key');
  const key = await newKey();
  const forged = key.slice(0, -4) + (key.endsWith('AAAA') ? 'BBBB' : 'AAAA');
  await expectError(await post(forged, { from: 'alice@sterna.test' }), 401, 'invalid_key');
  const id = key.split('_')[1] ?? '';
  assert.equal(await deleteApiKey(server.config.http_api.keys_file, id), true);
  await expectError(await post(key, { from: 'alice@sterna.test' }), 401, 'invalid_key');
  // The file holds hashes only, mode 0600.
  const file = server.config.http_api.keys_file;
  assert.equal((await stat(file)).mode & 0o777, 0o600);
  const text = await readFile(file, 'utf8');
  for (const s of secrets) assert.ok(!text.includes(s.slice(17)), 'no secret in the keys file');
  // Log lines reach the file within 100 ms (log.ts): wait for the refusal's.
  await waitForLog({ stdoutFile: logFile }, (r) => r.msg === 'api request refused');
  const log = await readFile(logFile, 'utf8');
  assert.match(log, /api request refused/);
  for (const s of secrets) assert.ok(!log.includes(s.slice(17)), 'no secret in the log');
});

test('400: schema errors, refused headers, CR/LF in a header, bad base64, bad and refused recipients', async () => {
  const key = await newKey();
  const base = { from: 'alice@sterna.test', to: 'bob@sterna.test', text: 'x' };
  await expectError(await post(key, { to: 'bob@sterna.test', text: 'x' }), 400, 'invalid_request');
  await expectError(await post(key, { ...base, surprise: 1 }), 400, 'invalid_request');
  await expectError(await post(key, { ...base, subject: 'a\r\nBcc: x@y' }), 400, 'invalid_request');
  for (const name of ['Received', 'Return-Path', 'Bcc', 'content-type', 'Authentication-Results']) {
    await expectError(await post(key, { ...base, headers: { [name]: 'v' } }), 400, 'header_not_allowed');
  }
  await expectError(await post(key, { ...base, headers: { 'X-A': 'v\r\nBcc: evil@x' } }), 400, 'bad_header');
  await expectError(await post(key, { ...base, headers: { 'X A': 'v' } }), 400, 'bad_header');
  await expectError(
    await post(key, { ...base, attachments: [{ filename: 'a', content: 'not base64!' }] }),
    400,
    'bad_attachment',
  );
  await expectError(await post(key, { ...base, to: 'not an address' }), 400, 'bad_recipient');
  await expectError(await post(key, { ...base, to: 'nobody@sterna.test' }), 400, 'recipient_refused');
  const six = ['a', 'b', 'c', 'd', 'e', 'f'].map((l) => `${l}@example.org`);
  const msg = await expectError(await post(key, { ...base, to: six }), 400, 'too_many_recipients');
  assert.match(msg, /limits\.recipients \(5\)/);
  await expectError(await post(key, { ...base, text: undefined }), 400, 'empty_message');
  await expectError(
    await post(key, base, { headers: { 'content-type': 'text/plain' } }),
    415,
    'unsupported_media_type',
  );
  await expectError(await post(key, 'Subject: x\r\n\r\nx\r\n'), 415, 'unsupported_media_type');
  await expectError(
    await post(key, base, { path: '/v1/messages/raw?to=bob@sterna.test' }),
    415,
    'unsupported_media_type',
  );
  await expectError(await post(key, base, { path: '/v1/nothing' }), 404, 'not_found');
});

test('403: the sender must be the user, one of its sendAs addresses, and one the key is bound to', async () => {
  const key = await newKey();
  const msg = { to: 'bob@sterna.test', text: 'x' };
  await expectError(await post(key, { ...msg, from: 'bob@sterna.test' }), 403, 'sender_not_allowed');
  await expectQueued(await post(key, { ...msg, from: 'alerts@sterna.test' }));
  const bound = await newKey('alice@sterna.test', ['alerts@sterna.test']);
  await expectError(await post(bound, { ...msg, from: 'alice@sterna.test' }), 403, 'sender_not_allowed');
  await expectQueued(await post(bound, { ...msg, from: 'alerts@sterna.test' }));
  // A key bound to an address its user may not send as gives it nothing (auth.enforce_sender).
  const wide = await newKey('alice@sterna.test', ['bob@sterna.test']);
  await expectError(await post(wide, { ...msg, from: 'bob@sterna.test' }), 403, 'sender_not_allowed');
});

test('413: a message over limits.message_bytes, raw or JSON; nothing is queued', async () => {
  const key = await newKey();
  const before = server.app.spool.size;
  const line = 'x'.repeat(70) + '\r\n';
  const big = `Subject: big\r\n\r\n${line.repeat(Math.ceil(20_001 / line.length))}`;
  await expectError(
    await post(key, big, { path: '/v1/messages/raw?to=bob@sterna.test' }),
    413,
    'message_too_big',
  );
  const huge = `Subject: big\r\n\r\n${line.repeat(2000)}`;
  await expectError(
    await post(key, huge, { path: '/v1/messages/raw?to=bob@sterna.test' }),
    413,
    'message_too_big',
  );
  await expectError(
    await post(key, { from: 'alice@sterna.test', to: 'bob@sterna.test', text: line.repeat(400) }),
    413,
    'message_too_big',
  );
  assert.ok(server.app.spool.size <= before);
});

test('429: more than messages_per_minute with one key, with Retry-After; another key is not held', async () => {
  const key = await newKey('bob@sterna.test');
  const msg = { from: 'bob@sterna.test', to: 'carol@sterna.test', text: 'x' };
  for (let i = 0; i < 3; i++) await expectQueued(await post(key, msg));
  const res = await post(key, msg);
  assert.match(res.headers.get('retry-after') ?? '', /^[1-9]\d*$/);
  await expectError(res, 429, 'rate_limited');
  await expectQueued(await post(await newKey('bob@sterna.test'), msg));
});

test('Idempotency-Key: a retry gets the first answer, also after a restart; another body gets 422', async () => {
  const s = await startTestServer({ users: USERS, toml: TOML });
  try {
    const key = await newKey('bob@sterna.test', [], s);
    const msg = { from: 'bob@sterna.test', to: 'carol@sterna.test', subject: 'once', text: 'only once' };
    const headers = { 'idempotency-key': 'order-42' };
    const id = await expectQueued(await post(key, msg, { headers, s }));
    const again = await post(key, msg, { headers, s });
    assert.equal(again.headers.get('idempotent-replayed'), 'true');
    assert.equal(await expectQueued(again), id);
    await s.stop();
    const s2 = await startTestServer({ users: [], toml: TOML, dataDir: s.dataDir });
    try {
      const res = await post(key, msg, { headers, s: s2 });
      assert.equal(await expectQueued(res), id, 'the same queue id after a restart');
      await expectError(
        await post(key, { ...msg, text: 'changed' }, { headers, s: s2 }),
        422,
        'idempotency_key_reused',
      );
      // Another API key with the same Idempotency-Key is another request.
      const other = await newKey('bob@sterna.test', [], s2);
      const id2 = await expectQueued(await post(other, msg, { headers, s: s2 }));
      assert.notEqual(id2, id);
      const msgs = await waitForMessages(s2.dataDir, 'sterna.test', 'carol', 2);
      assert.equal(msgs.filter((m) => m.includes(`id ${id}`)).length, 1, 'queued once');
      await expectError(
        await post(key, msg, { headers: { 'idempotency-key': 'x'.repeat(256) }, s: s2 }),
        400,
        'bad_idempotency_key',
      );
    } finally {
      await s2.stop({ remove: true });
    }
  } finally {
    await s.stop().catch(() => undefined);
  }
});

test('503: the spool unavailable; nothing is acknowledged', async () => {
  const s = await startTestServer({ users: USERS, toml: TOML });
  try {
    const key = await newKey('bob@sterna.test', [], s);
    await s.app.spool.close();
    await expectError(
      await post(key, { from: 'bob@sterna.test', to: 'carol@sterna.test', text: 'x' }, { s }),
      503,
      'spool_unavailable',
    );
  } finally {
    await s.stop({ remove: true }).catch(() => undefined);
  }
});

test('503 shutting_down with Retry-After once the server drains, as SMTP answers 421; nothing is queued', async () => {
  const s = await startTestServer({ users: USERS, toml: TOML });
  try {
    const key = await newKey('bob@sterna.test', [], s);
    const first = await expectQueued(
      await post(key, { from: 'bob@sterna.test', to: 'carol@sterna.test', text: 'before' }, { s }),
    );
    const drained = s.app.drain();
    const res = await post(key, { from: 'bob@sterna.test', to: 'carol@sterna.test', text: 'during' }, { s });
    assert.equal(res.headers.get('retry-after'), '30');
    assert.match(await expectError(res, 503, 'shutting_down'), /shutting down/);
    // The same answer without a key: a load balancer's probe learns it too.
    await expectError(
      await post(null, { from: 'bob@sterna.test', to: 'carol@sterna.test', text: 'x' }, { s }),
      503,
      'shutting_down',
    );
    // The spool holds the message from before the drain (until its delivery), nothing else.
    assert.deepEqual(
      s.app.spool.list().filter((m) => m.qid !== first),
      [],
      'nothing queued during the drain',
    );
    // SMTP: a new connection gets 421 4.3.2.
    const c = await TestClient.connect(s.ports.smtp);
    await c.expect(421, '4.3.2');
    c.close();
    assert.equal(await drained, true);
  } finally {
    await s.stop({ remove: true }).catch(() => undefined);
  }
});

test('off loopback the API speaks HTTPS with the server certificate', async () => {
  const s = await startTestServer({
    users: USERS,
    toml: TOML.replace('listen = ["127.0.0.1:0"]', 'listen = ["0.0.0.0:0"]'),
  });
  try {
    const key = await newKey('bob@sterna.test', [], s);
    const a = s.app.httpApi[0];
    assert.equal(a?.tls, true);
    const ca = await readFile(path.join(s.dataDir, 'tls', TEST_CERT_NAME));
    const body = JSON.stringify({ from: 'bob@sterna.test', to: 'carol@sterna.test', text: 'tls' });
    const res = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = https.request(
        {
          host: '127.0.0.1',
          port: a?.port,
          path: '/v1/messages',
          method: 'POST',
          ca,
          servername: 'mx.sterna.test',
          headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        },
        (r) => {
          const chunks: Buffer[] = [];
          r.on('data', (c: Buffer) => chunks.push(c));
          r.on('end', () => resolve({ status: r.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
        },
      );
      req.on('error', reject);
      req.end(body);
    });
    assert.equal(res.status, 202, res.body);
    const [msg] = await waitForMessages(s.dataDir, 'sterna.test', 'carol');
    assert.match(msg?.toString() ?? '', /with HTTPS id /);
  } finally {
    await s.stop({ remove: true });
  }
});
