/** One message's story by queue id (GET /api/messages/QID/story): its events, its queue state. */
import { useState } from 'preact/hooks';
import { api } from './api.js';
import { time } from './format.js';
import { useApi } from './hooks.js';
import type { Story, StoryEvent } from './types.js';

function describe(e: StoryEvent): string {
  switch (e.kind) {
    case 'queued':
      return `queued from ${e.sender === '' ? '<>' : (e.sender ?? '')} to ${(e.recipients ?? []).join(', ')} (${e.size ?? 0} bytes, ${e.listener ?? ''} ${e.ip ?? ''})`;
    case 'delivery':
      return `${e.result ?? ''} to ${e.recipient ?? ''} (${e.destination ?? ''}): ${e.detail ?? ''}`;
    case 'refusal':
      return `refused at ${e.stage ?? ''}: ${e.code ?? ''} ${e.enhanced ?? ''} ${e.text ?? ''}`;
  }
}

function StoryView(props: { qid: string }) {
  const { data, error } = useApi(
    () => api<Story>('GET', `/api/messages/${encodeURIComponent(props.qid)}/story`),
    [props.qid],
  );
  if (error !== null) return <p class="error">{error}</p>;
  if (data === null) return <p>Loading…</p>;
  const m = data.message;
  return (
    <div>
      <h3>{data.qid}</h3>
      <p>
        {data.inQueue && m !== null ? `In the queue${m.held ? ', held' : ''}.` : 'No longer in the queue.'}
      </p>
      <ol class="story" id="story-events">
        {data.events.map((e) => (
          <li key={e.seq} class={`event event-${e.kind}`}>
            <time>{time(e.at)}</time> {describe(e)}
          </li>
        ))}
      </ol>
      {m !== null && (
        <>
          <h4>Recipients</h4>
          <ul>
            {m.recipients.map((r) => (
              <li key={r.address}>
                {r.address}: {r.status}
                {r.lastError !== undefined ? ` — ${r.lastError}` : ''}
                {r.nextAttemptAt !== undefined ? ` (next attempt ${time(r.nextAttemptAt)})` : ''}
              </li>
            ))}
          </ul>
          <h4>Header</h4>
          <pre>{m.headers}</pre>
        </>
      )}
    </div>
  );
}

export function Message(props: { qid: string }) {
  const [draft, setDraft] = useState(props.qid);
  return (
    <section>
      <h2>Message story</h2>
      <form
        class="filters"
        onSubmit={(e) => {
          e.preventDefault();
          location.hash = `#/message/${draft.trim()}`;
        }}
      >
        <label>
          Queue id
          <input name="qid" value={draft} onInput={(e) => setDraft(e.currentTarget.value)} />
        </label>
        <button type="submit">Show</button>
      </form>
      {props.qid !== '' && <StoryView qid={props.qid} />}
    </section>
  );
}
