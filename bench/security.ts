/**
 * `npm run bench -- --only security`: what each abuse defence and mail authentication check
 * costs per message (issues 9 and 10), each row next to a plain row measured the same way, in
 * the same run. Every row is its own Sterna (bench/sterna.ts: the smtp listener, bench.test on
 * the discard transport, fsync on), loaded with 20 concurrent sessions and a new connection per
 * message; only the row's check differs from the plain row:
 *   - smtp-source(1) rows (its 1 KiB message): plain; DNSBL, one client zone served by the test
 *     DNS server, the client (127.0.0.1) not listed, answers cached by Sterna's resolver;
 *     greylisting on the pass path (the triplet passed before the run, trust_after = 0 so every
 *     message checks its triplet); an rspamd check per message (a private rspamd on loopback,
 *     test/helpers/rspamd.ts); outbound DKIM signing (rsa-sha256 2048, the client in
 *     relay.trusted_networks, [dkim] sign_trusted_networks);
 *   - fixed-message rows (the same client for plain and checked, test/helpers/mailauth.ts
 *     transact): a 1 KiB and a 100 KiB message unsigned with mail authentication off, then
 *     signed once in advance by dkimpy (python3-dkim, rsa-sha256 2048, relaxed/simple) and
 *     verified by Sterna's inbound checks (SPF, DKIM, DMARC) with the test DNS server serving the
 *     key, an SPF record and a DMARC record for the signing domain.
 * Each row first checks that its check really runs (a GTUBE refused, the signature present, a
 * dkim=pass in a delivered copy, the DNSBL queried), then runs REPEATS times and reports the
 * median messages/s and the extra milliseconds per message over its plain row.
 * STERNA_BENCH_SCALE scales the message counts. Prints a markdown table and writes JSON to
 * bench/results/. Benchmark code: trusted, loopback only; every process it starts is stopped.
 */
import { chmod, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startDnsServer, type TestDnsServer, type Zone } from '../test/helpers/dns-server.js';
import { dkimSign, rsaKey, splitTxt, transact, type DkimKey } from '../test/helpers/mailauth.js';
import { GTUBE, startRspamd } from '../test/helpers/rspamd.js';
import type { Daemon } from '../test/helpers/filters.js';
import { describeMachine, sleep } from './machine.js';
import { runSmtpSource } from './smtp-source.js';
import { startSterna, type SternaInstance } from './sterna.js';

const KiB = 1024;
const SCALE = Number(process.env['STERNA_BENCH_SCALE'] ?? '1');
const SESSIONS = 20;
const REPEATS = 3;
const FROM = 'sender@source.bench.local';
const TO = 'rcpt@bench.test';
const LOCAL_RCPT = 'rcpt@sterna.local';
/** The domain whose mail dkimpy signs and Sterna verifies. */
const SIGNED_DOMAIN = 'signed.bench.test';
const SELECTOR = 'bench';
const DNSBL_ZONE = 'bl.bench.test';
const RESULTS_DIR = fileURLToPath(new URL('../../bench/results/', import.meta.url));
const TIMEOUT_MS = 300_000;

interface RowResult {
  name: string;
  /** What differs from its plain row. */
  check: string;
  /** The plain row it is compared with ('' for a plain row). */
  plain: string;
  messages: number;
  runs: number[];
  median: number;
  /** 1000/median − 1000/plain median: the extra wall-clock ms per message at 20 sessions. */
  extraMsPerMessage: number | null;
  /** What the row checked before timing, in words. */
  verified: string;
}

function progress(text: string): void {
  process.stderr.write(`${new Date().toISOString().slice(11, 19)} security: ${text}\n`);
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor((s.length - 1) / 2)] ?? 0;
}

/** A message of about `bytes` octets from FROM-like `from` (lines of 76 letters, none starting with "."). */
function fixedMessage(bytes: number, from: string): Buffer {
  const head = [
    `From: Sender <${from}>`,
    `To: <${TO}>`,
    'Subject: security bench',
    'Date: Sat, 05 Dec 2026 08:00:00 +0000',
    `Message-ID: <bench-${bytes}@${SIGNED_DOMAIN}>`,
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=us-ascii',
    '',
  ].join('\r\n');
  const line = `${'abcdefghijklmnopqrstuvwxyz'.repeat(3).slice(0, 76)}\r\n`;
  const body = line.repeat(Math.max(1, Math.ceil((bytes - head.length) / line.length)));
  return Buffer.from(`${head}\r\n${body}`);
}

/** The 1 KiB message with GTUBE as its first body line (rspamd refuses it). */
function gtubeMessage(): Buffer {
  return Buffer.from(
    fixedMessage(KiB, FROM).toString('latin1').replace('\r\n\r\n', `\r\n\r\n${GTUBE}\r\n`),
    'latin1',
  );
}

/** `messages` transactions of one fixed message, SESSIONS at a time, each on a new connection. */
async function sendFixed(port: number, message: Buffer, messages: number): Promise<number> {
  let next = 0;
  const t0 = performance.now();
  const worker = async (): Promise<void> => {
    while (next < messages) {
      next++;
      const r = await transact(port, { from: FROM, to: TO, message }, { timeoutMs: 60_000 });
      if (r.code !== 250) throw new Error(`fixed-message run: ${r.code} ${r.text}`);
    }
  };
  await Promise.all(Array.from({ length: SESSIONS }, worker));
  return messages / ((performance.now() - t0) / 1000);
}

/** smtp-source, 20 sessions, a new connection per message, its 1 KiB body. */
async function sendSource(port: number, messages: number): Promise<number> {
  const r = await runSmtpSource({
    port,
    sessions: SESSIONS,
    messages,
    bodyBytes: KiB,
    from: FROM,
    to: TO,
    reuseConnections: false,
    timeoutMs: TIMEOUT_MS,
  });
  if (!r.ok) throw new Error(`smtp-source: ${r.error}`);
  return r.messagesPerSecond;
}

/** Waits (bounded) until the discard transport finished what was accepted. */
async function drained(sterna: SternaInstance): Promise<void> {
  const deadline = Date.now() + 180_000;
  while (sterna.liveMessages() > 0 && Date.now() < deadline) await sleep(50);
}

/** The newest file delivered to LOCAL_RCPT, once there (bounded). */
async function deliveredCopy(sterna: SternaInstance, before: number): Promise<string> {
  const dir = join(sterna.maildirRoot, 'sterna.local', 'rcpt', 'new');
  const deadline = Date.now() + 30_000;
  while (sterna.deliveredTo('sterna.local', 'rcpt') <= before && Date.now() < deadline) await sleep(50);
  const names = (await readdir(dir)).sort();
  const last = names.at(-1);
  if (last === undefined) throw new Error('nothing delivered to the local check mailbox');
  return readFile(join(dir, last), 'utf8');
}

interface RowSpec {
  name: string;
  check: string;
  plain: string;
  messages: number;
  /** TOML appended to the row's configuration. */
  config: string;
  /** SPF, DKIM, DMARC and ARC checks on the smtp listener (off in every other row). */
  mailauth?: boolean;
  /** Before timing: proves the check runs; returns what it proved. */
  verify?: (sterna: SternaInstance) => Promise<string>;
  send: (port: number, messages: number) => Promise<number>;
}

async function runRow(base: string, spec: RowSpec, plainMedian: number | null): Promise<RowResult> {
  const dir = join(base, spec.name.replace(/\W+/g, '-'));
  await mkdir(dir);
  const sterna = await startSterna({
    dir,
    users: [LOCAL_RCPT],
    extraConfig: spec.config,
    mailauthListeners: spec.mailauth === true ? ['smtp'] : [],
  });
  try {
    const verified = spec.verify === undefined ? '' : await spec.verify(sterna);
    progress(`${spec.name}: warm-up`);
    await spec.send(sterna.port, Math.max(SESSIONS, Math.round(spec.messages / 5)));
    await drained(sterna);
    const runs: number[] = [];
    for (let i = 1; i <= REPEATS; i++) {
      progress(`${spec.name} [${i}/${REPEATS}]`);
      runs.push(await spec.send(sterna.port, spec.messages));
      await drained(sterna);
    }
    const m = median(runs);
    return {
      name: spec.name,
      check: spec.check,
      plain: spec.plain,
      messages: spec.messages,
      runs,
      median: m,
      extraMsPerMessage: plainMedian === null || m === 0 ? null : 1000 / m - 1000 / plainMedian,
      verified,
    };
  } finally {
    await sterna.stop();
  }
}

/** One finished row on stderr, as the run goes. */
function reportRow(r: RowResult): void {
  const extra = r.extraMsPerMessage === null ? '' : `, +${r.extraMsPerMessage.toFixed(2)} ms/message`;
  progress(`${r.name}: ${r.median.toFixed(0)} msg/s${extra}`);
}

function table(rows: readonly RowResult[]): string {
  const out = [
    '| row | check | msg/s (median of 3) | runs | extra ms per message vs its plain row | checked before timing |',
    '| --- | --- | ---: | --- | ---: | --- |',
  ];
  for (const r of rows)
    out.push(
      `| ${r.name} | ${r.check} | ${r.median.toFixed(0)} | ${r.runs.map((x) => x.toFixed(0)).join(', ')} | ${
        r.extraMsPerMessage === null ? '—' : r.extraMsPerMessage.toFixed(2)
      } | ${r.verified} |`,
    );
  return out.join('\n');
}

/** The zone of the test DNS server: the DKIM key, SPF and DMARC of SIGNED_DOMAIN; the DNSBL zone exists, 1.0.0.127 is not in it. */
function zone(key: DkimKey): Zone {
  return {
    [`${SELECTOR}._domainkey.${SIGNED_DOMAIN}`]: { TXT: [splitTxt(key.record)] },
    [SIGNED_DOMAIN]: { TXT: [['v=spf1 ip4:127.0.0.1 -all']] },
    [`_dmarc.${SIGNED_DOMAIN}`]: { TXT: [['v=DMARC1; p=reject']] },
    [DNSBL_ZONE]: { A: ['127.0.0.1'] },
  };
}

/** The security rows; prints the table and writes bench/results/security-<time>.json. */
export async function runSecurityBench(): Promise<void> {
  const base = await mkdtemp(join(tmpdir(), 'sterna-bench-security-'));
  await chmod(base, 0o755);
  const machine = await describeMachine(base);
  const startedAt = new Date().toISOString();
  const verifyKey = await rsaKey(base, 'verify');
  const dns: TestDnsServer = await startDnsServer(zone(verifyKey));
  let rspamd: Daemon | null = null;
  try {
    const signKey = await rsaKey(base, 'sign');
    await chmod(signKey.file, 0o600);
    const common = `[dns]\nservers = ["127.0.0.1:${dns.port}"]\ntimeout_ms = 2000\ntries = 1\n`;
    const n = (count: number): number => Math.max(SESSIONS, Math.round(count * SCALE));
    const sourceRows: RowSpec[] = [
      {
        name: 'plain (smtp-source)',
        check: 'none',
        plain: '',
        messages: n(2000),
        config: common,
        send: sendSource,
      },
      {
        name: 'DNSBL, cached',
        check: `one client zone (${DNSBL_ZONE}), client not listed`,
        plain: 'plain (smtp-source)',
        messages: n(2000),
        config: `${common}[dnsbl]\nthreshold = 1\n[[dnsbl.zones]]\nzone = "${DNSBL_ZONE}"\nweight = 1\n`,
        send: sendSource,
      },
      {
        name: 'greylisting, pass path',
        check: 'triplet passed before the run; trust_after = 0',
        plain: 'plain (smtp-source)',
        messages: n(2000),
        config: `${common}[greylist]\nenabled = true\ndelay_ms = 1\ntrust_after = 0\n`,
        verify: async (sterna) => {
          const msg = fixedMessage(KiB, FROM);
          const first = await transact(sterna.port, { from: FROM, to: TO, message: msg }, {}).catch(
            (err: unknown) => ({ code: 0, text: String(err) }),
          );
          await sleep(50);
          const second = await transact(sterna.port, { from: FROM, to: TO, message: msg });
          if (second.code !== 250)
            throw new Error(`greylisting: the retry got ${second.code} ${second.text}`);
          return `first attempt ${first.code === 0 ? 'refused at RCPT (451)' : String(first.code)}, retry 250`;
        },
        send: sendSource,
      },
    ];
    const rows: RowResult[] = [];
    let plainSource: number | null = null;
    for (const spec of sourceRows) {
      const r = await runRow(base, spec, plainSource);
      if (spec.name === 'DNSBL, cached') {
        const asked = dns.queries.filter((q) => q.name.endsWith(DNSBL_ZONE)).length;
        // The greeting probe at start-up is the first lookup; every later one is answered from the cache.
        r.verified = `${asked} DNSBL queries reached the DNS server for ${r.messages * REPEATS} timed messages and the warm-up (cached)`;
        if (asked === 0) throw new Error('DNSBL row: the DNSBL zone was never queried');
      }
      if (plainSource === null) plainSource = r.median;
      rows.push(r);
      reportRow(r);
    }

    progress('starting rspamd (loading its rules takes a while)');
    rspamd = await startRspamd();
    const rspamdPort = rspamd.port;
    rows.push(
      await runRow(
        base,
        {
          name: 'rspamd',
          check: 'rspamd /checkv2 per message, loopback',
          plain: 'plain (smtp-source)',
          messages: n(1000),
          config: `${common}[[filters]]\ntype = "rspamd"\nurl = "http://127.0.0.1:${rspamdPort}"\ntimeout_ms = 60000\n`,
          verify: async (sterna) => {
            const r = await transact(
              sterna.port,
              { from: FROM, to: TO, message: gtubeMessage() },
              { timeoutMs: 120_000 },
            );
            if (r.code !== 550) throw new Error(`rspamd row: GTUBE got ${r.code} ${r.text}`);
            return 'GTUBE refused 550';
          },
          send: sendSource,
        },
        plainSource,
      ),
    );
    await rspamd.cleanup();
    rspamd = null;

    rows.push(
      await runRow(
        base,
        {
          name: 'outbound DKIM signing',
          check: 'rsa-sha256 2048, relaxed/relaxed, client in trusted_networks',
          plain: 'plain (smtp-source)',
          messages: n(2000),
          config: `${common}[relay]\ntrusted_networks = ["127.0.0.1/32"]\n[dkim]\nsign_trusted_networks = true\n[[dkim.keys]]\ndomain = "source.bench.local"\nselector = "${SELECTOR}"\nkey_file = "${signKey.file}"\n`,
          verify: async (sterna) => {
            const before = sterna.deliveredTo('sterna.local', 'rcpt');
            const r = await transact(sterna.port, {
              from: FROM,
              to: LOCAL_RCPT,
              message: fixedMessage(KiB, FROM),
            });
            if (r.code !== 250) throw new Error(`signing row: ${r.code} ${r.text}`);
            const copy = await deliveredCopy(sterna, before);
            if (!/\r\nDKIM-Signature: [^\r]*d=source\.bench\.local/.test(`\r\n${copy}`))
              throw new Error(`signing row: no signature in the delivered copy:\n${copy.slice(0, 600)}`);
            return 'DKIM-Signature d=source.bench.local in a delivered copy';
          },
          send: sendSource,
        },
        plainSource,
      ),
    );
    for (const r of rows.slice(-2)) reportRow(r);

    // Inbound DKIM verification: the same fixed message, unsigned with the checks off, then dkimpy-signed with them on.
    for (const size of [1 * KiB, 100 * KiB]) {
      const plainMsg = fixedMessage(size, `sender@${SIGNED_DOMAIN}`);
      const signed = await dkimSign(plainMsg, { selector: SELECTOR, domain: SIGNED_DOMAIN, key: verifyKey });
      const count = n(size === KiB ? 2000 : 1000);
      const plainName = `plain (fixed ${size / KiB} KiB)`;
      const p = await runRow(
        base,
        {
          name: plainName,
          check: 'none (mail authentication off)',
          plain: '',
          messages: count,
          config: common,
          send: (port, m) => sendFixed(port, plainMsg, m),
        },
        null,
      );
      rows.push(p);
      rows.push(
        await runRow(
          base,
          {
            name: `DKIM verify, dkimpy-signed ${size / KiB} KiB`,
            check: 'SPF + DKIM (rsa-sha256 2048) + DMARC, keys from the test DNS server',
            plain: plainName,
            messages: count,
            config: common,
            mailauth: true,
            verify: async (sterna) => {
              const before = sterna.deliveredTo('sterna.local', 'rcpt');
              const r = await transact(sterna.port, {
                from: `sender@${SIGNED_DOMAIN}`,
                to: LOCAL_RCPT,
                message: signed,
              });
              if (r.code !== 250) throw new Error(`verify row: ${r.code} ${r.text}`);
              const copy = await deliveredCopy(sterna, before);
              if (!/dkim=pass/.test(copy) || !/dmarc=pass/.test(copy))
                throw new Error(`verify row: no dkim=pass and dmarc=pass:\n${copy.slice(0, 800)}`);
              return 'dkim=pass, dmarc=pass in a delivered copy';
            },
            send: (port, m) => sendFixed(port, signed, m),
          },
          p.median,
        ),
      );
      for (const r of rows.slice(-2)) reportRow(r);
    }

    const m = machine;
    process.stdout.write(
      `\nCost of the security checks (${SESSIONS} sessions, new connection per message, discard; scale ${SCALE})\n` +
        `machine: ${m.nproc} CPUs (${m.cpuModel}), kernel ${m.kernel}, node ${m.node}, load before ${m.loadBefore}\n\n` +
        `${table(rows)}\n`,
    );
    await mkdir(RESULTS_DIR, { recursive: true });
    const file = join(RESULTS_DIR, `security-${startedAt.replace(/[:.]/g, '-')}.json`);
    await writeFile(
      file,
      `${JSON.stringify({ startedAt, scale: SCALE, machine, sessions: SESSIONS, rows }, null, 2)}\n`,
    );
    progress(`results written to ${file}`);
  } finally {
    await rspamd?.cleanup();
    await dns.close();
    await rm(base, { recursive: true, force: true });
  }
}
