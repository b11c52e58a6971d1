export {
  createParleyClient,
  type EventSourceConstructor,
  type ParleyClient,
  type ParleyClientOptions,
} from './client.js';
export type { AuthChange } from './session.js';
export { memoryTokenStorage, type StoredTokens, type TokenStorage } from './storage.js';
export {
  localStorageTokenStorage,
  type LocalStorageTokenStorageOptions,
  type WebStorage,
} from './local-storage.js';
export type { ParleyEvents, StreamStatus } from './events.js';
export type { KeepAlive } from './connection.js';
export type { SendRetry } from './links.js';
export type { WebSocketConstructor } from './socket.js';
export { errorCode, isNetworkFailure } from './errors.js';
export { TRPCClientError } from '@trpc/client';
export type { AppRouter } from './router.js';
export type {
  Conversation,
  EventEnvelope,
  LoginInput,
  Me,
  Message,
  ParleyApi,
  ParleyEvent,
  ParleyEventOf,
  ParleyEventType,
  PublicUser,
  RegisterInput,
  RouterInputs,
  RouterOutputs,
  SignIn,
  Tokens,
} from './types.js';
