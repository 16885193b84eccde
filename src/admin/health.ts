/**
 * Liveness and readiness (/healthz, /readyz). Alive: the process answers. Ready: the SMTP
 * listeners are bound, the spool directory is writable and has room, and the server is not
 * draining (SIGTERM). A load balancer or an orchestrator stops sending new connections to a
 * server that is not ready; the reason says why, in plain words.
 * Trust: internal state only; nothing from the request is used.
 */
import { constants } from 'node:fs';
import { access, statfs } from 'node:fs/promises';
import { z } from 'zod';

const NOT_READY_REASONS = [
  'starting',
  'draining',
  'spool-not-writable',
  'spool-full',
  // With workers (cluster/readiness.ts): a worker, or the primary, did not answer in time.
  'worker-not-answering',
] as const;

export type NotReadyReason = (typeof NOT_READY_REASONS)[number];

export interface ReadyState {
  ready: boolean;
  reason?: NotReadyReason;
  detail?: string;
}

const readyState = z.object({
  ready: z.boolean(),
  reason: z.enum(NOT_READY_REASONS).optional(),
  detail: z.string().optional(),
});

/** A ReadyState that came from another process (a worker, the primary), checked for shape. */
export function parseReadyState(value: unknown): ReadyState {
  const r = readyState.parse(value);
  return {
    ready: r.ready,
    ...(r.reason !== undefined ? { reason: r.reason } : {}),
    ...(r.detail !== undefined ? { detail: r.detail } : {}),
  };
}

/** What the server tells the admin listener about its own life: set by app.ts. */
export class Lifecycle {
  #listenersUp = false;
  #draining = false;

  listenersStarted(): void {
    this.#listenersUp = true;
  }

  startDraining(): void {
    this.#draining = true;
  }

  get draining(): boolean {
    return this.#draining;
  }

  /** Readiness, checking the spool directory now (an access(2) and a statfs(2)). */
  async readiness(spoolDir: string): Promise<ReadyState> {
    if (this.#draining)
      return {
        ready: false,
        reason: 'draining',
        detail: 'the server is shutting down: it finishes open transactions and takes no new ones',
      };
    if (!this.#listenersUp)
      return { ready: false, reason: 'starting', detail: 'the SMTP listeners are not bound yet' };
    try {
      await access(spoolDir, constants.W_OK);
    } catch (err) {
      const why = err instanceof Error ? err.message : String(err);
      return {
        ready: false,
        reason: 'spool-not-writable',
        detail: `the spool directory ${spoolDir} is not writable (${why}): check its owner and mode, and the file system (read-only after an error?)`,
      };
    }
    const fs = await statfs(spoolDir).catch(() => null);
    if (fs !== null && fs.bavail === 0)
      return {
        ready: false,
        reason: 'spool-full',
        detail: `the file system of ${spoolDir} is full: mail would be refused with 452 4.3.1; free some space`,
      };
    return { ready: true };
  }
}
