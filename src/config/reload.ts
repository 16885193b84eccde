/**
 * What a SIGHUP may change in a running server: the configuration file is read again and
 * compared with the running one, key by key. A few keys take effect at once (the log level, the
 * aliases); every other changed key is named in the log as needing a restart, and keeps its
 * running value. Files the configuration points at (certificates, the users file, list files,
 * the alias file, JWKS) are re-read on SIGHUP whatever changed (server/app.ts reload).
 * Trust: the configuration is the administrator's; a file that does not load changes nothing.
 */
import type { Config } from './schema.js';

/** Keys (dotted paths, or a table's prefix) applied to the running server on SIGHUP. */
const RELOADABLE = ['log.level', 'aliases', 'aliases_file'];

export interface ConfigChanges {
  /** Changed keys that take effect now. */
  applied: string[];
  /** Changed keys that keep their running value until a restart. */
  needRestart: string[];
}

/** The dotted paths of the keys whose values differ between two configurations. */
export function changedKeys(a: unknown, b: unknown, prefix = ''): string[] {
  if (isTable(a) && isTable(b)) {
    const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])].sort();
    return keys.flatMap((k) => changedKeys(a[k], b[k], prefix === '' ? k : `${prefix}.${k}`));
  }
  return JSON.stringify(a) === JSON.stringify(b) ? [] : [prefix];
}

function isTable(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

/** Sorts the differences between the running and the re-read configuration. */
export function classifyChanges(running: Config, next: Config): ConfigChanges {
  const applied: string[] = [];
  const needRestart: string[] = [];
  for (const key of changedKeys(running, next)) {
    const reloadable = RELOADABLE.some((r) => key === r || key.startsWith(`${r}.`));
    (reloadable ? applied : needRestart).push(key);
  }
  return { applied, needRestart };
}
