/**
 * The primary of a cluster (docs/workers.md): it holds no SMTP session and no spool. It forks
 * `count` workers (worker.ts), each a whole Sterna with its own spool, on listeners node:cluster
 * shares; restarts a worker that dies (which then recovers its spool); hosts what must be one
 * across workers: the in-process state store (shared-state.ts), the control socket `sterna
 * queue` talks to (each request fanned out to every worker and merged, queue-merge.ts), the
 * connection slots under [limits] (connection-leases.ts), and the aggregation of every worker's
 * metrics for the admin listener of worker 0. Signals: SIGTERM
 * drains every worker then exits (a second one stops at once), SIGINT stops, SIGHUP reloads
 * every worker.
 * Trust: internal; the workers are its own children.
 */
import cluster, { type Worker } from 'node:cluster';
import { AggregatorRegistry } from 'prom-client';
import { z } from 'zod';
import type { ReadyState } from '../admin/health.js';
import type { Config } from '../config/schema.js';
import { reloadConfig } from '../config/reload-file.js';
import type { Logger } from '../observability/log.js';
import {
  ControlServer,
  parseControlRequest,
  prepareControlDir,
  type ControlRequest,
} from '../server/control.js';
import { ensureTlsMaterial, tlsFilesConfig } from '../server/tls.js';
import { openStateStore } from '../state/open.js';
import type { StateStore } from '../state/store.js';
import { AcceptGate } from './accept-gate.js';
import { adminFanOut } from './admin-merge.js';
import { LeaseLedger } from './connection-leases.js';
import { TicketKeys } from '../server/ticket-keys.js';
import { IpcChannel } from './ipc.js';
import { mergeQueueOutcomes, perSpoolRequest, type QueueOutcome } from './queue-merge.js';
import { clusterReadiness } from './readiness.js';
import { serveStateRequest } from './shared-state.js';
import { answerTicketKeys, pushTicketKeys } from './ticket-keys.js';
import { parseOutcome, WORKER_COUNT_ENV, WORKER_INDEX_ENV } from './worker.js';

/** A worker that dies is restarted after this long, doubled while it keeps dying young. */
const RESTART_MIN_MS = 100;
const RESTART_MAX_MS = 10_000;
/** A worker that ran this long before dying counts as healthy: its next restart is quick again. */
const HEALTHY_AFTER_MS = 30_000;
/** Tries of a worker that never got ready at start (a spool lock still held by a dying one). */
const START_TRIES = 6;
/** Beyond the drain timeout, how long the workers get to close before they are killed. */
const CLOSE_GRACE_MS = 15_000;

interface Slot {
  index: number;
  worker: Worker | null;
  ipc: IpcChannel | null;
  startedAt: number;
  everReady: boolean;
  /** This run of the worker said it is ready (everReady: any run did). */
  ready: boolean;
  failures: number;
  /** What the worker was last told (accept-gate.ts); a worker starts out taking connections. */
  accepting: boolean;
}

const metricsJson = z.array(z.looseObject({ name: z.string() }));

export class Primary {
  readonly #config: Config;
  readonly #file: string | undefined;
  readonly #log: Logger;
  readonly #count: number;
  readonly #slots: Slot[] = [];
  #state: StateStore | null = null;
  #control: ControlServer | null = null;
  #stopping = false;
  #current: Config;
  #done: (code: number) => void = () => undefined;
  #exitCode = 0;
  #killTimer: NodeJS.Timeout | null = null;
  #finished = false;
  /** The session ticket keys of every worker (docs/workers.md, "TLS"): made and rotated here. */
  readonly #ticketKeys = new TicketKeys();
  /** Which workers take new connections; null: all of them ([server] connections_per_worker = 0). */
  readonly #gate: AcceptGate | null;
  #gateTimer: NodeJS.Timeout | null = null;
  /** The connection slots of every worker under [limits] (connection-leases.ts). */
  readonly #leases: LeaseLedger;

  constructor(config: Config, file: string | undefined, count: number, log: Logger) {
    this.#config = config;
    this.#current = config;
    this.#file = file;
    this.#count = count;
    this.#log = log.child({ role: 'primary' });
    const perWorker = config.server.connections_per_worker;
    this.#gate = perWorker > 0 ? new AcceptGate({ count, connectionsPerWorker: perWorker }) : null;
    this.#leases = new LeaseLedger({
      workers: count,
      limits: { total: config.limits.connections, perNetwork: config.limits.connections_per_ip },
      link: {
        grant: (worker, grant) => this.#slots[worker]?.ipc?.leaseGrant(grant) ?? false,
        reclaim: (worker, key) => this.#slots[worker]?.ipc?.leaseReclaim(key) ?? false,
      },
    });
  }

  /** Starts the workers; resolves with the exit code once every worker has stopped. */
  async run(): Promise<number> {
    const config = this.#config;
    const log = this.#log;
    try {
      await prepareControlDir(config.data_dir);
      // Generated once here, not raced by every worker.
      await ensureTlsMaterial(tlsFilesConfig(config), log);
      if (config.state.redis === '') this.#state = await openStateStore(config, log);
    } catch (err) {
      log.fatal({ err }, 'cannot start');
      log.flush();
      return 1;
    }
    // The kernel spreads connections (docs/workers.md, "Scheduling connections"): measured faster
    // than the primary accepting each one; NODE_CLUSTER_SCHED_POLICY still overrides it.
    if (process.env['NODE_CLUSTER_SCHED_POLICY'] === undefined) cluster.schedulingPolicy = cluster.SCHED_NONE;
    const finished = new Promise<number>((resolve) => {
      this.#done = resolve;
    });
    log.info(
      {
        workers: this.#count,
        scheduling: cluster.schedulingPolicy === cluster.SCHED_RR ? 'primary' : 'kernel',
      },
      'starting workers',
    );
    this.#ticketKeys.rotateEvery(config.tls.ticket_key_rotation_ms);
    this.#ticketKeys.onChange((keys) =>
      pushTicketKeys(
        keys,
        this.#slots.flatMap((s) => (s.worker !== null ? [s.worker] : [])),
      ),
    );
    // Caught before the first worker exists: a worker's listeners accept while the primary still
    // opens its control socket, and a SIGHUP or SIGTERM then would otherwise kill the primary.
    process.on('SIGTERM', () => this.#signal('SIGTERM'));
    process.on('SIGINT', () => this.#signal('SIGINT'));
    process.on('SIGHUP', () => this.#signal('SIGHUP'));
    for (let index = 0; index < this.#count; index++) {
      const slot: Slot = {
        index,
        worker: null,
        ipc: null,
        startedAt: 0,
        everReady: false,
        ready: false,
        failures: 0,
        accepting: true,
      };
      this.#slots.push(slot);
      this.#fork(slot);
    }
    this.#control = await ControlServer.start(config.data_dir, (req) => this.queueOp(req), log).catch(
      (err: unknown) => {
        log.error({ err }, 'control socket not available; `sterna queue` cannot reach this server');
        return null;
      },
    );
    return finished;
  }

  /** A queue operation on every worker's spools, merged (the control socket and worker 0's admin API). */
  async queueOp(req: ControlRequest): Promise<QueueOutcome> {
    const slots = this.#slots;
    if (req.op === 'limits') {
      // The counters live in the shared store: any worker's view is the whole view.
      const live = slots.find((s) => s.ipc !== null && s.everReady);
      if (live?.ipc == null) return { ok: false, code: 'FAILED', error: 'no worker is running' };
      return this.#ask(live, req);
    }
    const each = perSpoolRequest(req);
    const outcomes = await Promise.all(slots.map((s) => this.#ask(s, each)));
    return mergeQueueOutcomes(req, outcomes);
  }

  /** Ready only if every running worker is (cluster/readiness.ts). */
  readiness(): Promise<ReadyState> {
    return clusterReadiness(
      this.#slots.map((s) => {
        const ipc = s.ready ? s.ipc : null;
        return { index: s.index, ask: ipc === null ? null : (ms: number) => ipc.request('ready', null, ms) };
      }),
    );
  }

  /** Every worker's metrics, aggregated by prom-client (counters summed, gauges by their aggregator). */
  async metrics(): Promise<string> {
    const answers = await Promise.all(
      this.#slots.map((s) => s.ipc?.request('metrics', null).catch(() => null) ?? Promise.resolve(null)),
    );
    const parts = answers.flatMap((a) => (a === null ? [] : [metricsJson.parse(a)]));
    return AggregatorRegistry.aggregate(parts).metrics();
  }

  async #ask(slot: Slot, req: ControlRequest): Promise<QueueOutcome> {
    if (slot.ipc === null)
      return { ok: false, code: 'FAILED', error: `worker ${slot.index} is restarting; try again` };
    try {
      return parseOutcome(await slot.ipc.request('queue', req));
    } catch (err) {
      return {
        ok: false,
        code: 'FAILED',
        error: `worker ${slot.index}: ${err instanceof Error ? err.message : String(err)}`,
      };
    }
  }

  #fork(slot: Slot): void {
    const worker = cluster.fork({
      [WORKER_INDEX_ENV]: String(slot.index),
      [WORKER_COUNT_ENV]: String(this.#count),
    });
    const ipc = new IpcChannel((m) => worker.send(m));
    slot.worker = worker;
    slot.ipc = ipc;
    slot.startedAt = Date.now();
    const state = this.#state;
    if (state !== null) ipc.handle('state', (body) => serveStateRequest(state, body));
    ipc.handle('queue', async (body) => {
      // From worker 0's admin API; checked as the control socket checks a request.
      const req = parseControlRequest(body);
      if (typeof req === 'string') return { ok: false, code: 'USAGE', error: req } satisfies QueueOutcome;
      return this.queueOp(req);
    });
    ipc.handle('metrics', () => this.metrics());
    // /readyz on worker 0's admin listener: every running worker's readiness.
    ipc.handle('ready', () => this.readiness());
    // The dashboard's data from worker 0's admin API: every worker's, merged.
    ipc.handle('admin', (body) =>
      adminFanOut(
        this.#slots.map((s) => s.ipc),
        body,
      ),
    );
    ipc.onReady = () => {
      slot.everReady = true;
      slot.ready = true;
      this.#log.info({ worker: slot.index, pid: worker.process.pid }, 'worker ready');
      // A worker that started while the others were told to drain is told too.
      if (this.#stopping) ipc.command('drain');
      this.#gate?.setAlive(slot.index, true);
      this.#applyGate();
    };
    ipc.onLeaseAsk = (ask) => void this.#leases.ask(slot.index, ask);
    ipc.onLeaseReturn = (key, n, answered) => this.#leases.giveBack(slot.index, key, n, answered);
    ipc.onLoad = (open) => {
      this.#gate?.report(slot.index, open);
      this.#applyGate();
    };
    worker.on('message', (m: unknown) => ipc.receive(m) || answerTicketKeys(this.#ticketKeys, worker, m));
    worker.on('exit', (code, signal) => {
      ipc.close(`worker ${slot.index} exited`);
      if (slot.worker === worker) {
        slot.worker = null;
        slot.ipc = null;
        slot.ready = false;
        // Its connections are gone, and with them the slots it held.
        this.#leases.dropWorker(slot.index);
        // Its replacement starts out taking connections, as every worker does.
        slot.accepting = true;
        // The next live worker takes its place at once: a shared socket no worker listens on
        // is closed by node:cluster.
        this.#gate?.setAlive(slot.index, false);
        this.#applyGate();
      }
      this.#exited(slot, code, signal, Date.now() - slot.startedAt);
    });
  }

  /** Tells each ready worker whose part changed whether to take new connections (accept-gate.ts). */
  #applyGate(): void {
    const gate = this.#gate;
    if (gate === null || this.#stopping) return;
    for (const slot of this.#slots) {
      if (slot.ipc === null || !slot.ready) continue;
      const on = gate.accepts(slot.index);
      if (on === slot.accepting) continue;
      slot.accepting = on;
      slot.ipc.accept(on);
      this.#log.debug({ worker: slot.index, accepting: on }, 'accept gate');
    }
    // A scale-down waits for the load to stay low; nothing else may come to decide it.
    if (this.#gateTimer !== null) clearTimeout(this.#gateTimer);
    this.#gateTimer = null;
    const due = gate.recheckInMs;
    if (due !== null) {
      this.#gateTimer = setTimeout(() => {
        this.#gateTimer = null;
        gate.recheck();
        this.#applyGate();
      }, due + 1);
      this.#gateTimer.unref();
    }
  }

  #exited(slot: Slot, code: number | null, signal: string | null, ranMs: number): void {
    const log = this.#log;
    if (this.#stopping) {
      log.info({ worker: slot.index, code, signal }, 'worker stopped');
      if (code !== 0) this.#exitCode = 1;
      if (this.#slots.every((s) => s.worker === null)) void this.#finish();
      return;
    }
    if (!slot.everReady && ++slot.failures >= START_TRIES) {
      log.fatal({ worker: slot.index, code, signal }, 'a worker cannot start; stopping');
      this.#exitCode = 1;
      this.#stop('stop');
      if (this.#slots.every((s) => s.worker === null)) void this.#finish();
      return;
    }
    if (ranMs >= HEALTHY_AFTER_MS) slot.failures = 0;
    else if (slot.everReady) slot.failures++;
    const delay = Math.min(RESTART_MAX_MS, RESTART_MIN_MS * 2 ** Math.max(0, slot.failures - 1));
    log.error(
      { worker: slot.index, code, signal, restart_in_ms: delay },
      'worker died; restarting it (it recovers its spool)',
    );
    setTimeout(() => {
      if (!this.#stopping && slot.worker === null) this.#fork(slot);
    }, delay);
  }

  #signal(signal: 'SIGTERM' | 'SIGINT' | 'SIGHUP'): void {
    const log = this.#log;
    if (signal === 'SIGHUP') {
      log.info('SIGHUP: reloading every worker');
      void reloadConfig(this.#config, this.#current, this.#file, log).then((next) => {
        if (next !== undefined) this.#current = next;
        for (const s of this.#slots) s.ipc?.command('reload');
      });
      return;
    }
    log.info({ signal }, 'shutting down');
    // SIGTERM drains (docs/operations.md); a second SIGTERM, or SIGINT, stops at once.
    this.#stop(signal === 'SIGTERM' && !this.#stopping ? 'drain' : 'stop');
  }

  #stop(how: 'drain' | 'stop'): void {
    this.#stopping = true;
    if (this.#gateTimer !== null) clearTimeout(this.#gateTimer);
    this.#gateTimer = null;
    for (const s of this.#slots) s.ipc?.command(how);
    if (this.#killTimer === null) {
      this.#killTimer = setTimeout(() => {
        for (const s of this.#slots) s.worker?.process.kill('SIGKILL');
      }, this.#config.limits.drain_timeout_ms + CLOSE_GRACE_MS);
      this.#killTimer.unref();
    }
    if (this.#slots.every((s) => s.worker === null)) void this.#finish();
  }

  async #finish(): Promise<void> {
    if (this.#finished) return;
    this.#finished = true;
    if (this.#killTimer !== null) clearTimeout(this.#killTimer);
    this.#ticketKeys.stop();
    await this.#control?.close();
    this.#control = null;
    await this.#state?.close();
    this.#state = null;
    this.#log.info('stopped');
    this.#log.flush();
    this.#done(this.#exitCode);
  }
}
