/**
 * Writing a list of buffers to a file in as few system calls as the kernel allows: one pwritev,
 * continued after a short write (the kernel may write fewer bytes than asked, and takes at most
 * IOV_MAX buffers at once). Used by the spool's log and by Maildir delivery.
 * Trust: internal; the bytes are written unchanged.
 */
import { writevSync } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';

/**
 * Writes all of `buffers` at `position` (or, with null, at the file's current offset), continuing
 * after short writes.
 */
export async function writeFully(
  fh: FileHandle,
  buffers: readonly Buffer[],
  position: number | null,
): Promise<void> {
  let pos = position;
  let rest = buffers;
  while (rest.length > 0) {
    const { bytesWritten } = await fh.writev(rest, pos ?? undefined);
    if (pos !== null) pos += bytesWritten;
    rest = unwritten(rest, bytesWritten);
  }
}

/** writeFully without the thread pool: the calling thread waits for each pwritev. */
export function writeFullySync(fd: number, buffers: readonly Buffer[], position: number): void {
  let pos = position;
  let rest = buffers;
  while (rest.length > 0) {
    const bytesWritten = writevSync(fd, rest, pos);
    pos += bytesWritten;
    rest = unwritten(rest, bytesWritten);
  }
}

/** What is left of `rest` after `bytesWritten` of it went out; a write of nothing is an error. */
function unwritten(rest: readonly Buffer[], bytesWritten: number): readonly Buffer[] {
  let skip = bytesWritten;
  const next: Buffer[] = [];
  for (const b of rest) {
    if (skip >= b.length) {
      skip -= b.length;
      continue;
    }
    next.push(skip > 0 ? b.subarray(skip) : b);
    skip = 0;
  }
  if (bytesWritten === 0 && next.length > 0)
    throw Object.assign(new Error('write made no progress'), { code: 'EIO' });
  return next;
}
