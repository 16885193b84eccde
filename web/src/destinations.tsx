/** Delivery status per destination: deferred domains and why (GET /api/destinations). */
import { api } from './api.js';
import { age, time } from './format.js';
import { useApi } from './hooks.js';
import type { DestinationStatus } from './types.js';

export function Destinations() {
  const { data, error } = useApi(
    () => api<{ domains: number; destinations: DestinationStatus[] }>('GET', '/api/destinations'),
    [],
    30_000,
  );
  if (error !== null) return <p class="error">{error}</p>;
  if (data === null) return <p>Loading…</p>;
  return (
    <section>
      <h2>Destinations</h2>
      <p class="summary">
        {data.domains === 0
          ? 'No destination has deferred recipients.'
          : `${data.domains} destinations with deferred recipients (deferred and held messages).`}
      </p>
      <table class="list" id="destinations-table">
        <thead>
          <tr>
            <th>Domain</th>
            <th>Recipients</th>
            <th>Messages</th>
            <th>Held</th>
            <th>Oldest</th>
            <th>Next attempt</th>
            <th>Attempts</th>
            <th>Outbound (running / waiting / parked)</th>
            <th>Why</th>
          </tr>
        </thead>
        <tbody>
          {data.destinations.map((d) => (
            <tr key={d.domain} data-domain={d.domain}>
              <td>
                <a href={`#/queue/${encodeURIComponent(d.domain)}`} title="its messages on the queue page">
                  {d.domain}
                </a>
              </td>
              <td>{d.recipients}</td>
              <td>{d.messages}</td>
              <td>{d.held}</td>
              <td title={time(d.oldestReceivedAt)}>{age(d.oldestReceivedAt)}</td>
              <td>{d.nextAttemptAt === null ? '—' : time(d.nextAttemptAt)}</td>
              <td>{d.maxAttempts}</td>
              <td>
                {d.outbound.active} / {d.outbound.waiting} / {d.outbound.parked}
              </td>
              <td class="why">
                {d.reasons.map((r) => (
                  <div key={r.reason}>
                    <b>{r.reason}</b> ({r.recipients}): {r.example}
                  </div>
                ))}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}
