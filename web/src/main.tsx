/**
 * Sterna's admin dashboard (docs/operations.md, "Dashboard"): a single page over the admin API,
 * routed by the URL fragment (#/queue, #/message/QID …). When the API asks for the bearer token
 * (401), a login form takes it and keeps it in sessionStorage (api.ts).
 */
import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import 'uplot/dist/uPlot.min.css';
import '../app.css';
import { api, AuthError, setToken, token, whenAuthNeeded } from './api.js';
import { Destinations } from './destinations.js';
import { errorText } from './format.js';
import { Message } from './message.js';
import { Overview } from './overview.js';
import { Queue } from './queue.js';
import { Refusals } from './refusals.js';
import { Users } from './users.js';

const PAGES = [
  ['overview', 'Overview'],
  ['queue', 'Queue'],
  ['destinations', 'Destinations'],
  ['message', 'Message'],
  ['refusals', 'Refusals'],
  ['users', 'Users'],
] as const;

type PageName = (typeof PAGES)[number][0];

function route(hash: string): { page: PageName; arg: string } {
  const [, name = '', arg = ''] = hash.split('/');
  const page = PAGES.find(([n]) => n === name)?.[0] ?? 'overview';
  return { page, arg: decodeURIComponent(arg) };
}

function Login(props: { failed: boolean; onToken: () => void }) {
  const [value, setValue] = useState('');
  const [error, setError] = useState<string | null>(null);
  return (
    <form
      class="login"
      id="login"
      onSubmit={(e) => {
        e.preventDefault();
        setToken(value.trim());
        // Checked on a route that needs it; the token stays only if the server takes it.
        api('GET', '/api/stats/series').then(
          () => props.onToken(),
          (err: unknown) => {
            setToken(null);
            setError(err instanceof AuthError ? 'That token was refused.' : errorText(err));
          },
        );
      }}
    >
      <h2>Sterna admin</h2>
      <p>
        {props.failed && token() === null
          ? 'This server needs the admin token ([admin] token_file).'
          : 'Enter the admin token.'}
      </p>
      <label>
        Token
        <input
          name="token"
          type="password"
          autocomplete="current-password"
          value={value}
          onInput={(e) => setValue(e.currentTarget.value)}
        />
      </label>
      <button type="submit">Log in</button>
      {error !== null && <p class="error">{error}</p>}
    </form>
  );
}

function App() {
  const [where, setWhere] = useState(() => route(location.hash));
  const [needLogin, setNeedLogin] = useState(false);

  useEffect(() => {
    const onHash = (): void => setWhere(route(location.hash));
    window.addEventListener('hashchange', onHash);
    whenAuthNeeded(() => setNeedLogin(true));
    return () => window.removeEventListener('hashchange', onHash);
  }, []);

  if (needLogin) return <Login failed onToken={() => setNeedLogin(false)} />;
  let page;
  switch (where.page) {
    case 'overview':
      page = <Overview />;
      break;
    case 'queue':
      page = <Queue key={where.arg} domain={where.arg} />;
      break;
    case 'destinations':
      page = <Destinations />;
      break;
    case 'message':
      page = <Message key={where.arg} qid={where.arg} />;
      break;
    case 'refusals':
      page = <Refusals />;
      break;
    case 'users':
      page = <Users />;
      break;
  }
  return (
    <>
      <header>
        <h1>Sterna</h1>
        <nav>
          {PAGES.map(([name, label]) => (
            <a key={name} href={`#/${name}`} class={name === where.page ? 'current' : ''}>
              {label}
            </a>
          ))}
        </nav>
        {token() !== null && (
          <button
            class="logout"
            onClick={() => {
              setToken(null);
              setNeedLogin(true);
            }}
          >
            Log out
          </button>
        )}
      </header>
      <main>{page}</main>
    </>
  );
}

const root = document.getElementById('app');
if (root !== null) render(<App />, root);
