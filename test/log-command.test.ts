/**
 * `sterna log` on the log of a real server run: Sterna started as the operator starts it (a
 * child process, JSON log on stdout into a file), one message delivered to a receiving server on
 * 127.0.0.2 and one refused there with 550 (so it bounces to its local sender), then the real
 * command run on that file: the exact story of each message, grouped per message, the bounce
 * following as a message of its own; selection by sender and recipient; gzip-compressed and
 * rotated files and stdin; exit codes.
 */
import assert from 'node:assert/strict';
import { appendFile, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { gzipSync } from 'node:zlib';
import type { Zone } from './helpers/dns-server.js';
import { startOutboundPeers, type OutboundPeers } from './helpers/outbound-fixture.js';
import { sendMessage, waitFor } from './helpers/outbound.js';
import { assertReply, TestClient } from './helpers/smtp-client.js';
import { prepareServeDir, readJsonLog, startSternaProcess, type LogRecord } from './helpers/process.js';
import { runSterna } from './helpers/run-cli.js';
import type { SinkCommand } from './helpers/smtp-sink.js';

let peers: OutboundPeers<'sink'>;
let dir: string;
let logFile: string;
let records: LogRecord[];
/** Delivered, bounced, and the bounce itself. */
let delivered: string;
let bounced: string;
let bounce: string;

/** example.test's one MX is the receiving server on 127.0.0.2, which knows ann but not bob. */
const MX_HOST = '127.0.0.2';
const refuseBob = (cmd: SinkCommand): string | undefined =>
  cmd.verb === 'RCPT' && cmd.line.includes('<bob@')
    ? '550 5.1.1 <bob@example.test>: no such user'
    : undefined;

before(async () => {
  const zone: Zone = { 'mx1.example.test': { A: [MX_HOST] } };
  zone['example.test'] = { MX: [{ preference: 10, exchange: 'mx1.example.test' }] };
  peers = await startOutboundPeers({ zone, sinks: { sink: { host: MX_HOST, respond: refuseBob } } });
  const d = await prepareServeDir({
    prefix: 'sterna-log-',
    hostname: 'mx.sterna.test',
    domain: 'sterna.test',
    mailboxes: ['zoe@sterna.test'],
  });
  dir = d.dir;
  await appendFile(d.configFile, peers.config());
  logFile = path.join(dir, 'sterna.log');
  const server = await startSternaProcess({
    configFile: d.configFile,
    smtpPort: d.port,
    stdoutFile: logFile,
    stderrFile: path.join(dir, 'stderr'),
  });
  try {
    delivered = await sendMessage(d.port, {
      from: 'zoe@sterna.test',
      to: ['ann@example.test'],
      body: 'Subject: a\r\n\r\nhi\r\n',
    });
    bounced = await sendMessage(d.port, {
      from: 'zoe@sterna.test',
      to: ['bob@example.test'],
      body: 'Subject: b\r\n\r\nhi\r\n',
    });
    // A transaction the client leaves after RCPT: one line at info, before the session's end.
    const client = await TestClient.connect(d.port);
    await client.expect(220);
    await client.cmd('EHLO client.test');
    assertReply(await client.cmd('MAIL FROM:<zoe@sterna.test>'), 250, '2.1.0');
    assertReply(await client.cmd('RCPT TO:<carl@example.test>'), 250, '2.1.5');
    assertReply(await client.cmd('QUIT'), 221);
    client.close();
    const finished = (qid: string): boolean =>
      records.some((r) => r.fields['qid'] === qid && r.msg.startsWith('message finished'));
    await waitFor('both messages and the bounce to finish', async () => {
      records = (await readJsonLog(logFile)).records;
      const report = records.find((r) => r.msg === 'bounce queued')?.fields['report'];
      bounce = typeof report === 'string' ? report : '';
      return (
        finished(delivered) &&
        finished(bounced) &&
        bounce !== '' &&
        finished(bounce) &&
        records.some((r) => r.msg === 'disconnected' && r.fields['sid'] === abandonedSid())
      );
    });
  } finally {
    await server.stop();
  }
  records = (await readJsonLog(logFile)).records;
});

after(() => peers.close());

/** The log record of `qid` with message `msg`. */
function rec(qid: string, msg: string): LogRecord {
  const r = records.find((x) => x.fields['qid'] === qid && x.msg === msg);
  assert.ok(r !== undefined, `no "${msg}" line for ${qid}`);
  return r;
}

/** The expected story of a message: its events, each after its time from the log. */
function story(header: string, events: [LogRecord, string][]): string[] {
  return [header, ...events.map(([r, text]) => `  ${String(r.fields['time'])}  ${text}`)];
}

function sessionLine(qid: string, msg: string): LogRecord {
  const sid = rec(qid, 'queued').fields['sid'];
  const r = records.find((x) => x.fields['sid'] === sid && x.msg === msg);
  assert.ok(r !== undefined, `no "${msg}" line in session ${String(sid)}`);
  return r;
}

/** The session id of the transaction left after RCPT; '' until it is logged. */
function abandonedSid(): string {
  const sid = records.find((r) => r.msg === 'transaction abandoned')?.fields['sid'];
  return typeof sid === 'string' ? sid : '';
}

/**
 * The first events of a message from zoe@sterna.test to `rcpt`: its session and its acceptance
 * (MAIL and RCPT are logged at debug only: the queued line names the sender and recipients).
 */
function arrival(qid: string, rcpt: string): [LogRecord, string][] {
  const q = rec(qid, 'queued');
  return [
    [
      sessionLine(qid, 'connected'),
      `connected from 127.0.0.1 to the smtp listener (session ${String(q.fields['sid'])})`,
    ],
    [q, `accepted: ${String(q.fields['size'])} bytes from <zoe@sterna.test> for ${rcpt}`],
  ];
}

const REMOVED = 'removed from the queue: every recipient delivered or failed';
const finishedLine = (qid: string): [LogRecord, string] => [
  rec(qid, 'message finished: every recipient delivered or failed'),
  REMOVED,
];

function deliveredStory(): string[] {
  const done = rec(delivered, 'outbound: delivered');
  return story(`message ${delivered}`, [
    ...arrival(delivered, 'ann@example.test'),
    [
      rec(delivered, 'outbound attempt'),
      'attempt for ann@example.test at mx1.example.test [127.0.0.2], no TLS: 250 2.0.0 Ok: queued as SINK',
    ],
    [done, `delivered to ann@example.test (${String(done.fields['delay'])} s after arrival)`],
    finishedLine(delivered),
  ]);
}

function bouncedStory(): string[] {
  const refusal = '550 5.1.1 <bob@example.test>: no such user';
  return [
    ...story(`message ${bounced}`, [
      ...arrival(bounced, 'bob@example.test'),
      [
        rec(bounced, 'outbound attempt'),
        `attempt for bob@example.test at mx1.example.test [127.0.0.2], no TLS, reused connection: ${refusal}`,
      ],
      [
        rec(bounced, 'outbound: failed'),
        `failed bob@example.test: ${refusal}; fix: the address does not exist at the destination; the sender was told`,
      ],
      [rec(bounced, 'bounce queued'), `bounce queued as ${bounce} to <zoe@sterna.test> for bob@example.test`],
      finishedLine(bounced),
    ]),
    '',
    ...story(`message ${bounce} (a report about ${bounced})`, [
      [rec(bounce, 'delivered'), 'delivered to zoe@sterna.test in mailbox zoe@sterna.test'],
      finishedLine(bounce),
    ]),
  ];
}

test('sterna log QID: the delivered message, one line per event in time order', async () => {
  const r = await runSterna(['log', delivered, '--file', logFile]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, `${deliveredStory().join('\n')}\n`);
});

test('sterna log QID: the bounced message, then its bounce as a message of its own', async () => {
  const r = await runSterna(['log', bounced, '--file', logFile]);
  assert.equal(r.code, 0, r.stderr);
  // The attempt reused the connection of the first message only if it came soon enough.
  const reused = rec(bounced, 'outbound attempt').fields['reused'] === true;
  const expected = bouncedStory().map((l) =>
    reused ? l : l.replace(', no TLS, reused connection:', ', no TLS:'),
  );
  assert.equal(r.stdout, `${expected.join('\n')}\n`);
});

test('--sender and --rcpt select the messages of one address; several queue ids are grouped', async () => {
  const both = `${[...deliveredStory(), '', ...bouncedStory()].join('\n')}\n`;
  const fromZoe = await runSterna(['log', '--sender', 'Zoe@sterna.test', '--file', logFile]);
  assert.equal(fromZoe.code, 0, fromZoe.stderr);
  const normalize = (s: string): string => s.replace(', no TLS, reused connection:', ', no TLS:');
  assert.equal(normalize(fromZoe.stdout), normalize(both));
  const byIds = await runSterna(['log', bounced, delivered, '--file', logFile]);
  assert.equal(normalize(byIds.stdout), normalize(both));
  const toAnn = await runSterna(['log', '--rcpt', 'ann@example.test', '--file', logFile]);
  assert.equal(toAnn.stdout, `${deliveredStory().join('\n')}\n`);
});

test('at info, MAIL and RCPT are not logged; a transaction left after RCPT is, once, before the session ends', () => {
  assert.deepEqual(
    records.filter((r) => r.msg === 'mail' || r.msg === 'rcpt'),
    [],
  );
  const lines = records.filter((r) => r.msg === 'transaction abandoned');
  assert.equal(lines.length, 1);
  const line = lines[0]!;
  assert.equal(line.level, 30);
  assert.equal(line.fields['stage'], 'RCPT');
  assert.equal(line.fields['sender'], 'zoe@sterna.test');
  assert.deepEqual(line.fields['rcpts'], ['carl@example.test']);
  assert.equal(line.fields['ip'], '127.0.0.1');
  const sid = abandonedSid();
  const session = records.filter((r) => r.fields['sid'] === sid).map((r) => r.msg);
  assert.deepEqual(session, ['connected', 'transaction abandoned', 'disconnected']);
});

test('gzip-compressed and rotated files, and stdin, tell the same story', async () => {
  const text = await readFile(logFile);
  const lines = text.toString('utf8').split('\n');
  const half = Math.floor(lines.length / 2);
  const older = path.join(dir, 'sterna.log.1.gz');
  const newer = path.join(dir, 'sterna.log.0');
  await writeFile(older, gzipSync(`${lines.slice(0, half).join('\n')}\n`));
  await writeFile(newer, lines.slice(half).join('\n'));
  const expected = `${deliveredStory().join('\n')}\n`;
  const rotated = await runSterna(['log', delivered, '--file', older, '--file', newer]);
  assert.equal(rotated.stdout, expected, rotated.stderr);
  const piped = await runSterna(['log', delivered], { input: gzipSync(text) });
  assert.equal(piped.stdout, expected, piped.stderr);
  const dash = await runSterna(['log', delivered, '--file', '-'], { input: text });
  assert.equal(dash.stdout, expected, dash.stderr);
});

test('exit codes: 1 when no line is about the message or a file is unreadable, 2 on a usage error', async () => {
  const none = await runSterna(['log', 'NOSUCHQID', '--file', logFile]);
  assert.equal(none.code, 1);
  assert.equal(none.stdout, '');
  assert.equal(none.stderr, 'sterna log: no log line about these messages\n');
  const missing = await runSterna(['log', delivered, '--file', path.join(dir, 'nope.log')]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /^sterna log: cannot read .*nope\.log: ENOENT/);
  const usage = await runSterna(['log', '--file', logFile]);
  assert.equal(usage.code, 2);
  assert.match(usage.stderr, /^sterna log: say which messages/);
});
