import type { TRPCClient } from '@trpc/client';
import type { inferRouterInputs, inferRouterOutputs } from '@trpc/server';
import type { AppRouter } from './router.js';

/** Every procedure's input, by path: `RouterInputs['message']['send']`. */
export type RouterInputs = inferRouterInputs<AppRouter>;
/** Every procedure's output, by path: `RouterOutputs['conversation']['list']`. */
export type RouterOutputs = inferRouterOutputs<AppRouter>;

/** The typed tRPC client for Parley's router. */
export type ParleyApi = TRPCClient<AppRouter>;

export type Me = RouterOutputs['auth']['me'];
export type PublicUser = RouterOutputs['user']['byId'];
export type Tokens = RouterOutputs['auth']['refresh']['tokens'];
export type Message = RouterOutputs['message']['byId'];
export type Conversation = RouterOutputs['conversation']['byId'];
/** `{ email, password }` or `{ username, password }`, with this device's `deviceToken` if it has one. */
export type LoginInput = RouterInputs['auth']['login'];
/** What `auth.login` and `auth.register` answer: the user, the tokens and this device's token. */
export type SignIn = RouterOutputs['auth']['login'];
export type RegisterInput = RouterInputs['auth']['register'];

/** One item of the `events` subscription as it arrives: the event and, when tracked, its id. */
export type EventEnvelope =
  ReturnType<ParleyApi['events']['subscribe']> extends AsyncIterable<infer T> ? T : never;

type Unwrap<T> = T extends { id: string; data: infer E } ? E : T;
/** Anything the event stream carries (see the API's "The event stream"). */
export type ParleyEvent = Unwrap<EventEnvelope>;
export type ParleyEventType = ParleyEvent['type'];
/** The event of one type; `member.joined` and `member.left` share a shape. */
export type ParleyEventOf<T extends ParleyEventType> = ParleyEvent & { type: T };
