import type { Conversation } from '@parley/client';

export function conversationTitle(conversation: Conversation, me: string | undefined): string {
  if (conversation.type === 'group') return conversation.name ?? 'Group';
  const other = conversation.members.find((member) => member.userId !== me);
  return other?.displayName ?? 'Just you';
}

export function otherMember(conversation: Conversation, me: string | undefined) {
  return conversation.type === 'direct'
    ? (conversation.members.find((member) => member.userId !== me) ?? null)
    : null;
}

export function displayName(conversation: Conversation, userId: string, fallback: string): string {
  return conversation.members.find((member) => member.userId === userId)?.displayName ?? fallback;
}

const time = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const day = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric' });

export function shortTime(date: Date): string {
  const today = new Date();
  return date.toDateString() === today.toDateString() ? time.format(date) : day.format(date);
}

export function lastSeen(date: Date | null): string {
  if (!date) return 'offline';
  const minutes = Math.round((Date.now() - date.getTime()) / 60_000);
  if (minutes < 1) return 'last seen just now';
  if (minutes < 60) return `last seen ${minutes} min ago`;
  return `last seen ${shortTime(date)}`;
}

/** A server error as one readable line, with the first field message when there is one. */
export function errorText(error: unknown): string {
  if (!error) return '';
  const data = (error as { data?: { zodError?: { fieldErrors?: Record<string, string[]> } } }).data;
  const fields = Object.entries(data?.zodError?.fieldErrors ?? {});
  const first = fields[0];
  if (first?.[1][0]) return `${first[0]}: ${first[1][0]}`;
  return error instanceof Error ? error.message : 'Something went wrong';
}

/** A text field of a submitted form ('' when missing). */
export function field(form: FormData, name: string): string {
  const value = form.get(name);
  return typeof value === 'string' ? value : '';
}
