/**
 * Send limits count in fixed windows (`sendWindow` in server/src/broker/ports/message-log.ts):
 * sends on either side of a window's end are counted in two windows. A test counting up to a
 * limit first waits, when the current window of `seconds` has less than `marginMs` left, for
 * the next one to begin.
 */
export async function clearOfWindowEnd(seconds: number, marginMs = 10_000): Promise<void> {
  const windowMs = seconds * 1000;
  const left = windowMs - (Date.now() % windowMs);
  if (left < marginMs) await new Promise((resolve) => setTimeout(resolve, left + 10));
}
