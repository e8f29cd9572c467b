/**
 * `work`'s outcome, or a rejection with `timedOut()` once `ms` have passed without one. A failure
 * of `work` that comes after the bound is swallowed; the timer never keeps the process alive.
 */
export function bounded<T>(work: Promise<T>, ms: number, timedOut: () => Error): Promise<T> {
  work.catch(() => undefined);
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(timedOut()), ms);
    timer.unref();
  });
  return Promise.race([work, expired]).finally(() => clearTimeout(timer));
}
