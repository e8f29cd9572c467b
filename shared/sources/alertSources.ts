/**
 * The alert sources a tenant can be read from, and what each needs from Entra ID. A tenant has
 * one source; its one refresh token (Entra refresh tokens are multi-resource) is redeemed for
 * that source's resource.
 */
export const ALERT_SOURCES = ["mde", "graph"] as const;
export type AlertSourceKind = (typeof ALERT_SOURCES)[number];

export function isAlertSource(value: unknown): value is AlertSourceKind {
  return typeof value === "string" && (ALERT_SOURCES as readonly string[]).includes(value);
}

export interface AlertSourceProfile {
  kind: AlertSourceKind;
  /** How the console and messages name it. */
  label: string;
  /** The delegated permission asked for at consent and named when it is missing. */
  permission: string;
  /** The scope a consent asks for and a refresh token is redeemed with (one resource per token request). */
  scope: string;
  /** The member of each alert that holds its version time. */
  timeField: "lastUpdateTime" | "lastUpdateDateTime";
}

export const ALERT_SOURCE_PROFILES: Readonly<Record<AlertSourceKind, AlertSourceProfile>> = {
  mde: {
    kind: "mde",
    label: "Microsoft Defender for Endpoint API",
    permission: "WindowsDefenderATP Alert.Read (delegated)",
    scope: "https://api.securitycenter.microsoft.com/Alert.Read",
    timeField: "lastUpdateTime",
  },
  graph: {
    kind: "graph",
    label: "Microsoft Graph security alerts (Defender XDR)",
    permission: "Microsoft Graph SecurityAlert.Read.All (delegated)",
    scope: "https://graph.microsoft.com/SecurityAlert.Read.All",
    timeField: "lastUpdateDateTime",
  },
};

/** The source of a record written before sources existed is the only one there was. */
export function sourceOf(record: { source?: AlertSourceKind }): AlertSourceKind {
  return record.source ?? "mde";
}
