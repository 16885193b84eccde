/**
 * How many workers to run ([server] workers): the configured count, or when the key is absent one
 * fewer than the cores this process may use (os.availableParallelism()), and at least one. A
 * worker keeps more than one core busy at full load: its event loop, plus its thread pool doing
 * the file system calls (a third of its CPU time when delivering into Maildir) and the kernel's
 * network work. On 2 cores one worker was faster than two on every benchmark row, 15-35 %, and
 * used less CPU per message; on a later build of the same VM neither won clearly (docs/workers.md,
 * "How many workers").
 * Trust: internal.
 */
import { availableParallelism } from 'node:os';
import type { Config } from '../config/schema.js';

export function workerCount(config: Config): number {
  return config.server.workers ?? defaultWorkers(availableParallelism());
}

/** The default for `cores` cores: one fewer, at least one. */
export function defaultWorkers(cores: number): number {
  return Math.max(1, cores - 1);
}
