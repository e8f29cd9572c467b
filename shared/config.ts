import { readSinkConfig, SINK_SETTING_NAMES, type SinkConfig } from "./sinks/sinkConfig";
import { readFileSync } from "node:fs";
import { ncrontabProblem } from "./health/ncrontab";
import { SEVERITIES, type Severity } from "./pull/observer";
import type { AlertSourceKind } from "./sources/alertSources";

/**
 * Every app setting the app reads, validated once. `loadConfig` reports all
 * missing or invalid settings together, so an operator fixes them in one pass
 * instead of redeploying once per typo.
 */

export type StorageConnection =
  | { kind: "connectionString"; connectionString: string }
  | {
      kind: "identity";
      blobServiceUri: string;
      queueServiceUri: string;
      tableServiceUri: string;
      /** Client id of a user-assigned managed identity; absent for system-assigned. */
      managedIdentityClientId?: string;
    };

export interface LocalDevSettings {
  /** PEM of an extra CA to trust (the test fakes' self-signed certificate). */
  caCertPem?: string;
  /** Static bearer token for a local Key Vault stand-in instead of DefaultAzureCredential. */
  vaultAccessToken?: string;
  /**
   * Origin (no trailing slash) that replaces the authorize URL's origin in the consent redirect:
   * the fake Entra's plain-HTTP sign-in listener, since a person's browser in a local sandbox
   * cannot be sent to the fakes' self-signed HTTPS certificate.
   */
  signInBaseUrl?: string;
  /**
   * LOCAL_DEV_SANDBOX=true: the simulated Microsoft cloud of `npm start`. The operator console
   * then works without App Service sign-in and says so in a banner on every page.
   */
  sandbox?: boolean;
}

/** MSSP_CLIENT_CREDENTIAL: how the MSSP app registration proves itself to Entra ID. */
export const APP_CREDENTIAL_KINDS = ["secret", "certificate", "managedIdentity"] as const;
export type AppCredentialKind = (typeof APP_CREDENTIAL_KINDS)[number];

/** The app's own credential, as the settings chose it (shared/identity/appCredential.ts turns it into MSAL's). */
export type AppCredentialSettings =
  | {
      kind: "secret";
      /** MSSP_CLIENT_SECRET: never logged, shown or stored by the app. */
      clientSecret: string;
    }
  | {
      kind: "certificate";
      /** MSSP_CLIENT_CERTIFICATE_NAME: the Key Vault certificate (read through its backing secret, PEM). */
      certificateName: string;
      /**
       * MSSP_CLIENT_CERTIFICATE_VAULT_URL: the vault that holds it (the deployment's read-only
       * credential vault); absent means KEY_VAULT_URL's.
       */
      vaultUrl?: string;
    }
  | {
      kind: "managedIdentity";
      /** Client id of the managed identity whose token is the client assertion (the federated credential's subject). */
      identityClientId: string;
      /** The setting that named it: MSSP_FIC_IDENTITY_CLIENT_ID, else AZURE_CLIENT_ID. */
      identitySetting: "MSSP_FIC_IDENTITY_CLIENT_ID" | "AZURE_CLIENT_ID";
    };

export interface AppConfig {
  clientId: string;
  /** MSSP_CLIENT_CREDENTIAL and the settings of the chosen kind. */
  credential: AppCredentialSettings;
  msspTenantId: string;
  publicBaseUrl: string;
  redirectUri: string;
  keyVaultUrl: string;
  storage: StorageConnection;
  entraAuthorityHost: string;
  defenderApiBaseUrl: string;
  /** GRAPH_API_BASE_URL: Microsoft Graph (a national cloud has its own host). */
  graphApiBaseUrl: string;
  /** DEFAULT_ALERT_SOURCE: the source of a tenant registered without one. */
  defaultAlertSource: AlertSourceKind;
  /** DEFAULT_CONSENT_MODEL: the consent model of a tenant registered without one. */
  defaultConsentModel: "delegated" | "application";
  consentLinkTtlHours: number;
  pull: PullSettings;
  /** Client id of the user-assigned managed identity (AZURE_CLIENT_ID); absent means system-assigned or developer login. */
  managedIdentityClientId?: string;
  /** MSSP_DISPLAY_NAME: how the consent pages and the console name the MSSP. */
  msspDisplayName: string;
  /**
   * App Service built-in authentication (EasyAuth) is on: the platform sets WEBSITE_AUTH_ENABLED
   * itself (it is not one of the app's settings) and then strips client-sent
   * x-ms-client-principal headers, so only then may the console trust that header.
   */
  easyAuthEnabled: boolean;
  /**
   * OPERATOR_REQUIRE_ENTRA (default false): the operator API refuses (401) a caller that offers no
   * Entra ID identity, so a function key alone no longer acts unnamed (shared/operator/callerIdentity.ts).
   */
  operatorRequireEntra: boolean;
  /** Webhook notifications; absent when NOTIFY_WEBHOOK_URL is not set (notifications off). */
  notifications?: NotificationSettings;
  /** ALERT_SINKS and the settings of each chosen sink. */
  sinks: SinkConfig;
  localDev: LocalDevSettings;
}

export const NOTIFY_FORMATS = ["teams", "slack", "json"] as const;
export type NotifyFormat = (typeof NOTIFY_FORMATS)[number];
export const DEFAULT_NOTIFY_FORMAT: NotifyFormat = "json";
export const DEFAULT_NOTIFY_MIN_SEVERITY: Severity = "High";
/** Long enough for a Power Automate URL with its signature, short enough to refuse pasted junk. */
export const MAX_NOTIFY_WEBHOOK_URL_LENGTH = 2048;

export interface NotificationSettings {
  /**
   * NOTIFY_WEBHOOK_URL. A secret in its own right: Teams and Slack webhook URLs carry the
   * signature that lets anyone post. Never logged, shown, stored or put into a message.
   */
  webhookUrl: string;
  format: NotifyFormat;
  /** New alerts at or above this severity are notified. */
  minSeverity: Severity;
}

/** The most tenants one pull queue message may name (PULL_TENANTS_PER_MESSAGE's upper bound). */
export const MAX_TENANTS_PER_MESSAGE = 32;

export interface PullSettings {
  schedule: string;
  alertsContainer: string;
  overlapMinutes: number;
  settleSeconds: number;
  firstRunLookbackHours: number;
  pageSize: number;
  expandEvidence: boolean;
  refreshTokenPersistAgeHours: number;
  requestTimeoutSeconds: number;
  maxRunSeconds: number;
  /** Quiet tenants one queue message may name (1: a message per tenant); see enqueueConnectedTenants. */
  tenantsPerMessage: number;
  partnerCompany: string;
  partnerProduct: string;
}

/**
 * Names of every app setting `loadConfig` understands; infra drift tests compare against this.
 * `AzureWebJobsStorage` and the `AzureWebJobsStorage__*` identity-based names are alternatives:
 * a connection string locally, a managed identity in Azure.
 */
export const APP_SETTING_NAMES = [
  "MSSP_CLIENT_ID",
  "MSSP_CLIENT_SECRET",
  "MSSP_CLIENT_CREDENTIAL",
  "MSSP_CLIENT_CERTIFICATE_NAME",
  "MSSP_FIC_IDENTITY_CLIENT_ID",
  "MSSP_CLIENT_CERTIFICATE_VAULT_URL",
  "MSSP_TENANT_ID",
  "MSSP_PUBLIC_BASE_URL",
  "KEY_VAULT_URL",
  "AzureWebJobsStorage",
  "AzureWebJobsStorage__accountName",
  "AzureWebJobsStorage__blobServiceUri",
  "AzureWebJobsStorage__queueServiceUri",
  "AzureWebJobsStorage__tableServiceUri",
  "AzureWebJobsStorage__credential",
  "AzureWebJobsStorage__clientId",
  "AZURE_CLIENT_ID",
  "ENTRA_AUTHORITY_HOST",
  "DEFENDER_API_BASE_URL",
  "GRAPH_API_BASE_URL",
  "DEFAULT_ALERT_SOURCE",
  "DEFAULT_CONSENT_MODEL",
  "CONSENT_LINK_TTL_HOURS",
  "PULL_SCHEDULE",
  "ALERTS_CONTAINER",
  "PULL_OVERLAP_MINUTES",
  "PULL_SETTLE_SECONDS",
  "PULL_FIRST_RUN_LOOKBACK_HOURS",
  "PULL_PAGE_SIZE",
  "PULL_EXPAND_EVIDENCE",
  "REFRESH_TOKEN_PERSIST_AGE_HOURS",
  "DEFENDER_REQUEST_TIMEOUT_SECONDS",
  "PULL_MAX_RUN_SECONDS",
  "PULL_TENANTS_PER_MESSAGE",
  "MDE_PARTNER_COMPANY",
  "MDE_PARTNER_PRODUCT",
  "MSSP_DISPLAY_NAME",
  "NOTIFY_WEBHOOK_URL",
  "NOTIFY_WEBHOOK_FORMAT",
  "NOTIFY_MIN_SEVERITY",
  ...SINK_SETTING_NAMES,
] as const;

/** Settings that only make sense on a developer machine or in the test suite; refused in Azure. */
export const LOCAL_DEV_SETTING_NAMES = [
  "LOCAL_DEV_CA_CERT_FILE",
  "LOCAL_DEV_VAULT_TOKEN",
  "LOCAL_DEV_SIGN_IN_BASE_URL",
  "LOCAL_DEV_SANDBOX",
] as const;

/** What the pages call the MSSP when MSSP_DISPLAY_NAME is not set. */
export const DEFAULT_MSSP_DISPLAY_NAME = "your managed security provider";
export const MAX_MSSP_DISPLAY_NAME_LENGTH = 100;

export const DEFAULT_PULL_SCHEDULE = "0 */5 * * * *";

/**
 * The schedule to register the pull timer with: PULL_SCHEDULE when the host can run it, else the
 * default. The host drops a timer whose schedule it cannot parse, silently; registered with the
 * default, the timer runs and reports the invalid setting on every run (loadConfig refuses it).
 */
export function pullScheduleForRegistration(env: Readonly<Record<string, string | undefined>> = process.env): string {
  const schedule = env["PULL_SCHEDULE"]?.trim();
  return schedule && ncrontabProblem(schedule) === undefined ? schedule : DEFAULT_PULL_SCHEDULE;
}

/** host.json `functionTimeout` (a test keeps the two equal): the host kills any run longer. */
export const FUNCTION_TIMEOUT_SECONDS = 600;
/** Room after a pull's deadline for the page in flight, its sink write and the closing save. */
const PULL_SHUTDOWN_MARGIN_SECONDS = 60;

/** One problem with the app settings: the settings it is about, by name, and a message without any value. */
export interface SettingProblem {
  /** The setting the message is about (the first one it names). */
  setting: string;
  /** Every setting the message names, `setting` first (e.g. both halves of a combination). */
  settings: readonly string[];
  message: string;
}

const KNOWN_SETTING_NAMES: readonly string[] = [...APP_SETTING_NAMES, ...LOCAL_DEV_SETTING_NAMES];

/** The known setting names a problem message mentions, in order of appearance, whole words only. */
function settingsNamedIn(message: string): string[] {
  const found: Array<{ name: string; at: number }> = [];
  for (const name of KNOWN_SETTING_NAMES) {
    const match = new RegExp(`(?<![A-Za-z0-9_])${name}(?![A-Za-z0-9_])`).exec(message);
    if (match) found.push({ name, at: match.index });
  }
  return found.sort((a, b) => a.at - b.at).map((entry) => entry.name);
}

export class ConfigError extends Error {
  /** Each problem with the names of the settings it concerns: what an operator-facing 503 lists. */
  readonly details: readonly SettingProblem[];
  /** Every setting named by some problem, without duplicates, in order. Never a value. */
  readonly settings: readonly string[];

  /** Messages start with the setting they are about (`NAME must ...`); every known name in them counts. */
  constructor(readonly problems: readonly string[]) {
    super(`Invalid app settings:\n- ${problems.join("\n- ")}`);
    this.name = "ConfigError";
    this.details = problems.map((message) => {
      const settings = settingsNamedIn(message);
      return { setting: settings[0] ?? "", settings, message };
    });
    this.settings = [...new Set(this.details.flatMap((detail) => detail.settings))];
  }
}

/** A setting value copied from local.settings.example.json, or a reference App Service could not resolve. */
function placeholderProblem(name: string, value: string): string | undefined {
  if (/^0{8}-0{4}-0{4}-0{4}-0{12}$/.test(value)) {
    return `${name} still holds the all-zero GUID placeholder of local.settings.example.json; set the real value`;
  }
  // Display names are escaped wherever they are shown, and may contain angle brackets.
  if (name !== "MSSP_DISPLAY_NAME" && /<[^<>]+>/.test(value)) {
    return `${name} still holds a <…> placeholder of local.settings.example.json; set the real value`;
  }
  if (/^@Microsoft\.KeyVault\(/i.test(value)) {
    return `${name} is a Key Vault reference App Service could not resolve; check the reference's status and the identity's access to the vault`;
  }
  return undefined;
}

type Env = Readonly<Record<string, string | undefined>>;

const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

class SettingsReader {
  readonly problems: string[] = [];
  /** Settings refused as placeholders: reported once, then read as absent without a second "is required". */
  private readonly placeholders = new Set<string>();
  constructor(private readonly env: Env) {}

  raw(name: string): string | undefined {
    const value = this.env[name]?.trim();
    if (!value) return undefined;
    const placeholder = placeholderProblem(name, value);
    if (placeholder === undefined) return value;
    if (!this.placeholders.has(name)) {
      this.placeholders.add(name);
      this.problems.push(placeholder);
    }
    return undefined;
  }

  /** Reports a missing setting, unless it was already refused as a placeholder. */
  missing(name: string, message: string): void {
    if (!this.placeholders.has(name)) this.problems.push(message);
  }

  required(name: string, describe = "is required"): string {
    const value = this.raw(name);
    if (value === undefined) this.missing(name, `${name} ${describe}`);
    return value ?? "";
  }

  guid(name: string): string {
    const value = this.required(name, "is required (a GUID)");
    if (value && !GUID.test(value)) this.problems.push(`${name} must be a GUID`);
    return value.toLowerCase();
  }

  /** An absolute https origin-or-base URL, returned without a trailing slash. */
  httpsUrl(name: string, fallback?: string, options: { allowLoopbackHttp?: boolean } = {}): string {
    const value = this.raw(name) ?? fallback;
    if (value === undefined) {
      this.missing(name, `${name} is required (an https URL)`);
      return "";
    }
    let url: URL;
    try {
      url = new URL(value);
    } catch {
      this.problems.push(`${name} must be an absolute URL`);
      return "";
    }
    const loopback = url.hostname === "localhost" || url.hostname === "127.0.0.1";
    if (url.protocol !== "https:" && !(options.allowLoopbackHttp && loopback && url.protocol === "http:")) {
      this.problems.push(`${name} must use https`);
    }
    if (url.search || url.hash || url.username || url.password) {
      this.problems.push(`${name} must not carry a query, fragment or credentials`);
    }
    return url.toString().replace(/\/+$/, "");
  }

  integer(name: string, fallback: number, min: number, max: number): number {
    const value = this.raw(name);
    if (value === undefined) return fallback;
    const parsed = Number(value);
    if (!Number.isInteger(parsed) || parsed < min || parsed > max) {
      this.problems.push(`${name} must be a whole number from ${min} to ${max}`);
      return fallback;
    }
    return parsed;
  }

  boolean(name: string, fallback: boolean): boolean {
    const value = this.raw(name)?.toLowerCase();
    if (value === undefined) return fallback;
    if (value === "true" || value === "1") return true;
    if (value === "false" || value === "0") return false;
    this.problems.push(`${name} must be true or false`);
    return fallback;
  }

  pattern(name: string, fallback: string, re: RegExp, describe: string): string {
    const value = this.raw(name) ?? fallback;
    if (!re.test(value)) this.problems.push(`${name} ${describe}`);
    return value;
  }
}

function readStorage(reader: SettingsReader): StorageConnection {
  const connectionString = reader.raw("AzureWebJobsStorage");
  if (connectionString) return { kind: "connectionString", connectionString };
  const accountName = reader.raw("AzureWebJobsStorage__accountName");
  const service = (kind: "blob" | "queue" | "table"): string | undefined => {
    const explicit = reader.raw(`AzureWebJobsStorage__${kind}ServiceUri`);
    if (explicit) return explicit.replace(/\/+$/, "");
    return accountName ? `https://${accountName}.${kind}.core.windows.net` : undefined;
  };
  const blobServiceUri = service("blob");
  const queueServiceUri = service("queue");
  const tableServiceUri = service("table");
  if (!blobServiceUri || !queueServiceUri || !tableServiceUri) {
    reader.missing(
      "AzureWebJobsStorage",
      "AzureWebJobsStorage is required: a connection string (UseDevelopmentStorage=true locally) or the identity-based " +
        "AzureWebJobsStorage__accountName (or __blobServiceUri, __queueServiceUri and __tableServiceUri)",
    );
    return { kind: "connectionString", connectionString: "" };
  }
  const credential = reader.raw("AzureWebJobsStorage__credential");
  if (credential !== undefined && credential !== "managedidentity") {
    reader.problems.push("AzureWebJobsStorage__credential must be managedidentity when set");
  }
  const managedIdentityClientId = reader.raw("AzureWebJobsStorage__clientId") ?? reader.raw("AZURE_CLIENT_ID");
  return {
    kind: "identity",
    blobServiceUri,
    queueServiceUri,
    tableServiceUri,
    ...(managedIdentityClientId ? { managedIdentityClientId } : {}),
  };
}

/** The sign-in origin: https, or http only on loopback (the fake's plain listener); an origin, no path. */
function readSignInBaseUrl(reader: SettingsReader): string | undefined {
  const name = "LOCAL_DEV_SIGN_IN_BASE_URL";
  if (reader.raw(name) === undefined) return undefined;
  const url = reader.httpsUrl(name, undefined, { allowLoopbackHttp: true });
  if (url && new URL(url).pathname !== "/") {
    reader.problems.push(`${name} must be an origin (scheme, host and port) without a path`);
  }
  return url || undefined;
}

/** A Key Vault object name: 1-127 letters, digits and hyphens. */
const KEY_VAULT_OBJECT_NAME = /^[0-9A-Za-z-]{1,127}$/;

/**
 * MSSP_CLIENT_CREDENTIAL and what the chosen kind needs. Without the setting, a configured
 * MSSP_CLIENT_SECRET keeps today's behaviour (secret); otherwise the secretless default is the
 * managed identity. "Set" means present at all: a placeholder or an unresolved Key Vault
 * reference in MSSP_CLIENT_SECRET still chooses `secret`, and is reported as what it is.
 */
function readCredential(reader: SettingsReader, env: Env): AppCredentialSettings {
  const explicit = reader.raw("MSSP_CLIENT_CREDENTIAL");
  const secretPresent = Boolean(env["MSSP_CLIENT_SECRET"]?.trim());
  let kind: AppCredentialKind;
  if (explicit === undefined) {
    kind = secretPresent ? "secret" : "managedIdentity";
  } else {
    const chosen = APP_CREDENTIAL_KINDS.find((candidate) => candidate.toLowerCase() === explicit.toLowerCase());
    if (!chosen) {
      reader.problems.push("MSSP_CLIENT_CREDENTIAL must be secret, certificate or managedIdentity");
      return { kind: "secret", clientSecret: reader.raw("MSSP_CLIENT_SECRET") ?? "" };
    }
    kind = chosen;
  }
  const because = explicit === undefined ? "" : " when MSSP_CLIENT_CREDENTIAL is " + kind;
  switch (kind) {
    case "secret":
      return {
        kind,
        clientSecret: reader.required(
          "MSSP_CLIENT_SECRET",
          `is required${because}: the client secret of the MSSP app registration (in Azure, a Key Vault reference)`,
        ),
      };
    case "certificate": {
      const certificateName = reader.required(
        "MSSP_CLIENT_CERTIFICATE_NAME",
        "is required when MSSP_CLIENT_CREDENTIAL is certificate: the name of the Key Vault certificate (in the " +
          "MSSP_CLIENT_CERTIFICATE_VAULT_URL vault, else the KEY_VAULT_URL one) whose public key is uploaded to the MSSP app registration",
      );
      if (certificateName && !KEY_VAULT_OBJECT_NAME.test(certificateName)) {
        reader.problems.push("MSSP_CLIENT_CERTIFICATE_NAME must be a Key Vault certificate name (1-127 letters, digits and hyphens)");
      }
      const vaultUrl =
        reader.raw("MSSP_CLIENT_CERTIFICATE_VAULT_URL") === undefined
          ? undefined
          : reader.httpsUrl("MSSP_CLIENT_CERTIFICATE_VAULT_URL", undefined, { allowLoopbackHttp: true });
      return { kind, certificateName, ...(vaultUrl ? { vaultUrl } : {}) };
    }
    case "managedIdentity": {
      const fic = reader.raw("MSSP_FIC_IDENTITY_CLIENT_ID");
      const identitySetting = fic === undefined ? "AZURE_CLIENT_ID" : "MSSP_FIC_IDENTITY_CLIENT_ID";
      const identityClientId = fic ?? reader.raw("AZURE_CLIENT_ID");
      if (identityClientId === undefined) {
        const why =
          explicit === undefined
            ? "MSSP_CLIENT_CREDENTIAL is managedIdentity by default because MSSP_CLIENT_SECRET is not set"
            : "MSSP_CLIENT_CREDENTIAL is managedIdentity";
        reader.missing(
          "AZURE_CLIENT_ID",
          `${why}: set AZURE_CLIENT_ID (the app's user-assigned identity) or MSSP_FIC_IDENTITY_CLIENT_ID to the client id of the ` +
            "managed identity the app registration's federated credential trusts, or set MSSP_CLIENT_SECRET (or MSSP_CLIENT_CERTIFICATE_NAME " +
            "with MSSP_CLIENT_CREDENTIAL certificate) to use a secret or a certificate instead",
        );
        return { kind, identityClientId: "", identitySetting };
      }
      if (!GUID.test(identityClientId)) {
        reader.problems.push(`${identitySetting} must be a GUID (the client id of the managed identity used as the app's federated credential)`);
      }
      return { kind, identityClientId: identityClientId.toLowerCase(), identitySetting };
    }
  }
}

/** MSSP_DISPLAY_NAME: optional, at most 100 characters, no control characters. */
function readMsspDisplayName(reader: SettingsReader): string {
  const value = reader.raw("MSSP_DISPLAY_NAME");
  if (value === undefined) return DEFAULT_MSSP_DISPLAY_NAME;
  if (value.length > MAX_MSSP_DISPLAY_NAME_LENGTH) {
    reader.problems.push(`MSSP_DISPLAY_NAME must be at most ${MAX_MSSP_DISPLAY_NAME_LENGTH} characters`);
  } else if (/[\u0000-\u001f\u007f-\u009f]/.test(value)) {
    reader.problems.push("MSSP_DISPLAY_NAME must not contain control characters");
  }
  return value;
}

/**
 * The notification settings. The format and the threshold are checked even without a URL, so a
 * typo is reported before anyone turns notifications on. The URL's value never appears in a
 * message: it is a secret.
 */
function readNotifications(reader: SettingsReader): NotificationSettings | undefined {
  const formatValue = reader.raw("NOTIFY_WEBHOOK_FORMAT")?.toLowerCase() ?? DEFAULT_NOTIFY_FORMAT;
  const format = NOTIFY_FORMATS.find((candidate) => candidate === formatValue);
  if (!format) reader.problems.push("NOTIFY_WEBHOOK_FORMAT must be teams, slack or json");
  const severityValue = reader.raw("NOTIFY_MIN_SEVERITY")?.toLowerCase() ?? DEFAULT_NOTIFY_MIN_SEVERITY.toLowerCase();
  const minSeverity = SEVERITIES.find((candidate) => candidate.toLowerCase() === severityValue);
  if (!minSeverity) reader.problems.push(`NOTIFY_MIN_SEVERITY must be one of ${SEVERITIES.join(", ")}`);
  const webhookUrl = readWebhookUrl(reader);
  if (webhookUrl === undefined || !format || !minSeverity) return undefined;
  return { webhookUrl, format, minSeverity };
}

/** NOTIFY_WEBHOOK_URL: optional; https, no credentials in it, not absurdly long. A query is allowed (Workflows URLs sign there). */
function readWebhookUrl(reader: SettingsReader): string | undefined {
  const name = "NOTIFY_WEBHOOK_URL";
  const value = reader.raw(name);
  if (value === undefined) return undefined;
  if (value.length > MAX_NOTIFY_WEBHOOK_URL_LENGTH) {
    reader.problems.push(`${name} must be at most ${MAX_NOTIFY_WEBHOOK_URL_LENGTH} characters`);
    return undefined;
  }
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    reader.problems.push(`${name} must be an absolute https URL`);
    return undefined;
  }
  const problems = [
    url.protocol === "https:" ? undefined : `${name} must use https`,
    url.username || url.password ? `${name} must not carry a user name or password` : undefined,
    url.hash ? `${name} must not carry a fragment` : undefined,
  ].filter((problem): problem is string => problem !== undefined);
  reader.problems.push(...problems);
  return problems.length === 0 ? url.toString() : undefined;
}

/**
 * A base URL no one else can reach: loopback, or a name reserved so it never resolves publicly
 * (RFC 2606 / RFC 6761: .test, .example, .invalid, .localhost), which the test suite uses.
 */
function isLocalOnlyBase(url: string): boolean {
  try {
    const { hostname } = new URL(url);
    return ["localhost", "127.0.0.1", "[::1]"].includes(hostname) || /\.(test|example|invalid|localhost)$/.test(hostname);
  } catch {
    return false;
  }
}

/**
 * Environment variables Azure's hosting sets and a developer machine does not (App Service and Flex
 * Consumption, Container Apps). Generic container signals (CONTAINER_NAME, KUBERNETES_SERVICE_HOST)
 * are left out: development containers set them too. The sandbox has a stronger guard of its own:
 * it needs a loopback MSSP_PUBLIC_BASE_URL.
 */
const HOSTED_SIGNALS = ["WEBSITE_INSTANCE_ID", "WEBSITE_SITE_NAME", "WEBSITE_SKU", "WEBSITE_POD_NAME", "CONTAINER_APP_NAME"] as const;

function readLocalDev(reader: SettingsReader, env: Env): LocalDevSettings {
  const caFile = reader.raw("LOCAL_DEV_CA_CERT_FILE");
  const vaultAccessToken = reader.raw("LOCAL_DEV_VAULT_TOKEN");
  // Any one of the signals Azure's hosting sets: LOCAL_DEV_SANDBOX opens the console without sign-in.
  const runningInAzure = HOSTED_SIGNALS.some((name) => Boolean(env[name]?.trim()));
  // Every listed name, so a new LOCAL_DEV_* setting cannot be forgotten here.
  const localDevSet = LOCAL_DEV_SETTING_NAMES.filter((name) => reader.raw(name) !== undefined);
  if (runningInAzure && localDevSet.length > 0) {
    reader.problems.push(`LOCAL_DEV_* settings are for local development only and must not be set in Azure (${localDevSet.join(", ")})`);
    return {};
  }
  const settings: LocalDevSettings = {};
  if (caFile) {
    try {
      settings.caCertPem = readFileSync(caFile, "utf8");
    } catch {
      reader.problems.push("LOCAL_DEV_CA_CERT_FILE names a file that cannot be read");
    }
  }
  if (vaultAccessToken) settings.vaultAccessToken = vaultAccessToken;
  const signInBaseUrl = readSignInBaseUrl(reader);
  if (signInBaseUrl) settings.signInBaseUrl = signInBaseUrl;
  if (reader.boolean("LOCAL_DEV_SANDBOX", false)) settings.sandbox = true;
  return settings;
}

export function loadConfig(env: Env = process.env): AppConfig {
  const reader = new SettingsReader(env);
  const publicBaseUrl = reader.httpsUrl("MSSP_PUBLIC_BASE_URL", undefined, { allowLoopbackHttp: true });
  const config: AppConfig = {
    clientId: reader.guid("MSSP_CLIENT_ID"),
    credential: readCredential(reader, env),
    msspTenantId: reader.guid("MSSP_TENANT_ID"),
    publicBaseUrl,
    redirectUri: `${publicBaseUrl}/api/consent/callback`,
    keyVaultUrl: reader.httpsUrl("KEY_VAULT_URL", undefined, { allowLoopbackHttp: true }),
    storage: readStorage(reader),
    entraAuthorityHost: reader.httpsUrl("ENTRA_AUTHORITY_HOST", "https://login.microsoftonline.com"),
    defenderApiBaseUrl: reader.httpsUrl("DEFENDER_API_BASE_URL", "https://api.security.microsoft.com"),
    graphApiBaseUrl: reader.httpsUrl("GRAPH_API_BASE_URL", "https://graph.microsoft.com"),
    defaultAlertSource: reader.pattern("DEFAULT_ALERT_SOURCE", "mde", /^(mde|graph)$/, "must be mde or graph") as AlertSourceKind,
    defaultConsentModel: reader.pattern("DEFAULT_CONSENT_MODEL", "delegated", /^(delegated|application)$/, "must be delegated or application") as
      | "delegated"
      | "application",
    consentLinkTtlHours: reader.integer("CONSENT_LINK_TTL_HOURS", 168, 1, 24 * 30),
    pull: {
      schedule: reader.raw("PULL_SCHEDULE") ?? DEFAULT_PULL_SCHEDULE,
      alertsContainer: reader.pattern(
        "ALERTS_CONTAINER",
        "alerts",
        /^(?=.{3,63}$)[a-z0-9]+(-[a-z0-9]+)*$/,
        "must be a valid blob container name (3-63 lowercase letters, digits and single hyphens)",
      ),
      overlapMinutes: reader.integer("PULL_OVERLAP_MINUTES", 10, 0, 24 * 60),
      settleSeconds: reader.integer("PULL_SETTLE_SECONDS", 60, 0, 3600),
      firstRunLookbackHours: reader.integer("PULL_FIRST_RUN_LOOKBACK_HOURS", 24, 1, 24 * 180),
      // 2,500 keeps a backlog above 20,000 alerts/s with three pages in flight and the process
      // under 300 MB (npm run bench); the API allows up to 10,000.
      pageSize: reader.integer("PULL_PAGE_SIZE", 2500, 1, 10000),
      expandEvidence: reader.boolean("PULL_EXPAND_EVIDENCE", false),
      refreshTokenPersistAgeHours: reader.integer("REFRESH_TOKEN_PERSIST_AGE_HOURS", 24, 0, 24 * 30),
      requestTimeoutSeconds: reader.integer("DEFENDER_REQUEST_TIMEOUT_SECONDS", 60, 1, 60),
      // With the request timeout and a margin, inside host.json functionTimeout (10 min): a pull
      // stops on its own, checkpoint saved, before the host kills it (checked again below).
      maxRunSeconds: reader.integer("PULL_MAX_RUN_SECONDS", 480, 10, 480),
      tenantsPerMessage: reader.integer("PULL_TENANTS_PER_MESSAGE", 8, 1, MAX_TENANTS_PER_MESSAGE),
      partnerCompany: reader.pattern("MDE_PARTNER_COMPANY", "MSSP", /^[A-Za-z0-9]{1,64}$/, "must be 1-64 letters or digits"),
      partnerProduct: reader.pattern(
        "MDE_PARTNER_PRODUCT",
        "DefenderConnector",
        /^[A-Za-z0-9]{1,64}$/,
        "must be 1-64 letters or digits",
      ),
    },
    ...(reader.raw("AZURE_CLIENT_ID") ? { managedIdentityClientId: reader.raw("AZURE_CLIENT_ID") } : {}),
    msspDisplayName: readMsspDisplayName(reader),
    easyAuthEnabled: env["WEBSITE_AUTH_ENABLED"]?.trim().toLowerCase() === "true",
    operatorRequireEntra: reader.boolean("OPERATOR_REQUIRE_ENTRA", false),
    sinks: { names: ["blob"] },
    localDev: readLocalDev(reader, env),
  };
  const { sinks, problems: sinkProblems } = readSinkConfig(env);
  config.sinks = sinks;
  reader.problems.push(...sinkProblems);
  const notifications = readNotifications(reader);
  if (notifications) config.notifications = notifications;
  if (config.localDev.sandbox && !isLocalOnlyBase(config.publicBaseUrl)) {
    // The sandbox opens the console without sign-in: only ever where no one else can reach it.
    reader.problems.push(
      "LOCAL_DEV_SANDBOX requires MSSP_PUBLIC_BASE_URL to be http on localhost or 127.0.0.1 (or a reserved test name such as *.test)",
    );
  }
  if (config.pull.maxRunSeconds + config.pull.requestTimeoutSeconds + PULL_SHUTDOWN_MARGIN_SECONDS > FUNCTION_TIMEOUT_SECONDS) {
    reader.problems.push(
      `PULL_MAX_RUN_SECONDS (${config.pull.maxRunSeconds}) plus DEFENDER_REQUEST_TIMEOUT_SECONDS (${config.pull.requestTimeoutSeconds}) ` +
        `must leave ${PULL_SHUTDOWN_MARGIN_SECONDS} s of the host's ${FUNCTION_TIMEOUT_SECONDS} s function timeout, or the host kills pulls mid-page`,
    );
  }
  const scheduleProblem = ncrontabProblem(config.pull.schedule);
  if (scheduleProblem !== undefined) {
    reader.problems.push(`PULL_SCHEDULE must be a six-field NCRONTAB expression such as ${DEFAULT_PULL_SCHEDULE}: ${scheduleProblem}`);
  }
  if (reader.problems.length > 0) throw new ConfigError(reader.problems);
  return config;
}
