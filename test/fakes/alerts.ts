import { createHash } from "node:crypto";

/**
 * Defender for Endpoint alert objects shaped like the documented `Alert`
 * resource (defender-endpoint/api/alerts.md). Values are derived from the alert
 * id rather than Math.random so a failing test reproduces exactly.
 */

export type MdeSeverity = "UnSpecified" | "Informational" | "Low" | "Medium" | "High";
export type MdeStatus = "Unknown" | "New" | "InProgress" | "Resolved";

export interface MdeEvidence {
  entityType: string;
  evidenceCreationTime: string;
  sha1: string | null;
  sha256: string | null;
  fileName: string | null;
  filePath: string | null;
  processId: number | null;
  processCommandLine: string | null;
  processCreationTime: string | null;
  parentProcessId: number | null;
  parentProcessCreationTime: string | null;
  parentProcessFileName: string | null;
  parentProcessFilePath: string | null;
  ipAddress: string | null;
  url: string | null;
  registryKey: string | null;
  registryHive: string | null;
  registryValueType: string | null;
  registryValue: string | null;
  accountName: string | null;
  domainName: string | null;
  userSid: string | null;
  aadUserId: string | null;
  userPrincipalName: string | null;
  detectionStatus: string | null;
}

export interface MdeAlertComment {
  comment: string;
  createdBy: string;
  createdTime: string;
}

export interface MdeAlert {
  id: string;
  incidentId: number;
  investigationId: number | null;
  assignedTo: string | null;
  severity: MdeSeverity;
  status: MdeStatus;
  classification: string | null;
  determination: string | null;
  investigationState: string;
  detectionSource: string;
  detectorId: string;
  category: string;
  threatFamilyName: string | null;
  threatName: string | null;
  title: string;
  description: string;
  alertCreationTime: string;
  firstEventTime: string;
  lastEventTime: string;
  /** ISO-8601 UTC with 0–7 fractional digits, exactly as the service sends it. */
  lastUpdateTime: string;
  resolvedTime: string | null;
  machineId: string;
  computerDnsName: string;
  rbacGroupName: string;
  aadTenantId: string;
  mitreTechniques: string[];
  relatedUser: { userName: string; domainName: string } | null;
  comments: MdeAlertComment[];
  evidence: MdeEvidence[];
}

/** Used when a test builds an alert without saying which tenant it belongs to. */
export const DEFAULT_ALERT_TENANT_ID = "4d3c2b1a-0000-4000-8000-00000000a1e7";

interface AlertTemplate {
  title: string;
  description: string;
  category: string;
  detectionSource: string;
  severity: MdeSeverity;
  threatFamilyName: string | null;
  mitreTechniques: string[];
  fileName: string;
  filePath: string;
  commandLine: string;
}

// A small pool keeps generated backlogs of 100k alerts cheap in memory: the
// repeated strings are shared, only ids and timestamps are unique per alert.
const TEMPLATES: readonly AlertTemplate[] = [
  {
    title: "Low-reputation arbitrary code executed by signed executable",
    description:
      "Binaries signed by Microsoft can be used to run low-reputation arbitrary code. This technique hides the execution of malicious code within a trusted process.",
    category: "Execution",
    detectionSource: "WindowsDefenderAtp",
    severity: "Low",
    threatFamilyName: null,
    mitreTechniques: ["T1064", "T1085", "T1220"],
    fileName: "rundll32.exe",
    filePath: "C:\\Windows\\System32",
    commandLine: "rundll32.exe C:\\Users\\Public\\update.dll,DllRegisterServer",
  },
  {
    title: "'Mimikatz' credential theft tool",
    description:
      "The credential theft tool Mimikatz was detected on this device. Attackers use it to harvest credentials from memory.",
    category: "CredentialAccess",
    detectionSource: "WindowsDefenderAv",
    severity: "High",
    threatFamilyName: "Mimikatz",
    mitreTechniques: ["T1003", "T1003.001"],
    fileName: "mimikatz.exe",
    filePath: "C:\\Users\\Public\\Downloads",
    commandLine: "mimikatz.exe privilege::debug sekurlsa::logonpasswords exit",
  },
  {
    title: "Suspicious PowerShell command line",
    description:
      "A suspicious PowerShell activity was observed on the machine. This behavior may indicate that PowerShell was used during installation, exploration, or in some cases in lateral movement activities.",
    category: "Execution",
    detectionSource: "WindowsDefenderAtp",
    severity: "Medium",
    threatFamilyName: null,
    mitreTechniques: ["T1059.001"],
    fileName: "powershell.exe",
    filePath: "C:\\Windows\\System32\\WindowsPowerShell\\v1.0",
    commandLine: "powershell.exe -NoP -NonI -W Hidden -Enc SQBFAFgAIAAoAE4AZQB3AC0ATwBiAGoAZQBjAHQAKQA=",
  },
  {
    title: "An active 'Trickbot' malware was detected",
    description:
      "Malware and unwanted software are undesirable applications that perform annoying, disruptive, or harmful actions on affected machines.",
    category: "Malware",
    detectionSource: "WindowsDefenderAv",
    severity: "High",
    threatFamilyName: "Trickbot",
    mitreTechniques: [],
    fileName: "invoice_0423.exe",
    filePath: "C:\\Users\\jdoe\\AppData\\Local\\Temp",
    commandLine: "\"C:\\Users\\jdoe\\AppData\\Local\\Temp\\invoice_0423.exe\"",
  },
  {
    title: "Suspicious connection to a known command-and-control server",
    description:
      "A process made a network connection to an address associated with command-and-control infrastructure.",
    category: "CommandAndControl",
    detectionSource: "CustomerTI",
    severity: "Medium",
    threatFamilyName: null,
    mitreTechniques: ["T1071", "T1071.001"],
    fileName: "svchost.exe",
    filePath: "C:\\Windows\\System32",
    commandLine: "svchost.exe -k netsvcs -p",
  },
  {
    title: "Suspicious scheduled task registration",
    description: "A scheduled task was created that runs a script from a user-writable location at logon.",
    category: "Persistence",
    detectionSource: "WindowsDefenderAtp",
    severity: "Informational",
    threatFamilyName: null,
    mitreTechniques: ["T1053.005"],
    fileName: "schtasks.exe",
    filePath: "C:\\Windows\\System32",
    commandLine: "schtasks.exe /Create /SC ONLOGON /TN Updater /TR C:\\Users\\Public\\u.vbs",
  },
];

const USERS = ["jdoe", "asmith", "svc-backup", "mlopez", "kwong", "temp123"] as const;
const STATUSES: readonly MdeStatus[] = ["New", "New", "New", "InProgress", "Resolved"];
const INVESTIGATION_STATES = ["Queued", "Running", "PendingApproval", "Benign", "SuccessfullyRemediated", "UnsupportedAlertType"] as const;
const RBAC_GROUPS = ["UnassignedGroup", "Servers", "Workstations", "Finance"] as const;

function pick<T>(items: readonly T[], n: number): T {
  const item = items[n % items.length];
  if (item === undefined) throw new Error("pick() from an empty list");
  return item;
}

function hexDigest(algorithm: "sha1" | "sha256", input: string): string {
  return createHash(algorithm).update(input).digest("hex");
}

interface TemplateDigests {
  fileSha1: string;
  fileSha256: string;
  detectorId: string;
}
// Hashes that depend only on the template or machine are computed once, so
// bulk seeding costs one hash (the seed) per alert.
const templateDigests = new Map<AlertTemplate, TemplateDigests>();
function digestsOf(template: AlertTemplate): TemplateDigests {
  let digests = templateDigests.get(template);
  if (digests === undefined) {
    const fileKey = `${template.filePath}\\${template.fileName}`;
    digests = {
      fileSha1: hexDigest("sha1", fileKey),
      fileSha256: hexDigest("sha256", fileKey),
      detectorId: guidFrom(hexDigest("sha1", template.title)),
    };
    templateDigests.set(template, digests);
  }
  return digests;
}
const machineIds: string[] = [];
function machineIdOf(n: number): string {
  return (machineIds[n] ??= hexDigest("sha1", `machine-${n}`));
}

/** A stable 31-bit number from a string, used to choose template values. */
function seedOf(input: string): number {
  return Number.parseInt(hexDigest("sha1", input).slice(0, 8), 16) & 0x7fffffff;
}

/**
 * Formats like the service: trailing zeros of the fraction are dropped
 * ("…:59.2Z"), and `subMs` supplies the digits beyond milliseconds (up to 4)
 * so consumers are exercised on sub-millisecond precision.
 */
export function toMdeTimestamp(ms: number, subMs = ""): string {
  const day = Math.floor(ms / 86_400_000);
  if (day !== cachedDay) {
    // Bulk seeding formats ~10 timestamps per alert; Date#toISOString per call dominated the cost.
    cachedDay = day;
    cachedDayPrefix = new Date(day * 86_400_000).toISOString().slice(0, 11);
  }
  const inDay = ms - day * 86_400_000;
  const whole = Math.floor(inDay);
  const hh = Math.floor(whole / 3_600_000);
  const mm = Math.floor(whole / 60_000) % 60;
  const ss = Math.floor(whole / 1000) % 60;
  let fraction = String(whole % 1000).padStart(3, "0") + subMs.slice(0, 4);
  let end = fraction.length;
  while (end > 0 && fraction.charCodeAt(end - 1) === 48) end--;
  fraction = fraction.slice(0, end);
  return `${cachedDayPrefix}${pad2(hh)}:${pad2(mm)}:${pad2(ss)}${fraction === "" ? "" : `.${fraction}`}Z`;
}
let cachedDay = Number.NaN;
let cachedDayPrefix = "";
function pad2(n: number): string {
  return n < 10 ? `0${n}` : String(n);
}

function guidFrom(hex: string): string {
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-4${hex.slice(13, 16)}-8${hex.slice(17, 20)}-${hex.slice(20, 32)}`;
}

function makeEvidence(seed: number, template: AlertTemplate, user: string, creationMs: number): MdeEvidence[] {
  const empty: MdeEvidence = {
    entityType: "",
    evidenceCreationTime: toMdeTimestamp(creationMs, "1234"),
    sha1: null,
    sha256: null,
    fileName: null,
    filePath: null,
    processId: null,
    processCommandLine: null,
    processCreationTime: null,
    parentProcessId: null,
    parentProcessCreationTime: null,
    parentProcessFileName: null,
    parentProcessFilePath: null,
    ipAddress: null,
    url: null,
    registryKey: null,
    registryHive: null,
    registryValueType: null,
    registryValue: null,
    accountName: null,
    domainName: null,
    userSid: null,
    aadUserId: null,
    userPrincipalName: null,
    detectionStatus: null,
  };
  const { fileSha1, fileSha256 } = digestsOf(template);
  return [
    {
      ...empty,
      entityType: "File",
      sha1: fileSha1,
      sha256: fileSha256,
      fileName: template.fileName,
      filePath: template.filePath,
      detectionStatus: template.detectionSource === "WindowsDefenderAv" ? "Detected" : null,
    },
    {
      ...empty,
      entityType: "Process",
      sha1: fileSha1,
      sha256: fileSha256,
      fileName: template.fileName,
      filePath: template.filePath,
      processId: 1000 + (seed % 60000),
      processCommandLine: template.commandLine,
      processCreationTime: toMdeTimestamp(creationMs - 2000, "5678"),
      parentProcessId: 500 + (seed % 3000),
      parentProcessCreationTime: toMdeTimestamp(creationMs - 60_000, "9"),
      parentProcessFileName: "explorer.exe",
      parentProcessFilePath: "C:\\Windows",
      accountName: user,
      domainName: "CONTOSO",
      userSid: `S-1-5-21-1782312487-3941342101-2401521340-${1100 + (seed % 500)}`,
      userPrincipalName: `${user}@contoso.com`,
      detectionStatus: "Detected",
    },
  ];
}

function parseMs(timestamp: string): number {
  const ms = Date.parse(timestamp);
  if (Number.isNaN(ms)) throw new Error(`makeAlert: lastUpdateTime is not a timestamp: ${timestamp}`);
  return ms;
}

export function makeAlert(overrides: Partial<MdeAlert> & { id: string; lastUpdateTime: string }): MdeAlert {
  const seed = seedOf(overrides.id);
  const template = pick(TEMPLATES, seed);
  const user = pick(USERS, seed >>> 3);
  const status = pick(STATUSES, seed >>> 5);
  const updatedMs = parseMs(overrides.lastUpdateTime);
  const createdMs = updatedMs - 60_000 - (seed % 3_600_000);
  const machineHex = machineIdOf(seed % 97);
  const resolved = status === "Resolved";
  const alert: MdeAlert = {
    id: overrides.id,
    incidentId: 1_000_000 + (seed % 900_000),
    investigationId: seed % 3 === 0 ? null : 10_000 + (seed % 90_000),
    assignedTo: status === "New" ? null : "secop@contoso.com",
    severity: template.severity,
    status,
    classification: resolved ? "TruePositive" : null,
    determination: resolved ? (template.threatFamilyName === null ? "SecurityTesting" : "Malware") : null,
    investigationState: pick(INVESTIGATION_STATES, seed >>> 7),
    detectionSource: template.detectionSource,
    detectorId: digestsOf(template).detectorId,
    category: template.category,
    threatFamilyName: template.threatFamilyName,
    threatName: template.threatFamilyName === null ? null : `Trojan:Win32/${template.threatFamilyName}.A`,
    title: template.title,
    description: template.description,
    alertCreationTime: toMdeTimestamp(createdMs, "0239"),
    firstEventTime: toMdeTimestamp(createdMs - 145_000, "2661"),
    lastEventTime: toMdeTimestamp(createdMs - 144_000, "7322"),
    lastUpdateTime: overrides.lastUpdateTime,
    resolvedTime: resolved ? overrides.lastUpdateTime : null,
    machineId: machineHex,
    computerDnsName: `${user}-pc${seed % 97}.corp.contoso.com`,
    rbacGroupName: pick(RBAC_GROUPS, seed >>> 9),
    aadTenantId: DEFAULT_ALERT_TENANT_ID,
    mitreTechniques: template.mitreTechniques,
    relatedUser: { userName: user, domainName: "CONTOSO" },
    comments:
      seed % 4 === 0
        ? [{ comment: "Reviewed by tier 1, escalating.", createdBy: "secop@contoso.com", createdTime: toMdeTimestamp(createdMs + 30_000, "4534") }]
        : [],
    evidence: makeEvidence(seed, template, user, createdMs),
  };
  return Object.assign(alert, overrides);
}

export interface GenerateAlertsOptions {
  start: Date;
  spacingMs: number;
}

/**
 * `count` alerts for one tenant whose lastUpdateTime rises by `spacingMs`
 * from `start`, each with sub-millisecond digits (so with spacingMs ≥ 1 the
 * generation order equals the service's time order).
 */
export function generateAlerts(tenantId: string, count: number, options: GenerateAlertsOptions): MdeAlert[] {
  const startMs = options.start.getTime();
  if (Number.isNaN(startMs)) throw new Error("generateAlerts: start is not a valid Date");
  const tenantSeed = seedOf(tenantId);
  const out: MdeAlert[] = new Array<MdeAlert>(count);
  for (let i = 0; i < count; i++) {
    const ms = startMs + i * options.spacingMs;
    // .NET ticks (100 ns since 0001-01-01) as in real ids like "da637472900382838869_1364969609".
    const ticks = (BigInt(ms) + 62_135_596_800_000n) * 10_000n + BigInt(i % 10_000);
    const suffix = (tenantSeed + i) % 2_147_483_647;
    out[i] = makeAlert({
      id: `da${ticks.toString()}_${suffix}`,
      lastUpdateTime: toMdeTimestamp(ms, String((i * 7919) % 10_000).padStart(4, "0")),
      aadTenantId: tenantId,
    });
  }
  return out;
}
