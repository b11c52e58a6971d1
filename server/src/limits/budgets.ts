/**
 * How often each procedure may be called: one table, applied to every call by one middleware
 * (`server/src/trpc.ts`), counted in the broker so that every instance shares the count.
 *
 * A budget is `max` calls per window of `windowSeconds`, counted per signed-in user or per
 * client address. Procedures that share a budget (editing and deleting messages, the group
 * changes) draw from one count. Past it, a call gets `TOO_MANY_REQUESTS` with the seconds left
 * in the window (`error.data.retryAfter`, and `Retry-After` over HTTP).
 */
export interface Budget {
  per: 'user' | 'address';
  max: number;
  windowSeconds: number;
}

export const defaultBudgets = {
  /**
   * Each registration costs a 128 MiB scrypt hash; the budget also bounds how fast one address
   * can probe which emails are registered.
   */
  registration: { per: 'address', max: 5, windowSeconds: 10 * 60 },
  /** What a client without an account calls: `health`, `auth.refresh`. */
  anonymous: { per: 'address', max: 600, windowSeconds: 60 },
  /** Reading one's own data, conversations and messages. */
  reads: { per: 'user', max: 1200, windowSeconds: 60 },
  /** `user.list`: a prefix search over every user's names. */
  userSearch: { per: 'user', max: 60, windowSeconds: 60 },
  /** Changing or deleting one's account, signing out; password checks also have their own throttle. */
  account: { per: 'user', max: 30, windowSeconds: 10 * 60 },
  /** `user.touch`. */
  touch: { per: 'user', max: 60, windowSeconds: 60 },
  /** Creating conversations: each one is rows in PostgreSQL and an event to every member. */
  conversations: { per: 'user', max: 30, windowSeconds: 60 },
  /** Renaming, membership and role changes, leaving and deleting: each writes events to every member. */
  groupChanges: { per: 'user', max: 60, windowSeconds: 60 },
  /**
   * Editing and deleting messages: each writes an event into every member's resume log, which
   * keeps only the last 2,000, so a flood would push out what a member has not fetched yet.
   */
  edits: { per: 'user', max: 60, windowSeconds: 60 },
  /** `conversation.markRead`: each move writes a `read` event to every member. */
  markRead: { per: 'user', max: 120, windowSeconds: 60 },
  /** `conversation.typing` calls; the events they send are also coalesced per conversation. */
  typing: { per: 'user', max: 120, windowSeconds: 60 },
  /** Event streams opened (reconnects included). */
  subscriptions: { per: 'user', max: 60, windowSeconds: 60 },
} satisfies Record<string, Budget>;

export type BudgetName = keyof typeof defaultBudgets;
export type Budgets = Record<BudgetName, Budget>;

/** A procedure whose calls are counted by its service, inside the operation itself. */
export interface CountedByService {
  countedBy: string;
}

/**
 * The budget of every procedure, by path. A procedure missing here fails every call (and the
 * test that enumerates the router), so a new one cannot go unthrottled by accident.
 */
export const procedureBudgets: Readonly<Record<string, BudgetName | CountedByService>> = {
  health: 'anonymous',
  'auth.register': 'registration',
  // Sign-in must never be blocked by what others do, so it has no budget per address here: its
  // throttle (per account, per address and per known device, reserved before the password is
  // hashed) is in `AuthService.login`.
  'auth.login': { countedBy: 'AuthService.login (account, address and device allowances)' },
  'auth.refresh': 'anonymous',
  'auth.logout': 'account',
  'auth.me': 'reads',
  'user.list': 'userSearch',
  'user.byId': 'reads',
  'user.update': 'account',
  'user.delete': 'account',
  'user.touch': 'touch',
  'conversation.openDirect': 'conversations',
  'conversation.createGroup': 'conversations',
  'conversation.list': 'reads',
  'conversation.byId': 'reads',
  'conversation.members': 'reads',
  'conversation.rename': 'groupChanges',
  'conversation.addMembers': 'groupChanges',
  'conversation.removeMember': 'groupChanges',
  'conversation.setRole': 'groupChanges',
  'conversation.leave': 'groupChanges',
  'conversation.delete': 'groupChanges',
  'conversation.markRead': 'markRead',
  'conversation.typing': 'typing',
  // Counted in the same atomic broker step as the append, so a send refused by it stores nothing.
  'message.send': { countedBy: 'MessageService.send (limits.sendsPerUser, inside the append)' },
  'message.list': 'reads',
  'message.byId': 'reads',
  'message.edit': 'edits',
  'message.delete': 'edits',
  events: 'subscriptions',
};
