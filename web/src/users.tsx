/** Users: list, add, delete, set a password (GET/POST /api/users, DELETE, PUT …/password). */
import { useState } from 'preact/hooks';
import { api } from './api.js';
import { errorText } from './format.js';
import { useApi } from './hooks.js';

export function Users() {
  const list = useApi(() => api<{ users: string[] }>('GET', '/api/users'), []);
  const [address, setAddress] = useState('');
  const [password, setPassword] = useState('');
  const [notice, setNotice] = useState<string | null>(null);

  const run = (what: string, call: () => Promise<unknown>): void => {
    call().then(
      () => {
        setNotice(`${what}: done`);
        list.reload();
      },
      (err: unknown) => setNotice(`${what} failed: ${errorText(err)}`),
    );
  };

  return (
    <section>
      <h2>Users</h2>
      <form
        class="filters"
        id="user-form"
        onSubmit={(e) => {
          e.preventDefault();
          const a = address.trim();
          run(`add ${a}`, () => api('POST', '/api/users', { address: a, password }));
          setPassword('');
        }}
      >
        <label>
          Address
          <input name="address" value={address} onInput={(e) => setAddress(e.currentTarget.value)} />
        </label>
        <label>
          Password
          <input
            name="password"
            type="password"
            autocomplete="new-password"
            value={password}
            onInput={(e) => setPassword(e.currentTarget.value)}
          />
        </label>
        <button type="submit">Add user</button>
        <button
          type="button"
          onClick={() => {
            const a = address.trim();
            run(`password of ${a}`, () =>
              api('PUT', `/api/users/${encodeURIComponent(a)}/password`, { password }),
            );
            setPassword('');
          }}
        >
          Set password
        </button>
      </form>
      {notice !== null && <p class="notice">{notice}</p>}
      {list.error !== null && <p class="error">{list.error}</p>}
      <table class="list" id="users-table">
        <tbody>
          {(list.data?.users ?? []).map((u) => (
            <tr key={u} data-user={u}>
              <td>{u}</td>
              <td class="actions">
                <button onClick={() => setAddress(u)}>edit</button>
                <button
                  class="danger"
                  onClick={() => {
                    if (window.confirm(`delete user ${u}?`))
                      run(`delete ${u}`, () => api('DELETE', `/api/users/${encodeURIComponent(u)}`));
                  }}
                >
                  delete
                </button>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}
