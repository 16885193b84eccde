/**
 * Content filters at the end of data (docs/filters.md): once per message, after the body and
 * before the reply, every filter that applies (its listener scope, its size limit) runs at once
 * on the stored message, read back from the spool; each has a timeout and a failure mode; their
 * verdicts combine (verdict.ts) into one outcome for the session. When the message is kept, its
 * edits are applied before the session commits: fields on top go in the commit's prefix, any
 * other change rewrites the stored message through the same open spool writer (restart, then
 * the new form), so the COMMIT names only the final form and "250" still means that form is
 * durable (DESIGN rule 3).
 * Trust level: filters are trusted local daemons reached over loopback or a Unix socket; their
 * answers are still bounded and cleaned (verdict.ts) before they reach a reply or the message.
 */
import type { Envelope, ListenerKind } from '../message/envelope.js';
import type { Logger } from '../observability/log.js';
import { reply, type Reply } from '../smtp/replies.js';
import type { FilterContext, FilterOutcome, MessageSink } from '../smtp/session.js';
import { formatField, needsRewrite, planRewrite } from './message-edits.js';
import { combine, safeReplyText, verdict, type FilterVerdict } from './verdict.js';

export type FailureMode = 'tempfail' | 'accept';

/**
 * The ways in a filter's `listeners` names: the three SMTP listeners, the maildrop of
 * `sterna sendmail` ("sendmail") and the HTTP API ("http"), the names the envelope's
 * `listener` records (DESIGN rule 10: one rule, every path).
 */
export type FilterScope = ListenerKind | 'sendmail' | 'http';

/** What a filter knows of a message beside its octets: a session's FilterContext, or the same facts from another way in. */
export interface FilterInput extends Omit<FilterContext, 'listener'> {
  listener: FilterScope;
}

/** The message as a filter client sees it. */
export interface FilterMessage {
  ctx: FilterInput;
  /** Octets stored so far (the whole message at the end of data). */
  size: number;
  /** A fresh read of the stored octets, from the first. */
  open(): Promise<AsyncIterable<Buffer>>;
}

/** One client (rspamd.ts, spamd.ts, milter.ts). It must stop when signal aborts. */
export interface FilterClient {
  check(msg: FilterMessage, signal: AbortSignal): Promise<FilterVerdict>;
}

export interface FilterSettings {
  name: string;
  listeners: readonly string[];
  timeoutMs: number;
  onFailure: FailureMode;
  /** A message larger than this is not given to the filter (logged as skipped). */
  maxSize: number;
  client: FilterClient;
}

/** The largest header section a rewrite holds in memory. */
const MAX_HEADER_BYTES = 1024 * 1024;

export class TimeoutError extends Error {}

export class ContentFilters {
  readonly #filters: readonly FilterSettings[];
  readonly #now: () => number;
  /** Told each filter's verdict (metrics: sterna_filter_verdicts_total). */
  onVerdict: ((filter: string, verdict: string) => void) | undefined;

  constructor(filters: readonly FilterSettings[], now: () => number = Date.now) {
    this.#filters = filters;
    this.#now = now;
  }

  /** Whether any filter could apply to a message received on this listener. */
  appliesTo(listener: FilterScope): boolean {
    return this.#filters.some((f) => f.listeners.includes(listener));
  }

  /** The filters' outcome for the message being written to sink, or null when none applies. */
  run(ctx: FilterInput, sink: MessageSink, log: Logger): Promise<FilterOutcome> | null {
    const scoped = this.#filters.filter((f) => f.listeners.includes(ctx.listener));
    if (scoped.length === 0) return null;
    return this.#run(scoped, ctx, sink, log);
  }

  async #run(
    scoped: readonly FilterSettings[],
    ctx: FilterInput,
    sink: MessageSink,
    log: Logger,
  ): Promise<FilterOutcome> {
    const readBack = sink.readBack?.bind(sink);
    const msg: FilterMessage = {
      ctx,
      size: sink.size,
      open: () =>
        readBack !== undefined ? readBack() : Promise.reject(new Error('the message cannot be read back')),
    };
    const verdicts = await Promise.all(
      scoped.map((f) => {
        if (msg.size > f.maxSize) {
          log.info(
            { qid: ctx.qid, filter: f.name, size: msg.size, max_size: f.maxSize },
            'filter skipped: message too large',
          );
          return Promise.resolve(null);
        }
        return this.#one(f, msg, log);
      }),
    );
    const ran = verdicts.filter((v): v is { f: FilterSettings; v: FilterVerdict } => v !== null);
    if (ran.length === 0) return accepted('', false);
    const all = combine(ran.map((r) => r.v));
    const decider = ran.find((r) => r.v.action === all.action);
    const from = decider?.f.name ?? '';
    const action = all.action;
    switch (action.kind) {
      case 'reject':
        return { kind: 'refuse', reply: refusal('FILTER_REJECT', action.text, from) };
      case 'tempfail':
        if (decider?.v.failed === true)
          return { kind: 'refuse', reply: reply('FILTER_UNAVAILABLE', { filter: from }) };
        return { kind: 'refuse', reply: refusal('FILTER_TEMPFAIL', action.text, from) };
      case 'reply':
        return { kind: 'refuse', reply: customReply(action, from) };
      case 'discard':
        return { kind: 'discard', filter: from };
      case 'junk':
      case 'accept':
        break;
      default: {
        const never: never = action;
        throw new Error(`unhandled filter action ${JSON.stringify(never)}`);
      }
    }
    const prepend = all.edits.map((e) => (e.op === 'prepend' ? formatField(e.name, e.value) : '')).join('');
    if (needsRewrite(all.edits)) {
      try {
        const rewritten = await planRewrite(await msg.open(), all.edits, MAX_HEADER_BYTES);
        if (rewritten !== null) {
          if (sink.restart === undefined) throw new Error('the message cannot be rewritten');
          sink.restart();
          for await (const piece of rewritten) await sink.write(piece);
        }
      } catch (err) {
        log.error({ qid: ctx.qid, err }, 'filter edits could not be applied; message deferred');
        return { kind: 'refuse', reply: reply('FILTER_EDIT_FAILED') };
      }
    }
    return {
      kind: 'accept',
      prepend,
      junk: action.kind === 'junk',
      addRecipients: all.addRecipients,
      removeRecipients: all.removeRecipients,
    };
  }

  /** One filter, bounded in time; a failure is the filter's failure mode. */
  async #one(
    f: FilterSettings,
    msg: FilterMessage,
    log: Logger,
  ): Promise<{ f: FilterSettings; v: FilterVerdict }> {
    const started = this.#now();
    const ac = new AbortController();
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const err = new TimeoutError(`no answer within ${f.timeoutMs} ms`);
        ac.abort(err);
        reject(err);
      }, f.timeoutMs);
    });
    let v: FilterVerdict;
    try {
      v = await Promise.race([f.client.check(msg, ac.signal), timeout]);
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      v =
        f.onFailure === 'tempfail'
          ? verdict({ kind: 'tempfail', text: '' }, `failed: ${reason}`)
          : verdict({ kind: 'accept' }, `failed (accepted, on_failure = "accept"): ${reason}`);
      v.failed = true;
      log.warn({ qid: msg.ctx.qid, filter: f.name, err: reason, on_failure: f.onFailure }, 'filter failed');
    } finally {
      clearTimeout(timer);
      ac.abort();
    }
    this.onVerdict?.(f.name, v.failed === true ? 'failed' : v.action.kind);
    log.info(
      {
        qid: msg.ctx.qid,
        filter: f.name,
        verdict: v.action.kind,
        detail: v.detail,
        edits: v.edits.length,
        ms: this.#now() - started,
      },
      'filter',
    );
    return { f, v };
  }
}

/** What a way in other than an SMTP session does with the filters' outcome (filterBeforeCommit). */
export type CommitPlan =
  /** Commit with this envelope (the filters' recipient changes and Junk flag applied) and prefix. */
  | { kind: 'commit'; envelope: Envelope; prefix: Buffer | undefined }
  /** Not stored: the reply an SMTP client would get, for the caller to render its own way. */
  | { kind: 'refuse'; reply: Reply }
  /** Accepted and dropped, as a filter asked (or a milter deleted every recipient). */
  | { kind: 'discard'; filter: string };

/**
 * The content filters for the ways in that are not an SMTP session (the maildrop pickup, the
 * HTTP API), with the session's rules (smtp/session.ts #commit): run once, on the stored
 * message, before the commit; the same combination, edits, Junk flag, recipient changes, logs
 * and metrics. `prefix` is what the caller would commit on top without filters. The caller
 * commits on 'commit' and aborts the writer otherwise; a 'refuse' is logged here as the
 * session logs it (`rejected`, reason "content filter"), a discard as `discarded`.
 */
export async function filterBeforeCommit(
  filters: ContentFilters | undefined,
  ctx: FilterInput,
  sink: MessageSink,
  envelope: Envelope,
  log: Logger,
  prefix?: Buffer,
): Promise<CommitPlan> {
  const running = filters?.run(ctx, sink, log) ?? null;
  if (running === null) return { kind: 'commit', envelope, prefix };
  const outcome = await running;
  switch (outcome.kind) {
    case 'refuse':
      log.info(
        {
          qid: ctx.qid,
          via: ctx.listener,
          reason: 'content filter',
          code: outcome.reply.code,
          enhanced: outcome.reply.enhanced,
        },
        'rejected',
      );
      return outcome;
    case 'discard':
      log.info({ qid: ctx.qid, via: ctx.listener, filter: outcome.filter, sender: ctx.sender }, 'discarded');
      return outcome;
    case 'accept': {
      const changed = applyFilterEnvelope(envelope, outcome);
      if (changed.recipients.length === 0) {
        log.info(
          { qid: ctx.qid, via: ctx.listener, filter: 'no recipients left', sender: ctx.sender },
          'discarded',
        );
        return { kind: 'discard', filter: 'no recipients left' };
      }
      const top = Buffer.from(outcome.prepend, 'utf8');
      return {
        kind: 'commit',
        envelope: changed,
        prefix: top.length === 0 ? prefix : Buffer.concat([prefix ?? Buffer.alloc(0), top]),
      };
    }
    default: {
      const never: never = outcome;
      throw new Error(`unhandled filter outcome ${JSON.stringify(never)}`);
    }
  }
}

/**
 * A copy of the envelope with the changes the filters asked for (a milter's add/delete rcpt, a
 * Junk verdict), also applied by smtp/session.ts: an added recipient gets no DSN parameters; a
 * deleted one is matched without regard to case.
 */
export function applyFilterEnvelope(
  envelope: Envelope,
  o: { junk: boolean; addRecipients: readonly string[]; removeRecipients: readonly string[] },
): Envelope {
  const out: Envelope = { ...envelope, recipients: [...envelope.recipients] };
  if (o.junk) out.junk = true;
  if (o.removeRecipients.length > 0) {
    const gone = new Set(o.removeRecipients.map((a) => a.toLowerCase()));
    out.recipients = out.recipients.filter((r) => !gone.has(r.address.toLowerCase()));
  }
  for (const address of o.addRecipients) {
    if (!out.recipients.some((r) => r.address.toLowerCase() === address.toLowerCase()))
      out.recipients.push({ address, params: {} });
  }
  return out;
}

function accepted(prepend: string, junk: boolean): FilterOutcome {
  return { kind: 'accept', prepend, junk, addRecipients: [], removeRecipients: [] };
}

/** The filter's own text on one safe line, or the table's words when it gave none. */
function refusal(id: 'FILTER_REJECT' | 'FILTER_TEMPFAIL', text: string, filter: string): Reply {
  const fallback = id === 'FILTER_REJECT' ? 'FILTER_REJECT_DEFAULT' : 'FILTER_TEMPFAIL_DEFAULT';
  const clean = safeReplyText(text, '');
  return clean === '' ? reply(fallback, { filter }) : reply(id, { text: clean });
}

/** A milter's own reply: its code and enhanced code (validated by the client), its text cleaned. */
function customReply(a: { code: number; enhanced: string; text: string }, filter: string): Reply {
  const r = refusal(a.code >= 500 ? 'FILTER_REJECT' : 'FILTER_TEMPFAIL', a.text, filter);
  return { ...r, code: a.code, enhanced: a.enhanced };
}
