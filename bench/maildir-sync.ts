/**
 * Micro-benchmark of Maildir delivery alone: N deliveries of 1 KiB, C at a time, into M
 * mailboxes, with the fsync of new/ grouped across concurrent deliveries (dir-sync.ts) and
 * without (each delivery its own), alternating rounds. Prints deliveries per second, the
 * fsyncs of new/ and the process's CPU time per delivery each way. Benchmark code: trusted; works in a temporary directory.
 * Usage: node dist/bench/maildir-sync.js [deliveries=2000] [concurrency=20] [mailboxes=1] [rounds=3]
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DirSyncGroups, type DirSync } from '../src/delivery/local/dir-sync.js';
import { deliverToMaildir } from '../src/delivery/local/maildir.js';

const deliveries = Number(process.argv[2] ?? 2000);
const concurrency = Number(process.argv[3] ?? 20);
const mailboxes = Number(process.argv[4] ?? 1);
const rounds = Number(process.argv[5] ?? 3);
const body = Buffer.alloc(1024, 'x');

async function* once(): AsyncGenerator<Buffer> {
  await Promise.resolve();
  yield body;
}

interface RunResult {
  rate: number;
  dirSyncs: number;
  /** CPU time of this process (user + system, the fsyncs' kernel work included) per delivery, in µs. */
  cpuMicros: number;
}

/** One run; resolves to deliveries per second, the fsyncs of new/ it made and its CPU time. */
async function run(grouped: boolean): Promise<RunResult> {
  const root = await mkdtemp(join(tmpdir(), 'sterna-maildir-bench-'));
  try {
    const groups = new DirSyncGroups();
    let own = 0;
    const dirSync: DirSync = grouped
      ? groups.sync
      : (_dir, sync) => {
          own++;
          return sync();
        };
    const box = (i: number): string => join(root, `user${i % mailboxes}`);
    // Create the Maildirs first: the runs measure deliveries, not mkdir.
    for (let i = 0; i < mailboxes; i++) {
      await deliverToMaildir({ maildir: box(i), uniqueName: 'warm', prepend: '', body: once() });
    }
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
            { checkExisting: false, dirSync },
          );
          if (r.kind !== 'delivered') throw new Error(JSON.stringify(r));
        }
      }),
    );
    const seconds = (performance.now() - t0) / 1000;
    const cpu = process.cpuUsage(cpu0);
    return {
      rate: deliveries / seconds,
      dirSyncs: grouped ? groups.started : own,
      cpuMicros: (cpu.user + cpu.system) / deliveries,
    };
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

const results: Record<'grouped' | 'ungrouped', RunResult[]> = {
  grouped: [],
  ungrouped: [],
};
for (let r = 0; r < rounds; r++) {
  for (const mode of r % 2 === 0
    ? (['ungrouped', 'grouped'] as const)
    : (['grouped', 'ungrouped'] as const)) {
    const res = await run(mode === 'grouped');
    results[mode].push(res);
    console.log(
      `round ${r + 1} ${mode}: ${res.rate.toFixed(0)} deliveries/s, ${res.dirSyncs} fsyncs of new/, ` +
        `${res.cpuMicros.toFixed(0)} µs CPU a delivery`,
    );
  }
}
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;
for (const mode of ['ungrouped', 'grouped'] as const) {
  const rs = results[mode];
  console.log(
    `${mode}: median ${median(rs.map((x) => x.rate)).toFixed(0)} deliveries/s, ` +
      `median ${median(rs.map((x) => x.dirSyncs))} fsyncs of new/ for ${deliveries} deliveries, ` +
      `median ${median(rs.map((x) => x.cpuMicros)).toFixed(0)} µs CPU a delivery ` +
      `(${concurrency} at a time, ${mailboxes} mailbox${mailboxes === 1 ? '' : 'es'})`,
  );
}
