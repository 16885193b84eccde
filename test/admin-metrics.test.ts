/**
 * Prometheus /metrics of a real server while mail flows: N messages in → the counters move by
 * exactly N (accepted, 250 2.0.0 replies, connections, sessions, end-of-data latency, local
 * deliveries), refusals, AUTH failures and TLS handshakes are counted by label, the queue
 * gauges follow the spool, and the real output passes `promtool check metrics` (Debian's
 * prometheus package). Two servers in one process keep their own registries.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { authPlain, startAdminServer, type AdminTestServer } from './helpers/admin.js';
import { startScriptedMilter, type ScriptedMilter } from './helpers/milter.js';
import { sendMessage, waitFor } from './helpers/outbound.js';
import { TestClient } from './helpers/smtp-client.js';
import { describeRun, requireTool, runTool } from './helpers/tools.js';

const N = 5;
const USER = { address: 'ann@sterna.test', password: 'ann-secret-1' };
let a: AdminTestServer;
/** A content filter on port 25 that lets everything through: its verdicts are counted. */
let milter: ScriptedMilter;

before(async () => {
  milter = await startScriptedMilter();
  a = await startAdminServer({
    toml:
      '[relay]\ntrusted_networks = ["127.0.0.1/32"]\n' +
      // Mail authentication on port 25; the test resolver never answers, so each message's
      // results are temperrors after timeout_ms (accepted and marked, the default).
      '[mailauth]\nlisteners = ["smtp"]\ntimeout_ms = 300\n' +
      '[[lists]]\nname = "spammers"\nmatch = "sender"\naction = "deny"\nentries = ["spam@bad.test"]\n' +
      `[[filters]]\ntype = "milter"\nname = "scripted"\naddress = "inet:127.0.0.1:${milter.port}"\n`,
    users: [USER],
  });
});
after(async () => {
  await a.stop();
  await milter.close();
});

/** The samples of the exposition text: "name{labels}" → value. */
async function scrape(): Promise<{ text: string; value(series: string): number }> {
  const res = await a.call('GET', '/metrics');
  assert.equal(res.status, 200, res.text);
  const samples = new Map<string, number>();
  for (const line of res.text.split('\n')) {
    const m = /^([a-z_:][a-z0-9_:]*(?:\{[^}]*\})?) (\S+)$/i.exec(line);
    if (m !== null) samples.set(m[1] ?? '', Number(m[2]));
  }
  return { text: res.text, value: (series) => samples.get(series) ?? 0 };
}

function message(i: number): string {
  return `From: <bob@sterna.test>\r\nTo: <${USER.address}>\r\nSubject: metrics ${i}\r\n\r\nbody ${i}\r\n`;
}

test(`${N} messages in: the counters move by exactly ${N}`, async () => {
  const before = await scrape();
  const series = {
    accepted: 'sterna_messages_accepted_total',
    queued250: 'sterna_smtp_replies_total{class="2xx",code="250",enhanced="2.0.0"}',
    connections: 'sterna_smtp_connections_total{listener="smtp"}',
    quit: 'sterna_smtp_sessions_total{outcome="quit"}',
    eod: 'sterna_smtp_end_of_data_to_reply_seconds_count',
    delivered: 'sterna_delivery_attempts_total{result="delivered",destination="local"}',
    latency: 'sterna_delivery_latency_seconds_count',
    bytes: 'sterna_received_bytes_total',
  };
  for (let i = 0; i < N; i++)
    await sendMessage(a.server.ports.smtp, { from: 'bob@sterna.test', to: [USER.address], body: message(i) });
  const recent = (await a.call('GET', `/api/recent?kind=queued&limit=${N}`)).json as {
    events: { size: number }[];
  };
  const bytes = recent.events.reduce((sum, e) => sum + e.size, 0);
  // Sessions end and deliveries finish just after the client's last reply: wait for them.
  let after = await scrape();
  await waitFor(
    () => `sessions and deliveries to be counted:\n${after.text}`,
    async () => {
      after = await scrape();
      return (
        after.value(series.quit) - before.value(series.quit) >= N &&
        after.value(series.delivered) - before.value(series.delivered) >= N
      );
    },
  );
  for (const [what, s] of Object.entries(series)) {
    if (what === 'bytes') continue;
    assert.equal(after.value(s) - before.value(s), N, `${s} moved by ${after.value(s) - before.value(s)}`);
  }
  assert.equal(after.value(series.bytes) - before.value(series.bytes), bytes);
  assert.ok(bytes > N * 60, 'sizes include the message and its Received header');
  assert.ok(after.value('sterna_spool_sync_seconds_count') >= 1, 'the commits were synced');
  assert.ok(after.value('process_resident_memory_bytes') > 0, 'default metrics on the same registry');
  assert.ok(after.text.includes('nodejs_eventloop_lag_seconds'), 'event-loop lag');
});

test('refusals, AUTH failures and TLS versions are counted by label', async () => {
  const before = await scrape();
  assert.equal(await authPlain(a.server.ports.submission, USER.address, 'wrong'), 535);
  const s = await TestClient.connect(a.server.ports.smtp);
  try {
    await s.expect(220);
    await s.cmd('EHLO client.test');
    await s.cmd('MAIL FROM:<x@example.net>');
    const r = await s.cmd('RCPT TO:<nobody@sterna.test>');
    assert.equal(r.code, 550);
    assert.equal(r.enhanced, '5.1.1');
    await s.cmd('QUIT');
  } finally {
    s.close();
  }
  const after = await scrape();
  const moved = (series: string): number => after.value(series) - before.value(series);
  assert.equal(moved('sterna_auth_failures_total{result="failed"}'), 1);
  assert.equal(moved('sterna_tls_inbound_handshakes_total{version="TLSv1.3"}'), 1);
  assert.equal(moved('sterna_messages_refused_total{stage="rcpt",enhanced="5.1.1"}'), 1);
  assert.equal(moved('sterna_smtp_replies_total{class="5xx",code="550",enhanced="5.1.1"}'), 1);
  const recent = await a.call('GET', '/api/recent?kind=refusal&limit=1');
  assert.deepEqual(
    (recent.json as { events: Record<string, unknown>[] }).events.map((e) => [
      e['stage'],
      e['code'],
      e['recipient'],
      e['ip'],
    ]),
    [['rcpt', 550, 'nobody@sterna.test', '127.0.0.1']],
  );
});

test('mail authentication results, policy refusals and filter verdicts are counted', async () => {
  const before = await scrape();
  await sendMessage(a.server.ports.smtp, { from: 'bob@sterna.test', to: [USER.address], body: message(99) });
  const s = await TestClient.connect(a.server.ports.smtp);
  try {
    await s.expect(220);
    await s.cmd('EHLO client.test');
    const r = await s.cmd('MAIL FROM:<spam@bad.test>');
    assert.equal(r.code, 550);
    assert.equal(r.enhanced, '5.7.1');
    await s.cmd('QUIT');
  } finally {
    s.close();
  }
  const after = await scrape();
  const moved = (prefix: string): number => {
    let n = 0;
    for (const line of after.text.split('\n')) {
      const m = /^(\S+) (\S+)$/.exec(line);
      if (m?.[1]?.startsWith(prefix) === true) n += Number(m[2]) - before.value(m[1]);
    }
    return n;
  };
  // One message: one SPF, one DMARC and one ARC result, one DKIM result ("none": unsigned).
  assert.equal(moved('sterna_mailauth_results_total{method="spf"'), 1);
  assert.equal(moved('sterna_mailauth_results_total{method="dmarc"'), 1);
  assert.equal(moved('sterna_mailauth_results_total{method="arc"'), 1);
  assert.equal(moved('sterna_mailauth_results_total{method="dkim",result="none"}'), 1);
  assert.equal(moved('sterna_policy_refusals_total{check="list"}'), 1);
  assert.equal(moved('sterna_filter_verdicts_total{filter="scripted"'), 1);
});

test('queue gauges and delivery attempts by destination follow the spool', async () => {
  const qid = await sendMessage(a.server.ports.smtp, {
    from: 'bob@sterna.test',
    to: ['carl@far.test'],
    body: 'Subject: far\r\n\r\nfar away\r\n',
  });
  let m = await scrape();
  await waitFor(
    () => `the deferral of ${qid}:\n${m.text}`,
    async () => {
      m = await scrape();
      return m.value('sterna_queue_messages{state="deferred"}') === 1;
    },
  );
  assert.equal(
    m.value('sterna_delivery_attempts_total{result="deferred",destination="other"}'),
    1,
    'one attempt is not yet a top domain',
  );
  assert.ok(m.value('sterna_queue_oldest_message_age_seconds') > 0);
  for (const state of ['active', 'pending', 'held'])
    assert.equal(m.value(`sterna_queue_messages{state="${state}"}`), 0);
  assert.equal((await a.call('POST', `/api/queue/${qid}/hold`)).status, 200);
  m = await scrape();
  assert.equal(m.value('sterna_queue_messages{state="held"}'), 1);
  assert.equal(m.value('sterna_queue_messages{state="deferred"}'), 0);
});

test('two servers in one process keep their own registries', async () => {
  const b = await startAdminServer({ toml: '[relay]\ntrusted_networks = ["127.0.0.1/32"]\n', users: [USER] });
  try {
    await sendMessage(b.server.ports.smtp, {
      from: 'bob@sterna.test',
      to: [USER.address],
      body: message(99),
    });
    const res = await b.call('GET', '/metrics');
    assert.match(res.text, /^sterna_messages_accepted_total 1$/m);
    // Server a: the N messages of the first test, the far one and the one with counted results.
    assert.match((await scrape()).text, new RegExp(`^sterna_messages_accepted_total ${N + 2}$`, 'm'));
  } finally {
    await b.stop();
  }
});

test('promtool check metrics passes on the real output', requireTool('promtool'), async () => {
  const { text } = await scrape();
  const run = await runTool('promtool', ['check', 'metrics'], { input: text });
  assert.equal(run.code, 0, describeRun(run));
  assert.equal(run.stdout + run.stderr, '', describeRun(run));
});
