/**
 * Writes one message into the maildrop (maildrop-format.ts): the file is created on the first
 * write, under a queue-id-shaped name with O_EXCL and O_NOFOLLOW, and completed by commit():
 * trailer, fsync, the completion mark (fchmod 0740), fsync again. Only then is the message
 * "queued" for the sendmail command; abort() removes a half-written file.
 * Run by the sendmail command with the submitting user's rights. Trust: the caller's bytes are
 * its own; nothing here is privileged.
 */
import { constants } from 'node:fs';
import { open, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { newQueueId } from './ids.js';
import { COMPLETE_MODE, encodeTrailer, WRITING_MODE, type MaildropRecord } from './maildrop-format.js';

export class MaildropWriter {
  /** The file's name in the maildrop: the id the sendmail command reports. */
  readonly id: string;
  readonly #path: string;
  #file: Promise<FileHandle> | null = null;
  #size = 0;
  #done = false;

  constructor(maildropDir: string, now: number = Date.now()) {
    this.id = newQueueId(now);
    this.#path = join(maildropDir, this.id);
  }

  /** Message octets written so far. */
  get size(): number {
    return this.#size;
  }

  #handle(): Promise<FileHandle> {
    this.#file ??= open(
      this.#path,
      constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
      WRITING_MODE,
    );
    return this.#file;
  }

  async write(chunk: Buffer): Promise<void> {
    const fh = await this.#handle();
    await fh.write(chunk);
    this.#size += chunk.length;
  }

  /** Appends the record, makes the file durable and marks it complete. */
  async commit(record: MaildropRecord): Promise<void> {
    const fh = await this.#handle();
    await fh.write(encodeTrailer(record));
    await fh.sync();
    // fchmod is not subject to the umask: the server's group gets read access whatever it is.
    await fh.chmod(COMPLETE_MODE);
    await fh.sync();
    await fh.close();
    this.#done = true;
  }

  /** Drops the message: closes and removes the file if one was created. Never rejects. */
  async abort(): Promise<void> {
    if (this.#done || this.#file === null) return;
    this.#done = true;
    try {
      await (await this.#file).close();
    } catch {
      // not created, or already closed
    }
    await unlink(this.#path).catch(() => undefined);
  }
}
