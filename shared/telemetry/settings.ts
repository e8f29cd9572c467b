/**
 * When and how the app exports telemetry, from the two platform settings the Functions host reads
 * too (infra/modules/functionapp.bicep sets both). No connection string: no export at all, as in
 * the tests and the sandbox.
 */
export interface TelemetrySettings {
  connectionString: string;
  /**
   * How ingestion authenticates. The Application Insights component has local (key) auth
   * disabled, so in Azure this is Entra ID with the app's user-assigned identity, exactly as
   * APPLICATIONINSIGHTS_AUTHENTICATION_STRING tells the host.
   */
  auth: { kind: "key" } | { kind: "managedIdentity"; clientId?: string };
}

/** `Authorization=AAD;ClientId=<id>` → entries with lower-case keys. */
function parsePairs(text: string): Map<string, string> {
  const pairs = new Map<string, string>();
  for (const part of text.split(";")) {
    const at = part.indexOf("=");
    if (at > 0) pairs.set(part.slice(0, at).trim().toLowerCase(), part.slice(at + 1).trim());
  }
  return pairs;
}

export function telemetrySettings(env: Readonly<Record<string, string | undefined>>): TelemetrySettings | undefined {
  const connectionString = env["APPLICATIONINSIGHTS_CONNECTION_STRING"]?.trim();
  if (!connectionString) return undefined;
  const auth = parsePairs(env["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] ?? "");
  if (auth.get("authorization")?.toUpperCase() !== "AAD") return { connectionString, auth: { kind: "key" } };
  const clientId = auth.get("clientid");
  return { connectionString, auth: clientId ? { kind: "managedIdentity", clientId } : { kind: "managedIdentity" } };
}

const INSTRUMENTATION_KEY = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/**
 * Why the Azure Monitor exporter would refuse the connection string, if it would: it reads the
 * parts that are exactly one `key=value` (others are skipped) and needs an InstrumentationKey that
 * is a GUID in lower case. The exporter is built only at the first export
 * (functions/deferredExporters.ts), so this is checked when telemetry starts instead, where a
 * refusal is reported at once.
 */
export function connectionStringProblem(connectionString: string): string | undefined {
  const pairs = new Map<string, string>();
  for (const part of connectionString.split(";")) {
    const kv = part.split("=");
    if (kv.length === 2) pairs.set((kv[0] as string).toLowerCase(), kv[1] as string);
  }
  const key = pairs.get("instrumentationkey");
  if (!key) return "APPLICATIONINSIGHTS_CONNECTION_STRING has no InstrumentationKey";
  return INSTRUMENTATION_KEY.test(key) ? undefined : "APPLICATIONINSIGHTS_CONNECTION_STRING has an InstrumentationKey that is not a GUID in lower case";
}
