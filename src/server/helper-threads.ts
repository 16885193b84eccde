/**
 * The event loop first: the process's helper threads run at a lower CPU priority than the
 * thread that runs JavaScript.
 *
 * A Node.js process has one thread for the event loop and several helpers: libuv's thread pool,
 * which makes every asynchronous file-system call (the spool's writes and fdatasyncs), V8's
 * platform workers (garbage collection, compilation), and Sterna's Maildir writer thread
 * (delivery/local/maildir-thread.ts, which lowers itself with lowerThisThread()). Each such call wakes a pool thread, and on a machine without an idle
 * core the kernel lets the woken thread preempt the event loop in the middle of its work: the
 * loop then waits for a file-system call it did not need to wait for, and both pay for the
 * switch. At a lower priority (a higher nice value) a woken helper waits for a free core or for
 * the loop to block instead. Measured with a new connection per message into Maildir and the
 * server on a core of its own, this gained about a fifth in throughput and cut the CPU per
 * message as much (docs/benchmarks.md, "The event loop first"; docs/workers.md).
 *
 * Linux schedules threads as tasks: setpriority(PRIO_PROCESS, tid) changes one thread, which is
 * what os.setPriority() does with a thread id. Raising a nice value needs no privilege.
 */
import { readdirSync, readlinkSync } from 'node:fs';
import os from 'node:os';
import type { Logger } from '../observability/log.js';
import { errText, isErrno } from '../queue/spool-errors.js';

/** The highest nice value, the lowest priority (Linux). */
const LOWEST = 19;

export interface HelperThreadsResult {
  /** Threads whose nice value was set. */
  lowered: number;
  /** Their nice value. */
  nice: number;
  /** Why nothing was done, or the first thread that could not be changed. */
  problem?: string;
  /** True where threads cannot be listed (no /proc/self/task: not Linux); nothing was tried. */
  unsupported?: boolean;
}

/**
 * Sets every thread of this process but the event loop's (the main thread, whose id is the
 * process id) to `offset` nice levels below the event loop, at most 19. Call it once the server
 * has started, when libuv's pool exists (its first file-system call creates it). Offset 0, or a
 * system without /proc/self/task (not Linux): nothing is changed.
 */
export function lowerHelperThreads(offset: number): HelperThreadsResult {
  lastOffset = Math.max(0, offset);
  const own = os.getPriority(process.pid);
  const nice = Math.min(LOWEST, own + offset);
  if (offset <= 0) return { lowered: 0, nice: own, problem: 'helper_threads_nice is 0' };
  let tids: string[];
  try {
    tids = readdirSync('/proc/self/task');
  } catch {
    return { lowered: 0, nice: own, problem: 'no /proc/self/task', unsupported: true };
  }
  let lowered = 0;
  let problem: string | undefined;
  for (const tid of tids) {
    if (tid === String(process.pid)) continue;
    try {
      os.setPriority(Number(tid), nice);
      lowered += 1;
    } catch (err) {
      // A thread that ended since the listing (ESRCH) is no loss; anything else is reported.
      if (isErrno(err, 'ESRCH')) continue;
      problem ??= `thread ${tid}: ${errText(err)}`;
    }
  }
  return { lowered, nice, ...(problem === undefined ? {} : { problem }) };
}

/** The offset of the last lowerHelperThreads() call in this process; 0 before any. */
let lastOffset = 0;

/**
 * The offset lowerHelperThreads() last applied: a thread started later (the Maildir writer,
 * maildir-writers.ts) passes it to lowerThisThread() so that it runs where the others do.
 */
export function helperThreadsOffset(): number {
  return lastOffset;
}

/**
 * Sets the calling thread `offset` nice levels below the event loop (at most 19), from inside a
 * worker thread. Returns the thread's id, or null where there is none to find (no
 * /proc/thread-self: not Linux); then nothing is changed. Offset 0 changes nothing.
 */
export function lowerThisThread(offset: number): number | null {
  let tid: number;
  try {
    tid = Number(readlinkSync('/proc/thread-self').split('/').pop());
  } catch {
    return null;
  }
  if (offset > 0 && Number.isInteger(tid)) {
    try {
      os.setPriority(tid, Math.min(LOWEST, os.getPriority(process.pid) + offset));
    } catch {
      // As for any helper thread that cannot be lowered: it runs at the loop's priority.
    }
  }
  return tid;
}

/** lowerHelperThreads() for `[server] helper_threads_nice`, with a log line for what it did. */
export function applyHelperThreadsNice(offset: number, log: Logger): void {
  const r = lowerHelperThreads(offset);
  if (r.unsupported === true) {
    log.debug({ problem: r.problem }, 'helper thread priorities are left as they are on this system');
  } else if (offset > 0 && r.problem !== undefined) {
    log.warn(
      { threads: r.lowered, nice: r.nice, problem: r.problem },
      'could not lower every helper thread below the event loop ([server] helper_threads_nice)',
    );
  } else if (r.lowered > 0) {
    log.debug({ threads: r.lowered, nice: r.nice }, 'helper threads run below the event loop');
  }
}
