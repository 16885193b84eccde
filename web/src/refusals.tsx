/** Refusals by reason, from the recent events (GET /api/stats/refusals). */
import { api } from './api.js';
import { age, time } from './format.js';
import { useApi } from './hooks.js';
import type { RefusalReason } from './types.js';

export function Refusals() {
  const { data, error } = useApi(
    () => api<{ scanned: number; reasons: RefusalReason[] }>('GET', '/api/stats/refusals'),
    [],
    30_000,
  );
  if (error !== null) return <p class="error">{error}</p>;
  if (data === null) return <p>Loading…</p>;
  return (
    <section>
      <h2>Refusals</h2>
      <p class="summary">{data.scanned} refusals among the recent events, by reason.</p>
      <table class="list" id="refusals-table">
        <thead>
          <tr>
            <th>Count</th>
            <th>Stage</th>
            <th>Reply</th>
            <th>Text</th>
            <th>Last</th>
          </tr>
        </thead>
        <tbody>
          {data.reasons.map((r) => (
            <tr key={`${r.stage} ${r.code} ${r.enhanced}`}>
              <td>{r.count}</td>
              <td>{r.stage}</td>
              <td>
                {r.code} {r.enhanced}
              </td>
              <td>{r.text}</td>
              <td title={time(r.lastAt)}>{age(r.lastAt)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}
