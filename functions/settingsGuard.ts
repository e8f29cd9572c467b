import { app, type InvocationContext } from "@azure/functions";
import { ConfigError } from "../shared/config";
import { describeError } from "../shared/errors";
import { checkSettingsAtStart, refusalLine, reportOnce } from "../shared/health/misconfiguration";
import { getServices, type Services } from "../shared/services";

/**
 * Fail fast and visibly on invalid app settings. The app start hook validates them once per
 * worker process and logs every problem as one error; every function then refuses work with the
 * setting names (operator API 503, consent and console pages 503 with a reference, the timer and
 * the queue functions one log line per run). Where no start hook runs (the test harness captures
 * hooks without running them), the first invocation that meets the problem logs the full report.
 */

// No InvocationContext exists at app start: console.error goes to the host's worker log as an error.
app.hook.appStart(() => {
  try {
    checkSettingsAtStart((report) => console.error(`Error: ${report}`));
  } catch (error) {
    // Never fail the host's start over the check itself; the first invocation meets the problem.
    console.error(`Error: the app start settings check failed: ${describeError(error)}`);
  }
});

/** Logs a refusal: the full report if this process has not logged it yet, then one line naming the settings. */
export function refused(context: InvocationContext, error: ConfigError, what: string): void {
  reportOnce(error, (report) => context.error(report));
  context.error(refusalLine(error, what));
}

/**
 * The services for a timer or queue function, or undefined once the refusal is logged: invalid
 * settings are reported, never thrown. A throw would only retry each queue message five times and
 * then poison it, and the poison handler needs the same settings; the timer re-enqueues every
 * connected tenant each cycle and pulls resume from their checkpoints, so nothing is lost.
 */
export function servicesOrRefuse(context: InvocationContext, what: string): Services | undefined {
  try {
    return getServices();
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    refused(context, error, what);
    return undefined;
  }
}
