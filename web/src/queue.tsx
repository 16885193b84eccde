/**
 * The queue: filters and pages computed by the server (GET /api/queue: one page at a time, a
 * cursor to the next; never the whole queue), and per message hold / release / flush / delete /
 * bounce (POST or DELETE /api/queue/QID…).
 */
import { useState } from 'preact/hooks';
import { api, query } from './api.js';
import { age, errorText, time } from './format.js';
import { useApi } from './hooks.js';
import type { QueueEntry, QueuePage } from './types.js';

const PAGE = 50;

interface Filter {
  sender: string;
  recipient: string;
  domain: string;
  state: string;
}

const EMPTY: Filter = { sender: '', recipient: '', domain: '', state: '' };

type Action = 'hold' | 'release' | 'flush' | 'delete' | 'bounce';

async function act(action: Action, qid: string): Promise<void> {
  const path = `/api/queue/${encodeURIComponent(qid)}`;
  if (action === 'delete') await api('DELETE', path);
  else await api('POST', `${path}/${action}`);
}

function Row(props: { m: QueueEntry; onAction: (a: Action, qid: string) => void }) {
  const { m } = props;
  const deferred = m.recipients.find((r) => r.status === 'deferred');
  return (
    <tr data-qid={m.qid}>
      <td>
        <a href={`#/message/${m.qid}`}>{m.qid}</a>
      </td>
      <td title={time(m.receivedAt)}>{age(m.receivedAt)}</td>
      <td>{m.sender === '' ? '<>' : m.sender}</td>
      <td>{m.recipients.map((r) => r.address).join(', ')}</td>
      <td class={`state state-${m.state}`}>{m.state}</td>
      <td class="why">{deferred?.lastError ?? ''}</td>
      <td class="actions">
        {m.held ? (
          <button onClick={() => props.onAction('release', m.qid)}>release</button>
        ) : (
          <button onClick={() => props.onAction('hold', m.qid)}>hold</button>
        )}
        <button onClick={() => props.onAction('flush', m.qid)} disabled={m.held}>
          flush
        </button>
        <button onClick={() => props.onAction('bounce', m.qid)}>bounce</button>
        <button class="danger" onClick={() => props.onAction('delete', m.qid)}>
          delete
        </button>
      </td>
    </tr>
  );
}

/** `domain`: a first filter from the URL (#/queue/DOMAIN, linked from the destinations page). */
export function Queue(props: { domain: string }) {
  const [draft, setDraft] = useState<Filter>({ ...EMPTY, domain: props.domain });
  const [filter, setFilter] = useState<Filter>({ ...EMPTY, domain: props.domain });
  /** Cursors of the pages seen so far: [undefined] is the first page. */
  const [cursors, setCursors] = useState<(string | undefined)[]>([undefined]);
  const [notice, setNotice] = useState<string | null>(null);
  const cursor = cursors.at(-1);
  const page = useApi(
    () => api<QueuePage>('GET', `/api/queue${query({ ...filter, limit: PAGE, cursor })}`),
    [filter, cursor],
  );

  const onAction = (action: Action, qid: string): void => {
    if ((action === 'delete' || action === 'bounce') && !window.confirm(`${action} message ${qid}?`)) return;
    act(action, qid).then(
      () => {
        setNotice(`${action}: ${qid} done`);
        page.reload();
      },
      (err: unknown) => setNotice(`${action} ${qid} failed: ${errorText(err)}`),
    );
  };

  const field = (name: keyof Filter, label: string) => (
    <label>
      {label}
      <input
        name={name}
        value={draft[name]}
        onInput={(e) => setDraft({ ...draft, [name]: e.currentTarget.value })}
      />
    </label>
  );

  const p = page.data;
  const first = cursors.length === 1;
  return (
    <section>
      <h2>Queue</h2>
      <form
        class="filters"
        onSubmit={(e) => {
          e.preventDefault();
          setFilter(draft);
          setCursors([undefined]);
        }}
      >
        {field('sender', 'Sender')}
        {field('recipient', 'Recipient')}
        {field('domain', 'Domain')}
        <label>
          State
          <select
            name="state"
            value={draft.state}
            onChange={(e) => setDraft({ ...draft, state: e.currentTarget.value })}
          >
            <option value="">any</option>
            <option value="deferred">deferred</option>
            <option value="held">held</option>
            <option value="pending">pending</option>
            <option value="active">active</option>
          </select>
        </label>
        <button type="submit">Search</button>
      </form>
      {notice !== null && <p class="notice">{notice}</p>}
      {page.error !== null && <p class="error">{page.error}</p>}
      {p !== null && (
        <>
          <p class="summary">
            <span id="queue-total">{p.total}</span> matching messages; page {cursors.length}.
          </p>
          <table class="list" id="queue-table">
            <thead>
              <tr>
                <th>Queue id</th>
                <th>Age</th>
                <th>Sender</th>
                <th>Recipients</th>
                <th>State</th>
                <th>Last error</th>
                <th />
              </tr>
            </thead>
            <tbody>
              {p.items.map((m) => (
                <Row key={m.qid} m={m} onAction={onAction} />
              ))}
            </tbody>
          </table>
          <div class="pager">
            <button disabled={first} onClick={() => setCursors(cursors.slice(0, -1))}>
              ← previous
            </button>
            <button
              disabled={p.nextCursor === null}
              onClick={() => p.nextCursor !== null && setCursors([...cursors, p.nextCursor])}
            >
              next →
            </button>
          </div>
        </>
      )}
    </section>
  );
}
