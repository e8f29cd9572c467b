import { createHash } from "node:crypto";
import { toMdeTimestamp } from "./alerts";

/**
 * Microsoft Graph `security/alerts_v2` alert objects shaped like the documented
 * `microsoft.graph.security.alert` resource (v1.0, security-alert.md), from the Defender XDR
 * products that feed it, each with polymorphic `evidence` (`@odata.type` per kind). Values are
 * derived from the alert id rather than Math.random, so a failing test reproduces exactly.
 */

export type GraphServiceSource =
  | "unknown"
  | "microsoftDefenderForEndpoint"
  | "microsoftDefenderForIdentity"
  | "microsoftDefenderForCloudApps"
  | "microsoftDefenderForOffice365"
  | "microsoft365Defender"
  | "azureAdIdentityProtection"
  | "microsoftAppGovernance"
  | "dataLossPrevention"
  | "unknownFutureValue"
  // Members after unknownFutureValue ("evolvable enum"): Graph serves them only to clients that
  // send `Prefer: include-unknown-enum-members`.
  | "microsoftDefenderForCloud"
  | "microsoftSentinel"
  | "microsoftInsiderRiskManagement";

/** serviceSource values past `unknownFutureValue`, hidden from clients without the Prefer header. */
export const EVOLVABLE_SERVICE_SOURCES: ReadonlySet<string> = new Set([
  "microsoftDefenderForCloud",
  "microsoftSentinel",
  "microsoftInsiderRiskManagement",
]);

/** detectionSource values past `unknownFutureValue` (a selection of the documented ones). */
export const EVOLVABLE_DETECTION_SOURCES: ReadonlySet<string> = new Set([
  "microsoftDefenderForCloud",
  "microsoftDefenderForIoT",
  "microsoftDefenderForServers",
  "microsoftDefenderForStorage",
  "microsoftDefenderForDNS",
  "microsoftDefenderForDatabases",
  "microsoftDefenderForContainers",
  "microsoftDefenderForNetwork",
  "microsoftDefenderForAppService",
  "microsoftDefenderForKeyVault",
  "microsoftDefenderForResourceManager",
  "microsoftDefenderForApiManagement",
  "nrtAlerts",
  "scheduledAlerts",
  "microsoftDefenderThreatIntelligenceAnalytics",
  "builtInMl",
  "microsoftInsiderRiskManagement",
  "microsoftSentinel",
]);

/** The sources generateGraphAlerts cycles through by default: the Defender XDR family. */
export const DEFAULT_GRAPH_SERVICE_SOURCES: readonly GraphServiceSource[] = [
  "microsoftDefenderForEndpoint",
  "microsoftDefenderForIdentity",
  "microsoftDefenderForOffice365",
  "microsoftDefenderForCloudApps",
  "microsoftDefenderForCloud",
];

export type GraphAlertStatus = "unknown" | "new" | "inProgress" | "resolved" | "unknownFutureValue";
export type GraphAlertSeverity = "unknown" | "informational" | "low" | "medium" | "high" | "unknownFutureValue";

/** Members every evidence kind has, plus the kind's own (open-ended: 40+ kinds exist). */
export interface GraphEvidence {
  "@odata.type": string;
  createdDateTime: string;
  verdict: "unknown" | "suspicious" | "malicious" | "noThreatsFound" | "unknownFutureValue";
  remediationStatus: "none" | "remediated" | "prevented" | "blocked" | "notFound" | "unknownFutureValue";
  remediationStatusDetails: string | null;
  roles: string[];
  detailedRoles: string[];
  tags: string[];
  [member: string]: unknown;
}

export interface GraphAlertComment {
  comment: string;
  createdByDisplayName: string;
  createdDateTime: string;
}

export interface GraphAlert {
  "@odata.type": "#microsoft.graph.security.alert";
  id: string;
  providerAlertId: string;
  incidentId: string;
  status: GraphAlertStatus;
  severity: GraphAlertSeverity;
  classification: "unknown" | "falsePositive" | "truePositive" | "informationalExpectedActivity" | "unknownFutureValue" | null;
  determination: string | null;
  serviceSource: GraphServiceSource;
  detectionSource: string;
  productName: string;
  detectorId: string;
  tenantId: string;
  title: string;
  description: string;
  recommendedActions: string;
  category: string;
  assignedTo: string | null;
  alertWebUrl: string;
  incidentWebUrl: string;
  alertPolicyId: string | null;
  actorDisplayName: string | null;
  threatDisplayName: string | null;
  threatFamilyName: string | null;
  mitreTechniques: string[];
  createdDateTime: string;
  /** ISO-8601 UTC with 0–7 fractional digits, exactly as the service sends it. */
  lastUpdateDateTime: string;
  resolvedDateTime: string | null;
  firstActivityDateTime: string;
  lastActivityDateTime: string;
  comments: GraphAlertComment[];
  systemTags: string[];
  evidence: GraphEvidence[];
}

/** Used when a test builds an alert without saying which tenant it belongs to. */
export const DEFAULT_GRAPH_ALERT_TENANT_ID = "4d3c2b1a-0000-4000-8000-00000000a1e7";

interface Template {
  title: string;
  description: string;
  recommendedActions: string;
  category: string;
  detectionSource: string;
  severity: GraphAlertSeverity;
  threatFamilyName: string | null;
  mitreTechniques: string[];
}

interface SourceTemplates {
  productName: string;
  /** Whether the provider id has MDE's `da…_…` shape (Endpoint alerts) or a GUID-like one. */
  mdeStyleId: boolean;
  templates: readonly Template[];
  evidence: (ctx: EvidenceContext) => GraphEvidence[];
}

interface EvidenceContext {
  seed: number;
  user: string;
  createdMs: number;
  tenantId: string;
  template: Template;
}

const USERS = ["jdoe", "asmith", "svc-backup", "mlopez", "kwong", "temp123"] as const;
const STATUSES: readonly GraphAlertStatus[] = ["new", "new", "new", "inProgress", "resolved"];

function pick<T>(items: readonly T[], n: number): T {
  const item = items[n % items.length];
  if (item === undefined) throw new Error("pick() from an empty list");
  return item;
}

function hex(algorithm: "sha1" | "sha256", input: string): string {
  return createHash(algorithm).update(input).digest("hex");
}

function guidFrom(digest: string): string {
  return `${digest.slice(0, 8)}-${digest.slice(8, 12)}-4${digest.slice(13, 16)}-8${digest.slice(17, 20)}-${digest.slice(20, 32)}`;
}

/** A stable 31-bit number from a string, used to choose template values. */
function seedOf(input: string): number {
  return Number.parseInt(hex("sha1", input).slice(0, 8), 16) & 0x7fffffff;
}

/** Graph evidence's common members, for the kind named (`deviceEvidence` → `#microsoft.graph.security.deviceEvidence`). */
function evidence(kind: string, createdMs: number, members: Record<string, unknown>, roles: string[] = []): GraphEvidence {
  return {
    "@odata.type": `#microsoft.graph.security.${kind}`,
    createdDateTime: toMdeTimestamp(createdMs, "0365"),
    verdict: "suspicious",
    remediationStatus: "none",
    remediationStatusDetails: null,
    roles,
    detailedRoles: [],
    tags: [],
    ...members,
  };
}

function userAccount(user: string, seed: number, tenantId: string): Record<string, unknown> {
  return {
    accountName: user,
    domainName: "CONTOSO",
    userSid: `S-1-5-21-1782312487-3941342101-2401521340-${1100 + (seed % 500)}`,
    azureAdUserId: guidFrom(hex("sha1", `aad:${tenantId}:${user}`)),
    userPrincipalName: `${user}@contoso.com`,
    displayName: user,
  };
}

function deviceEvidence(ctx: EvidenceContext): GraphEvidence {
  const deviceId = hex("sha1", `machine-${ctx.seed % 97}`);
  return evidence(
    "deviceEvidence",
    ctx.createdMs,
    {
      firstSeenDateTime: toMdeTimestamp(ctx.createdMs - 86_400_000 * 30, "4321"),
      mdeDeviceId: deviceId,
      azureAdDeviceId: guidFrom(hex("sha1", `aad-device:${deviceId}`)),
      deviceDnsName: `${ctx.user}-pc${ctx.seed % 97}.corp.contoso.com`,
      hostName: `${ctx.user}-pc${ctx.seed % 97}`,
      ntDomain: "CONTOSO",
      dnsDomain: "corp.contoso.com",
      osPlatform: "Windows11",
      osBuild: 22631,
      version: "23H2",
      healthStatus: "active",
      riskScore: pick(["low", "medium", "high"], ctx.seed),
      rbacGroupId: 75,
      rbacGroupName: "Workstations",
      onboardingStatus: "onboarded",
      defenderAvStatus: "updated",
      ipInterfaces: [`10.0.${ctx.seed % 200}.${ctx.seed % 250}`],
      loggedOnUsers: [{ accountName: ctx.user, domainName: "CONTOSO" }],
      vmMetadata: null,
    },
    ["compromised"],
  );
}

function userEvidence(ctx: EvidenceContext): GraphEvidence {
  return evidence("userEvidence", ctx.createdMs, { userAccount: userAccount(ctx.user, ctx.seed, ctx.tenantId), stream: null }, ["compromised"]);
}

function ipEvidence(ctx: EvidenceContext, octet = 0): GraphEvidence {
  return evidence("ipEvidence", ctx.createdMs, {
    ipAddress: `203.0.113.${(ctx.seed + octet) % 254}`,
    countryLetterCode: pick(["NL", "US", "BR", "RU", "SG"], ctx.seed + octet),
    location: { city: null, countryName: null, latitude: null, longitude: null, state: null },
    stream: null,
  });
}

function fileDetails(name: string, path: string): Record<string, unknown> {
  return {
    sha1: hex("sha1", `${path}\\${name}`),
    sha256: hex("sha256", `${path}\\${name}`),
    fileName: name,
    filePath: path,
    fileSize: 73_728 + (name.length * 4096),
    filePublisher: null,
    signer: null,
    issuer: null,
  };
}

const ENDPOINT: SourceTemplates = {
  productName: "Microsoft Defender for Endpoint",
  mdeStyleId: true,
  templates: [
    {
      title: "'Mimikatz' credential theft tool",
      description: "The credential theft tool Mimikatz was detected on this device. Attackers use it to harvest credentials from memory.",
      recommendedActions: "1. Isolate the device.\n2. Reset the passwords of accounts that signed in to it.",
      category: "CredentialAccess",
      detectionSource: "antivirus",
      severity: "high",
      threatFamilyName: "Mimikatz",
      mitreTechniques: ["T1003", "T1003.001"],
    },
    {
      title: "Suspicious PowerShell command line",
      description: "A suspicious PowerShell activity was observed on the machine.",
      recommendedActions: "Review the command line and the process tree; collect an investigation package.",
      category: "Execution",
      detectionSource: "microsoftDefenderForEndpoint",
      severity: "medium",
      threatFamilyName: null,
      mitreTechniques: ["T1059.001"],
    },
    {
      title: "Suspicious scheduled task registration",
      description: "A scheduled task was created that runs a script from a user-writable location at logon.",
      recommendedActions: "Delete the task and review its script.",
      category: "Persistence",
      detectionSource: "customDetection",
      severity: "informational",
      threatFamilyName: null,
      mitreTechniques: ["T1053.005"],
    },
  ],
  evidence: (ctx) => {
    const file = ctx.template.threatFamilyName === null ? fileDetails("powershell.exe", "C:\\Windows\\System32\\WindowsPowerShell\\v1.0") : fileDetails("mimikatz.exe", "C:\\Users\\Public\\Downloads");
    return [
      deviceEvidence(ctx),
      evidence("fileEvidence", ctx.createdMs, { detectionStatus: "detected", mdeDeviceId: hex("sha1", `machine-${ctx.seed % 97}`), fileDetails: file }),
      evidence("processEvidence", ctx.createdMs, {
        processId: 1000 + (ctx.seed % 60000),
        parentProcessId: 500 + (ctx.seed % 3000),
        processCommandLine: ctx.template.threatFamilyName === null ? "powershell.exe -NoP -NonI -W Hidden -Enc SQBFAFgA" : "mimikatz.exe privilege::debug sekurlsa::logonpasswords exit",
        processCreationDateTime: toMdeTimestamp(ctx.createdMs - 2000, "5678"),
        parentProcessCreationDateTime: toMdeTimestamp(ctx.createdMs - 60_000, "9"),
        detectionStatus: "detected",
        mdeDeviceId: hex("sha1", `machine-${ctx.seed % 97}`),
        imageFile: file,
        parentProcessImageFile: fileDetails("explorer.exe", "C:\\Windows"),
        userAccount: userAccount(ctx.user, ctx.seed, ctx.tenantId),
      }),
      evidence("registryKeyEvidence", ctx.createdMs, {
        registryKey: "SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run",
        registryHive: "HKEY_LOCAL_MACHINE",
      }),
      userEvidence(ctx),
    ];
  },
};

const IDENTITY: SourceTemplates = {
  productName: "Microsoft Defender for Identity",
  mdeStyleId: false,
  templates: [
    {
      title: "Suspected DCSync attack (replication of directory services)",
      description: "A directory replication request was sent from a device that is not a domain controller.",
      recommendedActions: "Check whether the source device should replicate the directory; reset the krbtgt password if not.",
      category: "CredentialAccess",
      detectionSource: "microsoftDefenderForIdentity",
      severity: "high",
      threatFamilyName: null,
      mitreTechniques: ["T1003.006"],
    },
    {
      title: "Account enumeration reconnaissance",
      description: "An actor on a device performed suspicious account enumeration against the domain.",
      recommendedActions: "Investigate the source device and the account that ran the queries.",
      category: "Discovery",
      detectionSource: "microsoftDefenderForIdentity",
      severity: "medium",
      threatFamilyName: null,
      mitreTechniques: ["T1087.002"],
    },
  ],
  evidence: (ctx) => [userEvidence(ctx), deviceEvidence(ctx), ipEvidence(ctx)],
};

const OFFICE: SourceTemplates = {
  productName: "Microsoft Defender for Office 365",
  mdeStyleId: false,
  templates: [
    {
      title: "Email messages containing malicious URL removed after delivery",
      description: "Emails with a malicious URL were delivered and later removed by zero-hour auto purge.",
      recommendedActions: "Review the recipients' activity after delivery; block the sender if external.",
      category: "InitialAccess",
      detectionSource: "microsoftDefenderForOffice365",
      severity: "informational",
      threatFamilyName: null,
      mitreTechniques: ["T1566.002"],
    },
    {
      title: "A potentially malicious URL click was detected",
      description: "A user clicked a URL that was later found to be malicious.",
      recommendedActions: "Reset the user's credentials and review sign-ins.",
      category: "InitialAccess",
      detectionSource: "microsoftDefenderForOffice365",
      severity: "high",
      threatFamilyName: null,
      mitreTechniques: ["T1566.002", "T1204.001"],
    },
  ],
  evidence: (ctx) => {
    const url = `https://login-micros0ft-update.example/${ctx.seed % 10_000}`;
    return [
      evidence("mailboxEvidence", ctx.createdMs, {
        primaryAddress: `${ctx.user}@contoso.com`,
        displayName: ctx.user,
        userAccount: userAccount(ctx.user, ctx.seed, ctx.tenantId),
      }),
      evidence("analyzedMessageEvidence", ctx.createdMs, {
        networkMessageId: guidFrom(hex("sha1", `msg:${ctx.seed}`)),
        internetMessageId: `<${ctx.seed}.invoice@mail.example>`,
        subject: "Your invoice is ready",
        language: "en",
        senderIp: `198.51.100.${ctx.seed % 250}`,
        recipientEmailAddress: `${ctx.user}@contoso.com`,
        p1Sender: { emailAddress: "billing@mail.example", displayName: "Billing", domainName: "mail.example" },
        p2Sender: { emailAddress: "billing@mail.example", displayName: "Billing", domainName: "mail.example" },
        antiSpamDirection: "Inbound",
        deliveryAction: "Delivered",
        deliveryLocation: "Inbox/folder",
        urls: [url],
        urlCount: 1,
        attachmentsCount: 0,
        receivedDateTime: toMdeTimestamp(ctx.createdMs - 600_000, "2"),
        threatDetectionMethods: ["urlDetonationReputation"],
        threats: ["Phish"],
      }),
      evidence("urlEvidence", ctx.createdMs, { url }),
      userEvidence(ctx),
    ];
  },
};

const CLOUD_APPS: SourceTemplates = {
  productName: "Microsoft Defender for Cloud Apps",
  mdeStyleId: false,
  templates: [
    {
      title: "Impossible travel activity",
      description: "The user signed in from two distant locations within a time shorter than travel between them takes.",
      recommendedActions: "Confirm the sign-ins with the user; revoke sessions if they are not theirs.",
      category: "InitialAccess",
      detectionSource: "cloudAppSecurity",
      severity: "medium",
      threatFamilyName: null,
      mitreTechniques: ["T1078"],
    },
    {
      title: "Mass download by a single user",
      description: "A user downloaded an unusual number of files from SharePoint in a short time.",
      recommendedActions: "Review the downloaded files and the user's recent activity.",
      category: "Exfiltration",
      detectionSource: "cloudAppSecurity",
      severity: "low",
      threatFamilyName: null,
      mitreTechniques: ["T1530"],
    },
  ],
  evidence: (ctx) => [
    userEvidence(ctx),
    ipEvidence(ctx, 0),
    ipEvidence(ctx, 97),
    evidence("cloudApplicationEvidence", ctx.createdMs, {
      appId: 20893,
      displayName: "Microsoft SharePoint Online",
      instanceId: 0,
      instanceName: "Microsoft SharePoint Online",
      saasAppId: 20893,
      stream: null,
    }),
  ],
};

const CLOUD: SourceTemplates = {
  productName: "Microsoft Defender for Cloud",
  mdeStyleId: false,
  templates: [
    {
      title: "Azure Resource Manager operation from suspicious IP address",
      description: "Defender for Resource Manager detected an operation from an IP address marked suspicious by threat intelligence.",
      recommendedActions: "Confirm the operation with the resource owner; rotate the credentials used.",
      category: "InitialAccess",
      detectionSource: "microsoftDefenderForResourceManager",
      severity: "medium",
      threatFamilyName: null,
      mitreTechniques: ["T1078.004"],
    },
    {
      title: "Suspicious process executed on a virtual machine",
      description: "Defender for Servers detected a process associated with cryptocurrency mining on the machine.",
      recommendedActions: "Isolate the machine and remove the miner.",
      category: "Execution",
      detectionSource: "microsoftDefenderForServers",
      severity: "high",
      threatFamilyName: "CoinMiner",
      mitreTechniques: ["T1496"],
    },
  ],
  evidence: (ctx) => [
    evidence("azureResourceEvidence", ctx.createdMs, {
      resourceId: `/subscriptions/${guidFrom(hex("sha1", `sub:${ctx.tenantId}`))}/resourceGroups/prod/providers/Microsoft.Compute/virtualMachines/vm-${ctx.seed % 20}`,
      resourceName: `vm-${ctx.seed % 20}`,
      resourceType: "Virtual Machine",
    }),
    ipEvidence(ctx),
    userEvidence(ctx),
  ],
};

const BY_SOURCE: Partial<Record<GraphServiceSource, SourceTemplates>> = {
  microsoftDefenderForEndpoint: ENDPOINT,
  microsoftDefenderForIdentity: IDENTITY,
  microsoftDefenderForOffice365: OFFICE,
  microsoftDefenderForCloudApps: CLOUD_APPS,
  microsoftDefenderForCloud: CLOUD,
};

function parseMs(timestamp: string): number {
  const ms = Date.parse(timestamp);
  if (Number.isNaN(ms)) throw new Error(`makeGraphAlert: lastUpdateDateTime is not a timestamp: ${timestamp}`);
  return ms;
}

/**
 * One alert. `serviceSource` (default: chosen from the id among DEFAULT_GRAPH_SERVICE_SOURCES)
 * picks the product's titles, categories and evidence kinds; every other member may be
 * overridden.
 */
export function makeGraphAlert(overrides: Partial<GraphAlert> & { id: string; lastUpdateDateTime: string }): GraphAlert {
  const seed = seedOf(overrides.id);
  const serviceSource = overrides.serviceSource ?? pick(DEFAULT_GRAPH_SERVICE_SOURCES, seed >>> 11);
  const source = BY_SOURCE[serviceSource] ?? ENDPOINT;
  const template = pick(source.templates, seed);
  const user = pick(USERS, seed >>> 3);
  const status = pick(STATUSES, seed >>> 5);
  const tenantId = overrides.tenantId ?? DEFAULT_GRAPH_ALERT_TENANT_ID;
  const updatedMs = parseMs(overrides.lastUpdateDateTime);
  const createdMs = updatedMs - 60_000 - (seed % 3_600_000);
  const resolved = status === "resolved";
  const incidentId = String(10_000 + (seed % 90_000));
  const alert: GraphAlert = {
    "@odata.type": "#microsoft.graph.security.alert",
    id: overrides.id,
    providerAlertId: overrides.id,
    incidentId,
    status,
    severity: template.severity,
    classification: resolved ? "truePositive" : null,
    determination: resolved ? (template.threatFamilyName === null ? "securityTesting" : "malware") : null,
    serviceSource,
    detectionSource: template.detectionSource,
    productName: source.productName,
    detectorId: guidFrom(hex("sha1", template.title)),
    tenantId,
    title: template.title,
    description: template.description,
    recommendedActions: template.recommendedActions,
    category: template.category,
    assignedTo: status === "new" ? null : "secop@contoso.com",
    alertWebUrl: `https://security.microsoft.com/alerts/${encodeURIComponent(overrides.id)}?tid=${tenantId}`,
    incidentWebUrl: `https://security.microsoft.com/incidents/${incidentId}?tid=${tenantId}`,
    alertPolicyId: null,
    actorDisplayName: null,
    threatDisplayName: template.threatFamilyName,
    threatFamilyName: template.threatFamilyName,
    mitreTechniques: template.mitreTechniques,
    createdDateTime: toMdeTimestamp(createdMs, "7211"),
    lastUpdateDateTime: overrides.lastUpdateDateTime,
    resolvedDateTime: resolved ? overrides.lastUpdateDateTime : null,
    // Activity times come with milliseconds only, as Graph sends them for most products.
    firstActivityDateTime: toMdeTimestamp(createdMs - 145_000),
    lastActivityDateTime: toMdeTimestamp(createdMs - 144_000),
    comments:
      seed % 4 === 0
        ? [{ comment: "Reviewed by tier 1, escalating.", createdByDisplayName: "secop@contoso.com", createdDateTime: toMdeTimestamp(createdMs + 30_000, "4534") }]
        : [],
    systemTags: seed % 5 === 0 ? ["Defender Experts"] : [],
    evidence: source.evidence({ seed, user, createdMs, tenantId, template }),
  };
  return Object.assign(alert, overrides);
}

export interface GenerateGraphAlertsOptions {
  start: Date;
  spacingMs: number;
  /** The sources to cycle through, alert by alert (default DEFAULT_GRAPH_SERVICE_SOURCES). */
  serviceSources?: readonly GraphServiceSource[];
}

/** The shape of an alert id from that source: MDE's `da{ticks}_{n}`, or the `{source prefix}{guid}` others use. */
function alertIdFor(source: GraphServiceSource, ms: number, i: number, tenantSeed: number): string {
  if (BY_SOURCE[source]?.mdeStyleId ?? true) {
    // .NET ticks (100 ns since 0001-01-01) as in real ids like "da637472900382838869_1364969609".
    const ticks = (BigInt(ms) + 62_135_596_800_000n) * 10_000n + BigInt(i % 10_000);
    return `da${ticks.toString()}_${(tenantSeed + i) % 2_147_483_647}`;
  }
  const prefix: Partial<Record<GraphServiceSource, string>> = {
    microsoftDefenderForIdentity: "aa",
    microsoftDefenderForOffice365: "fa",
    microsoftDefenderForCloudApps: "ca",
    microsoftDefenderForCloud: "dc",
  };
  return `${prefix[source] ?? "xx"}${guidFrom(hex("sha1", `${tenantSeed}:${ms}:${i}`))}`;
}

/**
 * `count` alerts for one tenant whose lastUpdateDateTime rises by `spacingMs` from `start`.
 * Two in three carry 7 fractional digits (the rest milliseconds only, as Graph trims trailing
 * zeros), so with spacingMs ≥ 1 the generation order equals the time order. Sources cycle in
 * the order given.
 */
export function generateGraphAlerts(tenantId: string, count: number, options: GenerateGraphAlertsOptions): GraphAlert[] {
  const startMs = options.start.getTime();
  if (Number.isNaN(startMs)) throw new Error("generateGraphAlerts: start is not a valid Date");
  const sources = options.serviceSources ?? DEFAULT_GRAPH_SERVICE_SOURCES;
  if (sources.length === 0) throw new Error("generateGraphAlerts: serviceSources is empty");
  const tenantSeed = seedOf(tenantId);
  const out: GraphAlert[] = new Array<GraphAlert>(count);
  for (let i = 0; i < count; i++) {
    const ms = startMs + i * options.spacingMs;
    const serviceSource = pick(sources, i);
    const subMs = i % 3 === 2 ? "" : String(((i * 7919) % 9999) + 1).padStart(4, "0");
    out[i] = makeGraphAlert({
      id: alertIdFor(serviceSource, ms, i, tenantSeed),
      lastUpdateDateTime: toMdeTimestamp(ms, subMs),
      tenantId,
      serviceSource,
    });
  }
  return out;
}

/** Graph's timestamp form: ISO-8601 UTC, up to 7 fractional digits, trailing zeros trimmed. */
export const toGraphTimestamp = toMdeTimestamp;
