/**
 * Wiring only: start Sterna from a validated config (one process, or a primary and its workers:
 * src/cluster/), print what it listens on, handle signals (SIGHUP reload, SIGTERM/SIGINT clean
 * shutdown), resolve with the exit code.
 */
import cluster from 'node:cluster';
import { workerCount } from './cluster/count.js';
import { Primary } from './cluster/primary.js';
import { runWorker } from './cluster/worker.js';
import { reloadConfig } from './config/reload-file.js';
import type { Config } from './config/schema.js';
import { createLogger } from './observability/log.js';
import { announceListeners } from './server/announce.js';
import { startSterna } from './server/app.js';
import { applyHelperThreadsNice } from './server/helper-threads.js';

/** The signals `sterna serve` handles. */
const SIGNALS = ['SIGTERM', 'SIGINT', 'SIGHUP'] as const;
type Signal = (typeof SIGNALS)[number];

/**
 * `file`: the configuration file the server was started with (undefined: STERNA_CONFIG or the
 * embedded defaults), read again on SIGHUP.
 */
export async function serve(config: Config, file?: string): Promise<number> {
  // [server] workers (docs/workers.md): a primary and its workers; 1 runs as one process.
  if (cluster.isWorker) return runWorker(config, file);
  const workers = workerCount(config);
  const log = createLogger({ level: config.log.level, format: config.log.format });
  if (workers > 1) return new Primary(config, file, workers, log).run();
  // Signals are caught from here on: the listeners accept before start-up has finished (the
  // HTTP API, the control socket and the admin listener come after them), and a SIGHUP
  // (logrotate, `systemctl reload`) or SIGTERM arriving then would take its default action and
  // kill the process. One that arrives early is acted on once the server runs.
  const early: Signal[] = [];
  let onSignal = (signal: Signal): void => {
    log.info({ signal }, 'signal during start-up: acted on once the server runs');
    early.push(signal);
  };
  for (const signal of SIGNALS) process.on(signal, () => onSignal(signal));
  let running;
  try {
    running = await startSterna(config, log);
  } catch (err) {
    log.fatal({ err }, 'cannot start');
    log.flush();
    return 1;
  }
  // Now that the spool is open, libuv's thread pool exists.
  applyHelperThreadsNice(config.server.helper_threads_nice, log);
  announceListeners(log, config.hostname, running.addresses);
  /** The configuration as last read successfully (SIGHUP). */
  let current = config;
  return new Promise<number>((resolve) => {
    let stopping = false;
    /** Set while SIGTERM drains; a second SIGTERM (or SIGINT) stops at once. */
    let draining = false;
    const stop = (signal: string): void => {
      if (stopping) return;
      stopping = true;
      log.info({ signal }, 'shutting down');
      running
        .close()
        .then(() => {
          log.info('stopped');
          log.flush();
          resolve(0);
        })
        .catch((err: unknown) => {
          log.error({ err }, 'error during shutdown');
          resolve(1);
        });
    };
    onSignal = (signal) => {
      switch (signal) {
        case 'SIGTERM':
          // Drains first (docs/operations.md): open transactions finish, new sessions get 421 4.3.2.
          if (draining || stopping) return stop('SIGTERM');
          draining = true;
          void running.drain().then(() => stop('SIGTERM'));
          return;
        case 'SIGINT':
          return stop('SIGINT');
        case 'SIGHUP':
          log.info('SIGHUP: reloading the configuration, certificates, aliases, users and lists');
          void reloadConfig(config, current, file, log).then((next) => {
            // A file that does not load keeps the last good one (its aliases stay in force).
            if (next !== undefined) current = next;
            return running.reload(current);
          });
          return;
        default: {
          const never: never = signal;
          throw new Error(`unhandled signal ${String(never)}`);
        }
      }
    };
    for (const signal of early.splice(0)) onSignal(signal);
  });
}
