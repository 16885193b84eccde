/**
 * `sterna queue …`: list, show, flush, hold, release, delete and bounce queued messages;
 * `delete --failed` removes the whole deferred queue (like `postsuper -d ALL deferred`).
 * A running server is asked through its control socket (server/control.ts), so that only the
 * server writes its spool; when nothing answers there the spool is opened here (Spool.open
 * takes the spool's lock, so a server cannot start meanwhile) and the command runs itself.
 * Exit codes: 0 ok, 1 failure (unknown queue id, spool locked but no server answering),
 * 2 usage.
 * Trust: run by the operator; arguments are checked anyway. Headers printed by `show` are
 * the message's own bytes (untrusted); they are written out as they are.
 */
import {
  mergeQueueOutcomes,
  outcomeOf,
  perSpoolRequest,
  resultOf,
  type QueueOutcome,
} from '../cluster/queue-merge.js';
import { workerSpoolDirs } from '../cluster/spool-dirs.js';
import { connect } from 'node:net';
import { parseArgs } from 'node:util';
import type { Config } from '../config/schema.js';
import { silentLogger } from '../observability/log.js';
import { RateLimits, type RateCount } from '../policy/rate-limits.js';
import { openStateStore } from '../state/open.js';
import {
  bounceMessage,
  deleteDeferredMessages,
  deleteMessage,
  listQueue,
  matchingMessages,
  showMessage,
  type AdminContext,
  type QueueEntry,
  type QueueMessageDetail,
  type QueueRecipient,
} from '../queue/admin.js';
import { HeldSet } from '../queue/held.js';
import { Spool, SpoolError } from '../queue/spool.js';
import {
  controlSocketPath,
  legacyControlSocketPath,
  type ControlOp,
  type ControlReply,
  type ControlRequest,
} from '../server/control.js';

export interface QueueCommandIo {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
  config: Config;
  now?: () => number;
}

const EXIT_OK = 0;
const EXIT_FAILURE = 1;
const EXIT_USAGE = 2;

/** How long a running server may take to answer (hold/delete/bounce wait for a delivery pass). */
const REPLY_TIMEOUT_MS = 10 * 60_000;

const USAGE = `Usage: sterna queue COMMAND [--config FILE] [--json] ...

Commands:
  list                      every queued message: id, age, size, sender, recipients
  show ID                   one message: envelope, recipient states, header section
  flush [ID | --domain D]   try again now (all, one message, or those for domain D)
  hold ID | --sender ADDR | --user U
                            do not deliver the message (or every message of that sender or
                            authenticated user: a stolen account's mail) until released
  release ID                deliver a held message again
  delete ID | --failed      remove the message (or every deferred one): no delivery, no bounce
  bounce ID                 fail every remaining recipient, with a bounce to the sender
  limits                    the rate-limit counts ([rate_limits]); also "sterna limits"

With a running server the commands go through its control socket
(<data_dir>/control/control.sock); otherwise they open the spool themselves.
--json prints the result as JSON.
Exit codes: 0 success, 1 failure, 2 usage error.
Run "sterna queue COMMAND --help" for details.
`;

/** The control ops `sterna queue` offers (the DMARC reports have their own command, dmarc-command.ts). */
type QueueOp = Exclude<ControlOp, 'dmarc-report'>;

const HELP: Record<QueueOp, string> = {
  list: `Usage: sterna queue list [--json]

Lists the queued messages, oldest first, like mailq: queue id, age, size and sender, then
one line per recipient with its state (pending, deferred, delivered, failed), the number
of attempts and the time of the next one, and the last error. Held messages are marked.
`,
  show: `Usage: sterna queue show ID [--json]

Prints the message's envelope (sender, parameters, client, listener, authentication, TLS),
each recipient's state and last error, and the message's header section.
`,
  flush: `Usage: sterna queue flush [ID | --domain DOMAIN] [--json]

Asks the running server to try again now, deferred recipients included: one message, the
messages with a recipient in DOMAIN still to deliver, or every waiting message. Held
messages are skipped. With no server running it does nothing: delivery happens when the
server starts.
`,
  hold: `Usage: sterna queue hold ID [--json]
       sterna queue hold --sender ADDR [--json]
       sterna queue hold --user USER [--json]

With --sender or --user, holds in one step every queued message whose envelope sender is
ADDR, or that USER submitted (SMTP AUTH, the HTTP API): what to do first when an account's
password was stolen. Prints the queue ids held. Release them one by one when cleared.

Holds the message: the server does not deliver it, not even when flushed or due, until
"sterna queue release ID". A delivery attempt already running is allowed to finish first.
The hold survives restarts.
`,
  release: `Usage: sterna queue release ID [--json]

Releases a held message; it is delivered at its recipients' retry times (or now, with
"sterna queue flush ID").
`,
  delete: `Usage: sterna queue delete ID [--json]
       sterna queue delete --failed [--json]

Removes the message from the queue. Nothing more is delivered and no bounce is sent.

With --failed instead of an ID, removes every message of the deferred queue: those not held,
with no recipient still pending and at least one deferred (waiting for a retry after a failed
attempt), like "postsuper -d ALL deferred". Prints each id deleted and their number. A running
server first lets a delivery attempt already under way end; a message delivered or changed
meanwhile is left alone. No bounce is sent ("sterna queue bounce ID" sends one).
`,
  limits: `Usage: sterna limits [--json]   (or: sterna queue limits)

Prints every rate-limit counter above zero ([rate_limits], docs/abuse.md): connections per
minute per client network, messages and recipients per hour per user, sender domain and
client network, each with the limit that applies (0: none). Asks the running server; with
none running, reads the state store itself (the file under data_dir, or Redis).
`,
  bounce: `Usage: sterna queue bounce ID [--json]

Fails every recipient not yet delivered or failed and sends one failure notice (DSN) to
the sender (none to the null sender, nor to recipients with NOTIFY=NEVER), then removes
the message.
`,
};

const OPS = Object.keys(HELP) as QueueOp[];

class UsageError extends Error {}
class CommandError extends Error {}

interface Parsed {
  op: ControlOp;
  json: boolean;
  help: boolean;
  qid?: string;
  domain?: string;
  sender?: string;
  user?: string;
  failed?: true;
}

/** Runs `sterna queue ARGV...` (ARGV without --config); resolves to the exit code. */
export async function runQueueCommand(argv: string[], io: QueueCommandIo): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined) {
    io.stderr.write(USAGE);
    return EXIT_USAGE;
  }
  if (command === '--help' || command === '-h' || command === 'help') {
    io.stdout.write(USAGE);
    return EXIT_OK;
  }
  const op = OPS.find((o) => o === command);
  if (op === undefined) {
    io.stderr.write(`sterna queue: unknown command "${command}"\n\n${USAGE}`);
    return EXIT_USAGE;
  }
  try {
    const p = parse(op, rest);
    if (p.help) {
      io.stdout.write(HELP[op]);
      return EXIT_OK;
    }
    const req: ControlRequest = {
      op,
      ...(p.qid !== undefined ? { qid: p.qid } : {}),
      ...(p.domain !== undefined ? { domain: p.domain } : {}),
      ...(p.sender !== undefined ? { sender: p.sender } : {}),
      ...(p.user !== undefined ? { user: p.user } : {}),
      ...(p.failed !== undefined ? { failed: p.failed } : {}),
    };
    const socket = controlSocketPath(io.config.data_dir);
    // A server of an older version, still running, listens at the legacy path.
    const remote =
      (await askServer(socket, req)) ?? (await askServer(legacyControlSocketPath(io.config.data_dir), req));
    let result: unknown;
    if (remote === null) {
      result = await runDirect(req, io, socket);
      if (result === NOT_RUNNING) {
        if (p.json) io.stdout.write(`${JSON.stringify({ running: false, flushed: [] })}\n`);
        else io.stdout.write('not running; delivery happens when the server starts\n');
        return EXIT_OK;
      }
    } else if (remote.ok) {
      result = remote.result;
    } else {
      if (remote.code === 'USAGE') throw new UsageError(remote.error);
      throw new CommandError(remote.error);
    }
    io.stdout.write(
      p.json ? `${JSON.stringify(result, null, 2)}\n` : render(req, result, io.now ?? Date.now),
    );
    return EXIT_OK;
  } catch (err) {
    if (err instanceof UsageError) {
      io.stderr.write(`sterna queue ${op}: ${err.message}\n\n${HELP[op]}`);
      return EXIT_USAGE;
    }
    if (err instanceof SpoolError && err.code === 'NOT_FOUND') {
      io.stderr.write(
        `sterna queue ${op}: no message ${rest.find((a) => !a.startsWith('-')) ?? ''} in the queue\n`,
      );
      return EXIT_FAILURE;
    }
    io.stderr.write(`sterna queue ${op}: ${err instanceof Error ? err.message : String(err)}\n`);
    return EXIT_FAILURE;
  }
}

function parse(op: ControlOp, rest: string[]): Parsed {
  let parsed;
  try {
    parsed = parseArgs({
      args: rest,
      options: {
        help: { type: 'boolean', short: 'h' },
        json: { type: 'boolean' },
        domain: { type: 'string' },
        sender: { type: 'string' },
        user: { type: 'string' },
        failed: { type: 'boolean' },
      },
      allowPositionals: true,
      strict: true,
    });
  } catch (err) {
    throw new UsageError(err instanceof Error ? err.message : String(err));
  }
  const { values, positionals } = parsed;
  const out: Parsed = { op, json: values.json === true, help: values.help === true };
  if (out.help) return out;
  if (values.domain !== undefined && op !== 'flush') throw new UsageError('--domain is only for flush');
  if (values.failed === true && op !== 'delete') throw new UsageError('--failed is only for delete');
  if ((values.sender !== undefined || values.user !== undefined) && op !== 'hold')
    throw new UsageError('--sender and --user are only for hold');
  if (values.sender !== undefined || values.user !== undefined) {
    if (positionals.length > 0) throw new UsageError('give a queue id, --sender or --user, not two');
    if (values.sender !== undefined && values.user !== undefined)
      throw new UsageError('give --sender or --user, not both');
    const who = values.sender ?? values.user ?? '';
    if (who === '' || who.length > 255 || /[\s<>]/.test(who))
      throw new UsageError(`"${who}" is not an address or user`);
    if (values.sender !== undefined) out.sender = values.sender;
    if (values.user !== undefined) out.user = values.user;
    return out;
  }
  if (positionals.length > 1) throw new UsageError(`unexpected argument "${positionals[1] ?? ''}"`);
  const qid = positionals[0];
  if ((op === 'list' || op === 'limits') && qid !== undefined)
    throw new UsageError(`unexpected argument "${qid}"`);
  if (op === 'flush' && qid !== undefined && values.domain !== undefined)
    throw new UsageError('give a queue id or --domain, not both');
  if (values.failed === true) {
    if (qid !== undefined) throw new UsageError('give a queue id or --failed, not both');
    out.failed = true;
    return out;
  }
  if (op !== 'list' && op !== 'flush' && op !== 'limits' && qid === undefined)
    throw new UsageError('a queue id is needed');
  if (qid !== undefined) {
    if (!/^[A-Za-z0-9._-]{1,64}$/.test(qid)) throw new UsageError(`"${qid}" is not a queue id`);
    out.qid = qid;
  }
  if (values.domain !== undefined) {
    if (!/^[A-Za-z0-9.-]{1,253}$/.test(values.domain))
      throw new UsageError(`"${values.domain}" is not a domain`);
    out.domain = values.domain.toLowerCase();
  }
  return out;
}

/** Sends req to a running server; null when nothing listens on the socket. */
export function askServer(path: string, req: ControlRequest): Promise<ControlReply | null> {
  return new Promise((resolve, reject) => {
    const socket = connect(path);
    let buffered = '';
    let settled = false;
    const finish = (fn: () => void): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      fn();
    };
    const timer = setTimeout(
      () => finish(() => reject(new CommandError(`the server did not answer on ${path}`))),
      REPLY_TIMEOUT_MS,
    );
    socket.setEncoding('utf8');
    socket.on('connect', () => socket.write(`${JSON.stringify(req)}\n`));
    socket.on('data', (data: string) => {
      buffered += data;
      const nl = buffered.indexOf('\n');
      if (nl < 0) return;
      finish(() => {
        try {
          resolve(JSON.parse(buffered.slice(0, nl)) as ControlReply); // the server's own reply format
        } catch {
          reject(new CommandError(`unreadable reply on ${path}`));
        }
      });
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED') finish(() => resolve(null));
      else finish(() => reject(new CommandError(`${path}: ${err.message}`)));
    });
    socket.on('close', () =>
      finish(() => reject(new CommandError(`the server closed ${path} without answering`))),
    );
  });
}

const NOT_RUNNING = Symbol('not running');

/** Performs req on the spool of a stopped server. */
async function runDirect(req: ControlRequest, io: QueueCommandIo, socket: string): Promise<unknown> {
  const { config } = io;
  if (req.op === 'limits') {
    const store = await openStateStore(config, silentLogger());
    try {
      return await new RateLimits(config.rate_limits, store).counts();
    } finally {
      await store.close();
    }
  }
  // Every worker's spool (docs/workers.md), merged as a running primary merges them.
  const [first, ...more] = await workerSpoolDirs(config.spool.dir, 0, 1);
  if (first === undefined || more.length === 0) return runDirectOn(config.spool.dir, req, io, socket);
  const each = perSpoolRequest(req);
  const outcomes: QueueOutcome[] = [];
  for (const dir of [first, ...more])
    outcomes.push(await outcomeOf(() => runDirectOn(dir, each, io, socket)));
  if (outcomes.some((o) => o.ok && o.result === NOT_RUNNING)) {
    if (req.qid === undefined) return NOT_RUNNING;
    const found = outcomes.find((o) => o.ok);
    return found === undefined ? resultOf(mergeQueueOutcomes(req, outcomes)) : NOT_RUNNING;
  }
  return resultOf(mergeQueueOutcomes(req, outcomes));
}

/** Performs req on one spool directory of a stopped server. */
async function runDirectOn(
  dir: string,
  req: ControlRequest,
  io: QueueCommandIo,
  socket: string,
): Promise<unknown> {
  const { config } = io;
  let spool: Spool;
  try {
    ({ spool } = await Spool.open({
      dir,
      segmentBytes: config.spool.segment_bytes,
      fsync: config.spool.fsync,
    }));
  } catch (err) {
    if (err instanceof SpoolError && /in use by process/.test(err.message))
      throw new CommandError(`no server answers on ${socket}, but the spool is locked: ${err.message}`);
    throw err;
  }
  try {
    const live = new Set(spool.list().map((m) => m.qid));
    const held = await HeldSet.load(dir, {
      fsync: config.spool.fsync,
      live: (q) => live.has(q),
    });
    const ctx: AdminContext = {
      spool,
      held,
      log: silentLogger(),
      hostname: config.hostname,
      now: io.now ?? Date.now,
    };
    const qid = req.qid ?? '';
    switch (req.op) {
      case 'list':
        return await listQueue(ctx);
      case 'show':
        return await showMessage(ctx, qid);
      case 'flush':
        if (req.qid !== undefined) await spool.read(qid);
        return NOT_RUNNING;
      case 'hold': {
        if (req.sender === undefined && req.user === undefined) {
          await spool.read(qid);
          return { changed: await held.add(qid) };
        }
        const done: string[] = [];
        for (const e of matchingMessages(await listQueue(ctx), req))
          if (await held.add(e.qid)) done.push(e.qid);
        return { held: done };
      }
      case 'release':
        await spool.read(qid);
        return { changed: await held.remove(qid) };
      case 'delete':
        if (req.failed === true) return { deleted: await deleteDeferredMessages(ctx) };
        await deleteMessage(ctx, qid);
        return { deleted: qid };
      case 'bounce':
        return await bounceMessage(ctx, qid);
      case 'dmarc-report':
        throw new CommandError('the DMARC reports are sent by the running server; start it first');
      case 'limits':
        throw new Error('limits are read from the state store, not a spool'); // runDirect answers them
      default: {
        const never: never = req.op;
        throw new Error(`unhandled op ${String(never)}`);
      }
    }
  } finally {
    await spool.close();
  }
}

// --- text output ----------------------------------------------------------------------------

function age(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86_400) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
  return `${Math.floor(s / 86_400)}d${Math.floor((s % 86_400) / 3600)}h`;
}

function recipientLine(r: QueueRecipient, now: number): string {
  let line = `    <${r.address}> ${r.status}`;
  if (r.attempts !== undefined) line += `, ${r.attempts} attempt${r.attempts === 1 ? '' : 's'}`;
  if (r.nextAttemptAt !== undefined) {
    const wait = r.nextAttemptAt - now;
    line += wait > 0 ? `, next in ${age(wait)}` : ', due now';
  }
  if (r.delayWarned === true) line += ', sender warned of the delay';
  if (r.lastError !== undefined) line += `\n        ${r.lastError}`;
  if (r.detail !== undefined) line += `\n        ${r.detail}`;
  return `${line}\n`;
}

function renderList(entries: readonly QueueEntry[], now: number): string {
  if (entries.length === 0) return 'queue is empty\n';
  let out = `${'QUEUE ID'.padEnd(20)} ${'AGE'.padStart(7)} ${'SIZE'.padStart(9)}  SENDER\n`;
  for (const e of entries) {
    const held = e.held ? '  (held)' : '';
    out += `${e.qid.padEnd(20)} ${age(now - e.receivedAt).padStart(7)} ${String(e.size).padStart(9)}  <${e.sender}>${held}\n`;
    for (const r of e.recipients) out += recipientLine(r, now);
  }
  out += `-- ${entries.length} message${entries.length === 1 ? '' : 's'}\n`;
  return out;
}

function renderShow(d: QueueMessageDetail, now: number): string {
  const env = d.envelope;
  const lines = [
    `Queue ID: ${d.qid}${d.held ? ' (held)' : ''}`,
    `Received: ${new Date(d.receivedAt).toISOString()} (${age(now - d.receivedAt)} ago)`,
    `Size: ${d.size} bytes`,
    `Sender: <${env.sender}>`,
  ];
  const mp = env.mailParams;
  const params = [
    mp.size !== undefined ? `SIZE=${mp.size}` : '',
    mp.body !== undefined ? `BODY=${mp.body}` : '',
    mp.smtputf8 === true ? 'SMTPUTF8' : '',
    mp.ret !== undefined ? `RET=${mp.ret}` : '',
    mp.envid !== undefined ? `ENVID=${mp.envid}` : '',
  ].filter((x) => x !== '');
  if (params.length > 0) lines.push(`Parameters: ${params.join(' ')}`);
  lines.push(
    `Client: ${env.client.ip}:${env.client.port} (HELO ${env.client.helo}${env.client.hostname !== undefined ? `, ${env.client.hostname}` : ''}) on ${env.listener}`,
  );
  if (env.authUser !== undefined) lines.push(`Authenticated: ${env.authUser}`);
  if (env.tls !== undefined) lines.push(`TLS: ${env.tls.version} ${env.tls.cipher}`);
  let out = `${lines.join('\n')}\nRecipients:\n`;
  for (const r of d.recipients) out += recipientLine(r, now);
  out += `Headers:\n${d.headers.replace(/\r\n/g, '\n')}`;
  return out.endsWith('\n') ? out : `${out}\n`;
}

function render(req: ControlRequest, result: unknown, now: () => number): string {
  // The shapes below are the ones runDirect and the control server return for each op.
  switch (req.op) {
    case 'list':
      return renderList(result as QueueEntry[], now());
    case 'show':
      return renderShow(result as QueueMessageDetail, now());
    case 'flush': {
      const { flushed } = result as { flushed: string[] };
      return flushed.length === 0
        ? 'nothing to flush\n'
        : `flushing ${flushed.length} message${flushed.length === 1 ? '' : 's'}: ${flushed.join(' ')}\n`;
    }
    case 'hold':
      if (req.sender !== undefined || req.user !== undefined) {
        const { held } = result as { held: string[] };
        return `${held.map((id) => `${id}: held\n`).join('')}${held.length} message${held.length === 1 ? '' : 's'} held\n`;
      }
      return (result as { changed: boolean }).changed
        ? `${req.qid ?? ''}: held\n`
        : `${req.qid ?? ''}: already held\n`;
    case 'release':
      return (result as { changed: boolean }).changed
        ? `${req.qid ?? ''}: released\n`
        : `${req.qid ?? ''}: was not held\n`;
    case 'delete': {
      if (req.failed !== true) return `${req.qid ?? ''}: deleted\n`;
      const { deleted } = result as { deleted: string[] };
      const lines = deleted.map((id) => `${id}: deleted\n`).join('');
      return `${lines}${deleted.length} message${deleted.length === 1 ? '' : 's'} deleted\n`;
    }
    case 'limits':
      return renderLimits(result as RateCount[]);
    case 'bounce':
      return (result as { bounced: boolean }).bounced
        ? `${req.qid ?? ''}: bounced to the sender\n`
        : `${req.qid ?? ''}: removed (no bounce: null sender or NOTIFY=NEVER)\n`;
    default:
      return '';
  }
}

function renderLimits(counts: readonly RateCount[]): string {
  if (counts.length === 0) return 'no rate-limit counts\n';
  let out = `${'COUNTED'.padEnd(24)} ${'SCOPE'.padEnd(14)} ${'COUNT'.padStart(9)} ${'LIMIT'.padStart(9)}  SUBJECT\n`;
  for (const c of counts) {
    const count = Number.isInteger(c.count) ? String(c.count) : c.count.toFixed(1);
    out += `${c.what.padEnd(24)} ${c.scope.padEnd(14)} ${count.padStart(9)} ${(c.limit === 0 ? '-' : String(c.limit)).padStart(9)}  ${c.subject}\n`;
  }
  return out;
}
