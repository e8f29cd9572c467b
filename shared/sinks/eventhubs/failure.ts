import { SinkError } from "../alertSink";

/** A service or SDK code safe to show: an identifier, never free text that could echo a request. */
const PLAIN_CODE = /^[A-Za-z][A-Za-z0-9_.:-]{0,63}$/;

/**
 * Codes that will not fix themselves on a retry: the identity lacks the Data Sender role or the
 * token is refused (UnauthorizedError), the hub or namespace does not exist
 * (MessagingEntityNotFoundError; ServiceCommunicationError is what core-amqp makes of
 * `amqp:not-found` and of a host name that does not resolve), or the managed identity itself is
 * unavailable.
 */
const PERMANENT = new Set([
  "UnauthorizedError",
  "MessagingEntityNotFoundError",
  "ServiceCommunicationError",
  "CredentialUnavailableError",
  "AuthenticationError",
]);

/** Event Hubs says how long to back off when it throttles: "… Please wait 4 seconds and try again." */
const WAIT_HINT = /\bwait (\d{1,3}) seconds?\b/i;

interface ErrorShape {
  name?: unknown;
  code?: unknown;
  message?: unknown;
}

/**
 * The error that decided the outcome: core-amqp's retry throws an AggregateError of every
 * attempt's error, and the last attempt is the one that gave up.
 */
function decisive(error: unknown): ErrorShape {
  if (error instanceof AggregateError && error.errors.length > 0) return decisive(error.errors[error.errors.length - 1]);
  return typeof error === "object" && error !== null ? (error as ErrorShape) : {};
}

/**
 * A SinkError that says what failed and the service's code, never the SDK's message: AMQP error
 * descriptions can name the entity, the token audience and, for a connection string, its key name.
 */
export function eventHubsFailure(what: string, error: unknown): SinkError {
  if (error instanceof SinkError) return error;
  const cause = decisive(error);
  if (cause.name === "AbortError") return new SinkError(`${what}: abandoned when the time for the write ran out`);
  const code = [cause.code, cause.name].find((c): c is string => typeof c === "string" && PLAIN_CODE.test(c) && c !== "Error" && c !== "MessagingError");
  const wait = code === "ServerBusyError" && typeof cause.message === "string" ? WAIT_HINT.exec(cause.message)?.[1] : undefined;
  return new SinkError(code ? `${what} (${code})` : `${what} (no error code)`, undefined, {
    ...(code ? { code } : {}),
    ...(code && PERMANENT.has(code) ? { permanent: true } : {}),
    ...(wait ? { retryAfterMs: Number(wait) * 1000 } : {}),
  });
}
