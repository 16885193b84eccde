/**
 * rspamd client: the HTTP protocol of rspamd's normal worker (POST /checkv2, rspamd.com/doc/
 * developers/protocol.html). The stored message is the request body, streamed from the spool;
 * the envelope goes in request headers (IP, Helo, From, Rcpt, Queue-Id, User). The JSON answer's
 * action maps to a verdict: "reject" → reject with rspamd's SMTP message, "soft reject" and
 * "greylist" → tempfail, "add header" / "rewrite subject" → accept (or Junk, with junk = true)
 * with rspamd's header edits (milter.add_headers, milter.remove_headers, the new subject),
 * "no action" → accept.
 * Trust level: rspamd is a trusted local daemon; its answer is still bounded in size and
 * checked field by field before use.
 */
import http from 'node:http';
import https from 'node:https';
import type { FilterClient, FilterMessage } from './pipeline.js';
import { isFieldName, safeFieldValue, verdict, type FilterVerdict, type MessageEdit } from './verdict.js';

export interface RspamdOptions {
  url: string;
  password: string;
  junk: boolean;
}

/** The largest answer read from rspamd. */
const MAX_ANSWER_BYTES = 1024 * 1024;

export class RspamdClient implements FilterClient {
  readonly #o: RspamdOptions;
  readonly #url: URL;

  constructor(o: RspamdOptions) {
    this.#o = o;
    this.#url = new URL('checkv2', o.url.endsWith('/') ? o.url : `${o.url}/`);
  }

  async check(msg: FilterMessage, signal: AbortSignal): Promise<FilterVerdict> {
    const body = await msg.open();
    const answer = await this.#post(msg, body, signal);
    return rspamdVerdict(answer, this.#o.junk);
  }

  #post(msg: FilterMessage, body: AsyncIterable<Buffer>, signal: AbortSignal): Promise<unknown> {
    const { ctx } = msg;
    const headers: http.OutgoingHttpHeaders = {
      'Content-Length': msg.size,
      'Queue-Id': ctx.qid,
      IP: ctx.client.ip,
      Helo: ctx.helo,
      From: ctx.sender,
      Rcpt: [...ctx.recipients],
    };
    if (ctx.client.hostname !== undefined) headers['Hostname'] = ctx.client.hostname;
    if (ctx.authUser !== undefined) headers['User'] = ctx.authUser;
    if (ctx.tls !== undefined) headers['TLS-Cipher'] = ctx.tls.cipher;
    if (this.#o.password !== '') headers['Password'] = this.#o.password;
    const lib = this.#url.protocol === 'https:' ? https : http;
    return new Promise<unknown>((resolve, reject) => {
      const req = lib.request(this.#url, { method: 'POST', headers, signal }, (res) => {
        const parts: Buffer[] = [];
        let bytes = 0;
        res.on('data', (d: Buffer) => {
          bytes += d.length;
          if (bytes > MAX_ANSWER_BYTES) {
            req.destroy(new Error(`answer over ${MAX_ANSWER_BYTES} octets`));
            return;
          }
          parts.push(d);
        });
        res.on('error', reject);
        res.on('end', () => {
          if (res.statusCode !== 200) {
            reject(new Error(`HTTP ${String(res.statusCode)} from rspamd`));
            return;
          }
          try {
            resolve(JSON.parse(Buffer.concat(parts).toString('utf8')));
          } catch (err) {
            reject(
              new Error(`unreadable answer from rspamd: ${err instanceof Error ? err.message : String(err)}`),
            );
          }
        });
      });
      req.on('error', reject);
      void (async () => {
        try {
          for await (const piece of body) {
            if (!req.write(piece)) await new Promise<void>((r) => req.once('drain', r));
          }
          req.end();
        } catch (err) {
          req.destroy(err instanceof Error ? err : new Error(String(err)));
        }
      })();
    });
  }
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** rspamd's answer as a verdict; anything unexpected throws (the filter's failure mode). */
export function rspamdVerdict(answer: unknown, junk: boolean): FilterVerdict {
  if (!isRecord(answer) || typeof answer['action'] !== 'string')
    throw new Error('rspamd answered without an action');
  const action = answer['action'];
  const score = typeof answer['score'] === 'number' ? answer['score'] : NaN;
  const required = typeof answer['required_score'] === 'number' ? answer['required_score'] : NaN;
  const detail = `action=${action} score=${score.toFixed(2)}/${required.toFixed(2)}`;
  const messages = isRecord(answer['messages']) ? answer['messages'] : {};
  const smtpMessage = typeof messages['smtp_message'] === 'string' ? messages['smtp_message'] : '';
  switch (action) {
    case 'no action':
      return verdict({ kind: 'accept' }, detail, milterEdits(answer));
    case 'reject':
      return verdict({ kind: 'reject', text: smtpMessage }, detail);
    case 'soft reject':
    case 'greylist':
      return verdict({ kind: 'tempfail', text: smtpMessage }, detail);
    case 'add header':
    case 'rewrite subject': {
      const edits = milterEdits(answer);
      const subject = answer['subject'];
      if (action === 'rewrite subject' && typeof subject === 'string')
        edits.push({ op: 'change', name: 'Subject', index: 1, value: safeFieldValue(subject) });
      if (action === 'add header' && !edits.some((e) => e.op === 'prepend'))
        edits.push({ op: 'prepend', name: 'X-Spam', value: 'Yes' });
      return verdict(junk ? { kind: 'junk' } : { kind: 'accept' }, detail, edits);
    }
    default:
      throw new Error(`rspamd answered an unknown action "${action.slice(0, 40)}"`);
  }
}

/**
 * rspamd's milter block: remove_headers {name: n} (n-th field, 0 every one, as in
 * SMFIR_CHGHEADER) then add_headers {name: value | {value, order} | [those]}; a field without
 * an order (or order 0) goes on top, one with an order is inserted there.
 */
function milterEdits(answer: Record<string, unknown>): MessageEdit[] {
  const milter = answer['milter'];
  if (!isRecord(milter)) return [];
  const edits: MessageEdit[] = [];
  const remove = milter['remove_headers'];
  if (isRecord(remove)) {
    for (const [name, n] of Object.entries(remove)) {
      if (!isFieldName(name)) continue;
      const index = typeof n === 'number' && Number.isInteger(n) && n > 0 ? n : 0;
      edits.push({ op: 'change', name, index, value: null });
    }
  }
  const add = milter['add_headers'];
  if (isRecord(add)) {
    for (const [name, spec] of Object.entries(add)) {
      if (!isFieldName(name)) continue;
      for (const one of Array.isArray(spec) ? spec : [spec]) {
        const value = typeof one === 'string' ? one : isRecord(one) ? one['value'] : undefined;
        if (typeof value !== 'string') continue;
        const order = isRecord(one) && typeof one['order'] === 'number' ? one['order'] : 0;
        edits.push(
          order > 0
            ? { op: 'insert', index: order, name, value: safeFieldValue(value) }
            : { op: 'prepend', name, value: safeFieldValue(value) },
        );
      }
    }
  }
  return edits;
}
