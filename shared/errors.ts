/**
 * Errors whose message is safe to show an operator or a customer's admin: they never carry a
 * token, code or secret. Anything else that escapes a handler is reported as an opaque 500 with
 * only the invocation id, because third-party error messages may embed request bodies.
 */
export class AppError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly status: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "AppError";
  }
}

export const badRequest = (code: string, message: string): AppError => new AppError(code, message, 400);
export const notFound = (code: string, message: string): AppError => new AppError(code, message, 404);
export const conflict = (code: string, message: string): AppError => new AppError(code, message, 409);
export const unavailable = (code: string, message: string, cause?: unknown): AppError =>
  new AppError(code, message, 503, { cause });

/** Status code of an Azure SDK RestError (or anything shaped like one), without trusting its message. */
export function statusOf(error: unknown): number | undefined {
  if (typeof error === "object" && error !== null && "statusCode" in error) {
    const status = (error as { statusCode?: unknown }).statusCode;
    return typeof status === "number" ? status : undefined;
  }
  return undefined;
}

/** The error's class name only: safe to log where the message might quote a secret. */
export function errorKind(error: unknown): string {
  if (error instanceof Error) return error.name || "Error";
  return typeof error;
}

/** Error classes whose messages the app writes itself and knows to be free of secrets. */
const SAFE_MESSAGE_ERRORS = new Set([
  "AppError",
  "ConfigError",
  "SecretStoreError",
  "HttpTimeoutError",
  "HttpNetworkError",
  "HttpResponseTooLargeError",
  "IdTokenRejectedError",
  "DefenderApiError",
  "SinkError",
  "InvalidPageError",
  "DeadLetterError",
  "ParkingError",
]);

/** A one-line description of an error that is safe to log: the message only for our own classes. */
export function describeError(error: unknown): string {
  if (error instanceof Error && SAFE_MESSAGE_ERRORS.has(error.name)) return `${error.name}: ${error.message}`;
  const status = statusOf(error);
  const code = typeof error === "object" && error !== null ? (error as { errorCode?: unknown }).errorCode : undefined;
  return [errorKind(error), status ? `HTTP ${status}` : "", typeof code === "string" ? code : ""].filter(Boolean).join(" ");
}
