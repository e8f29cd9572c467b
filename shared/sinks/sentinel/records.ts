import type { AlertEnvelope, RefusedVersion, StoredVersion } from "../alertSink";
import type { AlertSourceKind } from "../../sources/alertSources";

/**
 * One alert version as a row of the `DefenderAlerts_CL` table. Column names avoid the names Log
 * Analytics reserves (`TenantId`, `Title`, `Type`, `id`, `_ResourceId`, `_SubscriptionId`,
 * `UniqueId`): the alert's `id`, `title` and the customer's tenant become `AlertId`,
 * `AlertTitle` and `CustomerTenantId`.
 */
export type SentinelRecord = {
  /** When the pull run started: a re-drive or retry later stays inside the service's accepted time range. */
  TimeGenerated: string;
  CustomerTenantId: string;
  CustomerName: string;
  Source: AlertSourceKind;
  AlertId: string;
  /** The version time in canonical UTC (7 fractional digits), whatever spelling the API used. */
  AlertLastUpdateTime: string;
  Severity?: string;
  AlertTitle?: string;
  Status?: string;
  /** The alert object as the API returned it, or without `evidence` when `AlertTruncated`. */
  Alert: Record<string, unknown>;
  AlertTruncated?: true;
  /** Bytes of the whole alert as JSON, when it was trimmed. */
  AlertSizeBytes?: number;
};

export type SentinelColumnType = "string" | "datetime" | "dynamic" | "boolean" | "long";

/** Every column's type; mapped over SentinelRecord so a field without a column does not compile. */
const COLUMN_TYPES: { [K in keyof SentinelRecord]-?: SentinelColumnType } = {
  TimeGenerated: "datetime", CustomerTenantId: "string", CustomerName: "string", Source: "string", AlertId: "string", AlertLastUpdateTime: "datetime",
  Severity: "string", AlertTitle: "string", Status: "string", Alert: "dynamic", AlertTruncated: "boolean", AlertSizeBytes: "long",
};

/** The stream declaration and table schema, in order; infra/modules/sentinel.bicep declares the same (a test compares them). */
export const SENTINEL_COLUMNS: ReadonlyArray<{ name: string; type: SentinelColumnType }> = Object.entries(COLUMN_TYPES).map(([name, type]) => ({ name, type }));

/**
 * The service cuts any field over 64 KB silently (a `dynamic` value then no longer parses). The
 * sink keeps every field under this many bytes of JSON: below 64,000 (the stricter reading of
 * "64 KB") with room for the service writing the value a little differently than we measure it.
 */
export const FIELD_LIMIT_BYTES = 60_000;

/** A record ready to upload: its serialised size (what the SDK and the service count) and its version. */
export interface PreparedRecord {
  record: SentinelRecord;
  bytes: number;
  version: StoredVersion;
}

export interface PreparedBatch {
  records: PreparedRecord[];
  refused: RefusedVersion[];
}

// Stryker disable next-line StringLiteral: Buffer.byteLength reads an empty encoding name as utf8, its default
const utf8Bytes = (text: string): number => Buffer.byteLength(text, "utf8");
const jsonBytes = (value: unknown): number => utf8Bytes(JSON.stringify(value));

export function versionOf(envelope: AlertEnvelope): StoredVersion {
  const { id, updatedAtKey, updatedAtMs } = envelope.alert;
  return { id, updatedAtKey, updatedAtMs };
}

/**
 * Turns envelopes into records. An `Alert` over the field limit loses its `evidence` array and is
 * marked (`AlertTruncated`, `AlertSizeBytes`); a record that still has a field over the limit is
 * refused, for the pipeline to dead-letter. Nothing is cut silently.
 */
/**
 * `sentAt` becomes `TimeGenerated`: the time of this upload, not of the pull, because the service
 * takes only recent `TimeGenerated` values and a parked page may be delivered days later.
 */
export function prepareRecords(envelopes: readonly AlertEnvelope[], sentAt: string = new Date().toISOString()): PreparedBatch {
  const batch: PreparedBatch = { records: [], refused: [] };
  for (const envelope of envelopes) {
    const prepared = prepareRecord(envelope, sentAt);
    if ("reason" in prepared) batch.refused.push(prepared);
    else batch.records.push(prepared);
  }
  return batch;
}

function prepareRecord(envelope: AlertEnvelope, sentAt: string): PreparedRecord | RefusedVersion {
  const alert = JSON.parse(envelope.alert.json) as Record<string, unknown>;
  const record: SentinelRecord = {
    TimeGenerated: sentAt,
    CustomerTenantId: envelope.tenantId,
    CustomerName: envelope.tenantName,
    Source: envelope.source,
    AlertId: envelope.alert.id,
    AlertLastUpdateTime: envelope.alert.updatedAtKey,
    ...stringField("Severity", alert["severity"]),
    ...stringField("AlertTitle", alert["title"]),
    ...stringField("Status", alert["status"]),
    Alert: alert,
  };
  const alertBytes = jsonBytes(alert);
  if (alertBytes > FIELD_LIMIT_BYTES) {
    const { evidence: _dropped, ...withoutEvidence } = alert;
    Object.assign(record, { Alert: withoutEvidence, AlertTruncated: true, AlertSizeBytes: alertBytes });
  }
  const oversized = oversizedField(record);
  if (oversized) {
    return {
      alert: envelope.alert,
      reason: "oversized",
      detail: `Log Analytics keeps at most 64 KB per field; ${oversized.name} is ${oversized.bytes} bytes${oversized.name === "Alert" ? " even without its evidence" : ""} (the sink's limit is ${FIELD_LIMIT_BYTES})`,
    };
  }
  return { record, bytes: jsonBytes(record), version: versionOf(envelope) };
}

/** A column only when the alert has the field as a string: a missing value stays null in the table. */
function stringField(name: "Severity" | "AlertTitle" | "Status", value: unknown): Partial<SentinelRecord> {
  return typeof value === "string" ? { [name]: value } : {};
}

function oversizedField(record: SentinelRecord): { name: string; bytes: number } | undefined {
  for (const [name, value] of Object.entries(record)) {
    const bytes = typeof value === "string" ? utf8Bytes(value) : jsonBytes(value);
    if (bytes > FIELD_LIMIT_BYTES) return { name, bytes };
  }
  return undefined;
}
