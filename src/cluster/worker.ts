/**
 * One worker of a cluster (docs/workers.md): a whole Sterna (server/app.ts startSterna) on the
 * listeners the primary shares, with its own spool, queue manager and delivery. It takes its
 * orders from the primary over IPC (drain, stop, reload) and answers it (its queue, its
 * metrics); it asks the primary for the shared state store, and, as worker 0, which alone runs
 * the admin listener, the HTTP API and the maildrop pick-up, for every worker's queue and
 * metrics. Signals sent to the whole process group are left to the primary, which passes them
 * on, so each worker acts once. A worker whose primary is gone exits (node:cluster does it).
 * Trust: internal.
 */
import cluster from 'node:cluster';
import { z } from 'zod';
import type { Config } from '../config/schema.js';
import { reloadConfig } from '../config/reload-file.js';
import { createLogger } from '../observability/log.js';
import { partitionQueueIds } from '../queue/ids.js';
import { announceListeners } from '../server/announce.js';
import { startSterna, type RunningSterna } from '../server/app.js';
import { applyHelperThreadsNice } from '../server/helper-threads.js';
import { parseControlRequest } from '../server/control.js';
import { stateFilePath } from '../state/open.js';
import { parseAdminQuery } from './admin-merge.js';
import { startLoadReports } from './accept-gate.js';
import { LeaseHolder } from './connection-leases.js';
import { IpcChannel } from './ipc.js';
import type { QueueOutcome } from './queue-merge.js';
import { readinessFromPrimary } from './readiness.js';
import { IpcStateStore } from './shared-state.js';
import { ticketKeysFromPrimary } from './ticket-keys.js';

/** The environment variables by which the primary tells a worker who it is. */
export const WORKER_INDEX_ENV = 'STERNA_WORKER_INDEX';
export const WORKER_COUNT_ENV = 'STERNA_WORKER_COUNT';

/** After a clean stop, the longest a worker waits for its last handles before it exits anyway. */
const EXIT_GRACE_MS = 2000;

const outcome = z.union([
  z.object({ ok: z.literal(true), result: z.unknown() }),
  z.object({ ok: z.literal(false), code: z.enum(['NOT_FOUND', 'USAGE', 'FAILED']), error: z.string() }),
]);

/** A QueueOutcome as it came over IPC, checked. */
export function parseOutcome(value: unknown): QueueOutcome {
  const o = outcome.parse(value);
  return o.ok ? { ok: true, result: o.result } : o;
}

/** This worker's index and the worker count, from the environment the primary set. */
export function workerIdentity(env: NodeJS.ProcessEnv): { index: number; count: number } {
  const index = Number(env[WORKER_INDEX_ENV]);
  const count = Number(env[WORKER_COUNT_ENV]);
  if (!Number.isInteger(index) || !Number.isInteger(count) || index < 0 || index >= count)
    throw new Error(
      `a worker needs ${WORKER_INDEX_ENV} and ${WORKER_COUNT_ENV} (got ${env[WORKER_INDEX_ENV]}, ${env[WORKER_COUNT_ENV]})`,
    );
  return { index, count };
}

/** Runs this process as a worker until the primary stops it; resolves with the exit code. */
export async function runWorker(config: Config, file: string | undefined): Promise<number> {
  const { index, count } = workerIdentity(process.env);
  const log = createLogger({ level: config.log.level, format: config.log.format }).child({ worker: index });
  partitionQueueIds(index, count);
  const ipc = new IpcChannel((m) => process.send?.(m));
  process.on('message', (m) => ipc.receive(m));
  process.on('disconnect', () => ipc.close('the primary is gone'));
  // The primary passes signals on; one sent to the whole group must not act twice here.
  for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.on(signal, () => undefined);
  // Only worker 0 runs the listeners that must be one: the admin listener (one /metrics, one
  // dashboard) and the HTTP API (its idempotency keys live in one process).
  const own: Config =
    index === 0
      ? config
      : { ...config, admin: { ...config.admin, listen: [] }, http_api: { ...config.http_api, listen: [] } };
  // The connection limits hold across every worker: slots leased from the primary.
  const slots = new LeaseHolder({
    link: {
      ask: (ask) => ipc.leaseAsk(ask),
      giveBack: (key, n, answered) => ipc.leaseReturn(key, n, answered),
    },
    onAskTimeout: () =>
      log.warn('the primary did not answer for a connection slot in time; the connection was let in'),
  });
  ipc.onLeaseGrant = (grant) => slots.granted(grant);
  ipc.onLeaseReclaim = (key) => slots.reclaim(key);
  slots.start();
  let running: RunningSterna;
  try {
    // Before any TLS context exists: the keys every worker seals session tickets with.
    const ticketKeys = await ticketKeysFromPrimary(process);
    running = await startSterna(own, log, {
      index,
      count,
      state:
        config.state.redis === ''
          ? new IpcStateStore(ipc, `memory (${stateFilePath(config.data_dir)})`)
          : null,
      clusterQueue: async (req) => parseOutcome(await ipc.request('queue', req)),
      clusterMetrics: async () => z.string().parse(await ipc.request('metrics', null)),
      clusterAdmin: (q) => ipc.request('admin', q),
      clusterReadiness: () => readinessFromPrimary((ms) => ipc.request('ready', null, ms)),
      ticketKeys,
      connectionSlots: slots,
    });
  } catch (err) {
    log.fatal({ err }, 'cannot start');
    log.flush();
    return 1;
  }
  // Now that the spool is open, libuv's thread pool exists.
  applyHelperThreadsNice(config.server.helper_threads_nice, log);
  ipc.handle('queue', async (body) => {
    const req = parseControlRequest(body);
    if (typeof req === 'string') return { ok: false, code: 'USAGE', error: req } satisfies QueueOutcome;
    return running.queueOps(req);
  });
  ipc.handle('metrics', () => running.metricsJson());
  ipc.handle('admin', (body) => running.adminData(parseAdminQuery(body)));
  ipc.handle('ready', () => running.readiness());
  if (index === 0) announceListeners(log, config.hostname, running.addresses);
  // The accept gate (accept-gate.ts): this worker's load to the primary, its orders back.
  const perWorker = config.server.connections_per_worker;
  const stopReports =
    perWorker > 0
      ? startLoadReports(running.listeners, (open) => ipc.load(open), perWorker)
      : () => undefined;
  ipc.onAccept = (on) => {
    void running.listeners.setAccepting(on);
    log.debug({ accepting: on }, 'accept gate');
  };
  log.info({ queued: running.spool.size }, 'worker ready');
  ipc.ready();

  let current = config;
  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (): void => {
      if (stopping) return;
      stopping = true;
      stopReports();
      slots.stop();
      void running
        .close()
        .then(
          () => 0,
          (err: unknown) => {
            log.error({ err }, 'error during shutdown');
            return 1;
          },
        )
        .then((code) => {
          log.info('worker stopped');
          log.flush();
          resolve(code);
          // The IPC channel holds the process open: let go of it (the primary sees a clean exit).
          cluster.worker?.disconnect();
          setTimeout(() => process.exit(code), EXIT_GRACE_MS).unref();
        });
    };
    let draining = false;
    ipc.onCommand = (cmd) => {
      switch (cmd) {
        case 'drain':
          if (draining) return stop();
          draining = true;
          void running.drain().then(stop);
          return;
        case 'stop':
          return stop();
        case 'reload':
          void reloadConfig(config, current, file, log).then((next) => {
            if (next !== undefined) current = next;
            return running.reload(current);
          });
          return;
        default: {
          const never: never = cmd;
          throw new Error(`unhandled command ${String(never)}`);
        }
      }
    };
  });
}
