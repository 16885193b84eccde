/**
 * Where Maildir deliveries are carried out: MaildirWriterThreads runs MaildirWriter
 * (maildir-write.ts) in worker threads, which is how the server delivers; InlineWriter runs it
 * on the calling thread, for tests that inject file-system errors into it.
 *
 * Why threads: a delivery is six file-system calls, and each asynchronous call costs the event
 * loop a thread-pool round trip (a promise, a callback, a wake-up of a pool thread). Measured
 * with a new connection per message into Maildir, those round trips were about a fifth of the
 * event loop's time per message; one message to a writer thread and one answer per batch cost a
 * tenth of that (docs/local-delivery.md, "The Maildir writer thread"). Trust: internal.
 */
import { Worker } from 'node:worker_threads';
import { helperThreadsOffset } from '../../server/helper-threads.js';
import type { WriterBatchReply, WriterThreadStarted } from './maildir-thread.js';
import {
  describe,
  MaildirWriter,
  type MaildirSyncFs,
  type WriterReply,
  type WriterRequest,
} from './maildir-write.js';

/**
 * Carries out one request of a delivery. A request's `data` is handed over: its ArrayBuffer may
 * be transferred to another thread, so the caller must own it and not touch it again.
 */
export interface MaildirWriterPort {
  send(req: WriterRequest): Promise<WriterReply>;
}

/** MaildirWriter on the calling thread: every request runs at once, in synchronous calls. */
export class InlineWriter implements MaildirWriterPort {
  readonly #writer: MaildirWriter;

  constructor(fs?: MaildirSyncFs) {
    this.#writer = new MaildirWriter(fs);
  }

  async send(req: WriterRequest): Promise<WriterReply> {
    const [reply] = await this.#writer.run([req]);
    if (reply === undefined) throw new Error(`no reply to ${req.kind} ${req.id}`);
    return reply;
  }
}

interface WriterThread {
  worker: Worker;
  /** The requests sent to it and not yet answered, by delivery id. */
  pending: Map<number, (reply: WriterReply) => void>;
  tid: number | null;
}

export interface WriterThreadsOptions {
  /** Threads at most; each runs one batch at a time. Started when first needed. */
  threads: number;
}

/** A pool of Maildir writer threads; a delivery stays on the thread its `begin` went to. */
export class MaildirWriterThreads implements MaildirWriterPort {
  readonly #size: number;
  readonly #threads: WriterThread[] = [];
  /** Deliveries begun and not yet finished, with their thread. */
  readonly #deliveries = new Map<number, WriterThread>();
  #dirSyncs = 0;

  constructor(opts: WriterThreadsOptions) {
    this.#size = Math.max(1, opts.threads);
  }

  /** fsyncs of new/ directories the threads made so far (tests, benchmarks). */
  get dirSyncs(): number {
    return this.#dirSyncs;
  }

  /** The running threads' ids, where known (Linux). */
  get threadIds(): number[] {
    return this.#threads.flatMap((t) => (t.tid === null ? [] : [t.tid]));
  }

  send(req: WriterRequest): Promise<WriterReply> {
    let thread: WriterThread | undefined;
    try {
      thread = req.kind === 'begin' ? this.#pick() : this.#deliveries.get(req.id);
    } catch (err) {
      // No thread could be started (out of memory or threads): the delivery waits for a retry.
      return Promise.resolve(unavailable(req.id, `cannot start a Maildir writer thread: ${describe(err)}`));
    }
    if (thread === undefined) return Promise.resolve(lost(req.id, 'it was no longer running'));
    const to = thread;
    if (req.kind === 'begin') this.#deliveries.set(req.id, to);
    return new Promise((resolve) => {
      if (to.pending.size === 0) to.worker.ref();
      to.pending.set(req.id, (reply) => {
        if (reply.result !== null || req.kind === 'abort') this.#deliveries.delete(req.id);
        resolve(reply);
      });
      const data = req.kind === 'abort' ? null : req.data;
      try {
        to.worker.postMessage(req, data !== null && data.buffer instanceof ArrayBuffer ? [data.buffer] : []);
      } catch (err) {
        const answer = to.pending.get(req.id);
        to.pending.delete(req.id);
        if (to.pending.size === 0) to.worker.unref();
        answer?.(unavailable(req.id, `cannot reach the Maildir writer thread: ${describe(err)}`));
      }
    });
  }

  /** Stops every thread; what they had not answered is deferred. Later requests start new ones. */
  async close(): Promise<void> {
    await Promise.all(this.#threads.map((t) => t.worker.terminate()));
  }

  /** The thread with the fewest requests waiting; a new one while every thread is busy. */
  #pick(): WriterThread {
    let best: WriterThread | undefined;
    for (const t of this.#threads) if (best === undefined || t.pending.size < best.pending.size) best = t;
    if (best !== undefined && (best.pending.size === 0 || this.#threads.length >= this.#size)) return best;
    return this.#start();
  }

  #start(): WriterThread {
    const worker = new Worker(new URL('./maildir-thread.js', import.meta.url), {
      workerData: { niceOffset: helperThreadsOffset() },
    });
    // Only a request waiting for its answer keeps the process alive (ref in send()).
    worker.unref();
    const thread: WriterThread = { worker, pending: new Map(), tid: null };
    this.#threads.push(thread);
    worker.on('message', (msg: unknown) => this.#answer(thread, msg));
    worker.on('error', (err) => this.#lose(thread, describe(err)));
    worker.on('exit', (code) => this.#lose(thread, `it exited with code ${code}`));
    return thread;
  }

  #answer(thread: WriterThread, msg: unknown): void {
    if (isStarted(msg)) {
      thread.tid = msg.tid;
      return;
    }
    if (!isBatchReply(msg)) return;
    this.#dirSyncs += msg.dirSyncs;
    for (const reply of msg.replies) {
      const resolve = thread.pending.get(reply.id);
      thread.pending.delete(reply.id);
      resolve?.(reply);
    }
    if (thread.pending.size === 0) thread.worker.unref();
  }

  /** A thread that stopped: its requests are answered "deferred", and it is replaced when needed. */
  #lose(thread: WriterThread, why: string): void {
    const at = this.#threads.indexOf(thread);
    if (at >= 0) this.#threads.splice(at, 1);
    const waiting = [...thread.pending];
    thread.pending.clear();
    for (const [id, t] of this.#deliveries) if (t === thread) this.#deliveries.delete(id);
    for (const [id, resolve] of waiting) resolve(lost(id, why));
  }
}

function unavailable(id: number, reason: string): WriterReply {
  return { id, result: { kind: 'deferred', reason } };
}

function lost(id: number, why: string): WriterReply {
  return {
    id,
    result: {
      kind: 'deferred',
      reason: `the Maildir writer thread stopped (${why}); delivery will be retried`,
    },
  };
}

function isStarted(msg: unknown): msg is WriterThreadStarted {
  return typeof msg === 'object' && msg !== null && 'tid' in msg;
}

function isBatchReply(msg: unknown): msg is WriterBatchReply {
  return typeof msg === 'object' && msg !== null && 'replies' in msg && Array.isArray(msg.replies);
}
