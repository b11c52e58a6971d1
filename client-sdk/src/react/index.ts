export { ParleyProvider, type ParleyProviderProps, useParley, useTRPC } from './provider.js';
export {
  type AuthState,
  type ConnectionStatus,
  useAuth,
  useConnection,
  useConversation,
  useConversations,
  useMarkRead,
  useMembers,
  useMessages,
  usePresence,
  useSendMessage,
  useTyping,
} from './hooks.js';
export {
  activityOf,
  type ChatMessage,
  isPending,
  type ParleyQueryProxy,
  syncEventsToCache,
} from './cache.js';
export { TypingStore } from './typing.js';
