/**
 * The control channel of a running server: a Unix domain socket,
 * `<data_dir>/control/control.sock`, created at start and removed at stop. Only the server's
 * user may connect: the socket sits in a directory of mode 0700 owned by that user (checked at
 * start, which is refused if the directory is wider or someone else's), so the socket needs no
 * umask — the process-wide umask is never changed, as the queue manager may be creating
 * Maildirs meanwhile. Earlier versions put the socket at `<data_dir>/control.sock`; a stale one
 * there is removed at start, and `sterna queue` still tries that path when nothing answers on
 * the new one (a server of an older version still running). It
 * speaks newline-delimited JSON: one request per line, `{"op":"list"}`,
 * `{"op":"flush","qid":ID}`, `{"op":"dmarc-report"}` (send the DMARC aggregate reports now),
 * `{"op":"delete","failed":true}` (every message of the deferred
 * queue), `{"op":"hold","sender":ADDR}` / `{"op":"hold","user":U}` (every queued message of one
 * sender or user), `{"op":"limits"}` (the rate-limit counts, `sterna limits`), …, and one reply line per request, `{"ok":true,"result":…}` or
 * `{"ok":false,"error":TEXT,"code":CODE}` (code "NOT_FOUND" for an unknown queue id, "USAGE"
 * for a malformed request, "FAILED" otherwise). The `sterna queue` commands use it so that only
 * one process ever writes the spool (docs/operations.md).
 * Trust level: local and authenticated by file permissions; requests are still checked.
 */
import { chmod, lstat, mkdir, unlink } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import type { Logger } from '../observability/log.js';
import { matchingMessages } from '../queue/admin.js';
import type { QueueManager } from '../queue/manager.js';
import { MESSAGE_STATES, type PageRequest, type QueueFilter } from '../queue/queue-view.js';
import type { QueueOps } from '../cluster/queue-merge.js';

/** The socket's directory under data_dir (mode 0700) and the socket's name in it. */
export const CONTROL_DIR = 'control';
export const CONTROL_SOCKET = 'control.sock';

/** A request line longer than this closes the connection. */
const MAX_REQUEST_BYTES = 64 * 1024;

export type ControlOp =
  'list' | 'show' | 'flush' | 'hold' | 'release' | 'delete' | 'bounce' | 'limits' | 'dmarc-report';

export interface ControlRequest {
  op: ControlOp;
  qid?: string;
  domain?: string;
  /** hold only, instead of qid: every queued message of this sender (MAIL FROM). */
  sender?: string;
  /** hold only, instead of qid: every queued message of this authenticated user. */
  user?: string;
  /** delete only, instead of qid: every message of the deferred queue (admin.ts isDeferredQueued). */
  failed?: true;
  /** list only (the admin API): one filtered page instead of every message. */
  page?: { filter: QueueFilter; page: PageRequest };
}

export type ControlReply =
  { ok: true; result: unknown } | { ok: false; error: string; code: 'NOT_FOUND' | 'USAGE' | 'FAILED' };

export function controlDirPath(dataDir: string): string {
  return join(dataDir, CONTROL_DIR);
}

export function controlSocketPath(dataDir: string): string {
  return join(controlDirPath(dataDir), CONTROL_SOCKET);
}

/** Where versions before the 0700 directory put the socket: `<data_dir>/control.sock`. */
export function legacyControlSocketPath(dataDir: string): string {
  return join(dataDir, CONTROL_SOCKET);
}

/** The control socket's directory is not safe to use; the message says what to do. */
export class ControlDirError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ControlDirError';
  }
}

/**
 * Creates `<dataDir>/control` with mode 0700, or checks the one that exists: a directory (not a
 * symlink), owned by this process's user, with no permission for group or others. Anything else
 * throws ControlDirError: the socket there could be reached, or replaced, by another user.
 * Returns the directory's path.
 */
export async function prepareControlDir(dataDir: string): Promise<string> {
  const dir = controlDirPath(dataDir);
  const created = await mkdir(dir, { recursive: true, mode: 0o700 });
  // mkdir's mode passes through the umask; chmod does not, so a new directory gets exactly 0700.
  if (created !== undefined) await chmod(dir, 0o700);
  const st = await lstat(dir);
  if (!st.isDirectory())
    throw new ControlDirError(
      `${dir} (the control socket's directory) is not a directory; remove it and start again`,
    );
  const uid = process.getuid?.();
  if (uid !== undefined && st.uid !== uid)
    throw new ControlDirError(
      `${dir} (the control socket's directory) is owned by uid ${st.uid}, not by the server's user ` +
        `(uid ${uid}); remove it, or chown it to the server's user, and start again`,
    );
  if ((st.mode & 0o077) !== 0)
    throw new ControlDirError(
      `${dir} (the control socket's directory) has mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}, ` +
        `so other users could reach the control socket; it must be 0700: chmod 700 ${dir}`,
    );
  return dir;
}

const OPS: readonly ControlOp[] = [
  'list',
  'show',
  'flush',
  'hold',
  'release',
  'delete',
  'bounce',
  'limits',
  'dmarc-report',
];

/** What the control socket serves besides the queue: the rate-limit counts, the DMARC reports. */
export interface ControlExtras {
  limits?: () => Promise<unknown>;
  /** Sends the DMARC aggregate reports now (`sterna dmarc report --now`); absent when they are off. */
  dmarcReport?: () => Promise<unknown>;
}

/** Checks a decoded request line; returns the request or the reason it is refused. */
export function parseControlRequest(value: unknown): ControlRequest | string {
  if (typeof value !== 'object' || value === null) return 'a request is a JSON object';
  const op: unknown = 'op' in value ? value.op : undefined;
  const found = OPS.find((o) => o === op);
  if (found === undefined) return `unknown op ${JSON.stringify(op)}`;
  const req: ControlRequest = { op: found };
  for (const key of ['qid', 'domain', 'sender', 'user'] as const) {
    const v: unknown = key in value ? (value as Record<string, unknown>)[key] : undefined;
    if (v === undefined) continue;
    if (typeof v !== 'string' || v === '' || v.length > 255) return `${key} must be a non-empty string`;
    req[key] = v;
  }
  const failed: unknown = 'failed' in value ? value.failed : undefined;
  if (failed !== undefined) {
    if (failed !== true) return 'failed must be true';
    if (found !== 'delete') return 'failed is only for delete';
    if (req.qid !== undefined) return 'delete takes a qid or failed, not both';
    req.failed = true;
  }
  const page: unknown = 'page' in value ? value.page : undefined;
  if (page !== undefined) {
    if (found !== 'list') return 'page is only for list';
    const parsed = parsePage(page);
    if (typeof parsed === 'string') return parsed;
    req.page = parsed;
  }
  if ((req.sender !== undefined || req.user !== undefined) && (found !== 'hold' || req.qid !== undefined))
    return 'sender and user are only for hold, instead of a qid';
  if (found === 'hold' && req.sender !== undefined && req.user !== undefined)
    return 'hold takes a sender or a user, not both';
  if (found === 'hold' && (req.sender !== undefined || req.user !== undefined)) return req;
  if (
    found !== 'list' &&
    found !== 'flush' &&
    found !== 'limits' &&
    found !== 'dmarc-report' &&
    req.qid === undefined &&
    req.failed === undefined
  )
    return found === 'delete' ? 'delete needs a qid or failed' : `${found} needs a qid`;
  return req;
}

/** A field of a decoded object, unknown. */
function field(value: object, key: string): unknown {
  return key in value ? (value as Record<string, unknown>)[key] : undefined;
}

/** A list request's page (the admin API's, passed on by a cluster's primary), checked. */
function parsePage(value: unknown): NonNullable<ControlRequest['page']> | string {
  if (typeof value !== 'object' || value === null) return 'page is an object';
  const f = field(value, 'filter');
  const p = field(value, 'page');
  if (typeof f !== 'object' || f === null || typeof p !== 'object' || p === null)
    return 'page needs a filter and a page';
  const filter: QueueFilter = {};
  for (const key of ['sender', 'recipient', 'domain'] as const) {
    const v = field(f, key);
    if (v === undefined) continue;
    if (typeof v !== 'string' || v.length > 255) return `filter.${key} must be a string`;
    filter[key] = v;
  }
  const state = field(f, 'state');
  if (state !== undefined) {
    const known = MESSAGE_STATES.find((st) => st === state);
    if (known === undefined) return 'filter.state is not a message state';
    filter.state = known;
  }
  for (const key of ['minAgeMs', 'maxAgeMs'] as const) {
    const v = field(f, key);
    if (v === undefined) continue;
    if (typeof v !== 'number' || !(v >= 0)) return `filter.${key} must be a number`;
    filter[key] = v;
  }
  const limit = field(p, 'limit');
  if (typeof limit !== 'number' || !Number.isInteger(limit) || limit < 0) return 'page.limit must be a count';
  const pageRequest: PageRequest = { limit };
  const cursor = field(p, 'cursor');
  if (cursor !== undefined) {
    if (typeof cursor !== 'string') return 'page.cursor must be a string';
    pageRequest.cursor = cursor;
  }
  const offset = field(p, 'offset');
  if (offset !== undefined) {
    if (typeof offset !== 'number' || !Number.isInteger(offset) || offset < 0)
      return 'page.offset must be a count';
    pageRequest.offset = offset;
  }
  return { filter, page: pageRequest };
}

/** Removes a socket an older version left at `<data_dir>/control.sock` (stale: the spool lock is ours). */
async function removeLegacySocket(dataDir: string, log: Logger): Promise<void> {
  const legacy = legacyControlSocketPath(dataDir);
  const st = await lstat(legacy).catch(() => null);
  if (st === null || !st.isSocket()) return;
  await unlink(legacy).catch(() => undefined);
  log.info({ socket: legacy }, 'removed the control socket an earlier version left');
}

export class ControlServer {
  readonly #server: Server;
  readonly #path: string;
  readonly #log: Logger;
  readonly #ops: QueueOps;
  readonly #sockets = new Set<Socket>();

  private constructor(path: string, ops: QueueOps, log: Logger) {
    this.#path = path;
    this.#ops = ops;
    this.#log = log;
    this.#server = createServer((s) => this.#serve(s));
  }

  /**
   * Listens on `<dataDir>/control/control.sock` (after prepareControlDir), replacing a stale
   * socket file left by a crash, and removing one an older version left at the legacy path.
   * `ops` runs each request: on one process's spools (cluster/queue-merge.ts localQueueOps), or
   * on every worker's (cluster/primary.ts).
   */
  static async start(dataDir: string, ops: QueueOps, log: Logger): Promise<ControlServer> {
    await prepareControlDir(dataDir);
    const path = controlSocketPath(dataDir);
    // The spool lock is ours, so no other server uses this data directory: a socket file here is stale.
    await unlink(path).catch(() => undefined);
    await removeLegacySocket(dataDir, log);
    const cs = new ControlServer(path, ops, log);
    await new Promise<void>((resolve, reject) => {
      cs.#server.once('error', reject);
      cs.#server.listen(path, () => {
        cs.#server.off('error', reject);
        resolve();
      });
    });
    // The directory already keeps others out; the socket's own mode says the same.
    await chmod(path, 0o600);
    log.info({ socket: path }, 'control socket listening');
    return cs;
  }

  get path(): string {
    return this.#path;
  }

  /** Stops listening, ends open connections and removes the socket file. */
  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    for (const s of this.#sockets) s.end();
    const timer = setTimeout(() => {
      for (const s of this.#sockets) s.destroy();
    }, 2000);
    await closed;
    clearTimeout(timer);
    await unlink(this.#path).catch(() => undefined);
  }

  #serve(socket: Socket): void {
    this.#sockets.add(socket);
    socket.on('close', () => this.#sockets.delete(socket));
    socket.on('error', () => undefined);
    let buffered = '';
    let chain: Promise<void> = Promise.resolve();
    socket.setEncoding('utf8');
    socket.on('data', (data: string) => {
      buffered += data;
      let nl: number;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        chain = chain.then(async () => {
          const reply = await this.#handle(line);
          if (!socket.destroyed) socket.write(`${JSON.stringify(reply)}\n`);
        });
      }
      if (buffered.length > MAX_REQUEST_BYTES) socket.destroy();
    });
  }

  async #handle(line: string): Promise<ControlReply> {
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch {
      return { ok: false, error: 'a request is one line of JSON', code: 'USAGE' };
    }
    const req = parseControlRequest(value);
    if (typeof req === 'string') return { ok: false, error: req, code: 'USAGE' };
    const outcome = await this.#ops(req);
    if (outcome.ok) return { ok: true, result: outcome.result };
    if (outcome.code === 'NOT_FOUND')
      return { ok: false, error: `no message ${req.qid ?? ''} in the queue`, code: 'NOT_FOUND' };
    this.#log.error({ error: outcome.error, op: req.op, qid: req.qid }, 'control request failed');
    return { ok: false, error: outcome.error, code: outcome.code };
  }
}

/**
 * One queue operation on a running server: the control socket (`sterna queue`) and the admin
 * API (admin/api-queue.ts) both run every operation through here. Throws SpoolError NOT_FOUND
 * for an unknown queue id. `ctx`: the log for administrative actions, and the rate-limit counts
 * (`sterna limits`) when the server has them.
 */
export async function runQueueOp(
  m: QueueManager,
  req: ControlRequest,
  ctx: { log?: Logger; extras?: ControlExtras } = {},
): Promise<unknown> {
  const qid = req.qid ?? '';
  switch (req.op) {
    case 'list':
      return req.page === undefined ? m.list() : m.listPage(req.page.filter, req.page.page);
    case 'show':
      return m.show(qid);
    case 'flush': {
      if (req.qid !== undefined) await m.show(qid); // NOT_FOUND for an unknown id
      const target = req.qid !== undefined ? { qid } : req.domain !== undefined ? { domain: req.domain } : {};
      return { flushed: await m.flush(target) };
    }
    case 'hold': {
      if (req.sender === undefined && req.user === undefined) return { changed: await m.hold(qid) };
      const held: string[] = [];
      for (const e of matchingMessages(await m.list(), req)) if (await m.hold(e.qid)) held.push(e.qid);
      ctx.log?.warn(
        { sender: req.sender, user: req.user, held },
        'queue: messages held by the administrator',
      );
      return { held };
    }
    case 'limits':
      return (await ctx.extras?.limits?.()) ?? [];
    case 'dmarc-report': {
      const run = ctx.extras?.dmarcReport;
      if (run === undefined)
        throw new Error('DMARC aggregate reports are off in this server ([dmarc_reports] enabled = false)');
      return await run();
    }
    case 'release':
      return { changed: await m.release(qid) };
    case 'delete':
      if (req.failed === true) return { deleted: await m.deleteDeferred() };
      await m.delete(qid);
      return { deleted: qid };
    case 'bounce':
      return await m.bounce(qid);
    default: {
      const never: never = req.op;
      throw new Error(`unhandled op ${String(never)}`);
    }
  }
}
