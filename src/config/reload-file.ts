/**
 * SIGHUP's reading of the configuration file: read again, compared with the configuration the
 * server started with; what applies at once is applied (the log level here, the rest by the
 * server's reload), what needs a restart is named in the log. Used by main.ts (one process) and
 * by every worker (cluster/worker.ts).
 * Trust: the file is the operator's; it goes through the same checks as at start.
 */
import type { Logger } from '../observability/log.js';
import { ConfigError, loadConfig } from './load.js';
import { classifyChanges } from './reload.js';
import type { Config } from './schema.js';

/**
 * The configuration file read again (SIGHUP), compared with the one the server started with:
 * the keys that apply at once are applied (the log level here, the aliases by the server's
 * reload), and every other changed key is named in the log as needing a restart. A file that
 * does not load changes nothing: undefined.
 */
export async function reloadConfig(
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
