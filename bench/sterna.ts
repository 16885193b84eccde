/**
 * Runs Sterna for the benchmark: writes a TOML config into a temp directory (smtp listener only,
 * on a free 127.0.0.1 port; domain bench.test on the "discard" transport; log level info, the
 * default, so that every message is logged as Postfix logs it; fsync on; the mail
 * authentication checks off, as Postfix has none by default), starts
 * `node dist/src/cli/sterna.js serve` as a child with a raised descriptor limit, and reports its
 * memory and how many accepted messages its spool still holds (read from the segment files,
 * format in docs/spool.md). Queue requests (list, flush) go to the server's
 * control socket, `<data_dir>/control/control.sock` (one line of JSON each way, docs/operations.md).
 * Starting again on the same directory keeps the spool. Benchmark code: trusted, loopback only.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, fstatSync, openSync, readSync, readdirSync, type PathLike } from 'node:fs';
import { mkdir, open, readFile, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  HEADER_BYTES,
  RecordType,
  SEGMENTS_DIR,
  decodeCommitMeta,
  decodeDone,
  decodeHeaderPayload,
  parseHeader,
  PLAIN_FRAMING,
  parseSegmentFileName,
  type Framing,
} from '../src/queue/spool-format.js';
import { controlSocketPath } from '../src/server/control.js';
import { freePort, pinned, procStatusBytes, run, sleep } from './machine.js';

/** The compiled CLI, from dist/bench/ to dist/src/cli/. */
const CLI = fileURLToPath(new URL('../src/cli/sterna.js', import.meta.url));

export interface SternaOptions {
  /** Directory for config, data and log; must exist. */
  dir: string;
  /** Users (address, password) to add before the start, for local delivery. */
  users?: readonly string[];
  /** Descriptor limit for the server process. */
  fdLimit?: number;
  /** Extra `transport` entries, inline TOML (e.g. `"sink.test" = { relay = "[127.0.0.2]:2525" }`). */
  transportEntries?: string;
  /** TOML appended to the config (whole sections, e.g. `[relay]`; not `[mailauth]`). */
  extraConfig?: string;
  /** `[server] workers`; absent: Sterna's default, one per core (docs/workers.md). */
  workers?: number;
  /** `[mailauth] listeners`: the listeners whose mail is checked; none by default (see below). */
  mailauthListeners?: readonly string[];
}

export interface SternaInstance {
  port: number;
  pid: number;
  configFile: string;
  logFile: string;
  spoolDir: string;
  maildirRoot: string;
  rssBytes: () => Promise<number>;
  peakRssBytes: () => Promise<number>;
  /** Messages committed to the spool that are not finished (no DONE record yet). */
  liveMessages: () => number;
  /** Files in a local mailbox's Maildir new/ directory. */
  deliveredTo: (domain: string, localPart: string) => number;
  /** One request on the control socket (e.g. `{ op: 'flush' }`); resolves to its `result`. */
  control: (request: Readonly<Record<string, string | boolean>>) => Promise<unknown>;
  stop: () => Promise<void>;
  /** Synchronous last-resort kill, for process 'exit' handlers. */
  kill: () => void;
}

function configText(dir: string, port: number, options: SternaOptions): string {
  const extraTransport = options.transportEntries === undefined ? '' : `, ${options.transportEntries}`;
  return `# Written by bench/sterna.ts for one benchmark run.
hostname = "bench.local"
data_dir = ${JSON.stringify(join(dir, 'data'))}
local_domains = ["sterna.local"]
transport = { "bench.test" = "discard"${extraTransport} }

${options.workers === undefined ? '' : `[server]\nworkers = ${options.workers}\n\n`}[listen]
smtp = ["127.0.0.1:${port}"]
submission = []
submissions = []

[limits]
connections = 20000
connections_per_ip = 20000

[spool]
fsync = true

[log]
level = "info"
format = "json"

# SPF, DKIM, DMARC and ARC checks (on for smtp by default) ask DNS for every message; Postfix
# does none of that by default, so they are off for a like-for-like comparison.
[mailauth]
listeners = ${JSON.stringify(options.mailauthListeners ?? [])}
${options.extraConfig ?? ''}`;
}

/** Resolves once the port answers with a 220 greeting; rejects after timeoutMs. */
async function waitForGreeting(port: number, child: ChildProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null)
      throw new Error('sterna exited during start-up');
    const ok = await new Promise<boolean>((resolve) => {
      const socket = connect({ host: '127.0.0.1', port });
      socket.setTimeout(1000, () => socket.destroy());
      socket.once('data', (d) => {
        socket.end('QUIT\r\n');
        resolve(d.toString('latin1').startsWith('220'));
      });
      socket.once('error', () => resolve(false));
      socket.once('close', () => resolve(false));
    });
    if (ok) return;
    await sleep(100);
  }
  throw new Error(`sterna did not greet on 127.0.0.1:${port} within ${timeoutMs} ms`);
}

/** Reads `length` bytes at `position`, fewer at the end of the file. */
function readAt(fd: number, position: number, length: number): Buffer {
  // Only the bytes read are returned, so the buffer need not be zeroed first.
  const buf = Buffer.allocUnsafe(length);
  let got = 0;
  while (got < length) {
    const n = readSync(fd, buf, got, length - got, position + got);
    if (n === 0) break;
    got += n;
  }
  return buf.subarray(0, got);
}

/**
 * The spool directories of every worker: `spool` (worker 0, or the only process) and each
 * `spool.<k>` beside it (docs/workers.md).
 */
function workerSpools(spoolDir: string): string[] {
  const parent = dirname(spoolDir);
  const base = basename(spoolDir);
  let names: string[];
  try {
    names = readdirSync(parent);
  } catch {
    return [spoolDir];
  }
  const others = names.filter((n) => n.startsWith(`${base}.`) && /^\d+$/.test(n.slice(base.length + 1)));
  return [spoolDir, ...others.map((n) => join(parent, n))];
}

/**
 * A /proc/PID/status figure summed over the server and its direct children (the workers of
 * `[server] workers`): the whole server's memory. A peak (VmHWM) sum is the sum of each
 * process's own peak, an upper bound of the tree's.
 */
async function treeStatusBytes(pid: number, field: 'VmRSS' | 'VmHWM'): Promise<number> {
  let children: number[] = [];
  try {
    const text = await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8');
    children = text
      .trim()
      .split(/\s+/)
      .filter((t) => t !== '')
      .map(Number);
  } catch {
    // no children file: the process alone
  }
  let total = await procStatusBytes(pid, field);
  for (const c of children) total += await procStatusBytes(c, field).catch(() => 0);
  return total;
}

/**
 * Counts a spool's live messages by following the record headers of its segments (docs/spool.md):
 * a COMMIT or RELOCATE makes its qid live, a DONE ends it. Each count() reads only the records
 * appended since the previous one: appends only ever go to the newest segment, so reading each
 * segment on from where the last count stopped sees the records in the order they were written.
 * (Reading every segment from the start at each poll took 25–100 ms once the spool held a few
 * thousand messages, CPU taken from the server while the benchmark waited for its queue to
 * empty.) A segment is read up to its first incomplete or unreadable record (the tail being
 * written), and from there again next time. CRCs are not checked: this is an observer.
 */
/** How much LiveMessageCounter reads beyond the record it needs, after a record no larger… */
const FOLLOW_WINDOW_BYTES = 16 * 1024;
/** …and after a larger one (a body CHUNK), enough for the COMMIT that usually follows. */
const AFTER_LARGE_RECORD_BYTES = 1024;
/** The records whose payload LiveMessageCounter reads; it only steps over the others (CHUNKs). */
const FOLLOWED_TYPES: ReadonlySet<number> = new Set([
  RecordType.Commit,
  RecordType.Relocate,
  RecordType.Done,
]);

export class LiveMessageCounter {
  readonly #dir: string;
  readonly #live = new Set<string>();
  /** Per segment file: the offset of the next record to read, and the framing of its records. */
  readonly #read = new Map<string, { at: number; framing: Framing }>();

  constructor(spoolDir: string) {
    this.#dir = join(spoolDir, SEGMENTS_DIR);
  }

  count(): number {
    let names: string[];
    try {
      names = readdirSync(this.#dir);
    } catch {
      return this.#live.size;
    }
    const segments = names
      .map((n) => [n, parseSegmentFileName(n)] as const)
      .filter((e): e is readonly [string, number] => e[1] !== null)
      .sort((a, b) => a[1] - b[1]);
    for (const name of this.#read.keys()) if (!names.includes(name)) this.#read.delete(name);
    for (const [name] of segments) this.#follow(name);
    return this.#live.size;
  }

  #follow(name: string): void {
    let fd: number;
    try {
      fd = openSync(join(this.#dir, name), 'r');
    } catch {
      return; // deleted since readdir: everything in it was finished or moved on
    }
    const state = this.#read.get(name) ?? { at: 0, framing: PLAIN_FRAMING };
    this.#read.set(name, state);
    try {
      const size = fstatSync(fd).size;
      // Read a window at a time: a run leaves thousands of records to catch up on, and a read
      // per record took 75-135 ms after 3,000 messages of 1 KiB, time the benchmark counted as
      // the server's drain. After a large record (a 100 KiB CHUNK) the window is small, so the
      // bodies that are stepped over are not read.
      let window: Buffer = Buffer.alloc(0);
      let from = state.at;
      let readAhead = FOLLOW_WINDOW_BYTES;
      /** Makes `window` hold [at, at + length); false when the file does not (yet). */
      const hold = (at: number, length: number): boolean => {
        if (at + length > size) return false;
        if (at >= from && at + length <= from + window.length) return true;
        from = at;
        window = readAt(fd, at, Math.min(size - at, length + readAhead));
        return window.length >= length;
      };
      for (;;) {
        if (!hold(state.at, HEADER_BYTES)) return;
        const header = parseHeader(window, state.at - from, state.framing);
        if (typeof header === 'string') return;
        const start = state.at + HEADER_BYTES;
        const end = start + header.length;
        if (end > size) return; // the tail being written
        const first = state.at === 0;
        readAhead = header.length > FOLLOW_WINDOW_BYTES ? AFTER_LARGE_RECORD_BYTES : FOLLOW_WINDOW_BYTES;
        if (first || FOLLOWED_TYPES.has(header.type)) {
          if (!hold(start, header.length)) return;
          if (!this.#apply(first, header.type, window.subarray(start - from, end - from), state)) return;
        }
        state.at = end;
      }
    } finally {
      closeSync(fd);
    }
  }

  /** Applies one complete record; false when its payload does not decode (read no further). */
  #apply(first: boolean, type: number, payload: Buffer, state: { framing: Framing }): boolean {
    try {
      // The HEADER at offset 0 gives the framing (salt) of the segment's other records.
      if (first) state.framing = decodeHeaderPayload(payload).framing;
      else if (type === RecordType.Done) this.#live.delete(decodeDone(payload));
      else if (type === RecordType.Commit || type === RecordType.Relocate)
        this.#live.add(decodeCommitMeta(payload).qid);
      return true;
    } catch {
      return false;
    }
  }
}

/** Live messages in a spool, read from its segments from the start (LiveMessageCounter). */
export function countLiveMessages(spoolDir: string): number {
  return new LiveMessageCounter(spoolDir).count();
}

/** Sends one request line to a control socket and resolves to the reply's result; rejects on an error reply. */
export async function controlRequest(
  socketPath: string,
  request: Readonly<Record<string, string | boolean>>,
  timeoutMs = 30_000,
): Promise<unknown> {
  const line = await new Promise<string>((resolve, reject) => {
    const socket = connect({ path: socketPath });
    let buffered = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`control request ${JSON.stringify(request)}: no reply within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.setEncoding('utf8');
    socket.on('connect', () => socket.write(`${JSON.stringify(request)}\n`));
    socket.on('data', (d: string) => {
      buffered += d;
      const nl = buffered.indexOf('\n');
      if (nl < 0) return;
      clearTimeout(timer);
      socket.end();
      resolve(buffered.slice(0, nl));
    });
    socket.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
  const reply: unknown = JSON.parse(line);
  if (typeof reply !== 'object' || reply === null || !('ok' in reply))
    throw new Error(`control reply is not a reply: ${line.slice(0, 200)}`);
  if (reply.ok !== true) throw new Error(`control request failed: ${line.slice(0, 300)}`);
  return 'result' in reply ? reply.result : undefined;
}

function countFiles(path: PathLike): number {
  try {
    return readdirSync(path).length;
  } catch {
    return 0;
  }
}

/** Adds a user with `sterna user add ADDRESS --config FILE`, the password on stdin. */
async function addUser(configFile: string, address: string): Promise<void> {
  const r = await run(process.execPath, [CLI, 'user', 'add', address, '--config', configFile], {
    input: 'bench-password-1\n',
  });
  if (r.code !== 0) throw new Error(`sterna user add ${address}: ${r.stderr.trim()}`);
}

export async function startSterna(options: SternaOptions): Promise<SternaInstance> {
  const port = await freePort();
  const configFile = join(options.dir, 'sterna.toml');
  const logFile = join(options.dir, 'sterna.log');
  await mkdir(join(options.dir, 'data'), { recursive: true, mode: 0o700 });
  await writeFile(configFile, configText(options.dir, port, options));
  for (const u of options.users ?? []) await addUser(configFile, u);

  const log = await open(logFile, 'a');
  const fdLimit = options.fdLimit ?? 20_000;
  // taskset (when pinning) and bash both exec: the pid we hold is the server's own.
  const child = spawn(
    ...pinned('server', 'bash', [
      '-c',
      `ulimit -n ${fdLimit} && exec "$0" --max-semi-space-size=16 "$1" serve --config "$2"`,
      process.execPath,
      CLI,
      configFile,
    ]),
    { stdio: ['ignore', log.fd, log.fd] },
  );
  await log.close();
  const pid = child.pid;
  const counters = new Map<string, LiveMessageCounter>();
  if (pid === undefined) throw new Error('could not start sterna');
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const kill = (): void => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  try {
    await waitForGreeting(port, child, 30_000);
  } catch (err) {
    kill();
    throw err;
  }
  const spoolDir = join(options.dir, 'data', 'spool');
  const maildirRoot = join(options.dir, 'data', 'mailboxes');
  return {
    port,
    pid,
    configFile,
    logFile,
    spoolDir,
    maildirRoot,
    rssBytes: () => treeStatusBytes(pid, 'VmRSS'),
    peakRssBytes: () => treeStatusBytes(pid, 'VmHWM'),
    liveMessages: () => {
      let n = 0;
      for (const d of workerSpools(spoolDir)) {
        let counter = counters.get(d);
        if (counter === undefined) counters.set(d, (counter = new LiveMessageCounter(d)));
        n += counter.count();
      }
      return n;
    },
    deliveredTo: (domain, localPart) => countFiles(join(maildirRoot, domain, localPart, 'new')),
    control: (request) => controlRequest(controlSocketPath(join(options.dir, 'data')), request),
    kill,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const timer = setTimeout(kill, 10_000);
      await exited;
      clearTimeout(timer);
    },
  };
}
