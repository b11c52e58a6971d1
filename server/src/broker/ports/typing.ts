/**
 * Typing indicators, coalesced across instances: of the `typing` calls of one user in one
 * conversation, only the one that claims the slot sends the event.
 */
export interface TypingClaims {
  /** Claims the user's slot in the conversation for `holdMs` unless it is held; says whether it did. */
  claim(conversationId: string, userId: string, holdMs: number): Promise<boolean>;
}
