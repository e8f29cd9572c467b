import type { QueueClient } from "@azure/storage-queue";
import type { Logger } from "../logging";
import type { TenantRegistry } from "../state/tenantRegistry";
import { encodeQueueMessage } from "../state/queues";

export interface PullRequestMessage {
  tenantId: string;
  enqueuedAt: string;
}

const SEND_CONCURRENCY = 16;

/**
 * The timer's whole job: one queue message per connected tenant. The queue trigger then scales
 * the pulls out across instances, and a tenant that keeps failing ends in the poison queue
 * without holding up the others.
 */
export async function enqueueConnectedTenants(
  deps: { tenants: TenantRegistry; queue: () => Promise<QueueClient>; now: () => number },
  log: Logger,
): Promise<number> {
  const connected = await deps.tenants.list("connected");
  const queue = await deps.queue();
  const enqueuedAt = new Date(deps.now()).toISOString();
  let next = 0;
  let failures = 0;
  const worker = async () => {
    while (next < connected.length) {
      const tenant = connected[next++];
      if (!tenant) break;
      const message: PullRequestMessage = { tenantId: tenant.tenantId, enqueuedAt };
      try {
        // The message expires before the next-but-one cycle so a backlog never snowballs.
        await queue.sendMessage(encodeQueueMessage(message), { messageTimeToLive: 15 * 60 });
      } catch {
        failures++;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(SEND_CONCURRENCY, connected.length) }, worker));
  if (failures > 0) log.error("could not enqueue some tenant pulls", { failed: failures, tenants: connected.length });
  log.info("tenant pulls enqueued", { tenants: connected.length - failures });
  return connected.length - failures;
}

/** Parses a queue message (already base64-decoded by the host); undefined if malformed. */
export function parsePullRequest(raw: unknown): PullRequestMessage | undefined {
  const value = typeof raw === "string" ? safeJson(raw) : raw;
  if (typeof value !== "object" || value === null) return undefined;
  const tenantId = (value as { tenantId?: unknown }).tenantId;
  const enqueuedAt = (value as { enqueuedAt?: unknown }).enqueuedAt;
  if (typeof tenantId !== "string" || !/^[0-9a-f-]{36}$/i.test(tenantId)) return undefined;
  return { tenantId: tenantId.toLowerCase(), enqueuedAt: typeof enqueuedAt === "string" ? enqueuedAt : "" };
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
