import { randomUUID } from "node:crypto";
import { BlobServiceClient } from "@azure/storage-blob";
import { inject } from "vitest";
import { loadConfig } from "../../shared/config";
import type { LogFields, Logger } from "../../shared/logging";
import { createServices, type ServiceOverrides, type Services } from "../../shared/services";
/** One NDJSON line as the blob sink stores it: the envelope with the alert object as the API sent it. */
export interface StoredEnvelope {
  tenantId: string;
  tenantName: string;
  source: string;
  pulledAt: string;
  alert: { id: string; lastUpdateTime: string; [field: string]: unknown };
}
import { completeConsent, registerTenant, type TestEnvironment } from "./testEnvironment";

export interface CapturedLogger extends Logger {
  lines: string[];
}

export function capturingLogger(): CapturedLogger {
  const lines: string[] = [];
  const push = (level: string) => (message: string, fields?: LogFields) => {
    lines.push(`${level} ${message} ${fields ? JSON.stringify(fields) : ""}`);
  };
  return { lines, info: push("info"), warn: push("warn"), error: push("error") };
}

/** Services built from the same settings the app uses, with a movable clock and instant sleeps. */
export function pipelineServices(env: TestEnvironment, overrides: ServiceOverrides = {}): Services & { sleeps: number[] } {
  const sleeps: number[] = [];
  const services = createServices(loadConfig({ ...process.env, ...env.env }), {
    sleep: async (ms) => {
      sleeps.push(ms);
    },
    ...overrides,
  });
  return Object.assign(services, { sleeps });
}

/** Registers and consents a tenant through the app's own handlers. */
export async function connectedTenant(env: TestEnvironment, displayName = "Contoso"): Promise<string> {
  const { tenantId, consentUrl } = await registerTenant(env, randomUUID(), displayName);
  const { callback } = await completeConsent(env, consentUrl);
  if (callback.status !== 200) throw new Error(`consent failed: ${callback.status}`);
  return tenantId;
}

/** Every envelope the blob sink holds for a tenant, in blob-name order. */
export async function deliveredEnvelopes(env: TestEnvironment, tenantId: string): Promise<StoredEnvelope[]> {
  // The environment's own storage: a test file may run its own Azurite instead of the suite's.
  const container = BlobServiceClient.fromConnectionString(env.env["AzureWebJobsStorage"] ?? inject("storageConnectionString")).getContainerClient(
    env.env["ALERTS_CONTAINER"] ?? "alerts",
  );
  if (!(await container.exists())) return [];
  const envelopes: StoredEnvelope[] = [];
  for await (const blob of container.listBlobsFlat({ prefix: `${tenantId}/` })) {
    const text = (await container.getBlobClient(blob.name).downloadToBuffer()).toString("utf8");
    for (const line of text.split("\n")) if (line) envelopes.push(JSON.parse(line) as StoredEnvelope);
  }
  return envelopes;
}

export function deliveredIds(envelopes: StoredEnvelope[]): string[] {
  return envelopes.map((e) => `${e.alert.id}@${e.alert.lastUpdateTime}`);
}

export const minutesAgo = (minutes: number): Date => new Date(Date.now() - minutes * 60_000);

/** Served vs delivered vs duplicated, by version `${id}@${lastUpdateTime}`. */
export interface DeliveryTally {
  /** Versions the Defender fake put in a 200 answer. */
  served: number;
  /** Alerts the fake holds now (their newest versions). */
  finalVersions: number;
  /** Lines in the blob sink. */
  delivered: number;
  unique: number;
  duplicates: number;
  /** Served but not delivered. */
  missing: string[];
  /** An alert's newest version not delivered. */
  missingFinal: string[];
  duplicated: string[];
}

/** Everything served and every alert's newest version must be in the sink, once. */
export async function deliveryTally(env: TestEnvironment, tenantId: string): Promise<DeliveryTally> {
  const served = [...env.defender.served(tenantId).keys()];
  const lines = deliveredIds(await deliveredEnvelopes(env, tenantId));
  const counts = new Map<string, number>();
  for (const id of lines) counts.set(id, (counts.get(id) ?? 0) + 1);
  const finals = env.defender.alerts(tenantId).map((a) => `${a.id}@${a.lastUpdateTime}`);
  return {
    served: served.length,
    finalVersions: finals.length,
    delivered: lines.length,
    unique: counts.size,
    duplicates: lines.length - counts.size,
    missing: served.filter((v) => !counts.has(v)),
    missingFinal: finals.filter((v) => !counts.has(v)),
    duplicated: [...counts].filter(([, n]) => n > 1).map(([v]) => v),
  };
}

export { seededRandom } from "./random";
