/**
 * SpamAssassin client: the SPAMC/SPAMD protocol (spamd(1p), SpamAssassin's PROTOCOL document,
 * version 1.5). One TCP connection per message: "HEADERS SPAMC/1.5", Content-length, optional
 * User, the stored message; spamd answers "SPAMD/1.1 0 EX_OK", a "Spam: True ; 1004.2 / 5.0"
 * line and the message's header section as SpamAssassin marked it up. Sterna keeps the score
 * and the X-Spam-* fields SpamAssassin added (X-Spam-Flag, X-Spam-Level, X-Spam-Status,
 * X-Spam-Report, X-Spam-Checker-Version): they go on top of the stored message, and fields of
 * those names the message already had are deleted (a sender must not bring its own verdict).
 * The score decides, by Sterna's own thresholds: reject_score and above → 550 5.7.1,
 * junk_score and above → Junk folder, else accept.
 * Trust level: spamd is a trusted local daemon; its answer is bounded in size and parsed
 * strictly (anything unexpected is a failure: the filter's failure mode applies).
 */
import net from 'node:net';
import type { FilterClient, FilterMessage } from './pipeline.js';
import { isFieldName, safeFieldValue, verdict, type FilterVerdict, type MessageEdit } from './verdict.js';

export interface SpamdOptions {
  host: string;
  port: number;
  user: string;
  rejectScore: number;
  junkScore: number;
  addHeaders: boolean;
}

/** The largest answer read from spamd (a header section and a few lines). */
const MAX_ANSWER_BYTES = 1024 * 1024;

export class SpamdClient implements FilterClient {
  readonly #o: SpamdOptions;

  constructor(o: SpamdOptions) {
    this.#o = o;
  }

  async check(msg: FilterMessage, signal: AbortSignal): Promise<FilterVerdict> {
    const body = await msg.open();
    const answer = await this.#exchange(msg.size, body, signal);
    return spamdVerdict(answer, this.#o);
  }

  #exchange(size: number, body: AsyncIterable<Buffer>, signal: AbortSignal): Promise<Buffer> {
    return new Promise<Buffer>((resolve, reject) => {
      const socket = net.connect({ host: this.#o.host, port: this.#o.port });
      const onAbort = (): void => {
        socket.destroy(signal.reason instanceof Error ? signal.reason : new Error('aborted'));
      };
      signal.addEventListener('abort', onAbort, { once: true });
      const parts: Buffer[] = [];
      let bytes = 0;
      socket.on('data', (d: Buffer) => {
        bytes += d.length;
        if (bytes > MAX_ANSWER_BYTES) socket.destroy(new Error(`answer over ${MAX_ANSWER_BYTES} octets`));
        else parts.push(d);
      });
      socket.on('error', (err) => {
        signal.removeEventListener('abort', onAbort);
        reject(err);
      });
      socket.on('end', () => {
        signal.removeEventListener('abort', onAbort);
        socket.end();
        resolve(Buffer.concat(parts));
      });
      socket.on('connect', () => {
        void (async () => {
          try {
            const user = this.#o.user !== '' ? `User: ${this.#o.user}\r\n` : '';
            socket.write(`HEADERS SPAMC/1.5\r\nContent-length: ${size}\r\n${user}\r\n`);
            for await (const piece of body) {
              if (!socket.write(piece)) await new Promise<void>((r) => socket.once('drain', r));
            }
            // SPAMC: the request ends with a half-close as well as Content-length.
            socket.end();
          } catch (err) {
            socket.destroy(err instanceof Error ? err : new Error(String(err)));
          }
        })();
      });
    });
  }
}

/** spamd's answer as a verdict, by Sterna's thresholds; anything unexpected throws. */
export function spamdVerdict(
  answer: Buffer,
  o: Pick<SpamdOptions, 'rejectScore' | 'junkScore' | 'addHeaders'>,
): FilterVerdict {
  const split = answer.indexOf('\r\n\r\n');
  if (split < 0) throw new Error('spamd answered without a header section');
  const head = answer.subarray(0, split).toString('latin1').split('\r\n');
  const status = /^SPAMD\/\d+\.\d+ (\d+) (.*)$/.exec(head[0] ?? '');
  if (status === null) throw new Error(`spamd answered "${(head[0] ?? '').slice(0, 60)}"`);
  if (status[1] !== '0') throw new Error(`spamd error ${status[1] ?? ''} ${(status[2] ?? '').slice(0, 60)}`);
  const spamLine = head.find((l) => /^spam\s*:/i.test(l)) ?? '';
  const m = /^spam\s*:\s*(true|false|yes|no)\s*;\s*(-?[\d.]+)\s*\/\s*(-?[\d.]+)\s*$/i.exec(spamLine);
  if (m === null) throw new Error('spamd answered without a Spam line');
  const score = Number(m[2]);
  const detail = `score=${score} (spamd: ${m[1] ?? ''} / ${m[3] ?? ''})`;
  const edits = o.addHeaders ? spamFields(answer.subarray(split + 4)) : [];
  if (score >= o.rejectScore) return verdict({ kind: 'reject', text: '' }, detail);
  return verdict(score >= o.junkScore ? { kind: 'junk' } : { kind: 'accept' }, detail, edits);
}

/** The X-Spam-* fields of spamd's header section: old ones of those names deleted, new ones on top. */
function spamFields(section: Buffer): MessageEdit[] {
  const text = section.toString('utf8');
  const fields = text.split(/\r\n(?![ \t])/).filter((f) => f !== '');
  const edits: MessageEdit[] = [];
  const names = new Set<string>();
  for (const field of fields) {
    const colon = field.indexOf(':');
    if (colon <= 0) continue;
    const name = field.slice(0, colon).trim();
    if (!/^x-spam-/i.test(name) || !isFieldName(name)) continue;
    names.add(name);
    edits.push({ op: 'prepend', name, value: safeFieldValue(field.slice(colon + 1)) });
  }
  return [
    ...[...names].map((name): MessageEdit => ({ op: 'change', name, index: 0, value: null })),
    ...edits,
  ];
}
