/**
 * Wiring only: start Sterna from a validated config, print what it listens on, handle
 * signals (SIGHUP reload, SIGTERM/SIGINT clean shutdown), resolve with the exit code.
 */
import { ConfigError, loadConfig } from './config/load.js';
import { classifyChanges } from './config/reload.js';
import type { Config } from './config/schema.js';
import { createLogger, type Logger } from './observability/log.js';
import { startSterna } from './server/app.js';

/**
 * `file`: the configuration file the server was started with (undefined: STERNA_CONFIG or the
 * embedded defaults), read again on SIGHUP.
 */
export async function serve(config: Config, file?: string): Promise<number> {
  const log = createLogger({ level: config.log.level, format: config.log.format });
  let running;
  try {
    running = await startSterna(config, log);
  } catch (err) {
    log.fatal({ err }, 'cannot start');
    log.flush();
    return 1;
  }
  for (const a of running.addresses)
    log.info({ listener: a.listener, address: a.address, port: a.port }, 'listening');
  const smtp = running.addresses.find((a) => a.listener === 'smtp');
  if (smtp !== undefined) {
    const host = smtp.address.includes(':') ? `[${smtp.address}]` : smtp.address;
    log.info(
      `try it: swaks --server ${host}:${smtp.port} --to postmaster@${config.hostname} --from you@example.org`,
    );
  }
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
    // SIGTERM drains first (docs/operations.md): open transactions finish, new sessions get 421 4.3.2.
    process.on('SIGTERM', () => {
      if (draining || stopping) return stop('SIGTERM');
      draining = true;
      void running.drain().then(() => stop('SIGTERM'));
    });
    process.on('SIGINT', () => stop('SIGINT'));
    process.on('SIGHUP', () => {
      log.info('SIGHUP: reloading the configuration, certificates, aliases, users and lists');
      void reloadConfig(config, current, file, log).then((next) => {
        // A file that does not load keeps the last good one (its aliases stay in force).
        if (next !== undefined) current = next;
        return running.reload(current);
      });
    });
  });
}

/**
 * The configuration file read again (SIGHUP), compared with the one the server started with:
 * the keys that apply at once are applied (the log level here, the aliases by the server's
 * reload), and every other changed key is named in the log as needing a restart. A file that
 * does not load changes nothing: undefined.
 */
async function reloadConfig(
  started: Config,
  current: Config,
  file: string | undefined,
  log: Logger,
): Promise<Config | undefined> {
  let next: Config;
  try {
    next = await loadConfig(file);
  } catch (err) {
    const problems = err instanceof ConfigError ? err.problems.map((p) => p.message) : [String(err)];
    log.error({ problems }, 'SIGHUP: the configuration does not load; keeping the running one');
    return undefined;
  }
  const { applied } = classifyChanges(current, next);
  const { needRestart } = classifyChanges(started, next);
  log.level = next.log.level;
  if (applied.length > 0) log.info({ keys: applied }, 'SIGHUP: configuration keys applied');
  if (needRestart.length > 0)
    log.warn({ keys: needRestart }, 'SIGHUP: these keys changed and take effect only after a restart');
  return next;
}
