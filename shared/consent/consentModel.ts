import { ALERT_SOURCE_PROFILES, type AlertSourceKind } from "../sources/alertSources";

/**
 * How a customer tenant grants access:
 * - `delegated`: an administrator signs in (authorization code + PKCE) and the app keeps that
 *   person's refresh token in Key Vault; access follows that person's roles and lives with them.
 * - `application`: an administrator consents once at the tenant's admin-consent endpoint to an
 *   application permission; the app then asks Entra ID for client-credential tokens for that
 *   tenant. Nothing per tenant is stored but the record: no refresh token to lose.
 */
export const CONSENT_MODELS = ["delegated", "application"] as const;
export type ConsentModel = (typeof CONSENT_MODELS)[number];

export function isConsentModel(value: unknown): value is ConsentModel {
  return typeof value === "string" && (CONSENT_MODELS as readonly string[]).includes(value);
}

/** Records written before consent models existed were all delegated. */
export function consentModelOf(record: { consentModel?: ConsentModel }): ConsentModel {
  return record.consentModel ?? "delegated";
}

/** What the application model needs from Entra ID for one alert source. */
export interface ApplicationPermission {
  /** The resource whose app role is granted (the token's audience). */
  resource: string;
  /** `{resource}/.default`: the only form a client-credential request or an app-permission consent accepts. */
  scope: string;
  /** The app role an access token must carry before the tenant counts as connected. */
  role: string;
  /** Other roles that include it (a tenant that granted more still works). */
  alsoAccepted: readonly string[];
  /** How pages, messages and the console name the permission. */
  label: string;
}

export const APPLICATION_PERMISSIONS: Readonly<Record<AlertSourceKind, ApplicationPermission>> = {
  mde: {
    resource: "https://api.securitycenter.microsoft.com",
    scope: "https://api.securitycenter.microsoft.com/.default",
    role: "Alert.Read.All",
    alsoAccepted: ["Alert.ReadWrite.All"],
    label: "WindowsDefenderATP Alert.Read.All (application)",
  },
  graph: {
    resource: "https://graph.microsoft.com",
    scope: "https://graph.microsoft.com/.default",
    role: "SecurityAlert.Read.All",
    alsoAccepted: ["SecurityAlert.ReadWrite.All"],
    label: "Microsoft Graph SecurityAlert.Read.All (application)",
  },
};

/** Whether an app-only token's `roles` grant what the source needs. */
export function carriesRole(roles: readonly string[], source: AlertSourceKind): boolean {
  const permission = APPLICATION_PERMISSIONS[source];
  return roles.some((role) => role === permission.role || permission.alsoAccepted.includes(role));
}

/** The scope a token for this tenant is requested with: one resource per token request either way. */
export function tokenScope(model: ConsentModel, source: AlertSourceKind): string {
  return model === "application" ? APPLICATION_PERMISSIONS[source].scope : ALERT_SOURCE_PROFILES[source].scope;
}

/** The permission a tenant of this model and source must have granted, in words. */
export function permissionLabel(model: ConsentModel, source: AlertSourceKind): string {
  return model === "application" ? APPLICATION_PERMISSIONS[source].label : ALERT_SOURCE_PROFILES[source].permission;
}

/** One line on each model, for the console's choice and the docs. */
export const CONSENT_MODEL_SUMMARIES: Readonly<Record<ConsentModel, string>> = {
  delegated:
    "An administrator signs in and the app keeps that person's refresh token in Key Vault: access follows their roles and ends with their account (password reset, disabled account, 90 idle days).",
  application:
    "An administrator grants the app an application permission once (admin consent): the app then gets its own tokens for the tenant and stores no token at all; access ends only when the tenant removes the app or the permission.",
};
