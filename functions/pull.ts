import { app, type InvocationContext, type Timer } from "@azure/functions";
import { pullScheduleForRegistration } from "../shared/config";
import { reportPoisoned, runPoisonedRequest, runPullRequest } from "../shared/pull/pullRequests";
import { enqueueConnectedTenants, parsePullRequest } from "../shared/pull/scheduler";
import { QUEUES } from "../shared/storage/names";
import { loggerFor } from "./runtime";
import { servicesOrRefuse } from "./settingsGuard";

export async function schedulePulls(timer: Timer, context: InvocationContext): Promise<void> {
  const log = loggerFor(context);
  if (timer.isPastDue) log.warn("pull schedule is running late");
  const services = servicesOrRefuse(context, "the pull fan-out");
  if (!services) return;
  const { tenants, pullQueue, pullState, clock, notifications, config } = services;
  try {
    await enqueueConnectedTenants(
      {
        tenants,
        queue: pullQueue,
        now: clock,
        pullStates: () => pullState.readAll(),
        tenantsPerMessage: config.pull.tenantsPerMessage,
        pageSize: config.pull.pageSize,
      },
      log,
    );
  } finally {
    // Once per cycle, after the fan-out: the last cycle's notification events as one message.
    // Never throws, and runs even when the fan-out failed (the outbox is independent of it).
    await notifications?.flush.run(log);
  }
}

export async function pullTenant(message: unknown, context: InvocationContext): Promise<void> {
  const log = loggerFor(context);
  const request = parsePullRequest(message);
  if (!request) {
    // Retrying a malformed message cannot help; drop it with a trace.
    log.error("dropping a malformed pull request message");
    return;
  }
  // Invalid settings: logged and the message consumed; the next fan-out enqueues the tenants again.
  const services = servicesOrRefuse(context, `the pull of tenant ${request.tenantIds.join(", ")}`);
  if (!services) return;
  await runPullRequest(
    request,
    { tenantPull: services.tenantPull, queue: services.pullQueue, now: services.clock, slots: services.pullSlots },
    log,
    context.invocationId,
  );
}

export async function pullTenantPoisoned(message: unknown, context: InvocationContext): Promise<void> {
  const log = loggerFor(context);
  const request = parsePullRequest(message);
  if (!request) return;
  const [only] = request.tenantIds;
  if (only !== undefined && request.tenantIds.length === 1) reportPoisoned(log, only);
  const services = servicesOrRefuse(context, "recording the poisoned pull");
  if (!services) {
    // A group cannot be split without settings: each of its tenants is reported instead.
    if (request.tenantIds.length > 1) for (const tenantId of request.tenantIds) reportPoisoned(log, tenantId);
    return;
  }
  await runPoisonedRequest(
    request,
    {
      queue: services.pullQueue,
      now: services.clock,
      recordPoisoned: (tenantId) =>
        services.pullState.recordFailure(tenantId, "pull_poisoned", "The pull failed on every retry; see the function logs for this tenant"),
    },
    log,
  );
}

// Read at registration time: the host needs the schedule before any invocation. An invalid
// PULL_SCHEDULE registers the default instead, so the timer runs and reports it (the host would
// otherwise drop the function without a word).
app.timer("schedulePulls", {
  schedule: pullScheduleForRegistration(process.env),
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
