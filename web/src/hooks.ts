/** Loading API data into a page: the value, the error, a reload; optionally polled. */
import { useCallback, useEffect, useState } from 'preact/hooks';
import { AuthError } from './api.js';
import { errorText } from './format.js';

export interface Loaded<T> {
  data: T | null;
  error: string | null;
  reload: () => void;
}

export function useApi<T>(load: () => Promise<T>, deps: readonly unknown[], pollMs?: number): Loaded<T> {
  const [data, setData] = useState<T | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [tick, setTick] = useState(0);
  const reload = useCallback(() => setTick((t) => t + 1), []);

  useEffect(() => {
    let live = true;
    load().then(
      (v) => {
        if (!live) return;
        setData(v);
        setError(null);
      },
      (err: unknown) => {
        if (live && !(err instanceof AuthError)) setError(errorText(err));
      },
    );
    return () => {
      live = false;
    };
    // load is a new closure each render; deps say when it means something new.
  }, [...deps, tick]);

  useEffect(() => {
    if (pollMs === undefined) return undefined;
    const t = setInterval(reload, pollMs);
    return () => clearInterval(t);
  }, [pollMs, reload]);

  return { data, error, reload };
}
