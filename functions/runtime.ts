import type { HttpResponseInit, InvocationContext } from "@azure/functions";
import { ConfigError } from "../shared/config";
import { describeError } from "../shared/errors";
import type { LogFields, Logger } from "../shared/logging";
import { emitLogRecord, type LogSeverity } from "../shared/telemetry/logRecords";
import { alreadyExported } from "./hostLogForwarding";
import { getServices, type Services } from "../shared/services";
import { unexpectedFailurePage } from "../shared/consent/pages";
import { misconfiguredPage } from "../shared/health/misconfiguration";
import { refused } from "./settingsGuard";
import { consoleFailurePage } from "../shared/console/views";
import { HSTS_HEADER, type HtmlPage } from "../shared/ui/page";

/**
 * Adapts the invocation's logger to the core's structured Logger port. Each line becomes an
 * OpenTelemetry log record whose fields, with the invocation id, are attributes (custom
 * dimensions in Azure Monitor), and still goes to context.log as text for the host's own log
 * stream, marked so that it is not exported a second time (./hostLogForwarding.ts).
 */
export function loggerFor(context: InvocationContext): Logger {
  const line = (message: string, fields?: LogFields) => (fields ? `${message} ${JSON.stringify(fields)}` : message);
  const invocation = { invocationId: context.invocationId, functionName: context.functionName };
  const write = (severity: LogSeverity, hostLog: (text: string) => void) => (message: string, fields?: LogFields) => {
    emitLogRecord(severity, message, { ...fields, ...invocation });
    alreadyExported(() => hostLog(line(message, fields)));
  };
  return {
    info: write("info", (text) => context.log(text)),
    warn: write("warn", (text) => context.warn(text)),
    error: write("error", (text) => context.error(text)),
  };
}

export function json(status: number, body: unknown): HttpResponseInit {
  return {
    status,
    jsonBody: body,
    headers: { "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", ...HSTS_HEADER },
  };
}

export function logFailure(context: InvocationContext, error: unknown): void {
  if (error instanceof ConfigError) {
    refused(context, error, "this request");
  } else {
    context.error(`unhandled failure: ${describeError(error)}`);
  }
}

export type Handler = (services: Services, log: Logger) => Promise<HttpResponseInit>;

/** Runs a handler with the process services; `onFailure` turns an escaped error into a response. */
export async function guarded(
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

/** The MSSP's name and the sandbox flag for an error page, if the settings can be read at all. */
function pageOptions(): { msspName?: string; sandbox?: boolean } {
  try {
    const { config } = getServices();
    return { msspName: config.msspDisplayName, sandbox: config.localDev.sandbox === true };
  } catch {
    return {};
  }
}

/** An HTML page as the Functions runtime wants it (cookies become Set-Cookie headers). */
export function htmlResponse(page: HtmlPage): HttpResponseInit {
  return { status: page.status, headers: page.headers, body: page.body, ...(page.cookies?.length ? { cookies: page.cookies } : {}) };
}

/** Runs a browser-facing handler: failures end on an error page, never a stack trace. */
export function browserFlow(context: InvocationContext, run: Handler): Promise<HttpResponseInit> {
  return guarded(context, run, (error) => {
    logFailure(context, error);
    if (error instanceof ConfigError) return htmlResponse(misconfiguredPage(context.invocationId, "consent"));
    return htmlResponse(unexpectedFailurePage(context.invocationId, pageOptions()));
  });
}

/** Runs a console handler: an unexpected failure ends on the console's error page with a reference. */
export function consoleFlow(context: InvocationContext, run: (services: Services, log: Logger) => Promise<HtmlPage>): Promise<HttpResponseInit> {
  return guarded(
    context,
    async (services, log) => htmlResponse(await run(services, log)),
    (error) => {
      logFailure(context, error);
      if (error instanceof ConfigError) return htmlResponse(misconfiguredPage(context.invocationId, "console"));
      return htmlResponse(consoleFailurePage(context.invocationId, pageOptions()));
    },
  );
}
