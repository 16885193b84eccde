/**
 * Runs Sterna as a child process, the way an operator does (`node dist/src/cli/sterna.js serve
 * --config FILE`), so a test can SIGKILL it and start it again on the same data directory.
 * stdout (the JSON log) and stderr go to files the test keeps for its failure messages; the
 * server counts as ready once its smtp port answers with a 220 greeting (RFC 5321 4.2, 4.3.1).
 * Test-only code: it trusts the server it starts, listens on nothing and binds only 127.0.0.1.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, open, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { addUser } from '../../src/auth/users.js';

/** The compiled `sterna` command (dist/src/cli/sterna.js). */
export const STERNA_CLI: string = fileURLToPath(new URL('../../src/cli/sterna.js', import.meta.url));

const DIST_SRC = fileURLToPath(new URL('../../src/', import.meta.url));
const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));

/**
 * Copies the compiled server (dist/src without tests and source maps, package.json, a link to
 * node_modules) under `dir` and returns its `sterna` command. A test that restarts Sterna several
 * times runs the same code every time, even if dist/ is rebuilt meanwhile.
 */
export async function snapshotSterna(dir: string): Promise<string> {
  const root = path.join(dir, 'sterna-snapshot');
  const copyTree = async (from: string, to: string): Promise<void> => {
    await mkdir(to, { recursive: true });
    for (const entry of await readdir(from, { withFileTypes: true })) {
      const source = path.join(from, entry.name);
      if (entry.isDirectory()) await copyTree(source, path.join(to, entry.name));
      else if (entry.name.endsWith('.js') && !entry.name.endsWith('.test.js'))
        await copyFile(source, path.join(to, entry.name));
    }
  };
  await copyTree(DIST_SRC, path.join(root, 'dist', 'src'));
  await copyFile(path.join(REPO_ROOT, 'package.json'), path.join(root, 'package.json'));
  await symlink(path.join(REPO_ROOT, 'node_modules'), path.join(root, 'node_modules'), 'dir');
  return path.join(root, 'dist', 'src', 'cli', 'sterna.js');
}

/** A temporary directory prepared for `sterna serve`, see prepareServeDir(). */
export interface ServeDir {
  dir: string;
  dataDir: string;
  configFile: string;
  /** The smtp listener's port on 127.0.0.1. */
  port: number;
}

/**
 * A temporary directory (name starting with `prefix`) with a config for `sterna serve`: one smtp
 * listener on a free 127.0.0.1 port, `domain` delivered locally, mail authentication off (no DNS
 * is asked), JSON log at info, one process unless `workers` says otherwise (each worker taking
 * connections unless `connectionsPerWorker` says otherwise); and the
 * `mailboxes` (full addresses) as users.
 */
export async function prepareServeDir(opts: {
  prefix: string;
  hostname: string;
  domain: string;
  mailboxes: readonly string[];
  /** [server] workers; default 1 (one process, as most tests need). */
  workers?: number;
  /**
   * [server] connections_per_worker; default 0 (every worker takes connections, so that a test
   * reaches each one) where Sterna's is 2 (cluster/accept-gate.ts).
   */
  connectionsPerWorker?: number;
  /** TOML appended to the config (whole sections, e.g. "[limits]\nconnections = 5\n"). */
  extra?: string;
}): Promise<ServeDir> {
  const dir = await mkdtemp(path.join(tmpdir(), opts.prefix));
  const dataDir = path.join(dir, 'data');
  const port = await freePort();
  const configFile = path.join(dir, 'sterna.toml');
  await writeFile(
    configFile,
    `hostname = "${opts.hostname}"
data_dir = "${dataDir}"
local_domains = ["${opts.domain}"]
[server]
workers = ${opts.workers ?? 1}
connections_per_worker = ${opts.connectionsPerWorker ?? 0}
[listen]
smtp = ["127.0.0.1:${port}"]
submission = []
submissions = []
[mailauth]
listeners = []
[log]
level = "info"
format = "json"
${opts.extra ?? ''}`,
  );
  for (const address of opts.mailboxes) await addUser(path.join(dataDir, 'users.json'), address, 'unused');
  return { dir, dataDir, configFile, port };
}

/** How a child process ended: its exit code, or the signal that killed it. */
export interface ProcessExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface SternaProcessOptions {
  configFile: string;
  /** The `sterna` command to run; default STERNA_CLI (see snapshotSterna()). */
  cli?: string;
  /** The port of the smtp listener in that config, polled for the 220 greeting. */
  smtpPort: number;
  /** File that receives the child's stdout (the JSON log); created or truncated. */
  stdoutFile: string;
  /** File that receives the child's stderr; created or truncated. */
  stderrFile: string;
  /** How long to wait for the greeting. Default 10 s. */
  readyTimeoutMs?: number;
  /**
   * Run it in a process group of its own and signal the whole group (a primary and its workers,
   * docs/workers.md), as an init system or `kill -9 -- -PGID` does. Default false.
   */
  group?: boolean;
  /** Extra environment variables for the child. */
  env?: Record<string, string>;
}

export interface SternaProcess {
  readonly pid: number;
  readonly stdoutFile: string;
  readonly stderrFile: string;
  /** Resolves once the child has exited and been reaped (so its spool LOCK pid is dead). */
  readonly exited: Promise<ProcessExit>;
  /** The exit, once it happened; undefined while the child runs. */
  readonly exit: ProcessExit | undefined;
  /** Sends a signal (to its group with `group`); does nothing if nothing is left to signal. */
  kill(signal: NodeJS.Signals): void;
  /** SIGTERM, then waits up to timeoutMs for a clean exit, then SIGKILL. */
  stop(timeoutMs?: number): Promise<ProcessExit>;
}

/** Ports handed out by freePort in this process: never handed out twice. */
const handedOut = new Set<number>();

/**
 * A port that was free on 127.0.0.1 a moment ago: bound to port 0, read, closed. The kernel may
 * give the same ephemeral port to two binds in a row, so a port already handed out in this
 * process is never returned again (two listeners of one test must not collide).
 */
export async function freePort(): Promise<number> {
  for (let tries = 0; tries < 50; tries++) {
    const port = await new Promise<number>((resolve, reject) => {
      const server = net.createServer();
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => {
        const addr = server.address();
        const p = typeof addr === 'object' && addr !== null ? addr.port : 0;
        server.close(() => (p > 0 ? resolve(p) : reject(new Error('no port from listen(0)'))));
      });
    });
    if (!handedOut.has(port)) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error('freePort: no new port after 50 tries');
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** `promise`'s value, or undefined once ms have passed; the timer never holds the process open. */
async function within<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<undefined>((resolve) => {
    timer = setTimeout(resolve, ms, undefined);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Starts `sterna serve --config FILE` and resolves once the smtp port greets with 220. Rejects,
 * with the tail of both output files, if the child exits first or the greeting does not come in
 * time (the child is then killed).
 */
export async function startSternaProcess(opts: SternaProcessOptions): Promise<SternaProcess> {
  const cli = opts.cli ?? STERNA_CLI;
  const out = await open(opts.stdoutFile, 'w');
  const err = await open(opts.stderrFile, 'w');
  let exitInfo: ProcessExit | undefined;
  let child: ChildProcess;
  try {
    child = spawn(process.execPath, [cli, 'serve', '--config', opts.configFile], {
      stdio: ['ignore', out.fd, err.fd],
      detached: opts.group === true,
      ...(opts.env !== undefined ? { env: { ...process.env, ...opts.env } } : {}),
    });
  } finally {
    // The child holds its own copies of the descriptors.
    await out.close();
    await err.close();
  }
  const exited = new Promise<ProcessExit>((resolve) => {
    child.once('exit', (code, signal) => {
      exitInfo = { code, signal };
      resolve(exitInfo);
    });
  });
  const pid = child.pid;
  if (pid === undefined) {
    const e = await within(exited, 1000);
    throw new Error(`could not start ${cli}: ${JSON.stringify(e)}`);
  }
  const handle: SternaProcess = {
    pid,
    stdoutFile: opts.stdoutFile,
    stderrFile: opts.stderrFile,
    exited,
    get exit() {
      return exitInfo;
    },
    kill(signal) {
      if (opts.group !== true) {
        if (exitInfo === undefined) child.kill(signal);
        return;
      }
      // The whole group, even once the leader is gone (its workers may outlive it for a moment).
      try {
        process.kill(-pid, signal);
      } catch {
        // ESRCH: nobody is left in the group.
      }
    },
    async stop(timeoutMs = 10_000) {
      handle.kill('SIGTERM');
      const done = await within(exited, timeoutMs);
      if (done !== undefined) return done;
      handle.kill('SIGKILL');
      return exited;
    },
  };
  const deadline = Date.now() + (opts.readyTimeoutMs ?? 10_000);
  for (;;) {
    if (exitInfo !== undefined) {
      throw new Error(
        `sterna exited before it was ready (${JSON.stringify(exitInfo)})\n${await outputTail(handle)}`,
      );
    }
    const greeting = await readGreeting(opts.smtpPort, 1000);
    if (greeting?.startsWith('220 ') === true) return handle;
    if (Date.now() > deadline) {
      handle.kill('SIGKILL');
      await exited;
      throw new Error(
        `sterna did not greet on 127.0.0.1:${opts.smtpPort} within ${opts.readyTimeoutMs ?? 10_000} ms` +
          ` (last answer: ${JSON.stringify(greeting)})\n${await outputTail(handle)}`,
      );
    }
    await sleep(25);
  }
}

/**
 * Starts `sterna serve` on `serve`'s config in its own process group, its logs named after `run`
 * (so a restart keeps the earlier ones), with the primary handing connections to the workers in
 * turn (NODE_CLUSTER_SCHED_POLICY=rr, read by Node): consecutive connections reach different
 * workers, where the default (the kernel's choice) may favour one (docs/workers.md).
 */
export function startRoundRobinSterna(
  serve: ServeDir,
  run: number | string,
  readyTimeoutMs: number,
): Promise<SternaProcess> {
  return startSternaProcess({
    configFile: serve.configFile,
    smtpPort: serve.port,
    stdoutFile: path.join(serve.dir, `sterna-${run}.log`),
    stderrFile: path.join(serve.dir, `sterna-${run}.err`),
    readyTimeoutMs,
    group: true,
    env: { NODE_CLUSTER_SCHED_POLICY: 'rr' },
  });
}

/**
 * Kills (SIGKILL) every server in `started`, waits for each to exit, then removes `dir`: a
 * server still running would write into the directory while it goes (ENOTEMPTY). For t.after().
 */
export async function killThenRemove(started: readonly SternaProcess[], dir: string): Promise<void> {
  for (const p of started) {
    p.kill('SIGKILL');
    await p.exited;
  }
  await rm(dir, { recursive: true, force: true });
}

/**
 * Connects to 127.0.0.1:port and returns the first reply line (without CRLF), or undefined if
 * the connection is refused, closes or nothing complete arrives within timeoutMs.
 */
export function readGreeting(port: number, timeoutMs: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    let buffer = '';
    let settled = false;
    const socket = net.connect({ host: '127.0.0.1', port });
    const finish = (line: string | undefined): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(line);
    };
    const timer = setTimeout(() => finish(undefined), timeoutMs);
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => {
      buffer += chunk;
      const end = buffer.indexOf('\r\n');
      if (end !== -1) {
        socket.write('QUIT\r\n');
        finish(buffer.slice(0, end));
      }
    });
    socket.on('error', () => finish(undefined));
    socket.on('close', () => finish(undefined));
  });
}

/** One line of Sterna's JSON log (pino: level 30 info, 40 warn, 50 error, 60 fatal). */
export interface LogRecord {
  level: number;
  msg: string;
  fields: Record<string, unknown>;
}

/** The JSON log lines of a file, and any lines that are not such JSON objects. */
export async function readJsonLog(file: string): Promise<{ records: LogRecord[]; other: string[] }> {
  const text = await readFile(file, 'utf8').catch(() => '');
  const records: LogRecord[] = [];
  const other: string[] = [];
  for (const line of text.split('\n')) {
    if (line === '') continue;
    let parsed: unknown;
    try {
      parsed = JSON.parse(line);
    } catch {
      other.push(line);
      continue;
    }
    if (typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed)) {
      const fields = parsed as Record<string, unknown>; // a JSON object, checked just above
      const { level, msg } = fields;
      if (typeof level === 'number') {
        records.push({ level, msg: typeof msg === 'string' ? msg : '', fields });
        continue;
      }
    }
    other.push(line);
  }
  return { records, other };
}

/** The last `lines` lines of a file (empty string if it cannot be read). */
export async function tail(file: string, lines = 20): Promise<string> {
  const text = await readFile(file, 'utf8').catch(() => '');
  return text
    .split('\n')
    .slice(-lines - 1)
    .join('\n');
}

/** The end of a child's stdout and stderr, for a failure message. */
export async function outputTail(p: SternaProcess, lines = 20): Promise<string> {
  return (
    `--- ${p.stdoutFile} (last ${lines} lines)\n${await tail(p.stdoutFile, lines)}\n` +
    `--- ${p.stderrFile} (last ${lines} lines)\n${await tail(p.stderrFile, lines)}`
  );
}

/**
 * Waits (up to timeoutMs) until the JSON log of `p` holds `count` records `match` accepts;
 * returns every such record, in log order. Fails the test on timeout.
 */
export async function waitForLog(
  p: Pick<SternaProcess, 'stdoutFile'>,
  match: (r: LogRecord) => boolean,
  count = 1,
  timeoutMs = 30_000,
): Promise<LogRecord[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const found = (await readJsonLog(p.stdoutFile)).records.filter(match);
    if (found.length >= count) return found;
    if (Date.now() > deadline)
      // The log's end says what the server was doing instead (a worker that never got ready...).
      throw new Error(
        `${found.length} of ${count} log lines as expected within ${timeoutMs} ms\n` +
          `--- ${p.stdoutFile} (last 30 lines)\n${await tail(p.stdoutFile, 30)}`,
      );
    await sleep(50);
  }
}
