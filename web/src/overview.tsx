/** Overview: the last hour in 10-second buckets (GET /api/stats/series), three charts. */
import { api } from './api.js';
import { Chart } from './chart.js';
import { useApi } from './hooks.js';
import type { SeriesColumns } from './types.js';

function sum(values: number[]): number {
  return values.reduce((a, b) => a + b, 0);
}

export function Overview() {
  const { data, error } = useApi(() => api<SeriesColumns>('GET', '/api/stats/series'), [], 10_000);
  if (error !== null) return <p class="error">{error}</p>;
  if (data === null) return <p>Loading…</p>;
  const c = data.counts;
  const queueNow = data.queue.filter((v): v is number => v !== null).at(-1) ?? 0;
  return (
    <section>
      <h2>Overview</h2>
      <p class="summary">
        Last hour: <b id="sum-queued">{sum(c.queued)}</b> queued, <b id="sum-delivered">{sum(c.delivered)}</b>{' '}
        delivered, <b>{sum(c.deferred)}</b> deferred, <b>{sum(c.failed)}</b> failed, <b>{sum(c.refused)}</b>{' '}
        refused; <b id="queue-now">{queueNow}</b> in the queue now. One point per {data.bucketSeconds} s.
      </p>
      <div class="charts">
        <Chart
          title="Throughput"
          time={data.time}
          series={[
            { label: 'queued', color: '#2a6fdb', values: c.queued },
            { label: 'delivered', color: '#1a9850', values: c.delivered },
          ]}
        />
        <Chart
          title="Failures"
          time={data.time}
          series={[
            { label: 'deferred', color: '#f39c12', values: c.deferred },
            { label: 'failed', color: '#d73027', values: c.failed },
            { label: 'refused', color: '#8e44ad', values: c.refused },
          ]}
        />
        <Chart
          title="Queue size"
          time={data.time}
          series={[{ label: 'messages', color: '#34495e', values: data.queue }]}
        />
      </div>
    </section>
  );
}
