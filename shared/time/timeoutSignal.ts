/**
 * A signal that aborts with a `TimeoutError` once `timeoutMs` have passed, or as soon as `outer`
 * aborts. Not `AbortSignal.any([AbortSignal.timeout(ms), outer])`: Node lets a timeout signal that
 * only a composite refers to be garbage-collected before it fires (nodejs/node#57736, seen on
 * Node 20.20), and the bound silently goes. Here the timer holds the controller until it fires, so the
 * bound holds however the signal is passed on; the timer never keeps the process alive.
 */
export function timeoutSignal(timeoutMs: number, outer?: AbortSignal): AbortSignal {
  const controller = new AbortController();
  setTimeout(() => controller.abort(new DOMException("The operation was aborted due to timeout", "TimeoutError")), timeoutMs).unref();
  return outer ? AbortSignal.any([controller.signal, outer]) : controller.signal;
}
