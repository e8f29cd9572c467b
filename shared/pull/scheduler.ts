import type { QueueClient } from "@azure/storage-queue";
import { MAX_TENANTS_PER_MESSAGE } from "../config";
import { describeError } from "../errors";
import type { Logger } from "../logging";
import type { TenantRegistry } from "../state/tenantRegistry";
import { encodeQueueMessage } from "../state/queues";
import { bounded } from "../time/bounded";
import type { PullState } from "./pullState";
import { timeoutSignal } from "../time/timeoutSignal";

/**
 * A queue message asks for the pull of one tenant (`tenantId`, the only form earlier versions
 * know) or of several quiet ones (`tenantIds`, see enqueueConnectedTenants).
 */
export interface PullRequestMessage {
  tenantIds: string[];
  enqueuedAt: string;
}

const SEND_CONCURRENCY = 16;
/** The fan-out's read of the pull states is bounded: without it, every tenant gets a message of its own. */
const QUIET_READ_TIMEOUT_MS = 30_000;
/** The message expires before the next-but-one cycle so a backlog never snowballs. */
const MESSAGE_TTL_SECONDS = 15 * 60;

const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * A tenant whose next pull is expected to be short: its last run finished its window, delivered
 * less than a page, left no sink behind, and did not fail. Several such tenants can share one
 * message; anything else (a first pull, a backlog, a failing tenant) gets a message of its own,
 * so its retries and its place in the poison queue stay its own.
 */
export function isQuiet(state: PullState, pageSize: number): boolean {
  return (
    state.lastSuccessAt !== undefined &&
    state.window === undefined &&
    state.invalidSpan === undefined &&
    state.consecutiveFailures === 0 &&
    (state.lastAlertCount ?? 0) < pageSize &&
    !Object.values(state.sinks ?? {}).some((entry) => entry.parkedTo > entry.parkedFrom)
  );
}

/**
 * The timer's whole job: a queue message per connected tenant, or per group of up to
 * `tenantsPerMessage` quiet ones (fewer queue operations per tenant-cycle; see isQuiet). The queue
 * trigger then scales the pulls out across instances.
 */
export async function enqueueConnectedTenants(
  deps: {
    tenants: TenantRegistry;
    queue: () => Promise<QueueClient>;
    now: () => number;
    /** The pull states by tenant (PullStateStore.readAll); without it every tenant is sent alone. */
    pullStates?: () => Promise<ReadonlyMap<string, PullState>>;
    tenantsPerMessage?: number;
    pageSize?: number;
  },
  log: Logger,
): Promise<number> {
  const connected = await deps.tenants.list("connected");
  const queue = await deps.queue();
  const enqueuedAt = new Date(deps.now()).toISOString();
  const groups = await groupTenants(
    connected.map((tenant) => tenant.tenantId),
    deps,
    log,
  );
  let next = 0;
  let failures = 0;
  const worker = async () => {
    while (next < groups.length) {
      const group = groups[next++];
      if (!group) break;
      try {
        await queue.sendMessage(encodeQueueMessage(pullMessage(group, enqueuedAt)), { messageTimeToLive: MESSAGE_TTL_SECONDS });
      } catch {
        failures += group.length;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(SEND_CONCURRENCY, groups.length) }, worker));
  if (failures > 0) log.error("could not enqueue some tenant pulls", { failed: failures, tenants: connected.length });
  log.info("tenant pulls enqueued", { tenants: connected.length - failures, messages: groups.length });
  return connected.length - failures;
}

/** The message for one tenant keeps the single-tenant form, which every version reads. */
export function pullMessage(tenantIds: readonly string[], enqueuedAt: string): Record<string, unknown> {
  return tenantIds.length === 1 ? { tenantId: tenantIds[0], enqueuedAt } : { tenantIds: [...tenantIds], enqueuedAt };
}

/** A resend runs at the end of an invocation that may be near its timeout: bounded. */
const RESEND_TIMEOUT_MS = 10_000;

/** Sends one tenant's pull in a message of its own (a tenant taken out of a group). */
export async function enqueueAlone(queue: () => Promise<QueueClient>, tenantId: string, enqueuedAt: string): Promise<void> {
  await (await queue()).sendMessage(encodeQueueMessage(pullMessage([tenantId], enqueuedAt)), {
    messageTimeToLive: MESSAGE_TTL_SECONDS,
    abortSignal: timeoutSignal(RESEND_TIMEOUT_MS),
  });
}

async function groupTenants(
  tenantIds: string[],
  deps: { pullStates?: () => Promise<ReadonlyMap<string, PullState>>; tenantsPerMessage?: number; pageSize?: number },
  log: Logger,
): Promise<string[][]> {
  const size = Math.min(MAX_TENANTS_PER_MESSAGE, Math.max(1, deps.tenantsPerMessage ?? 1));
  if (size === 1 || !deps.pullStates || tenantIds.length < 2) return tenantIds.map((id) => [id]);
  let states: ReadonlyMap<string, PullState>;
  try {
    states = await bounded(deps.pullStates(), QUIET_READ_TIMEOUT_MS, () => new Error(`no answer in ${QUIET_READ_TIMEOUT_MS} ms`));
  } catch (error) {
    log.warn("could not read the pull states to group quiet tenants; one message per tenant this cycle", { detail: describeError(error) });
    return tenantIds.map((id) => [id]);
  }
  const pageSize = deps.pageSize ?? Number.POSITIVE_INFINITY;
  const quiet: string[] = [];
  const alone: string[][] = [];
  for (const id of tenantIds) {
    const state = states.get(id);
    if (state && isQuiet(state, pageSize)) quiet.push(id);
    else alone.push([id]);
  }
  const groups = alone;
  for (let i = 0; i < quiet.length; i += size) groups.push(quiet.slice(i, i + size));
  return groups;
}

/** Parses a queue message (already base64-decoded by the host); undefined if malformed. */
export function parsePullRequest(raw: unknown): PullRequestMessage | undefined {
  const value = typeof raw === "string" ? safeJson(raw) : raw;
  if (typeof value !== "object" || value === null) return undefined;
  const { tenantId, tenantIds, enqueuedAt } = value as { tenantId?: unknown; tenantIds?: unknown; enqueuedAt?: unknown };
  const ids = tenantIds === undefined ? [tenantId] : tenantIds;
  if (!Array.isArray(ids) || ids.length === 0 || ids.length > MAX_TENANTS_PER_MESSAGE) return undefined;
  if (!ids.every((id): id is string => typeof id === "string" && GUID.test(id))) return undefined;
  return { tenantIds: [...new Set(ids.map((id) => id.toLowerCase()))], enqueuedAt: typeof enqueuedAt === "string" ? enqueuedAt : "" };
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
