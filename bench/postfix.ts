/**
 * Runs a private Postfix instance for the side-by-side benchmark, configured by
 * test/helpers/postfix-config.ts (the writer the interop tests use too): its own config, queue
 * and data directories in a temp directory, smtpd on one free 127.0.0.1 port, no chroot, every
 * destination on the discard(8) transport, so mail is queued normally (cleanup(8)
 * fsyncs the queue file before smtpd answers 250) and then thrown away. The system instance and
 * /etc/postfix are never touched (meta_directory, the list of Postfix's own files, is only read).
 * With a relayhost (the outbound benchmark) every destination goes to smtp(8) and that host instead.
 * For the like-for-like rows (issue 11, `workConfig`) one instance does the three kinds of work:
 * bench.test to discard(8) (transport_maps), sterna.local to virtual(8) Maildirs under its own
 * virtual_mailbox_base, every other domain to smtp(8) and the relayhost (a downstream smtp-sink),
 * and optionally STARTTLS with a given certificate (tlsmgr(8) added to master.cf, otherwise
 * Postfix's default TLS settings).
 * For the queue-drain measurement the instance can defer a transport (defer_transports, set with
 * postconf -e and a reload) and flush its queue (postqueue -f), both on its own config directory.
 * Needs root (Postfix's master starts as root and drops to mail_owner).
 * Benchmark code: trusted, loopback only.
 */
import { execFileSync } from 'node:child_process';
import { appendFile, chown, mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { postfixUser, writePostfixConfig, type PostfixConfig } from '../test/helpers/postfix-config.js';
import { freePort, pinned, run, sleep } from './machine.js';

/** Extra setup on top of benchPostfixConfig: main.cf settings, files in conf/, master.cf lines. */
export interface PostfixExtra {
  settings: Readonly<Record<string, string>>;
  /** File name in the config directory -> content (lookup tables read with texthash:). */
  confFiles: Readonly<Record<string, string>>;
  /** Lines appended to master.cf. */
  masterLines: string;
  /** Directories to create owned by the postfix user (e.g. virtual_mailbox_base). */
  postfixOwnedDirs: readonly string[];
}

/** The local part and domain of the Maildir recipient, for Sterna and Postfix alike. */
export const MAILDIR_DOMAIN = 'sterna.local';
export const MAILDIR_LOCAL = 'rcpt';

/**
 * The like-for-like instance's extras (issue 11): bench.test discarded, MAILDIR_DOMAIN into
 * virtual(8) Maildirs under `<dir>/mail`, every other destination to the relayhost; with `tls`,
 * STARTTLS offered with that certificate (smtpd_tls_security_level = may) and tlsmgr(8) running
 * (the session ticket keys), every other TLS setting left at Postfix's default.
 */
export function workExtra(
  dir: string,
  uid: number,
  gid: number,
  tls: { certFile: string; keyFile: string } | undefined,
): PostfixExtra {
  const conf = join(dir, 'conf');
  const settings: Record<string, string> = {
    relay_domains: 'bench.test, sink.test',
    transport_maps: `texthash:${join(conf, 'transport')}`,
    virtual_mailbox_domains: MAILDIR_DOMAIN,
    virtual_mailbox_maps: `texthash:${join(conf, 'vmailbox')}`,
    virtual_mailbox_base: join(dir, 'mail'),
    virtual_uid_maps: `static:${uid}`,
    virtual_gid_maps: `static:${gid}`,
    virtual_minimum_uid: '1',
  };
  if (tls !== undefined) {
    settings['smtpd_tls_cert_file'] = tls.certFile;
    settings['smtpd_tls_key_file'] = tls.keyFile;
    settings['smtpd_tls_security_level'] = 'may';
  }
  return {
    settings,
    confFiles: {
      transport: 'bench.test discard:\n',
      // A trailing slash makes the mailbox a Maildir.
      vmailbox: `${MAILDIR_LOCAL}@${MAILDIR_DOMAIN} ${MAILDIR_DOMAIN}/${MAILDIR_LOCAL}/\n`,
    },
    masterLines: tls === undefined ? '' : 'tlsmgr    unix  -       -       n       1000?   1       tlsmgr\n',
    postfixOwnedDirs: [join(dir, 'mail')],
  };
}

export interface PostfixInstance {
  port: number;
  /** The virtual(8) Maildir new/ directory of MAILDIR_LOCAL@MAILDIR_DOMAIN (with workExtra). */
  maildirNew: string;
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
  /** The master(8) process, parent of every other process of the instance; null if not running. */
  masterPid: () => Promise<number | null>;
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
  // The master and every daemon it forks inherit the pinning of `postfix start`.
  const r = await run(...pinned('server', '/usr/sbin/postfix', ['-c', configDir, command]), {
    timeoutMs: 60_000,
  });
  if (r.code !== 0) throw new Error(`postfix ${command} failed (exit ${r.code}); see the instance's maillog`);
}

const QUEUES = ['incoming', 'active', 'deferred', 'hold', 'maildrop'] as const;
export type QueueName = (typeof QUEUES)[number];

/** The pid of the instance's master(8), from the pid file in the queue directory, or null. */
async function masterPid(queueDir: string): Promise<number | null> {
  const master = (await readFile(join(queueDir, 'pid', 'master.pid'), 'utf8').catch(() => '')).trim();
  return /^\d+$/.test(master) ? Number(master) : null;
}

/** The pid of the instance's qmgr(8), a child of its master, or null. */
async function qmgrPid(queueDir: string): Promise<number | null> {
  const master = await masterPid(queueDir);
  if (master === null) return null;
  const r = await run('ps', ['-o', 'pid=,comm=', '--ppid', String(master)]);
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

/**
 * Creates and starts the instance in dir (which must exist and be empty). `extra` receives the
 * postfix user's uid and gid (for virtual(8)'s mailbox owner).
 */
export async function startPostfix(
  dir: string,
  relayhost?: string,
  extra?: (uid: number, gid: number) => PostfixExtra,
): Promise<PostfixInstance> {
  const port = await freePort();
  const base = benchPostfixConfig(dir, port, relayhost);
  const { uid, gid } = await postfixUser();
  const more = extra?.(uid, gid);
  const { configDir } = await writePostfixConfig({
    ...base,
    settings: { ...base.settings, ...more?.settings },
  });
  if (more !== undefined) {
    for (const [name, content] of Object.entries(more.confFiles))
      await writeFile(join(configDir, name), content);
    if (more.masterLines !== '') await appendFile(join(configDir, 'master.cf'), more.masterLines);
    for (const d of more.postfixOwnedDirs) {
      await mkdir(d, { recursive: true, mode: 0o700 });
      await chown(d, uid, gid);
    }
  }
  const logFile = join(dir, 'maillog');
  const version = (await run('/usr/sbin/postconf', ['-d', '-h', 'mail_version'])).stdout.trim();
  // "start" runs postfix-script check-fatal, which creates the queue directories with the
  // owners and modes of meta_directory/postfix-files.
  await postfix(configDir, 'start');
  let running = true;
  const queueDir = join(dir, 'queue');
  return {
    port,
    maildirNew: join(dir, 'mail', MAILDIR_DOMAIN, MAILDIR_LOCAL, 'new'),
    version,
    configDir,
    logFile,
    queuedMessages: async () =>
      (await Promise.all(QUEUES.map((q) => countIn(join(queueDir, q))))).reduce((a, b) => a + b, 0),
    masterPid: () => masterPid(queueDir),
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
