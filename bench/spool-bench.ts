/**
 * Micro-benchmark of the spool alone: N concurrent writers each commit M messages of 1 KiB
 * with fsync on, as 20 SMTP sessions would. Prints durable messages per second and how many
 * fdatasync calls group commit needed.
 * Usage: node dist/bench/spool-bench.js [writers=20] [messagesPerWriter=1000] [bodyBytes=1024] [dir]
 * Without a dir it uses a temporary directory (under os.tmpdir(), deleted afterwards).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Envelope } from '../src/message/envelope.js';
import { Spool } from '../src/queue/spool.js';

const writers = Number(process.argv[2] ?? 20);
const perWriter = Number(process.argv[3] ?? 1000);
const bodyBytes = Number(process.argv[4] ?? 1024);
const given = process.argv[5];
const dir = given ?? (await mkdtemp(join(tmpdir(), 'sterna-spool-bench-')));

const envelope: Envelope = {
  sender: 'sender@example.com',
  mailParams: {},
  recipients: [{ address: 'rcpt@example.org', params: {} }],
  client: { ip: '127.0.0.1', port: 50000, helo: 'bench.example' },
  listener: 'smtp',
  receivedAt: Date.now(),
};
const body = Buffer.alloc(bodyBytes, 'x');

let syncs = 0;
const { spool } = await Spool.open({
  dir,
  segmentBytes: 64 * 1024 * 1024,
  fsync: true,
  onSync: () => syncs++,
});
const latencies: number[] = [];
const t0 = performance.now();
await Promise.all(
  Array.from({ length: writers }, async () => {
    for (let i = 0; i < perWriter; i++) {
      const start = performance.now();
      const w = spool.begin();
      await w.write(body);
      await w.commit({ ...envelope, receivedAt: Date.now() });
      latencies.push(performance.now() - start);
    }
  }),
);
const seconds = (performance.now() - t0) / 1000;
await spool.close();
if (!given) await rm(dir, { recursive: true, force: true });

const total = writers * perWriter;
latencies.sort((a, b) => a - b);
const pct = (p: number): string =>
  (latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] ?? 0).toFixed(2);
console.log(
  `spool: ${writers} writers x ${perWriter} messages of ${bodyBytes} B, fsync on: ` +
    `${Math.round(total / seconds)} durable messages/s; ${syncs} fdatasyncs (${(total / Math.max(1, syncs)).toFixed(1)} messages each); ` +
    `commit latency p50 ${pct(0.5)} ms, p99 ${pct(0.99)} ms`,
);
