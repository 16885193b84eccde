/**
 * Which spool directories a worker owns (docs/workers.md). Each worker has its own spool, so
 * each message belongs to one spool and so to one worker (exactly-once delivery). Worker 0
 * keeps the configured directory (spool.dir), so the data of a single-process Sterna stays
 * valid; worker k > 0 uses the sibling `<spool.dir>.<k>`. When Sterna starts with fewer
 * workers than the spools on disk, spool k (k >= count) is adopted by worker k % count, which
 * delivers what it holds (and the bounces of it) until it is empty: no mail is orphaned.
 * Trust: internal; reads the names in spool.dir's parent directory.
 */
import { readdir } from 'node:fs/promises';
import { basename, dirname } from 'node:path';

/** The spool directory of worker `index`: spool.dir itself for 0, `<spool.dir>.<index>` after. */
export function workerSpoolDir(base: string, index: number): string {
  const dir = base.replace(/\/+$/, '') || '/';
  return index === 0 ? dir : `${dir}.${index}`;
}

/** The worker indexes whose spool directories exist beside `base` (0 always counts), in order. */
export async function existingSpoolIndexes(base: string): Promise<number[]> {
  const dir = base.replace(/\/+$/, '') || '/';
  const name = basename(dir);
  const entries = await readdir(dirname(dir), { withFileTypes: true }).catch(() => []);
  const found = new Set<number>([0]);
  const re = /^\.([1-9][0-9]{0,3})$/;
  for (const e of entries) {
    if (!e.isDirectory() || !e.name.startsWith(name)) continue;
    const m = re.exec(e.name.slice(name.length));
    if (m?.[1] !== undefined) found.add(Number(m[1]));
  }
  return [...found].sort((a, b) => a - b);
}

/**
 * The spools worker `index` of `count` opens: its own first, then every existing spool
 * k >= count with k % count === index (left by an earlier run with more workers).
 */
export function spoolsOfWorker(index: number, count: number, existing: readonly number[]): number[] {
  return [index, ...existing.filter((k) => k >= count && k % count === index)];
}

/** The spool directories worker `index` of `count` opens, its own first. */
export async function workerSpoolDirs(base: string, index: number, count: number): Promise<string[]> {
  return spoolsOfWorker(index, count, await existingSpoolIndexes(base)).map((k) => workerSpoolDir(base, k));
}
