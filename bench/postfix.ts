/**
 * Runs a private Postfix instance for the side-by-side benchmark, configured by
 * test/helpers/postfix-config.ts (the writer the interop tests use too): its own config, queue
 * and data directories in a temp directory, smtpd on one free 127.0.0.1 port, no chroot, every
 * destination on the discard(8) transport, so mail is queued normally (cleanup(8)
 * fsyncs the queue file before smtpd answers 250) and then thrown away. The system instance and
 * /etc/postfix are never touched (meta_directory, the list of Postfix's own files, is only read).
 * With a relayhost (the outbound benchmark) every destination goes to smtp(8) and that host instead.
 * For the queue-drain measurement the instance can defer a transport (defer_transports, set with
 * postconf -e and a reload) and flush its queue (postqueue -f), both on its own config directory.
 * Needs root (Postfix's master starts as root and drops to mail_owner).
 * Benchmark code: trusted, loopback only.
 */
import { execFileSync } from 'node:child_process';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { writePostfixConfig, type PostfixConfig } from '../test/helpers/postfix-config.js';
import { freePort, run, sleep } from './machine.js';

export interface PostfixInstance {
  port: number;
  version: string;
  configDir: string;
  logFile: string;
  /** Queue files in incoming, active, deferred, hold and maildrop: mail not yet delivered. */
  queuedMessages: () => Promise<number>;
  /** Queue files per queue (incoming, active, deferred, hold, maildrop). */
  queueCounts: () => Promise<Record<QueueName, number>>;
  /**
   * Sets defer_transports (e.g. "smtp", or "" for none) in main.cf, runs `postfix reload` and
   * waits until a new qmgr(8) runs (the old one still has the old setting).
   */
  setDeferTransports: (transports: string) => Promise<void>;
  /** `postqueue -f`: every queued message, deferred ones included, is tried now. */
  flushQueue: () => Promise<void>;
  /** Deliveries logged with status=sent (the discard transport's "delivered"). */
  sentCount: () => Promise<number>;
  /** Deferred or bounced deliveries in the log: there must be none. */
  problemCount: () => Promise<number>;
  stop: () => Promise<void>;
  /** Synchronous stop for process 'exit' handlers. */
  stopSync: () => void;
}

/**
 * The benchmark instance's configuration in `dir`. Without relayhost every destination goes to
 * discard(8): queued durably, then thrown away. With relayhost ("[address]:port") every
 * destination goes to the smtp(8) client and that host instead: the outbound benchmark.
 */
export function benchPostfixConfig(dir: string, port: number, relayhost: string | undefined): PostfixConfig {
  const transport: Record<string, string> =
    relayhost === undefined
      ? { default_transport: 'discard', relay_transport: 'discard' }
      : {
          default_transport: 'smtp',
          relay_transport: 'smtp',
          relayhost,
          smtp_tls_security_level: 'none',
        };
  return {
    dir,
    writer: 'bench/postfix.ts',
    hostname: 'bench.local',
    domain: 'bench.local',
    port,
    settings: {
      relay_domains: 'bench.test, sink.test',
      ...transport,
      local_transport: 'discard',
      smtpd_client_connection_count_limit: '0',
      smtpd_client_connection_rate_limit: '0',
      smtpd_client_message_rate_limit: '0',
      default_process_limit: '200',
    },
  };
}

/** Runs the postfix command on this instance's configuration. */
async function postfix(configDir: string, command: string): Promise<void> {
  const r = await run('/usr/sbin/postfix', ['-c', configDir, command], { timeoutMs: 60_000 });
  if (r.code !== 0) throw new Error(`postfix ${command} failed (exit ${r.code}); see the instance's maillog`);
}

const QUEUES = ['incoming', 'active', 'deferred', 'hold', 'maildrop'] as const;
export type QueueName = (typeof QUEUES)[number];

/** The pid of the instance's qmgr(8), a child of its master (pid file in the queue directory), or null. */
async function qmgrPid(queueDir: string): Promise<number | null> {
  const master = (await readFile(join(queueDir, 'pid', 'master.pid'), 'utf8').catch(() => '')).trim();
  if (!/^\d+$/.test(master)) return null;
  const r = await run('ps', ['-o', 'pid=,comm=', '--ppid', master]);
  for (const line of r.stdout.split('\n')) {
    const [pid, comm] = line.trim().split(/\s+/);
    if (comm === 'qmgr' && pid !== undefined) return Number(pid);
  }
  return null;
}

async function countIn(dir: string): Promise<number> {
  // Queue files sit one or more hash levels deep (hash_queue_names): count files, not dirs.
  let n = 0;
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch {
    return 0;
  }
  for (const e of entries) n += e.isDirectory() ? await countIn(join(dir, e.name)) : 1;
  return n;
}

async function countLog(file: string, pattern: RegExp): Promise<number> {
  const text = await readFile(file, 'utf8').catch(() => '');
  return text.match(pattern)?.length ?? 0;
}

export async function postfixAvailable(): Promise<string | null> {
  if (process.getuid?.() !== 0) return 'Postfix comparison needs root (its master starts as root)';
  const r = await run('/usr/sbin/postconf', ['-d', '-h', 'mail_version']);
  if (r.code !== 0) return 'Postfix is not installed (/usr/sbin/postconf failed)';
  return null;
}

/** Creates and starts the instance in dir (which must exist and be empty). */
export async function startPostfix(dir: string, relayhost?: string): Promise<PostfixInstance> {
  const port = await freePort();
  const { configDir } = await writePostfixConfig(benchPostfixConfig(dir, port, relayhost));
  const logFile = join(dir, 'maillog');
  const version = (await run('/usr/sbin/postconf', ['-d', '-h', 'mail_version'])).stdout.trim();
  // "start" runs postfix-script check-fatal, which creates the queue directories with the
  // owners and modes of meta_directory/postfix-files.
  await postfix(configDir, 'start');
  let running = true;
  const queueDir = join(dir, 'queue');
  return {
    port,
    version,
    configDir,
    logFile,
    queuedMessages: async () =>
      (await Promise.all(QUEUES.map((q) => countIn(join(queueDir, q))))).reduce((a, b) => a + b, 0),
    queueCounts: async () => {
      const counts = await Promise.all(QUEUES.map((q) => countIn(join(queueDir, q))));
      const [incoming = 0, active = 0, deferred = 0, hold = 0, maildrop = 0] = counts;
      return { incoming, active, deferred, hold, maildrop };
    },
    setDeferTransports: async (transports) => {
      const set = await run('/usr/sbin/postconf', [
        '-c',
        configDir,
        '-e',
        `defer_transports = ${transports}`,
      ]);
      if (set.code !== 0) throw new Error(`postconf -e defer_transports: ${set.stderr.trim()}`);
      const before = await qmgrPid(queueDir);
      await postfix(configDir, 'reload');
      const deadline = Date.now() + 30_000;
      for (;;) {
        const now = await qmgrPid(queueDir);
        if (now !== null && now !== before) return;
        if (Date.now() > deadline) throw new Error('postfix reload: no new qmgr within 30 s');
        await sleep(50);
      }
    },
    flushQueue: async () => {
      const r = await run('/usr/sbin/postqueue', ['-c', configDir, '-f'], { timeoutMs: 30_000 });
      if (r.code !== 0) throw new Error(`postqueue -f: ${r.stderr.trim()}`);
    },
    sentCount: () => countLog(logFile, /status=sent/g),
    problemCount: () => countLog(logFile, /status=(deferred|bounced)/g),
    stop: async () => {
      if (!running) return;
      running = false;
      await postfix(configDir, 'stop');
    },
    stopSync: () => {
      if (!running) return;
      running = false;
      try {
        execFileSync('/usr/sbin/postfix', ['-c', configDir, 'stop'], { stdio: 'ignore', timeout: 15_000 });
      } catch {
        // Best effort while exiting.
      }
    },
  };
}
