import { app, type InvocationContext, type Timer } from "@azure/functions";
import { DEFAULT_PULL_SCHEDULE } from "../shared/config";
import { describeError } from "../shared/errors";
import { enqueueConnectedTenants, parsePullRequest } from "../shared/pull/scheduler";
import { getServices } from "../shared/services";
import { QUEUES } from "../shared/storage/names";
import { loggerFor } from "./runtime";

export async function schedulePulls(timer: Timer, context: InvocationContext): Promise<void> {
  const log = loggerFor(context);
  if (timer.isPastDue) log.warn("pull schedule is running late");
  const { tenants, pullQueue, clock, consent } = getServices();
  await enqueueConnectedTenants({ tenants, queue: pullQueue, now: clock }, log);
  await consent.purgeExpiredSessions().catch((error: unknown) => log.warn("consent session purge failed", { detail: describeError(error) }));
}

export async function pullTenant(message: unknown, context: InvocationContext): Promise<void> {
  const log = loggerFor(context);
  const request = parsePullRequest(message);
  if (!request) {
    // Retrying a malformed message cannot help; drop it with a trace.
    log.error("dropping a malformed pull request message");
    return;
  }
  const outcome = await getServices().tenantPull.run(request.tenantId, log, context.invocationId);
  // Expected failures are recorded on the tenant and retried next cycle; only the unexpected
  // ones throw, so the queue's retry and poison handling apply to them alone.
  if (outcome.outcome === "failed" && outcome.code === "pull_failed") {
    throw new Error(`pull of tenant ${request.tenantId} failed unexpectedly`);
  }
}

export async function pullTenantPoisoned(message: unknown, context: InvocationContext): Promise<void> {
  const log = loggerFor(context);
  const request = parsePullRequest(message);
  if (!request) return;
  log.error("tenant pull failed repeatedly and was moved to the poison queue", { tenantId: request.tenantId });
  await getServices().pullState.recordFailure(
    request.tenantId,
    "pull_poisoned",
    "The pull failed on every retry; see the function logs for this tenant",
  );
}

// Read at registration time: the host needs the schedule before any invocation.
app.timer("schedulePulls", {
  schedule: process.env["PULL_SCHEDULE"]?.trim() || DEFAULT_PULL_SCHEDULE,
  runOnStartup: false,
  useMonitor: true,
  handler: schedulePulls,
});
app.storageQueue("pullTenant", { queueName: QUEUES.tenantPulls, connection: "AzureWebJobsStorage", handler: pullTenant });
app.storageQueue("pullTenantPoisoned", {
  queueName: QUEUES.tenantPullsPoison,
  connection: "AzureWebJobsStorage",
  handler: pullTenantPoisoned,
});
