/**
 * The spool's LOCK file: one Sterna process per spool directory. The file is created with
 * O_EXCL and holds the owner's pid; a lock whose pid no longer runs (the owner crashed) is
 * taken over. If the pid was reused by an unrelated process, remove LOCK by hand.
 * Trust level: internal; reads a file under the spool directory.
 */
import { readFileSync } from 'node:fs';
import { open, readFile, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { SpoolError, toSpoolError } from './spool-errors.js';

export const LOCK_FILE = 'LOCK';

/**
 * Is `pid` a live process? A zombie (dead, not yet reaped: a worker whose whole process tree was
 * SIGKILLed, docs/workers.md) is not: on Linux its /proc/PID/stat state is "Z".
 */
function processRuns(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return !isZombie(pid);
  } catch (err) {
    // EPERM: it exists but belongs to another user.
    return typeof err === 'object' && err !== null && 'code' in err && err.code === 'EPERM';
  }
}

function isZombie(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // "PID (COMM) STATE ...": COMM may hold spaces and parentheses, so read after the last ')'.
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'Z';
  } catch {
    return false; // no /proc (not Linux), or gone meanwhile: kill(pid, 0) said enough
  }
}

/** Takes the lock; returns the function that releases it. */
export async function acquireSpoolLock(dir: string): Promise<() => Promise<void>> {
  const path = join(dir, LOCK_FILE);
  const mine = `${process.pid}\n`;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const fh = await open(path, 'wx');
      try {
        await fh.writeFile(mine);
      } finally {
        await fh.close();
      }
      return async () => {
        const now = await readFile(path, 'utf8').catch(() => '');
        if (now === mine) await unlink(path).catch(() => undefined);
      };
    } catch (err) {
      if (!(typeof err === 'object' && err !== null && 'code' in err && err.code === 'EEXIST')) {
        throw toSpoolError(err, `creating ${path}`);
      }
    }
    const text = await readFile(path, 'utf8').catch(() => '');
    const pid = Number.parseInt(text.trim(), 10);
    if (Number.isInteger(pid) && pid > 0 && processRuns(pid)) {
      throw new SpoolError(
        'EIO',
        `the spool ${dir} is in use by process ${pid} (${path}); stop it, or remove ${path} if that process is not Sterna`,
      );
    }
    // Stale (owner gone) or unreadable/empty (owner died while writing it): take it over.
    await unlink(path).catch(() => undefined);
  }
  throw new SpoolError('EIO', `could not take the spool lock ${path}`);
}
