/**
 * The Maildir writer thread: a worker thread that runs MaildirWriter (maildir-write.ts) for the
 * main thread's deliveries (maildir-writers.ts). Each delivery is several file-system calls
 * (open, write, fsync, close, rename, and an fsync of new/); made here (synchronous calls, the
 * fsyncs of a batch together on libuv's pool), they cost the event loop one message to this
 * thread and one answer instead of a thread-pool round trip each. The requests that wait while a batch runs make up the next batch: they share its
 * fsyncs of new/. Trust: internal; only Sterna's main thread posts to this port.
 */
import { parentPort, receiveMessageOnPort, workerData, type MessagePort } from 'node:worker_threads';
import { lowerThisThread } from '../../server/helper-threads.js';
import { MaildirWriter, type WriterRequest } from './maildir-write.js';

/** What the thread posts back for each batch. */
export interface WriterBatchReply {
  replies: Awaited<ReturnType<MaildirWriter['run']>>;
  /** fsyncs of new/ directories the batch made. */
  dirSyncs: number;
}

/** What the thread posts once, when it starts. */
export interface WriterThreadStarted {
  /** Its thread id (Linux: /proc/<pid>/task/<tid>), for diagnostics and tests. */
  tid: number | null;
}

const port = parentPort;
if (port === null) throw new Error('maildir-thread.js runs as a worker thread');

const niceOffset = readNiceOffset(workerData);
port.postMessage({ tid: lowerThisThread(niceOffset) } satisfies WriterThreadStarted);

const writer = new MaildirWriter();
/** Requests that arrived while a batch ran: the next batch. */
const waiting: WriterRequest[] = [];
let busy = false;

// Messages on this port are WriterRequests: maildir-writers.ts is the only sender.
port.on('message', (req: WriterRequest) => {
  waiting.push(req);
  if (!busy) void work(port);
});

/** Runs batches, one at a time, until no request waits. */
async function work(from: MessagePort): Promise<void> {
  busy = true;
  try {
    while (waiting.length > 0) {
      const batch = waiting.splice(0);
      for (let m = receiveMessageOnPort(from); m !== undefined; m = receiveMessageOnPort(from))
        batch.push(m.message as WriterRequest);
      const before = writer.dirSyncs;
      const replies = await writer.run(batch);
      from.postMessage({ replies, dirSyncs: writer.dirSyncs - before } satisfies WriterBatchReply);
    }
  } finally {
    busy = false;
  }
}

function readNiceOffset(data: unknown): number {
  if (typeof data !== 'object' || data === null || !('niceOffset' in data)) return 0;
  return typeof data.niceOffset === 'number' ? data.niceOffset : 0;
}
