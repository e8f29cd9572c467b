import type { QueueClient } from "@azure/storage-queue";
import { describeError } from "../errors";
import type { Logger } from "../logging";
import type { PullSlots } from "./pullSlots";
import { enqueueAlone, type PullRequestMessage } from "./scheduler";
import type { PullOutcome } from "./tenantPull";

export interface PullRequestDeps {
  tenantPull: { run(tenantId: string, log: Logger, owner?: string, waitedMs?: number): Promise<PullOutcome> };
  queue: () => Promise<QueueClient>;
  now: () => number;
  /** The process's pull slots: a group's tenants wait for one (see PullSlots). */
  slots: PullSlots;
  /** How long a group's tenant waits for a slot before it is sent again on its own. */
  slotWaitMs?: number;
}

/** Long enough for quiet pulls (a fraction of a second each) to free slots, short beside the function timeout. */
export const SLOT_WAIT_MS = 60_000;

/** Thrown for a pull that failed in a way no later cycle is known to cure: the queue's retries and poison queue take over. */
export class UnexpectedPullFailure extends Error {
  constructor(tenantIds: readonly string[]) {
    super(`pull of tenant ${tenantIds.join(", ")} failed unexpectedly`);
    this.name = "UnexpectedPullFailure";
  }
}

const unexpected = (outcome: PullOutcome): boolean => outcome.outcome === "failed" && outcome.code === "pull_failed";

/**
 * Runs the pulls a queue message asks for. Expected failures are recorded on the tenant by the
 * pull itself and retried next cycle. A message for one tenant throws on an unexpected failure,
 * so the queue's retries and poison queue apply to it. The tenants of a group are pulled side by
 * side, each within its own bounds; one that fails unexpectedly is sent again in a message of
 * its own (its retries and poisoning then concern it alone) and the group's message completes
 * for the others. Only a resend that fails throws: the whole message is retried, and pulling the
 * others again is merely a new cycle for them.
 */
export async function runPullRequest(request: PullRequestMessage, deps: PullRequestDeps, log: Logger, invocationId: string): Promise<void> {
  const [only] = request.tenantIds;
  if (only !== undefined && request.tenantIds.length === 1) {
    const release = deps.slots.take();
    try {
      if (unexpected(await deps.tenantPull.run(only, log, invocationId))) throw new UnexpectedPullFailure([only]);
    } finally {
      release();
    }
    return;
  }
  const failed: string[] = [];
  const deferred: string[] = [];
  await Promise.all(
    request.tenantIds.map(async (tenantId) => {
      const waitStarted = Date.now();
      const release = await deps.slots.acquire(deps.slotWaitMs ?? SLOT_WAIT_MS);
      if (!release) {
        deferred.push(tenantId);
        return;
      }
      try {
        // The wait comes off the pull's own bounds, which then still end inside the function timeout.
        if (unexpected(await deps.tenantPull.run(tenantId, log, invocationId, Date.now() - waitStarted))) failed.push(tenantId);
      } catch (error) {
        log.error("tenant pull threw in a group; it is sent again on its own", { tenantId, detail: describeError(error) });
        failed.push(tenantId);
      } finally {
        release();
      }
    }),
  );
  if (failed.length === 0 && deferred.length === 0) return;
  const enqueuedAt = new Date(deps.now()).toISOString();
  const unsent: string[] = [];
  for (const tenantId of [...failed, ...deferred]) {
    await enqueueAlone(deps.queue, tenantId, enqueuedAt).catch(() => unsent.push(tenantId));
  }
  if (failed.length > 0) log.warn("tenants whose pull failed unexpectedly in a group were sent again on their own", { tenants: failed.length });
  // Every slot busy for a minute: this instance is saturated; others pick these messages up.
  if (deferred.length > 0) log.warn("tenants of a group found no free pull slot and were sent again on their own", { tenants: deferred.length });
  if (unsent.length > 0) throw new UnexpectedPullFailure(unsent);
}

/** The line the pull-poisoned alert rule (infra/modules/alerts.bicep) looks for. */
export function reportPoisoned(log: Logger, tenantId: string): void {
  log.error("tenant pull failed repeatedly and was moved to the poison queue", { tenantId });
}

/**
 * A message the queue gave up on. One tenant: recorded as `pull_poisoned` on that tenant (the
 * caller has reported it first, before anything that needs settings). A group is split instead
 * (its tenants sent alone), so that only the tenant that really keeps failing ends up poisoned;
 * if even that fails, each of them is reported and recorded.
 */
export async function runPoisonedRequest(
  request: PullRequestMessage,
  deps: Pick<PullRequestDeps, "queue" | "now"> & { recordPoisoned: (tenantId: string) => Promise<void> },
  log: Logger,
): Promise<void> {
  let poisoned = request.tenantIds;
  if (poisoned.length > 1) {
    const enqueuedAt = new Date(deps.now()).toISOString();
    const unsent: string[] = [];
    for (const tenantId of poisoned) await enqueueAlone(deps.queue, tenantId, enqueuedAt).catch(() => unsent.push(tenantId));
    log.warn("a group of tenant pulls failed repeatedly; its tenants were sent again one per message", { tenants: poisoned.length - unsent.length });
    poisoned = unsent;
  }
  for (const tenantId of poisoned) {
    if (request.tenantIds.length > 1) reportPoisoned(log, tenantId);
    await deps.recordPoisoned(tenantId);
  }
}
