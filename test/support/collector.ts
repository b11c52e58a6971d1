/** Collects messages and lets a test wait for the n-th one without guessing a delay. */
export function collector() {
  const messages: string[] = [];
  const waiters: { count: number; resolve: () => void }[] = [];
  return {
    messages,
    push: (message: string) => {
      messages.push(message);
      for (const waiter of [...waiters]) {
        if (messages.length >= waiter.count) {
          waiters.splice(waiters.indexOf(waiter), 1);
          waiter.resolve();
        }
      }
    },
    async waitFor(count: number, timeoutMs = 3000): Promise<string[]> {
      if (messages.length < count) {
        await new Promise<void>((resolve, reject) => {
          const timer = setTimeout(
            () => reject(new Error(`expected ${count} messages, got ${messages.length}`)),
            timeoutMs,
          );
          waiters.push({
            count,
            resolve: () => {
              clearTimeout(timer);
              resolve();
            },
          });
        });
      }
      return messages;
    },
  };
}
