/**
 * Crash safety of outbound delivery (issue 4; RFC 5321 6.1): the real `sterna serve` process
 * relays messages to a receiving server on 127.0.0.2 (MX found through the test's own DNS
 * server) while it is SIGKILLed in the middle of deliveries and restarted on the same data
 * directory. At the end every message that got its 250 from Sterna reached the receiving server
 * whole, and the queue is empty. A message can be sent twice only if the kill fell between the
 * remote server's 250 and Sterna's durable record of it (Postfix has the same window); the test
 * bounds those repeats by the deliveries that can be in flight at once.
 * Test-only code: binds loopback only, writes only under os.tmpdir().
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { runQueueCommand } from '../src/cli/queue-command.js';
import { loadConfig } from '../src/config/load.js';
import { startDnsServer } from './helpers/dns-server.js';
import { dotStuff, waitFor } from './helpers/outbound.js';
import { freePort, sleep, startSternaProcess, tail, type SternaProcess } from './helpers/process.js';
import { TestClient } from './helpers/smtp-client.js';
import { startSmtpSink } from './helpers/smtp-sink.js';

const CLIENTS = 8;
const MESSAGES = 240;
/** The kill comes once this many messages were acknowledged, while deliveries are under way. */
const KILL_AT = 120;
/** Deliveries that may be in flight at once (outbound.concurrency_per_destination below). */
const PER_DESTINATION = 10;

function body(id: string): string {
  return `Subject: ${id}\r\nMessage-ID: <${id}@client.test>\r\n\r\nbody of ${id}\r\n${'x'.repeat(200)}\r\n`;
}

/** Sends one message; resolves to true once Sterna answered 250 to its end of data. */
async function sendOne(port: number, id: string): Promise<boolean> {
  let c: TestClient | undefined;
  try {
    c = await TestClient.connect(port);
    await c.expect(220);
    await c.cmd('EHLO client.test');
    if ((await c.cmd('MAIL FROM:<alice@sterna.test>')).code !== 250) return false;
    if ((await c.cmd('RCPT TO:<bob@far.test>')).code !== 250) return false;
    if ((await c.cmd('DATA')).code !== 354) return false;
    c.send(Buffer.concat([dotStuff(body(id)), Buffer.from('.\r\n')]));
    const r = await c.expect(250, '2.0.0');
    return r.code === 250;
  } catch {
    return false; // the server was killed mid-transaction: not acknowledged
  } finally {
    c?.close();
  }
}

test(
  'RFC 5321 6.1: SIGKILL during outbound deliveries loses no acknowledged message; repeats stay within the in-flight window',
  { timeout: 90_000 },
  async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'sterna-outbound-crash-'));
    const dns = await startDnsServer({
      'far.test': { MX: [{ preference: 10, exchange: 'mx.far.test' }] },
      'mx.far.test': { A: ['127.0.0.2'] },
    });
    const sink = await startSmtpSink({ host: '127.0.0.2', ehlo: ['PIPELINING', '8BITMIME'] });
    const port = await freePort();
    const configFile = path.join(dir, 'sterna.toml');
    await writeFile(
      configFile,
      `hostname = "mx.sterna.test"
data_dir = "${path.join(dir, 'data')}"
local_domains = ["sterna.test"]
[server]
workers = 1
[listen]
smtp = ["127.0.0.1:${port}"]
submission = []
submissions = []
[relay]
trusted_networks = ["127.0.0.1/32"]
[dns]
servers = ["127.0.0.1:${dns.port}"]
timeout_ms = 500
tries = 1
[outbound]
port = ${sink.port}
concurrency_per_destination = ${PER_DESTINATION}
[queue]
first_retry_ms = 200
max_backoff_ms = 400
jitter = 0
[log]
level = "info"
format = "json"
`,
    );
    const start = (n: number): Promise<SternaProcess> =>
      startSternaProcess({
        configFile,
        smtpPort: port,
        stdoutFile: path.join(dir, `out${n}.log`),
        stderrFile: path.join(dir, `err${n}.log`),
      });
    let sterna: SternaProcess | undefined = await start(1);
    const acknowledged = new Set<string>();
    try {
      // Clients send until MESSAGES were acknowledged; the server is killed at KILL_AT and
      // restarted, and the clients go on against the new process.
      let next = 0;
      let killed = false;
      let restarted: Promise<void> | null = null;
      const client = async (): Promise<void> => {
        while (acknowledged.size < MESSAGES) {
          const id = `m${String(next++).padStart(4, '0')}`;
          if (await sendOne(port, id)) acknowledged.add(id);
          else await (restarted ?? sleep(20));
          if (!killed && acknowledged.size >= KILL_AT) {
            killed = true;
            const victim = sterna;
            victim?.kill('SIGKILL');
            restarted = (async () => {
              await victim?.exited;
              sterna = await start(2);
            })();
            await restarted;
          }
        }
      };
      await Promise.all(Array.from({ length: CLIENTS }, client));
      assert.ok(killed, 'the server was killed during the run');
      const delivered = (): Map<string, number> => {
        const seen = new Map<string, number>();
        for (const m of sink.messages()) {
          const id = /^Subject: (m\d{4})\r$/m.exec(m.body.toString('latin1'))?.[1];
          if (id !== undefined) seen.set(id, (seen.get(id) ?? 0) + 1);
        }
        return seen;
      };
      await waitFor(
        () => {
          const seen = delivered();
          const missing = [...acknowledged].filter((id) => !seen.has(id));
          return `every acknowledged message at the receiving server; missing ${missing.length}: ${missing.slice(0, 10).join(' ')}`;
        },
        () => [...acknowledged].every((id) => delivered().has(id)),
        30_000,
      );
      const seen = delivered();
      for (const m of sink.messages()) {
        const text = m.body.toString('latin1');
        const id = /^Subject: (m\d{4})\r$/m.exec(text)?.[1];
        assert.ok(id !== undefined, 'every delivered message is one the clients sent');
        assert.ok(text.endsWith(body(id)), `${id} arrived whole`);
      }
      const repeats = [...seen.values()].filter((n) => n > 1).length;
      assert.ok(
        repeats <= PER_DESTINATION,
        `${repeats} messages delivered twice: more than the ${PER_DESTINATION} deliveries in flight at the kill`,
      );
      // Every message that was delivered leaves the queue: the spool drains to empty.
      const config = await loadConfig(configFile);
      const queued = async (): Promise<string> => {
        let out = '';
        const stdout = new Writable({
          write(chunk: Buffer, _enc, cb): void {
            out += chunk.toString();
            cb();
          },
        });
        await runQueueCommand(['list', '--json'], { stdout, stderr: stdout, config });
        return out.trim();
      };
      let last = '';
      await waitFor(
        () => `the queue to drain; it holds ${last}`,
        async () => (last = await queued()) === '[]',
        15_000,
      );
      const running = sterna as SternaProcess | undefined;
      const finished = await running?.stop();
      assert.equal(finished?.code, 0);
      sterna = undefined;
      assert.equal(await queued(), '[]', 'still empty when read from the stopped spool');
    } catch (err) {
      if (sterna !== undefined)
        throw new Error(`${String(err)}\n--- log tail:\n${await tail(sterna.stdoutFile)}`, { cause: err });
      throw err;
    } finally {
      await sterna?.stop();
      await sink.close();
      await dns.close();
      await rm(dir, { recursive: true, force: true });
    }
  },
);
