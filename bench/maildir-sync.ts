/**
 * Micro-benchmark of Maildir delivery alone: N deliveries of 1 KiB, C at a time, into M
 * mailboxes, through Maildir writer pools of the given sizes ([local_delivery] threads),
 * alternating rounds. Prints deliveries per second, the fsyncs of new/ (shared within each
 * thread's batches) and the process's CPU time per delivery. Benchmark code: trusted; works in
 * a temporary directory.
 * Usage: node dist/bench/maildir-sync.js [deliveries=2000] [concurrency=20] [mailboxes=1] [rounds=3] [threads=1,2,4]
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deliverToMaildir } from '../src/delivery/local/maildir.js';
import { MaildirWriterThreads } from '../src/delivery/local/maildir-writers.js';

const deliveries = Number(process.argv[2] ?? 2000);
const concurrency = Number(process.argv[3] ?? 20);
const mailboxes = Number(process.argv[4] ?? 1);
const rounds = Number(process.argv[5] ?? 3);
const poolSizes = (process.argv[6] ?? '1,2,4').split(',').map(Number);
const body = Buffer.alloc(1024, 'x');

async function* once(): AsyncGenerator<Buffer> {
  await Promise.resolve();
  yield body;
}

interface RunResult {
  rate: number;
  dirSyncs: number;
  /** CPU time of this process (every thread, the fsyncs' kernel work included) per delivery, in µs. */
  cpuMicros: number;
}

/** One run through a pool of `threads` writer threads. */
async function run(threads: number): Promise<RunResult> {
  const root = await mkdtemp(join(tmpdir(), 'sterna-maildir-bench-'));
  const writer = new MaildirWriterThreads({ threads });
  try {
    const box = (i: number): string => join(root, `user${i % mailboxes}`);
    // Create the Maildirs (and start the threads) first: the runs measure deliveries, not mkdir.
    await Promise.all(
      Array.from({ length: Math.max(mailboxes, threads) }, (_, i) =>
        deliverToMaildir({ maildir: box(i), uniqueName: `warm${i}`, prepend: '', body: once() }, { writer }),
      ),
    );
    const syncs0 = writer.dirSyncs;
    let next = 0;
    const t0 = performance.now();
    const cpu0 = process.cpuUsage();
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (next < deliveries) {
          const i = next++;
          const r = await deliverToMaildir(
            {
              maildir: box(i),
              uniqueName: `Q${i}.R0.bench`,
              prepend: 'Return-Path: <a@b>\r\n',
              body: once(),
            },
            { checkExisting: false, writer },
          );
          if (r.kind !== 'delivered') throw new Error(JSON.stringify(r));
        }
      }),
    );
    const seconds = (performance.now() - t0) / 1000;
    const cpu = process.cpuUsage(cpu0);
    return {
      rate: deliveries / seconds,
      dirSyncs: writer.dirSyncs - syncs0,
      cpuMicros: (cpu.user + cpu.system) / deliveries,
    };
  } finally {
    await writer.close();
    await rm(root, { recursive: true, force: true });
  }
}

const results = new Map<number, RunResult[]>(poolSizes.map((n) => [n, []]));
for (let r = 0; r < rounds; r++) {
  for (const threads of r % 2 === 0 ? poolSizes : [...poolSizes].reverse()) {
    const res = await run(threads);
    results.get(threads)?.push(res);
    console.log(
      `round ${r + 1}, ${threads} thread${threads === 1 ? '' : 's'}: ${res.rate.toFixed(0)} deliveries/s, ` +
        `${res.dirSyncs} fsyncs of new/, ${res.cpuMicros.toFixed(0)} µs CPU a delivery`,
    );
  }
}
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;
for (const [threads, rs] of results) {
  console.log(
    `${threads} thread${threads === 1 ? '' : 's'}: median ${median(rs.map((x) => x.rate)).toFixed(0)} deliveries/s, ` +
      `median ${median(rs.map((x) => x.dirSyncs))} fsyncs of new/ for ${deliveries} deliveries, ` +
      `median ${median(rs.map((x) => x.cpuMicros)).toFixed(0)} µs CPU a delivery ` +
      `(${concurrency} at a time, ${mailboxes} mailbox${mailboxes === 1 ? '' : 'es'})`,
  );
}
