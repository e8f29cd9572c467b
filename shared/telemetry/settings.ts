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
