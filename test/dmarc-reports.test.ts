/**
 * DMARC aggregate reports (RFC 7489 7.2, docs/mail-auth.md "DMARC reports") end to end over real
 * TCP: mail from a test domain whose DMARC record asks for reports (rua) goes through Sterna's
 * smtp listener, `sterna dmarc report --now` runs the report, and the report arrives at a sink as
 * a DKIM-signed MIME message; its gzipped XML is parsed by an independent parser (Python's
 * xml.etree) and checked field by field against the RFC's Appendix C schema and the counts. The
 * external-destination check (7.1) and the !size limit (6.2) refuse the addresses they must, and
 * the period's records are gone once the report is queued. DNS is the test DNS server's.
 */
import assert from 'node:assert/strict';
import { createPrivateKey, createPublicKey } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { after, before, test } from 'node:test';
import { runDmarcCommand } from '../src/cli/dmarc-command.js';
import type { ReportRunSummary } from '../src/mailauth/dmarc-report.js';
import { generateKey, recordValue, writeKeyFile } from '../src/mailauth/dkim-keys.js';
import { verifyWithDkimpy, type KeyRecords } from './helpers/dkim-verify.js';
import { waitForMessages } from './helpers/maildir.js';
import { transact } from './helpers/mailauth.js';
import { waitFor } from './helpers/outbound.js';
import { runInProcess } from './helpers/run-cli.js';
import { startOutboundFixture, type OutboundFixture } from './helpers/outbound-fixture.js';
import { assertReply } from './helpers/smtp-client.js';
import { crlfMessage, describeRun, makeTempDir, requireTool, runTool } from './helpers/tools.js';

const python = requireTool('python3');
const RCPT = 'bob@sterna.test';
const RUA =
  'mailto:dmarc@rep.example,mailto:agg@auth.example,mailto:agg@unauth.example,mailto:tiny@rep.example!100';

let tmp: { dir: string; cleanup(): Promise<void> };
let f: OutboundFixture<'rua'>;
const records: KeyRecords = {};

before(async () => {
  if (python.skip !== false) return;
  tmp = await makeTempDir('sterna-dmarc-reports-');
  // Sterna's own mail (the reports, from dmarc-reports@sterna.test) is signed with this key.
  const keyFile = path.join(tmp.dir, 'sterna.test.rep.key');
  const { pem } = generateKey('ed25519');
  await writeKeyFile(keyFile, pem);
  records['rep._domainkey.sterna.test'] = recordValue(createPublicKey(createPrivateKey(pem)), 'ed25519');
  const mx = { MX: [{ preference: 10, exchange: 'mx.rua.test' }] };
  f = await startOutboundFixture({
    zone: {
      'mx.rua.test': { A: ['127.0.0.2'] },
      'rep.example': { ...mx, TXT: [['v=spf1 ip4:127.0.0.1 -all']] },
      '_dmarc.rep.example': { TXT: [[`v=DMARC1; p=quarantine; adkim=s; rua=${RUA}`]] },
      // auth.example agrees to receive rep.example's reports (RFC 7489 7.1); unauth.example does not.
      'auth.example': mx,
      'rep.example._report._dmarc.auth.example': { TXT: [['v=DMARC1']] },
      'unauth.example': mx,
      'rep._domainkey.sterna.test': { TXT: [[records['rep._domainkey.sterna.test'] ?? '']] },
    },
    sinks: { rua: { host: '127.0.0.2' } },
    users: [{ address: RCPT, password: 'secret-password' }],
    tables: `[mailauth]
timeout_ms = 5000
[dmarc_reports]
enabled = true
org_name = "Sterna Test"
from = "dmarc-reports@sterna.test"
flush_ms = 50
[[dkim.keys]]
domain = "sterna.test"
selector = "rep"
algorithm = "ed25519"
key_file = "${keyFile}"
`,
  });
});

after(async () => {
  await f?.close();
  await tmp?.cleanup();
});

function message(from: string): Buffer {
  return crlfMessage([
    `From: Alice <${from}>`,
    `To: ${RCPT}`,
    'Subject: DMARC report test',
    'Date: Sat, 05 Dec 2026 10:00:00 +0000',
    `Message-ID: <${Math.random().toString(36).slice(2)}@test>`,
    '',
    'Hello Bob.',
    '',
  ]);
}

/** `sterna dmarc report --now --json`, in this process, through the server's control socket. */
async function reportNow(): Promise<ReportRunSummary> {
  const r = await runInProcess((io) =>
    runDmarcCommand(['report', '--now', '--json'], { ...io, config: f.server.config }),
  );
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as ReportRunSummary; // the command prints the server's summary as JSON
}

/** The independent parse: Python's xml.etree reads the report and prints its fields as JSON. */
const PARSE_XML = `
import json, sys, xml.etree.ElementTree as ET
root = ET.fromstring(sys.stdin.buffer.read())
assert root.tag == 'feedback', root.tag
t = lambda e, p: e.findtext(p)
m = root.find('report_metadata')
pp = root.find('policy_published')
out = {
  'version': t(root, 'version'),
  'children': [c.tag for c in root],
  'org_name': t(m, 'org_name'), 'email': t(m, 'email'), 'report_id': t(m, 'report_id'),
  'begin': int(t(m, 'date_range/begin')), 'end': int(t(m, 'date_range/end')),
  'policy': {k: t(pp, k) for k in ['domain', 'adkim', 'aspf', 'p', 'sp', 'pct', 'fo']},
  'records': [],
}
for r in root.findall('record'):
  row = r.find('row')
  pe = row.find('policy_evaluated')
  out['records'].append({
    'source_ip': t(row, 'source_ip'), 'count': int(t(row, 'count')),
    'disposition': t(pe, 'disposition'), 'dkim': t(pe, 'dkim'), 'spf': t(pe, 'spf'),
    'reasons': [t(x, 'type') for x in pe.findall('reason')],
    'header_from': t(r, 'identifiers/header_from'),
    'auth_spf': [{k: t(s, k) for k in ['domain', 'scope', 'result']} for s in r.findall('auth_results/spf')],
    'auth_dkim': [{k: t(s, k) for k in ['domain', 'selector', 'result']} for s in r.findall('auth_results/dkim')],
  })
print(json.dumps(out))
`;

interface ParsedReport {
  version: string;
  children: string[];
  org_name: string;
  email: string;
  report_id: string;
  begin: number;
  end: number;
  policy: Record<string, string>;
  records: {
    source_ip: string;
    count: number;
    disposition: string;
    dkim: string;
    spf: string;
    reasons: string[];
    header_from: string;
    auth_spf: Record<string, string>[];
    auth_dkim: Record<string, string>[];
  }[];
}

/** The gzip attachment of a report message: its file name and its bytes. */
function attachment(msg: Buffer): { name: string; gz: Buffer } {
  const text = msg.toString('utf8');
  const m =
    /Content-Type: application\/gzip; name="([^"]+)"\r\nContent-Disposition: attachment; filename="([^"]+)"\r\nContent-Transfer-Encoding: base64\r\n\r\n([A-Za-z0-9+/=\r\n]+?)\r\n\r\n--/.exec(
      text,
    );
  assert.ok(m?.[1] !== undefined && m[2] !== undefined && m[3] !== undefined, text);
  assert.equal(m[1], m[2]);
  return { name: m[1], gz: Buffer.from(m[3].replace(/\r\n/g, ''), 'base64') };
}

test(
  'aggregate report: recorded evaluations, queued by `sterna dmarc report --now`, DKIM-signed, parsed by xml.etree with the right counts',
  { skip: python.skip },
  async () => {
    const send = async (mailFrom: string): Promise<void> =>
      assertReply(
        await transact(f.server.ports.smtp, {
          from: mailFrom,
          to: RCPT,
          message: message('alice@rep.example'),
        }),
        250,
        '2.0.0',
      );
    // Three that pass DMARC (SPF of rep.example passes for 127.0.0.1, aligned), two that fail it
    // (MAIL FROM in a domain without SPF, no signature) and are quarantined into Junk.
    for (let i = 0; i < 3; i++) await send('alice@rep.example');
    for (let i = 0; i < 2; i++) await send('bounce@nospf.example');
    assert.equal((await waitForMessages(f.server.dataDir, 'sterna.test', 'bob', 3)).length, 3);
    assert.equal((await waitForMessages(f.server.dataDir, 'sterna.test', 'bob/.Junk', 2)).length, 2);

    const summary = await reportNow();
    assert.equal(summary.periods.length, 1);
    const period = summary.periods[0]!;
    assert.equal(period.reports.length, 1);
    const rep = period.reports[0]!;
    assert.equal(rep.domain, 'rep.example');
    assert.equal(rep.messages, 5);
    assert.equal(rep.rows, 2);
    assert.deepEqual(rep.to, ['dmarc@rep.example', 'agg@auth.example']);
    // RFC 7489 7.1: unauth.example publishes no rep.example._report._dmarc record; 6.2: !100 is too small.
    assert.deepEqual(
      rep.skipped.map((s) => s.address),
      ['agg@unauth.example', 'tiny@rep.example'],
    );
    assert.match(rep.skipped[0]!.reason, /no TXT record at rep\.example\._report\._dmarc\.unauth\.example/);
    assert.match(rep.skipped[1]!.reason, /larger than the address's limit of 100 octets/);

    // Both authorized addresses get it (rep.example and auth.example: one MX, the sink); no other.
    await waitFor('the report at both rua addresses', () =>
      ['dmarc@rep.example', 'agg@auth.example'].every((a) =>
        f.sinks.rua.messages().some((m) => m.rcptTo.includes(a)),
      ),
    );
    const received = f.sinks.rua.messages();
    assert.ok(
      received.every((m) => m.rcptTo.every((a) => a === 'dmarc@rep.example' || a === 'agg@auth.example')),
      'nothing to the refused addresses',
    );
    const msg = received[0]!;
    assert.equal(msg.mailFrom, 'dmarc-reports@sterna.test');
    const text = msg.body.toString('utf8');
    const begin = Math.floor(period.begin / 1000);
    const end = Math.max(Math.ceil(period.end / 1000), begin + 1);
    const reportId = `rep.example.${begin}.${end}@mx.sterna.test`;
    assert.match(text, /^From: dmarc-reports@sterna\.test\r$/m);
    assert.ok(
      text.includes(
        `\r\nSubject: Report Domain: rep.example Submitter: mx.sterna.test Report-ID: <${reportId}>\r\n`,
      ),
      text,
    );
    // Signed by Sterna's key for its own mail, verified by dkimpy.
    const sigs = await verifyWithDkimpy(msg.body, records);
    assert.deepEqual(
      sigs.map((s) => [s.d, s.s, s.ok]),
      [['sterna.test', 'rep', true]],
    );

    // RFC 7489 7.2.1.1: receiver!policy-domain!begin!end.xml.gz, gzip.
    const { name, gz } = attachment(msg.body);
    assert.equal(name, `mx.sterna.test!rep.example!${begin}!${end}.xml.gz`);
    const xml = gunzipSync(gz);
    const run = await runTool('python3', ['-c', PARSE_XML], { input: xml });
    assert.equal(run.code, 0, describeRun(run));
    const parsed = JSON.parse(run.stdout) as ParsedReport; // printed by the script above
    assert.deepEqual(parsed.children, ['version', 'report_metadata', 'policy_published', 'record', 'record']);
    assert.equal(parsed.version, '1.0');
    assert.equal(parsed.org_name, 'Sterna Test');
    assert.equal(parsed.email, 'dmarc-reports@sterna.test');
    assert.equal(parsed.report_id, reportId);
    assert.deepEqual([parsed.begin, parsed.end], [begin, end]);
    assert.ok(parsed.begin < parsed.end, `${parsed.begin} ${parsed.end}`);
    assert.deepEqual(parsed.policy, {
      domain: 'rep.example',
      adkim: 's',
      aspf: 'r',
      p: 'quarantine',
      sp: 'quarantine',
      pct: '100',
      fo: '0',
    });
    const byDisposition = new Map(parsed.records.map((r) => [r.disposition, r]));
    assert.deepEqual(byDisposition.get('none'), {
      source_ip: '127.0.0.1',
      count: 3,
      disposition: 'none',
      dkim: 'fail',
      spf: 'pass',
      reasons: [],
      header_from: 'rep.example',
      auth_spf: [{ domain: 'rep.example', scope: 'mfrom', result: 'pass' }],
      auth_dkim: [],
    });
    assert.deepEqual(byDisposition.get('quarantine'), {
      source_ip: '127.0.0.1',
      count: 2,
      disposition: 'quarantine',
      dkim: 'fail',
      spf: 'fail',
      reasons: [],
      header_from: 'rep.example',
      auth_spf: [{ domain: 'nospf.example', scope: 'mfrom', result: 'none' }],
      auth_dkim: [],
    });

    // Data retention: the period's records are gone once its report is queued; a new period began.
    const files = await readdir(path.join(f.server.dataDir, 'dmarc'));
    assert.deepEqual(files, [`current-${period.end}.jsonl`]);
    // Nothing recorded since: the next run reports nothing, and sends nothing.
    const again = await reportNow();
    assert.deepEqual(
      again.periods.map((p) => p.reports.length),
      [0],
    );
  },
);
