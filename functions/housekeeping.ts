import { app, type InvocationContext, type Timer } from "@azure/functions";
import { describeError } from "../shared/errors";
import { loggerFor } from "./runtime";
import { servicesOrRefuse } from "./settingsGuard";

/**
 * Every 15 minutes, at 30 s past the quarter hour so it never starts in the same second as the
 * pull fan-out (every 5 minutes on the minute by default). Fixed rather than an app setting: a
 * session lives 15 minutes and is kept an hour after that, so a run per session lifetime is enough
 * and there is nothing to tune.
 */
export const PURGE_CONSENT_SESSIONS_SCHEDULE = "30 */15 * * * *";

/** Deletes expired consent sessions in bounded batches; what a run leaves, the next run continues. */
export async function purgeConsentSessions(timer: Timer, context: InvocationContext): Promise<void> {
  const log = loggerFor(context);
  if (timer.isPastDue) log.warn("consent session purge is running late");
  const services = servicesOrRefuse(context, "the consent session purge");
  if (!services) return;
  try {
    const report = await services.consentSessions.purge();
    log.info("consent sessions purged", { ...report });
  } catch (error) {
    // Nothing is lost by a failed run: the rows stay expired and the next run deletes them.
    log.warn("consent session purge failed", { detail: describeError(error) });
  }
}

app.timer("purgeConsentSessions", {
  schedule: PURGE_CONSENT_SESSIONS_SCHEDULE,
  runOnStartup: false,
  useMonitor: true,
  handler: purgeConsentSessions,
});
