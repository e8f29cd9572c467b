import { randomUUID } from "node:crypto";
import type { Clock } from "../clock";
import { scanPage } from "../defender/pageScanner";
import { ALERT_SOURCE_PROFILES, isAlertSource } from "../sources/alertSources";
import { conflict, notFound } from "../errors";
import type { Logger } from "../logging";
import type { AlertEnvelope, AlertSink } from "../sinks/alertSink";
import type { DeadLetter, DeadLetterStore } from "../sinks/deadLetters";
import type { TenantRegistry } from "../state/tenantRegistry";
import type { PullStateStore } from "./pullState";
import { versionHash } from "./window";

export interface RedriveResult {
  /** Dead letters looked at. */
  examined: number;
  /** Dead letters whose content the pipeline now accepts: delivered and removed. */
  redriven: number;
  /** Alert versions handed to the sink. */
  delivered: number;
  /** Dead letters the pipeline still cannot accept; they stay where they are. */
  remaining: number;
}

export interface DeadLetterRedriveDeps {
  tenants: TenantRegistry;
  pullState: PullStateStore;
  deadLetters: DeadLetterStore;
  sink: AlertSink;
  /** The sink's name, for the letters of versions it refuses (with several sinks each refusal names its own). */
  sinkName: string;
  clock: Clock;
}

const LEASE_MS = 180_000;

/** The raw text as a page: an alert-level letter holds one element of `value`. */
function asPage(letter: DeadLetter): string | undefined {
  if (letter.reason === "foreign_next_link" || letter.reason === "next_link_loop") return undefined;
  return letter.reason === "invalid_page" ? letter.raw : `{"value":[${letter.raw}]}`;
}

/**
 * Puts dead letters through the pipeline again, as the operator asks once the cause is fixed
 * (an upgrade that reads a new timestamp form, a page the service now serves whole): each
 * letter's stored text is scanned by the current code, what it accepts goes to the sink, and
 * the letter is removed only after that. It holds the tenant's pull lease meanwhile, so it never
 * races a pull.
 */
export class DeadLetterRedrive {
  constructor(private readonly deps: DeadLetterRedriveDeps) {}

  async redrive(tenantId: string, log: Logger): Promise<RedriveResult> {
    const tenant = await this.deps.tenants.get(tenantId);
    if (!tenant) throw notFound("tenant_not_found", "No tenant with this id is registered.");
    if (tenant.status === "offboarded") throw conflict("tenant_offboarded", "The tenant is offboarded; its data is not delivered any more.");
    const lease = await this.deps.pullState.acquire(tenantId, `redrive-${randomUUID()}`, LEASE_MS);
    if (!lease) throw conflict("pull_running", "A pull of this tenant is running; try again in a minute.");
    const result: RedriveResult = { examined: 0, redriven: 0, delivered: 0, remaining: 0 };
    try {
      const pulledAt = new Date(this.deps.clock()).toISOString();
      for (const info of await this.deps.deadLetters.list(tenantId)) {
        result.examined++;
        const letter = await this.deps.deadLetters.read(info.name);
        if (!letter) continue;
        // A version a sink refused as too large would be refused again: it stays for the operator.
        const text = letter.sink ? undefined : asPage(letter);
        // A link to another host is a report, not data: it stays until the operator removes it.
        if (text === undefined) {
          result.remaining++;
          continue;
        }
        const source = isAlertSource(letter.source) ? letter.source : "mde";
        let page;
        try {
          page = scanPage(text, { timeField: ALERT_SOURCE_PROFILES[source].timeField });
        } catch {
          result.remaining++;
          continue;
        }
        if (page.rejected.length > 0) {
          result.remaining++;
          continue;
        }
        const fresh = page.alerts.filter((alert) => !lease.state.delivered.has(versionHash(alert)));
        if (fresh.length > 0) {
          const envelopes: AlertEnvelope[] = fresh.map((alert) => ({ tenantId, tenantName: tenant.displayName, source, pulledAt, alert }));
          // `resumed`: a sink that can tell leaves out what an earlier delivery of the page stored.
          const written = await this.deps.sink.write({ tenantId, pageFrom: letter.page.from, pageTo: letter.page.to, skip: letter.page.skip, resumed: true }, envelopes);
          // A version a sink refuses as too large gets a letter of its own before this one goes.
          for (const refusal of written?.refused ?? []) {
            await this.deps.deadLetters.write({
              ...letter,
              reason: refusal.reason,
              raw: refusal.alert.json,
              at: new Date(this.deps.clock()).toISOString(),
              sink: refusal.sink ?? this.deps.sinkName,
            });
            result.remaining++;
          }
          // Remembered like any delivery, so a pull that reads the alert again in its overlap skips it.
          for (const alert of fresh) lease.state.delivered.set(versionHash(alert), Math.floor(alert.updatedAtMs / 1000));
          lease.markDeliveredChanged();
          await lease.save();
        }
        await this.deps.deadLetters.remove(info.name);
        result.redriven++;
        result.delivered += fresh.length;
      }
      lease.state.deadLetters = result.remaining;
      if (result.remaining === 0) {
        delete lease.state.lastDeadLetterReason;
        delete lease.state.lastDeadLetterAt;
      }
    } finally {
      await lease.release().catch(() => undefined);
    }
    log.info("dead letters re-driven", { tenantId, ...result });
    return result;
  }
}
