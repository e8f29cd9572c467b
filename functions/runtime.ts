import type { HttpResponseInit, InvocationContext } from "@azure/functions";
import { ConfigError } from "../shared/config";
import { AppError, describeError } from "../shared/errors";
import type { LogFields, Logger } from "../shared/logging";
import { getServices, type Services } from "../shared/services";
import { renderPage } from "../shared/consent/pages";

/** Adapts the invocation's logger to the core's structured Logger port. */
export function loggerFor(context: InvocationContext): Logger {
  const line = (message: string, fields?: LogFields) => (fields ? `${message} ${JSON.stringify(fields)}` : message);
  return {
    info: (message, fields) => context.log(line(message, fields)),
    warn: (message, fields) => context.warn(line(message, fields)),
    error: (message, fields) => context.error(line(message, fields)),
  };
}

export function json(status: number, body: unknown): HttpResponseInit {
  return {
    status,
    jsonBody: body,
    headers: { "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff" },
  };
}

function logFailure(context: InvocationContext, error: unknown): void {
  if (error instanceof ConfigError) {
    context.error(`app settings are invalid: ${error.problems.join("; ")}`);
  } else {
    context.error(`unhandled failure: ${describeError(error)}`);
  }
}

type Handler = (services: Services, log: Logger) => Promise<HttpResponseInit>;

/** Runs a handler with the process services; `onFailure` turns an escaped error into a response. */
async function guarded(
  context: InvocationContext,
  run: Handler,
  onFailure: (error: unknown) => HttpResponseInit,
): Promise<HttpResponseInit> {
  try {
    return await run(getServices(), loggerFor(context));
  } catch (error) {
    return onFailure(error);
  }
}

/** Runs an operator API handler: AppErrors become their 4xx/5xx JSON, anything else an opaque 500. */
export function operatorApi(context: InvocationContext, run: Handler): Promise<HttpResponseInit> {
  return guarded(context, run, (error) => {
    if (error instanceof AppError) return json(error.status, { error: { code: error.code, message: error.message } });
    logFailure(context, error);
    return json(500, {
      error: { code: "internal_error", message: `The request failed. Invocation id: ${context.invocationId}.` },
    });
  });
}

/** Runs a browser-facing handler: failures end on an error page, never a stack trace. */
export function browserFlow(context: InvocationContext, run: Handler): Promise<HttpResponseInit> {
  return guarded(context, run, (error) => {
    logFailure(context, error);
    const page = renderPage(503, {
      title: "Something went wrong",
      paragraphs: [
        "The consent service could not complete this step, so the consent may not have taken effect.",
        "Please open your consent link again in a few minutes. If it keeps failing, give your security provider this reference:",
      ],
      details: [["Reference", context.invocationId]],
    });
    return { status: page.status, headers: page.headers, body: page.body };
  });
}
