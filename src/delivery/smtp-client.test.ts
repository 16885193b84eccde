import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { setImmediate } from 'node:timers/promises';
import { generateSelfSigned } from '../server/tls.js';
import { startSmtpSink, type SinkOptions, type SmtpSink } from '../../test/helpers/smtp-sink.js';

/**
 * The results as these tests were written against: recipient and connection-failed results
 * without their outcome stage, and a local reply marked `local: true` instead of its outcome
 * (the stages and outcomes have tests of their own below).
 */
function legacyShape(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(legacyShape);
  if (typeof v !== 'object' || v === null || Buffer.isBuffer(v)) return v;
  const o: Record<string, unknown> = { ...v };
  const out: Record<string, unknown> = {};
  const dropStage = 'address' in o || o['kind'] === 'connection-failed';
  for (const [k, x] of Object.entries(o)) {
    if (k === 'stage' && dropStage) continue;
    out[k] = k === 'local' && x !== undefined ? true : legacyShape(x);
  }
  return out;
}

function deepEqual(actual: unknown, expected: unknown, message?: string): void {
  assert.deepEqual(legacyShape(actual), expected, message);
}
import {
  SmtpClientSession,
  type ClientOptions,
  type ConnectFailure,
  type OutboundMessage,
  type TransactionResult,
} from './smtp-client.js';

const CERT = await generateSelfSigned('mx.sink.test', new Date(Date.now() - 60_000));

const TIMEOUTS = {
  connectMs: 5000,
  greetingMs: 5000,
  commandMs: 5000,
  dataInitMs: 5000,
  dataBlockMs: 5000,
  dataEndMs: 5000,
};

function clientOptions(sink: SmtpSink, extra: Partial<ClientOptions> = {}): ClientOptions {
  return {
    host: sink.host,
    port: sink.port,
    heloName: 'client.test',
    tls: 'opportunistic',
    timeouts: TIMEOUTS,
    ...extra,
  };
}

function body(...pieces: (string | Buffer)[]): () => AsyncIterable<Buffer> {
  return async function* () {
    for (const p of pieces) {
      await setImmediate();
      yield typeof p === 'string' ? Buffer.from(p, 'utf8') : p;
    }
  };
}

const TEXT = 'Subject: hi\r\n\r\nHello.\r\n';

function message(extra: Partial<OutboundMessage> = {}): OutboundMessage {
  return {
    sender: 'alice@example.org',
    mailParams: {},
    recipients: [{ address: 'bob@example.net', params: {} }],
    size: Buffer.byteLength(TEXT),
    body: body(TEXT),
    needsSmtputf8: false,
    eightBit: false,
    ...extra,
  };
}

async function withSink(opts: SinkOptions, fn: (sink: SmtpSink) => Promise<void>): Promise<void> {
  const sink = await startSmtpSink(opts);
  try {
    await fn(sink);
  } finally {
    await sink.close();
  }
}

function isSession(x: SmtpClientSession | ConnectFailure): x is SmtpClientSession {
  return x instanceof SmtpClientSession;
}

async function connect(opts: ClientOptions): Promise<SmtpClientSession> {
  const s = await SmtpClientSession.connect(opts);
  if (!isSession(s)) assert.fail(`connect failed: ${JSON.stringify(s)}`);
  return s;
}

/** Connects, sends one message, quits. */
async function deliver(opts: ClientOptions, msg: OutboundMessage): Promise<TransactionResult> {
  const s = await connect(opts);
  const r = await s.send(msg);
  await s.quit();
  return r;
}

function done(r: TransactionResult): Extract<TransactionResult, { kind: 'done' }> {
  if (r.kind !== 'done') assert.fail(`expected done, got ${JSON.stringify(r)}`);
  return r;
}

const QUEUED = { code: 250, enhanced: '2.0.0', lines: ['2.0.0 Ok: queued as SINK'] };

// --- Sessions ----------------------------------------------------------------------------------

test('delivery without PIPELINING: one command at a time, SIZE declared, DATA dot-stuffed', async () => {
  await withSink({ ehlo: ['SIZE 1000000', 'ENHANCEDSTATUSCODES'] }, async (sink) => {
    const r = done(await deliver(clientOptions(sink), message()));
    deepEqual(r, {
      kind: 'done',
      recipients: [{ address: 'bob@example.net', kind: 'delivered', reply: QUEUED }],
      messageReply: QUEUED,
    });
    const session = sink.sessions[0];
    assert.ok(session !== undefined);
    deepEqual(session.transcript, [
      'S: 220 sink.test ESMTP sink',
      'C: EHLO client.test',
      'S: 250-sink.test',
      'S: 250-SIZE 1000000',
      'S: 250 ENHANCEDSTATUSCODES',
      'C: MAIL FROM:<alice@example.org> SIZE=23',
      'S: 250 2.1.0 Ok',
      'C: RCPT TO:<bob@example.net>',
      'S: 250 2.1.5 Ok',
      'C: DATA',
      'S: 354 End data with <CR><LF>.<CR><LF>',
      'C: <26 octets of DATA>',
      'S: 250 2.0.0 Ok: queued as SINK',
      'C: QUIT',
      'S: 221 2.0.0 Bye',
    ]);
    assert.ok(session.batches.every((b) => b.length === 1));
    const [m] = sink.messages();
    assert.equal(m?.raw.toString(), `${TEXT}.\r\n`);
    deepEqual(m?.rcptTo, ['bob@example.net']);
  });
});

test('RFC 2920: with PIPELINING, MAIL, every RCPT and DATA go in one batch; the body after their replies', async () => {
  await withSink({ ehlo: ['PIPELINING'] }, async (sink) => {
    const msg = message({
      recipients: [
        { address: 'a@example.net', params: {} },
        { address: 'b@example.net', params: {} },
      ],
    });
    const r = done(await deliver(clientOptions(sink), msg));
    deepEqual(
      r.recipients.map((x) => x.kind),
      ['delivered', 'delivered'],
    );
    deepEqual(sink.sessions[0]?.batches, [
      ['EHLO client.test'],
      ['MAIL FROM:<alice@example.org>', 'RCPT TO:<a@example.net>', 'RCPT TO:<b@example.net>', 'DATA'],
      ['QUIT'],
    ]);
  });
});

const MIXED: SinkOptions = {
  ehlo: ['PIPELINING'],
  respond: (c) => {
    if (c.verb !== 'RCPT') return undefined;
    if (c.line.includes('temp@')) return '450 4.2.1 Mailbox busy';
    if (c.line.includes('bad@')) return '550 5.1.1 No such user';
    return undefined;
  },
};

for (const pipelining of [true, false]) {
  test(`per-recipient outcomes 250/450/550${pipelining ? ' (pipelined)' : ''}; DATA reply applies to accepted ones`, async () => {
    await withSink({ ...MIXED, ehlo: pipelining ? ['PIPELINING'] : [] }, async (sink) => {
      const msg = message({
        recipients: ['ok@example.net', 'temp@example.net', 'bad@example.net', 'ok2@example.net'].map(
          (address) => ({ address, params: {} }),
        ),
      });
      const r = done(await deliver(clientOptions(sink), msg));
      deepEqual(r.recipients, [
        { address: 'ok@example.net', kind: 'delivered', reply: QUEUED },
        {
          address: 'temp@example.net',
          kind: 'deferred',
          reply: { code: 450, enhanced: '4.2.1', lines: ['4.2.1 Mailbox busy'] },
        },
        {
          address: 'bad@example.net',
          kind: 'failed',
          reply: { code: 550, enhanced: '5.1.1', lines: ['5.1.1 No such user'] },
        },
        { address: 'ok2@example.net', kind: 'delivered', reply: QUEUED },
      ]);
      deepEqual(sink.messages()[0]?.rcptTo, ['ok@example.net', 'ok2@example.net']);
    });
  });
}

test('RFC 2920: no recipient accepted → the pipelined DATA is refused, then RSET; messageReply null', async () => {
  await withSink(MIXED, async (sink) => {
    const msg = message({ recipients: [{ address: 'bad@example.net', params: {} }] });
    const r = done(await deliver(clientOptions(sink), msg));
    deepEqual(r, {
      kind: 'done',
      recipients: [
        {
          address: 'bad@example.net',
          kind: 'failed',
          reply: { code: 550, enhanced: '5.1.1', lines: ['5.1.1 No such user'] },
        },
      ],
      messageReply: null,
    });
    deepEqual(sink.commands(), [
      'EHLO client.test',
      'MAIL FROM:<alice@example.org>',
      'RCPT TO:<bad@example.net>',
      'DATA',
      'RSET',
      'QUIT',
    ]);
  });
});

test('RFC 2920 3.1: a server that answers a pipelined DATA with 354 after every RCPT was refused gets an empty "." at once', async () => {
  await withSink(
    {
      ...MIXED,
      respond: (c) =>
        c.verb === 'DATA' ? '354 go ahead' : c.verb === 'RCPT' ? '550 5.1.1 No such user' : undefined,
    },
    async (sink) => {
      const s = await connect(clientOptions(sink));
      const r = done(await s.send(message({ recipients: [{ address: 'bad@example.net', params: {} }] })));
      assert.equal(r.recipients[0]?.kind, 'failed');
      assert.equal(r.messageReply, null);
      const next = done(await s.send(message()));
      await s.quit();
      assert.equal(next.recipients[0]?.kind, 'failed', 'the session stayed in step');
      deepEqual(sink.commands().slice(0, 7), [
        'EHLO client.test',
        'MAIL FROM:<alice@example.org>',
        'RCPT TO:<bad@example.net>',
        'DATA',
        '<3 octets of DATA>',
        'RSET',
        'MAIL FROM:<alice@example.org>',
      ]);
    },
  );
});

test('DATA refused → per-recipient outcome from that reply; next transaction starts with RSET', async () => {
  let refuse = true;
  await withSink(
    {
      respond: (c) => {
        if (c.verb === 'DATA' && refuse) {
          refuse = false;
          return '554 5.7.1 Not now';
        }
        return undefined;
      },
    },
    async (sink) => {
      const s = await connect(clientOptions(sink));
      const first = done(await s.send(message()));
      const refusal = { code: 554, enhanced: '5.7.1', lines: ['5.7.1 Not now'] };
      deepEqual(first.recipients, [{ address: 'bob@example.net', kind: 'failed', reply: refusal }]);
      deepEqual(first.messageReply, refusal);
      const second = done(await s.send(message()));
      assert.equal(second.recipients[0]?.kind, 'delivered');
      await s.quit();
      deepEqual(sink.commands(), [
        'EHLO client.test',
        'MAIL FROM:<alice@example.org>',
        'RCPT TO:<bob@example.net>',
        'DATA',
        'RSET',
        'MAIL FROM:<alice@example.org>',
        'RCPT TO:<bob@example.net>',
        'DATA',
        '<26 octets of DATA>',
        'QUIT',
      ]);
    },
  );
});

test('RFC 2033 4.2: LMTP mode sends LHLO and takes one reply per accepted recipient after the final "."', async () => {
  await withSink(
    {
      ehlo: ['PIPELINING', 'CHUNKING'],
      respond: (c) => {
        if (c.verb === 'LHLO') return '250-sink.test\n250-PIPELINING\n250 CHUNKING';
        if (c.verb === 'RCPT' && c.line.includes('nobody'))
          return "550 5.1.1 <nobody@example.net> User doesn't exist";
        // One reply per accepted recipient (ann, then cat), in RCPT order.
        if (c.verb === 'DATA-END')
          return '250 2.0.0 <ann@example.net> Saved\n452 4.2.2 <cat@example.net> Quota exceeded';
        return undefined;
      },
    },
    async (sink) => {
      const s = await connect(clientOptions(sink, { lmtp: true, tls: 'none' }));
      const rcpts = ['ann', 'nobody', 'cat'].map((n) => ({ address: `${n}@example.net`, params: {} }));
      const first = done(await s.send(message({ recipients: rcpts })));
      deepEqual(
        first.recipients.map((r) => [r.address, r.kind, r.reply.code, r.stage]),
        [
          ['ann@example.net', 'delivered', 250, 'end-of-data'],
          ['nobody@example.net', 'failed', 550, 'rcpt'],
          ['cat@example.net', 'deferred', 452, 'end-of-data'],
        ],
      );
      // Every reply was read: the session is in step, and the next message needs no RSET.
      const second = done(await s.send(message({ recipients: [rcpts[0] ?? { address: '', params: {} }] })));
      assert.equal(second.recipients[0]?.kind, 'delivered');
      await s.quit();
      const commands = sink.commands();
      assert.equal(commands[0], 'LHLO client.test');
      assert.ok(!commands.some((c) => c.startsWith('BDAT') || c === 'RSET'), commands.join('\n'));
      // PIPELINING: MAIL, the RCPTs and DATA in one batch.
      assert.deepEqual(sink.sessions[0]?.batches[1], [
        'MAIL FROM:<alice@example.org>',
        'RCPT TO:<ann@example.net>',
        'RCPT TO:<nobody@example.net>',
        'RCPT TO:<cat@example.net>',
        'DATA',
      ]);
    },
  );
});

test('RFC 2033: an LMTP server that closes before every recipient has its reply leaves the rest deferred, maybe delivered', async () => {
  await withSink(
    {
      respond: (c) => {
        if (c.verb === 'LHLO') return '250-sink.test\n250 PIPELINING';
        if (c.verb === 'DATA-END') return { reply: '250 2.0.0 <ann@example.net> Saved', close: true };
        return undefined;
      },
    },
    async (sink) => {
      const s = await connect(clientOptions(sink, { lmtp: true, tls: 'none' }));
      const rcpts = ['ann', 'cat'].map((n) => ({ address: `${n}@example.net`, params: {} }));
      const r = done(await s.send(message({ recipients: rcpts })));
      assert.equal(r.recipients[0]?.kind, 'delivered');
      assert.equal(r.recipients[1]?.kind, 'deferred');
      assert.equal(r.recipients[1]?.maybeDelivered, true);
      assert.equal(r.recipients[1]?.reply.local?.reason, 'lost-after-end-of-data');
      await s.quit();
    },
  );
});

test('connection reuse: two messages in one session, no RSET after a complete transaction', async () => {
  await withSink({ ehlo: ['PIPELINING'] }, async (sink) => {
    const s = await connect(clientOptions(sink));
    const one = done(await s.send(message({ sender: 'one@example.org' })));
    const two = done(await s.send(message({ sender: 'two@example.org' })));
    await s.quit();
    assert.equal(one.recipients[0]?.kind, 'delivered');
    assert.equal(two.recipients[0]?.kind, 'delivered');
    assert.equal(sink.sessions.length, 1);
    deepEqual(
      sink.messages().map((m) => m.mailFrom),
      ['one@example.org', 'two@example.org'],
    );
    assert.ok(!sink.commands().includes('RSET'));
  });
});

test('RFC 5321 4.1.1.5 / RFC 2920 3.1: reset on a reused connection leads the pipelined MAIL, RCPT and DATA batch', async () => {
  await withSink({ ehlo: ['PIPELINING'] }, async (sink) => {
    const s = await connect(clientOptions(sink));
    done(await s.send(message({ sender: 'one@example.org' })));
    const two = done(await s.send(message({ sender: 'two@example.org' }), { reset: true }));
    await s.quit();
    deepEqual(two.recipients, [{ address: 'bob@example.net', kind: 'delivered', reply: QUEUED }]);
    deepEqual(sink.sessions[0]?.batches, [
      ['EHLO client.test'],
      ['MAIL FROM:<one@example.org>', 'RCPT TO:<bob@example.net>', 'DATA'],
      ['RSET', 'MAIL FROM:<two@example.org>', 'RCPT TO:<bob@example.net>', 'DATA'],
      ['QUIT'],
    ]);
    deepEqual(
      sink.messages().map((m) => m.mailFrom),
      ['one@example.org', 'two@example.org'],
    );
  });
});

test('RFC 5321 4.1.1.5: reset without PIPELINING sends RSET alone and waits for its reply', async () => {
  await withSink({ ehlo: [] }, async (sink) => {
    const s = await connect(clientOptions(sink));
    done(await s.send(message()));
    const two = done(await s.send(message(), { reset: true }));
    await s.quit();
    assert.equal(two.recipients[0]?.kind, 'delivered');
    deepEqual(sink.sessions[0]?.batches.slice(4), [
      ['RSET'],
      ['MAIL FROM:<alice@example.org>'],
      ['RCPT TO:<bob@example.net>'],
      ['DATA'],
      ['QUIT'],
    ]);
  });
});

for (const pipelining of [true, false]) {
  test(`a refused RSET before a reused transaction is connection-failed, the session closed, no DATA${pipelining ? ' (pipelined)' : ''}`, async () => {
    let transactions = 0;
    await withSink(
      {
        ehlo: pipelining ? ['PIPELINING'] : [],
        respond: (c) => {
          if (c.verb === 'DATA') transactions++;
          return c.verb === 'RSET' ? '500 5.5.1 Command not recognized' : undefined;
        },
      },
      async (sink) => {
        const s = await connect(clientOptions(sink));
        done(await s.send(message()));
        const r = await s.send(message(), { reset: true });
        deepEqual(r, {
          kind: 'connection-failed',
          reason: `127.0.0.1[127.0.0.1]:${sink.port} refused RSET: 500 5.5.1 Command not recognized`,
          permanent: false,
        });
        assert.equal(
          s.closedReason,
          `127.0.0.1[127.0.0.1]:${sink.port} refused RSET: 500 5.5.1 Command not recognized`,
        );
        await s.quit();
        // Pipelined, DATA went out behind the refused RSET, but the session was closed before
        // any body: the server has nothing to deliver.
        assert.equal(transactions, pipelining ? 2 : 1, 'DATA for the second message only in the batch');
        assert.equal(sink.messages().length, 1);
        const cmds = sink.commands();
        assert.ok(!cmds.includes('QUIT'), 'no QUIT on a session out of step');
        assert.equal(cmds.filter((c) => c === 'RSET').length, 1);
      },
    );
  });
}

for (const pipelining of [true, false]) {
  test(`a reused connection the server drops at RSET is connection-failed, nothing taken for the message${pipelining ? ' (pipelined)' : ''}`, async () => {
    await withSink(
      {
        ehlo: pipelining ? ['PIPELINING'] : [],
        respond: (c) => (c.verb === 'RSET' ? { close: true } : undefined),
      },
      async (sink) => {
        const s = await connect(clientOptions(sink));
        done(await s.send(message()));
        const r = await s.send(message(), { reset: true });
        assert.equal(r.kind, 'connection-failed');
        assert.ok(
          r.kind === 'connection-failed' &&
            r.reason.startsWith(`connection with 127.0.0.1[127.0.0.1]:${sink.port} lost after RSET: `),
          JSON.stringify(r),
        );
        assert.notEqual(s.closedReason, null);
        await s.quit();
        assert.equal(sink.messages().length, 1);
      },
    );
  });
}

test('a connection the server closed while idle: send is connection-failed at once, nothing written', async () => {
  await withSink({ ehlo: ['PIPELINING'] }, async (sink) => {
    const s = await connect(clientOptions(sink));
    done(await s.send(message()));
    for (const socket of sink.sockets()) socket.destroy();
    const deadline = Date.now() + 5000;
    while (s.closedReason === null && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    const r = await s.send(message(), { reset: true });
    deepEqual(r, {
      kind: 'connection-failed',
      reason: `connection with 127.0.0.1[127.0.0.1]:${sink.port} is closed: the server closed the connection`,
      permanent: false,
    });
    deepEqual(sink.commands(), [
      'EHLO client.test',
      'MAIL FROM:<alice@example.org>',
      'RCPT TO:<bob@example.net>',
      'DATA',
      '<26 octets of DATA>',
    ]);
  });
});

test('a reply sent while the session is idle (421 before an idle timeout) is connection-failed, nothing sent', async () => {
  await withSink({ ehlo: ['PIPELINING'] }, async (sink) => {
    const s = await connect(clientOptions(sink));
    done(await s.send(message()));
    const before = sink.commands().length;
    for (const socket of sink.sockets()) socket.write('421 4.4.2 sink.test idle timeout\r\n');
    // Loopback: the reply is in long before this (the client cannot be asked without a command).
    await new Promise((r) => setTimeout(r, 200));
    const r = await s.send(message(), { reset: true });
    deepEqual(r, {
      kind: 'connection-failed',
      reason: `127.0.0.1[127.0.0.1]:${sink.port} sent a reply between transactions; connection closed`,
      permanent: false,
    });
    assert.notEqual(s.closedReason, null);
    await s.quit();
    assert.equal(sink.commands().length, before, 'not even RSET was sent');
  });
});

test('MAIL refused: rejected at stage mail, permanent for 5xx, temporary for 4xx', async () => {
  await withSink(
    {
      ehlo: ['PIPELINING'],
      respond: (c) => {
        if (c.verb === 'MAIL')
          return c.line.includes('perm@') ? '553 5.7.1 Sender refused' : '451 4.3.0 Try later';
        if (c.verb === 'RCPT') return '503 5.5.1 No MAIL';
        return undefined;
      },
    },
    async (sink) => {
      const s = await connect(clientOptions(sink));
      deepEqual(await s.send(message({ sender: 'perm@example.org' })), {
        kind: 'rejected',
        reply: { code: 553, enhanced: '5.7.1', lines: ['5.7.1 Sender refused'] },
        permanent: true,
        stage: 'mail',
      });
      deepEqual(await s.send(message()), {
        kind: 'rejected',
        reply: { code: 451, enhanced: '4.3.0', lines: ['4.3.0 Try later'] },
        permanent: false,
        stage: 'mail',
      });
      await s.quit();
    },
  );
});

test('RFC 5321 4.1.4: a 5xx to EHLO falls back to HELO, without extensions', async () => {
  await withSink({ ehlo: null }, async (sink) => {
    const s = await connect(clientOptions(sink));
    assert.equal(s.extensions.size, 0);
    const r = done(await s.send(message()));
    await s.quit();
    assert.equal(r.recipients[0]?.kind, 'delivered');
    deepEqual(sink.commands().slice(0, 3), [
      'EHLO client.test',
      'HELO client.test',
      'MAIL FROM:<alice@example.org>',
    ]);
  });
});

test('EHLO and HELO both refused with 5xx: rejected at stage ehlo, permanent', async () => {
  await withSink(
    { ehlo: null, respond: (c) => (c.verb === 'HELO' ? '550 5.7.1 Go away' : undefined) },
    async (sink) => {
      deepEqual(await SmtpClientSession.connect(clientOptions(sink)), {
        kind: 'rejected',
        reply: { code: 550, enhanced: '5.7.1', lines: ['5.7.1 Go away'] },
        permanent: true,
        stage: 'ehlo',
      });
    },
  );
});

test('greeting: 421 → connection-failed; 554 → rejected at greeting, permanent', async () => {
  await withSink({ respond: (c) => (c.verb === 'GREETING' ? '421 4.3.2 Busy' : undefined) }, async (sink) => {
    const r = await SmtpClientSession.connect(clientOptions(sink));
    deepEqual(r, {
      kind: 'connection-failed',
      reason: `sink.test refused the session at greeting: 421 4.3.2 Busy`.replace(
        'sink.test',
        `${sink.host}[${sink.host}]:${sink.port}`,
      ),
      permanent: false,
    });
  });
  await withSink(
    { respond: (c) => (c.verb === 'GREETING' ? '554 No SMTP service here' : undefined) },
    async (sink) => {
      deepEqual(await SmtpClientSession.connect(clientOptions(sink)), {
        kind: 'rejected',
        reply: { code: 554, lines: ['No SMTP service here'] },
        permanent: true,
        stage: 'greeting',
      });
    },
  );
});

test('connect refused → connection-failed, not permanent', async () => {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  assert.ok(address !== null && typeof address !== 'string');
  await new Promise<void>((resolve) => server.close(() => resolve()));
  const r = await SmtpClientSession.connect({
    host: '127.0.0.1',
    port: address.port,
    heloName: 'client.test',
    tls: 'opportunistic',
    timeouts: TIMEOUTS,
  });
  deepEqual(r, {
    kind: 'connection-failed',
    reason: `cannot connect to 127.0.0.1[127.0.0.1]:${address.port}: connect ECONNREFUSED 127.0.0.1:${address.port}`,
    permanent: false,
  });
});

test('localAddress: the connection comes from the bind address', async () => {
  await withSink({ host: '127.0.0.2' }, async (sink) => {
    const s = await connect(clientOptions(sink, { localAddress: '127.0.0.3' }));
    s.close();
    assert.equal(sink.sessions[0]?.remoteAddress, '127.0.0.3');
  });
});

// --- TLS ---------------------------------------------------------------------------------------

test('RFC 3207: opportunistic STARTTLS when offered, EHLO again, then the transaction over TLS', async () => {
  await withSink({ ehlo: ['PIPELINING'], tls: CERT }, async (sink) => {
    const s = await connect(clientOptions(sink));
    assert.ok(s.tls !== null);
    assert.equal(s.tls.verified, false);
    assert.match(s.tls.version, /^TLSv1\.[23]$/);
    assert.ok(!s.extensions.has('STARTTLS'));
    const r = done(await s.send(message()));
    await s.quit();
    assert.equal(r.recipients[0]?.kind, 'delivered');
    deepEqual(sink.commands().slice(0, 4), [
      'EHLO client.test',
      'STARTTLS',
      'EHLO client.test',
      'MAIL FROM:<alice@example.org>',
    ]);
    assert.equal(sink.sessions[0]?.tls, true);
    assert.equal(sink.sessions[0]?.injectedBytes, 0);
  });
});

test("tls 'none' never sends STARTTLS", async () => {
  await withSink({ tls: CERT }, async (sink) => {
    const s = await connect(clientOptions(sink, { tls: 'none' }));
    assert.equal(s.tls, null);
    s.close();
    assert.ok(!sink.commands().includes('STARTTLS'));
  });
});

test("tls 'required' and the peer offers no STARTTLS → rejected at stage tls, temporary, no MAIL", async () => {
  await withSink({ ehlo: ['PIPELINING'] }, async (sink) => {
    const r = await SmtpClientSession.connect(clientOptions(sink, { tls: 'required' }));
    deepEqual(r, {
      kind: 'rejected',
      reply: {
        code: 454,
        enhanced: '4.7.4',
        lines: [
          `4.7.4 TLS is required for ${sink.host}[${sink.host}]:${sink.port}, but it does not offer STARTTLS; not sent in clear`,
        ],
        local: true,
      },
      permanent: false,
      stage: 'tls',
    });
    deepEqual(sink.commands(), ['EHLO client.test']);
  });
});

test("tls 'required-verify': the certificate verifies against servername with the given CA", async () => {
  await withSink({ tls: CERT }, async (sink) => {
    const s = await connect(
      clientOptions(sink, {
        tls: 'required-verify',
        servername: 'mx.sink.test',
        tlsOptions: { ca: CERT.cert },
      }),
    );
    assert.equal(s.tls?.verified, true);
    s.close();
  });
});

test("tls 'required-verify': a name mismatch is a temporary TLS failure, nothing sent in clear", async () => {
  await withSink({ tls: CERT }, async (sink) => {
    const r = await SmtpClientSession.connect(
      clientOptions(sink, {
        tls: 'required-verify',
        servername: 'other.test',
        tlsOptions: { ca: CERT.cert },
      }),
    );
    assert.equal(r instanceof SmtpClientSession, false);
    if (r instanceof SmtpClientSession) return;
    assert.equal(r.kind, 'rejected');
    if (r.kind !== 'rejected') return;
    assert.equal(r.stage, 'tls');
    assert.equal(r.permanent, false);
    assert.equal(r.reply.enhanced, '4.7.5');
    assert.equal(r.reply.local?.reason, 'tls-certificate-unverified');
    assert.match(r.reply.lines[0] ?? '', /Hostname\/IP does not match certificate's altnames/);
    deepEqual(sink.commands(), ['EHLO client.test', 'STARTTLS']);
  });
});

test("tls 'required-verify': an untrusted certificate is refused", async () => {
  await withSink({ tls: CERT }, async (sink) => {
    const r = await SmtpClientSession.connect(
      clientOptions(sink, { tls: 'required-verify', servername: 'mx.sink.test' }),
    );
    assert.ok(!(r instanceof SmtpClientSession) && r.kind === 'rejected' && r.stage === 'tls');
  });
});

test('RFC 3207 5: data sent after the 220 to STARTTLS is refused (response injection)', async () => {
  await withSink(
    { tls: CERT, respond: (c) => (c.verb === 'STARTTLS' ? '220 Go ahead\n250 injected' : undefined) },
    async (sink) => {
      const r = await SmtpClientSession.connect(clientOptions(sink, { tls: 'required' }));
      assert.ok(!(r instanceof SmtpClientSession) && r.kind === 'rejected');
      assert.equal(r.stage, 'tls');
      assert.match(r.reply.lines[0] ?? '', /sent data after its 220 reply to STARTTLS/);
    },
  );
});

test('opportunistic TLS: a failed handshake is retried once in clear', async () => {
  // The peer offers STARTTLS, says 220, then drops the connection: the handshake fails.
  await withSink(
    {
      ehlo: ['STARTTLS'],
      respond: (c) =>
        c.verb === 'STARTTLS' && c.session.index === 0 ? { reply: '220 Go ahead', close: true } : undefined,
    },
    async (sink) => {
      const s = await connect(clientOptions(sink));
      assert.equal(s.tls, null);
      const r = done(await s.send(message()));
      await s.quit();
      assert.equal(r.recipients[0]?.kind, 'delivered');
      assert.equal(sink.sessions.length, 2);
      assert.ok(!sink.sessions[1]?.transcript.includes('C: STARTTLS'));
    },
  );
});

test('opportunistic TLS: STARTTLS refused → the session continues in clear', async () => {
  await withSink(
    {
      ehlo: ['STARTTLS'],
      respond: (c) => (c.verb === 'STARTTLS' ? '454 4.7.0 TLS not available' : undefined),
    },
    async (sink) => {
      const r = done(await deliver(clientOptions(sink), message()));
      assert.equal(r.recipients[0]?.kind, 'delivered');
      assert.equal(sink.sessions.length, 1);
    },
  );
});

// --- AUTH --------------------------------------------------------------------------------------

const USER = { username: 'smtp-user', password: 's3cret pass' };

test('RFC 4954/4616: AUTH PLAIN to a smarthost over implicit TLS', async () => {
  await withSink({ tls: CERT, implicitTls: true, auth: USER }, async (sink) => {
    const s = await connect(clientOptions(sink, { implicitTls: true, auth: USER }));
    assert.ok(s.tls !== null);
    const r = done(await s.send(message()));
    await s.quit();
    assert.equal(r.recipients[0]?.kind, 'delivered');
    assert.equal(sink.sessions[0]?.authUser, 'smtp-user');
    const plain = Buffer.from('\0smtp-user\0s3cret pass').toString('base64');
    deepEqual(sink.commands().slice(0, 2), ['EHLO client.test', `AUTH PLAIN ${plain}`]);
  });
});

test('AUTH LOGIN when PLAIN is not offered, after STARTTLS', async () => {
  await withSink({ tls: CERT, auth: USER, authMechanisms: ['LOGIN'] }, async (sink) => {
    const s = await connect(clientOptions(sink, { auth: USER, tls: 'required' }));
    s.close();
    assert.equal(sink.sessions[0]?.authUser, 'smtp-user');
    deepEqual(sink.commands().slice(3, 6), [
      'AUTH LOGIN',
      Buffer.from('smtp-user').toString('base64'),
      Buffer.from('s3cret pass').toString('base64'),
    ]);
  });
});

test('AUTH failure is a temporary rejection at stage auth', async () => {
  await withSink({ tls: CERT, implicitTls: true, auth: USER }, async (sink) => {
    const r = await SmtpClientSession.connect(
      clientOptions(sink, { implicitTls: true, auth: { username: 'smtp-user', password: 'wrong' } }),
    );
    deepEqual(r, {
      kind: 'rejected',
      reply: { code: 535, enhanced: '5.7.8', lines: ['5.7.8 Authentication credentials invalid'] },
      permanent: false,
      stage: 'auth',
    });
  });
});

test('AUTH is never sent in clear', async () => {
  await withSink({ auth: USER }, async (sink) => {
    const r = await SmtpClientSession.connect(clientOptions(sink, { tls: 'none', auth: USER }));
    assert.ok(!(r instanceof SmtpClientSession) && r.kind === 'rejected');
    assert.equal(r.stage, 'auth');
    assert.equal(r.permanent, false);
    assert.equal(r.reply.enhanced, '4.7.11');
    deepEqual(sink.commands(), ['EHLO client.test']);
  });
});

// --- Extensions --------------------------------------------------------------------------------

test('RFC 1870: declared size above the server SIZE → permanent 552 5.3.4, nothing sent', async () => {
  await withSink({ ehlo: ['SIZE 100'] }, async (sink) => {
    const s = await connect(clientOptions(sink));
    const r = await s.send(message({ size: 101 }));
    deepEqual(r, {
      kind: 'rejected',
      reply: {
        code: 552,
        enhanced: '5.3.4',
        lines: [
          `5.3.4 Message size 101 exceeds the limit of 100 octets announced by ${sink.host}[${sink.host}]:${sink.port}`,
        ],
        local: true,
      },
      permanent: true,
      stage: 'mail',
    });
    const ok = done(await s.send(message({ size: 100 })));
    await s.quit();
    assert.equal(ok.recipients[0]?.kind, 'delivered');
    deepEqual(sink.commands()[1], 'MAIL FROM:<alice@example.org> SIZE=100');
  });
});

test('RFC 1870: SIZE 0 means no limit', async () => {
  await withSink({ ehlo: ['SIZE 0'] }, async (sink) => {
    const r = done(await deliver(clientOptions(sink), message({ size: 10_000_000 })));
    assert.equal(r.recipients[0]?.kind, 'delivered');
  });
});

test('RFC 6531 3.5: SMTPUTF8 needed but not offered → permanent 5.6.7, nothing sent', async () => {
  await withSink({ ehlo: ['8BITMIME'] }, async (sink) => {
    const s = await connect(clientOptions(sink));
    const r = await s.send(message({ sender: 'ålice@example.org', needsSmtputf8: true }));
    s.close();
    assert.ok(r.kind === 'rejected');
    assert.equal(r.permanent, true);
    assert.equal(r.stage, 'mail');
    assert.equal(r.reply.code, 553);
    assert.equal(r.reply.enhanced, '5.6.7');
    deepEqual(sink.commands(), ['EHLO client.test']);
  });
});

test('RFC 6531: SMTPUTF8 offered → the parameter is sent with the UTF-8 address', async () => {
  await withSink({ ehlo: ['SMTPUTF8', '8BITMIME'] }, async (sink) => {
    const r = done(
      await deliver(
        clientOptions(sink),
        message({ sender: 'ålice@exämple.org', needsSmtputf8: true, eightBit: true }),
      ),
    );
    assert.equal(r.recipients[0]?.kind, 'delivered');
    assert.equal(sink.commands()[1], 'MAIL FROM:<ålice@exämple.org> BODY=8BITMIME SMTPUTF8');
  });
});

test('RFC 6152: BODY=8BITMIME only when offered; an 8-bit body is sent as is either way', async () => {
  const eight = Buffer.from('Subject: caf\xe9\r\n\r\n\xff\xfe\r\n', 'latin1');
  for (const offered of [true, false]) {
    await withSink({ ehlo: offered ? ['8BITMIME'] : [] }, async (sink) => {
      const msg = message({ eightBit: true, body: body(eight), size: eight.length });
      done(await deliver(clientOptions(sink), msg));
      assert.equal(sink.commands()[1], `MAIL FROM:<alice@example.org>${offered ? ' BODY=8BITMIME' : ''}`);
      deepEqual(sink.messages()[0]?.body, eight);
    });
  }
});

test('RFC 3461: DSN parameters (xtext) only when the server offers DSN', async () => {
  const msg = message({
    mailParams: { ret: 'HDRS', envid: 'id+1=2 x' },
    recipients: [
      {
        address: 'bob@example.net',
        params: { notify: ['SUCCESS', 'FAILURE'], orcpt: { type: 'rfc822', address: 'bob+x@example.net' } },
      },
    ],
  });
  await withSink({ ehlo: ['DSN'] }, async (sink) => {
    done(await deliver(clientOptions(sink), msg));
    deepEqual(sink.commands().slice(1, 3), [
      'MAIL FROM:<alice@example.org> RET=HDRS ENVID=id+2B1+3D2+20x',
      'RCPT TO:<bob@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob+2Bx@example.net',
    ]);
  });
  await withSink({ ehlo: [] }, async (sink) => {
    done(await deliver(clientOptions(sink), msg));
    deepEqual(sink.commands().slice(1, 3), ['MAIL FROM:<alice@example.org>', 'RCPT TO:<bob@example.net>']);
  });
});

test('the null sender is sent as MAIL FROM:<>', async () => {
  await withSink({}, async (sink) => {
    done(await deliver(clientOptions(sink), message({ sender: '' })));
    assert.equal(sink.commands()[1], 'MAIL FROM:<>');
  });
});

test('an address holding CR or LF is refused before anything is sent', async () => {
  await withSink({}, async (sink) => {
    const s = await connect(clientOptions(sink));
    const r = await s.send(
      message({ recipients: [{ address: 'bob@example.net>\r\nRCPT TO:<evil@example.net', params: {} }] }),
    );
    s.close();
    assert.ok(r.kind === 'rejected' && r.permanent && r.reply.enhanced === '5.1.3');
    deepEqual(sink.commands(), ['EHLO client.test']);
  });
});

test('RFC 5321 4.5.2: DATA dot-stuffing is byte-exact, a missing final CRLF is added', async () => {
  await withSink({}, async (sink) => {
    const text = '.first\r\nmiddle\r\n..two\r\n.\r\nlast line';
    // One byte per chunk: every line start is split from its line ending.
    const pieces = Array.from({ length: text.length }, (_, i) => text.slice(i, i + 1));
    done(await deliver(clientOptions(sink), message({ body: body(...pieces), size: text.length })));
    const [m] = sink.messages();
    assert.equal(m?.via, 'DATA');
    assert.equal(m?.raw.toString('latin1'), '..first\r\nmiddle\r\n...two\r\n..\r\nlast line\r\n.\r\n');
    assert.equal(m?.body.toString('latin1'), `${text}\r\n`);
  });
});

test('RFC 5321 4.5.2: an empty body is sent as "." alone', async () => {
  await withSink({}, async (sink) => {
    done(await deliver(clientOptions(sink), message({ body: body(), size: 0 })));
    assert.equal(sink.messages()[0]?.raw.toString(), '.\r\n');
  });
});

for (const pipelining of [false, true]) {
  test(`RFC 3030: CHUNKING sends BDAT chunks byte-exact, no dot-stuffing${pipelining ? ' (pipelined)' : ''}`, async () => {
    await withSink({ ehlo: pipelining ? ['CHUNKING', 'PIPELINING'] : ['CHUNKING'] }, async (sink) => {
      const small = '.dot\r\n.\r\nno final CRLF';
      done(await deliver(clientOptions(sink), message({ body: body('.dot\r\n', '.\r\nno final', ' CRLF') })));
      // 80 KiB in 16 KiB pieces: one 64 KiB chunk, then LAST with the rest.
      const piece = Buffer.alloc(16 * 1024, 0x2e);
      const big = Buffer.concat([piece, piece, piece, piece, piece]);
      done(
        await deliver(
          clientOptions(sink),
          message({ body: body(piece, piece, piece, piece, piece), size: big.length }),
        ),
      );
      const [m1, m2] = sink.messages();
      assert.equal(m1?.via, 'BDAT');
      assert.equal(m1?.raw.toString(), small);
      deepEqual(m2?.raw, big);
      deepEqual(
        sink.commands().filter((c) => c.startsWith('BDAT') || c === 'DATA'),
        [`BDAT ${small.length} LAST`, 'BDAT 65536', 'BDAT 16384 LAST'],
      );
    });
  });
}

test('RFC 3030: an empty body is "BDAT 0 LAST"', async () => {
  await withSink({ ehlo: ['CHUNKING'] }, async (sink) => {
    done(await deliver(clientOptions(sink), message({ body: body(), size: 0 })));
    assert.ok(sink.commands().includes('BDAT 0 LAST'));
    assert.equal(sink.messages()[0]?.raw.length, 0);
  });
});

for (const pipelining of [false, true]) {
  test(`RFC 3030: a refused BDAT chunk fails the message; the next transaction starts with RSET${pipelining ? ' (pipelined)' : ''}`, async () => {
    let refused = false;
    await withSink(
      {
        ehlo: pipelining ? ['CHUNKING', 'PIPELINING'] : ['CHUNKING'],
        respond: (c) => {
          if (c.verb === 'BDAT' && !refused) {
            refused = true;
            return '552 5.3.4 Too much';
          }
          return undefined;
        },
      },
      async (sink) => {
        const s = await connect(clientOptions(sink));
        const piece = Buffer.alloc(64 * 1024, 0x61);
        const r = done(await s.send(message({ body: body(piece, piece, piece), size: 3 * piece.length })));
        const refusal = { code: 552, enhanced: '5.3.4', lines: ['5.3.4 Too much'] };
        deepEqual(r, {
          kind: 'done',
          recipients: [{ address: 'bob@example.net', kind: 'failed', reply: refusal }],
          messageReply: refusal,
        });
        const again = done(await s.send(message()));
        await s.quit();
        assert.equal(again.recipients[0]?.kind, 'delivered');
        const cmds = sink.commands();
        const rset = cmds.indexOf('RSET');
        // Without PIPELINING the client waits for each chunk's reply: nothing follows the refused one.
        if (!pipelining) deepEqual(cmds.slice(3, rset), ['BDAT 65536']);
        deepEqual(cmds.slice(rset), [
          'RSET',
          'MAIL FROM:<alice@example.org>',
          'RCPT TO:<bob@example.net>',
          `BDAT ${TEXT.length} LAST`,
          'QUIT',
        ]);
      },
    );
  });
}

// --- Failures mid-transaction ------------------------------------------------------------------

test('421 at RCPT: the session ends; every recipient without a final answer is deferred', async () => {
  await withSink(
    {
      ehlo: ['PIPELINING'],
      respond: (c) => {
        if (c.verb === 'RCPT' && c.line.includes('bad@')) return '550 5.1.1 No such user';
        if (c.verb === 'RCPT' && c.line.includes('c@')) return '421 4.3.2 Shutting down';
        return undefined;
      },
    },
    async (sink) => {
      const s = await connect(clientOptions(sink));
      const msg = message({
        recipients: ['a@example.net', 'bad@example.net', 'c@example.net', 'd@example.net'].map((address) => ({
          address,
          params: {},
        })),
      });
      const r = done(await s.send(msg));
      const shutdown = { code: 421, enhanced: '4.3.2', lines: ['4.3.2 Shutting down'] };
      deepEqual(r, {
        kind: 'done',
        recipients: [
          { address: 'a@example.net', kind: 'deferred', reply: shutdown },
          {
            address: 'bad@example.net',
            kind: 'failed',
            reply: { code: 550, enhanced: '5.1.1', lines: ['5.1.1 No such user'] },
          },
          { address: 'c@example.net', kind: 'deferred', reply: shutdown },
          { address: 'd@example.net', kind: 'deferred', reply: shutdown },
        ],
        messageReply: null,
      });
      assert.equal((await s.send(message())).kind, 'connection-failed');
      assert.ok(!sink.commands().includes('DATA'));
    },
  );
});

test('421 at MAIL: rejected at stage mail, temporary, session closed', async () => {
  await withSink({ respond: (c) => (c.verb === 'MAIL' ? '421 4.3.2 Bye' : undefined) }, async (sink) => {
    const s = await connect(clientOptions(sink));
    deepEqual(await s.send(message()), {
      kind: 'rejected',
      reply: { code: 421, enhanced: '4.3.2', lines: ['4.3.2 Bye'] },
      permanent: false,
      stage: 'mail',
    });
    assert.notEqual(s.closedReason, null);
  });
});

test('421 to the end of data: every accepted recipient is deferred', async () => {
  await withSink(
    { respond: (c) => (c.verb === 'DATA-END' ? '421 4.4.5 Overloaded' : undefined) },
    async (sink) => {
      const s = await connect(clientOptions(sink));
      const r = done(await s.send(message()));
      const reply = { code: 421, enhanced: '4.4.5', lines: ['4.4.5 Overloaded'] };
      deepEqual(r, {
        kind: 'done',
        recipients: [{ address: 'bob@example.net', kind: 'deferred', reply }],
        messageReply: reply,
      });
      assert.notEqual(s.closedReason, null);
    },
  );
});

test('connection dropped mid-DATA: accepted recipients deferred (4.4.2), refused ones keep their answer', async () => {
  await withSink({ ...MIXED, dropDataAfter: 1000 }, async (sink) => {
    const s = await connect(clientOptions(sink));
    const chunk = Buffer.alloc(16 * 1024, 0x61);
    const msg = message({
      recipients: [
        { address: 'ok@example.net', params: {} },
        { address: 'bad@example.net', params: {} },
      ],
      body: async function* () {
        for (let i = 0; i < 256; i++) {
          await setImmediate();
          yield chunk;
        }
      },
      size: 256 * chunk.length,
    });
    const r = done(await s.send(msg));
    assert.equal(r.messageReply, null);
    const [ok, bad] = r.recipients;
    assert.equal(ok?.kind, 'deferred');
    assert.equal(ok?.reply.code, 421);
    assert.equal(ok?.reply.enhanced, '4.4.2');
    assert.equal(ok?.reply.local?.reason, 'connection-lost');
    assert.equal(ok?.stage, 'data');
    assert.equal(bad?.stage, 'rcpt');
    assert.equal(bad?.kind, 'failed');
    assert.equal(sink.messages().length, 0);
  });
});

test('a 5xx sent mid-body before the server closes is the message answer', async () => {
  await withSink({ dropDataAfter: 1000, dropDataReply: '552 5.3.4 Message too big' }, async (sink) => {
    const s = await connect(clientOptions(sink));
    const chunk = Buffer.alloc(16 * 1024, 0x61);
    const r = done(
      await s.send(
        message({
          body: async function* () {
            for (let i = 0; i < 256; i++) {
              await setImmediate();
              yield chunk;
            }
          },
          size: 256 * chunk.length,
        }),
      ),
    );
    const reply = { code: 552, enhanced: '5.3.4', lines: ['5.3.4 Message too big'] };
    deepEqual(r, {
      kind: 'done',
      recipients: [{ address: 'bob@example.net', kind: 'failed', reply }],
      messageReply: reply,
    });
    assert.notEqual(s.closedReason, null);
  });
});

test('a body that fails to read closes the connection (never a truncated "."), recipients deferred', async () => {
  await withSink({}, async (sink) => {
    const s = await connect(clientOptions(sink));
    const r = done(
      await s.send(
        message({
          body: async function* () {
            yield Buffer.from('Subject: x\r\n');
            await setImmediate();
            throw new Error('spool read failed');
          },
        }),
      ),
    );
    assert.equal(r.recipients[0]?.kind, 'deferred');
    deepEqual(r.recipients[0]?.reply, {
      code: 451,
      enhanced: '4.3.0',
      lines: ['4.3.0 Local error reading the message while sending it: spool read failed'],
      local: true,
    });
    assert.equal(sink.messages().length, 0);
  });
});

test('a malformed reply is a protocol error: the session ends, recipients deferred', async () => {
  await withSink({ respond: (c) => (c.verb === 'RCPT' ? 'what?' : undefined) }, async (sink) => {
    const s = await connect(clientOptions(sink));
    const r = done(await s.send(message()));
    assert.equal(r.recipients[0]?.kind, 'deferred');
    assert.match(r.recipients[0]?.reply.lines[0] ?? '', /protocol error in the server's reply/);
  });
});

// --- Timeouts ----------------------------------------------------------------------------------

test('RFC 5321 4.5.3.2: greeting timeout → connection-failed', async () => {
  await withSink({ respond: (c) => (c.verb === 'GREETING' ? { silent: true } : undefined) }, async (sink) => {
    const started = Date.now();
    const r = await SmtpClientSession.connect(
      clientOptions(sink, { timeouts: { ...TIMEOUTS, greetingMs: 150 } }),
    );
    assert.ok(Date.now() - started < 2000);
    deepEqual(r, {
      kind: 'connection-failed',
      reason: `no greeting from ${sink.host}[${sink.host}]:${sink.port}: timeout after 150 ms waiting for the reply to the greeting`,
      permanent: false,
    });
  });
});

test('RFC 5321 4.5.3.2: RCPT timeout → recipients deferred, connection closed', async () => {
  await withSink({ respond: (c) => (c.verb === 'RCPT' ? { silent: true } : undefined) }, async (sink) => {
    const s = await connect(clientOptions(sink, { timeouts: { ...TIMEOUTS, commandMs: 150 } }));
    const r = done(await s.send(message()));
    assert.equal(r.recipients[0]?.kind, 'deferred');
    assert.match(r.recipients[0]?.reply.lines[0] ?? '', /timeout after 150 ms waiting for the reply to RCPT/);
    assert.match(s.closedReason ?? '', /timeout/);
  });
});

test('RFC 5321 4.5.3.2.4/6: DATA initiation and end-of-data timeouts use their own limits', async () => {
  await withSink({ respond: (c) => (c.verb === 'DATA' ? { silent: true } : undefined) }, async (sink) => {
    const s = await connect(clientOptions(sink, { timeouts: { ...TIMEOUTS, dataInitMs: 100 } }));
    const r = done(await s.send(message()));
    assert.match(r.recipients[0]?.reply.lines[0] ?? '', /timeout after 100 ms waiting for the reply to DATA/);
  });
  await withSink({ respond: (c) => (c.verb === 'DATA-END' ? { silent: true } : undefined) }, async (sink) => {
    const s = await connect(clientOptions(sink, { timeouts: { ...TIMEOUTS, dataEndMs: 120 } }));
    const r = done(await s.send(message()));
    assert.equal(r.recipients[0]?.kind, 'deferred');
    assert.match(
      r.recipients[0]?.reply.lines[0] ?? '',
      /timeout after 120 ms waiting for the reply to the end of data/,
    );
  });
});

test('RFC 5321 4.5.3.2.5: a peer that stops reading trips the data block timeout (backpressure)', async () => {
  await withSink({}, async (sink) => {
    const s = await connect(clientOptions(sink, { timeouts: { ...TIMEOUTS, dataBlockMs: 200 } }));
    // Stop reading on the sink side once DATA starts: the client's socket buffer fills.
    const chunk = Buffer.alloc(64 * 1024, 0x61);
    let sent = 0;
    const msg = message({
      body: async function* () {
        for (let i = 0; i < 2048; i++) {
          await setImmediate();
          sent++;
          yield chunk;
        }
      },
      size: 2048 * chunk.length,
    });
    const paused = new Promise<void>((resolve) => {
      const timer = setInterval(() => {
        if (sink.commands().includes('DATA')) {
          clearInterval(timer);
          resolve();
        }
      }, 1);
    });
    const sending = s.send(msg);
    await paused;
    pauseSinkSockets(sink);
    const r = done(await sending);
    assert.equal(r.recipients[0]?.kind, 'deferred');
    assert.match(r.recipients[0]?.reply.lines[0] ?? '', /timeout after 200 ms sending the message/);
    assert.ok(sent < 2048, `backpressure stopped the producer (${sent} chunks pulled)`);
  });
});

/** Stops the sink from reading any of its connections (simulates a stuck peer). */
function pauseSinkSockets(sink: SmtpSink): void {
  for (const socket of sink.sockets()) socket.pause();
}
