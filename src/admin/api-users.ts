/**
 * The users part of the admin API: list, add, delete, set a password. The same functions as
 * `sterna user` (auth/users.ts writers: lock, atomic replace; cli/user-command.ts
 * passwordProblem), then the running server's user store re-reads the file at once. Passwords
 * are hashed by addUser/setPassword and never logged or returned.
 * Trust: requests come from the token's holder; addresses and passwords are still checked.
 */
import type { FastifyInstance, FastifyReply } from 'fastify';
import {
  addUser,
  deleteUser,
  listUsers,
  normalizeAddress,
  setPassword,
  UserFileError,
  type UserFileErrorCode,
} from '../auth/users.js';
import { passwordProblem } from '../cli/user-command.js';
import { sendError } from './listener.js';
import type { AdminServices } from './services.js';

const addBody = {
  type: 'object',
  required: ['address', 'password'],
  additionalProperties: false,
  properties: {
    address: { type: 'string', minLength: 3, maxLength: 320 },
    password: { type: 'string', maxLength: 4096 },
    cram_md5: { type: 'boolean' },
    send_as: { type: 'array', maxItems: 1000, items: { type: 'string', minLength: 1, maxLength: 320 } },
  },
} as const;

const passwordBody = {
  type: 'object',
  required: ['password'],
  additionalProperties: false,
  properties: { password: { type: 'string', maxLength: 4096 } },
} as const;

const addressParams = {
  type: 'object',
  required: ['address'],
  properties: { address: { type: 'string', minLength: 3, maxLength: 320 } },
} as const;

const STATUS: Record<UserFileErrorCode, number> = {
  USER_EXISTS: 409,
  USER_NOT_FOUND: 404,
  BAD_ADDRESS: 400,
  BAD_FILE: 500,
  LOCKED: 503,
};

export function userRoutes(app: FastifyInstance, s: AdminServices): void {
  const file = s.config.auth.users_file;

  /** Runs a change of the users file, then makes the running server see it. */
  const change = async (
    reply: FastifyReply,
    status: number,
    fn: () => Promise<string>,
  ): Promise<FastifyReply> => {
    let what: string;
    try {
      what = await fn();
    } catch (err) {
      if (!(err instanceof UserFileError)) throw err;
      return sendError(reply, STATUS[err.code], err.code.toLowerCase(), err.message);
    }
    await s.users.reload();
    s.log.info({ user: what }, 'admin API: users file changed');
    return reply.code(status).send({ address: what });
  };

  app.get('/api/users', async () => ({ users: await listUsers(file) }));

  app.post<{ Body: { address: string; password: string; cram_md5?: boolean; send_as?: string[] } }>(
    '/api/users',
    { schema: { body: addBody } },
    (request, reply) => {
      const b = request.body;
      const problem = passwordProblem(b.password);
      if (problem !== null) return sendError(reply, 400, 'bad_password', problem);
      return change(reply, 201, async () => {
        await addUser(file, b.address, b.password, {
          ...(b.cram_md5 !== undefined ? { cram: b.cram_md5 } : {}),
          ...(b.send_as !== undefined ? { sendAs: b.send_as } : {}),
        });
        return normalizeAddress(b.address);
      });
    },
  );

  app.delete<{ Params: { address: string } }>(
    '/api/users/:address',
    { schema: { params: addressParams } },
    (request, reply) =>
      change(reply, 200, async () => {
        await deleteUser(file, request.params.address);
        return normalizeAddress(request.params.address);
      }),
  );

  app.put<{ Params: { address: string }; Body: { password: string } }>(
    '/api/users/:address/password',
    { schema: { params: addressParams, body: passwordBody } },
    (request, reply) => {
      const problem = passwordProblem(request.body.password);
      if (problem !== null) return sendError(reply, 400, 'bad_password', problem);
      return change(reply, 200, async () => {
        await setPassword(file, request.params.address, request.body.password);
        return normalizeAddress(request.params.address);
      });
    },
  );
}
