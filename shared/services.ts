import { DefaultAzureCredential, type TokenCredential } from "@azure/identity";
import { systemClock, type Clock } from "./clock";
import { loadConfig, type AppConfig } from "./config";
import { ConsentFlow } from "./consent/consentFlow";
import { ApplicationConsentVerifier } from "./consent/applicationConsent";
import { createSourceProbe } from "./consent/sourceProbe";
import { ConsentSessionStore } from "./consent/consentSessions";
import { ConsentLinkStore } from "./consent/consentLinks";
import { AuditTrail } from "./audit/auditTrail";
import { SigningKeyProvider } from "./consent/signingKey";
import { largeBufferPool, type BufferPool } from "./http/bufferPool";
import { createHttpClient, type HttpClient } from "./http/httpClient";
import { EntraClient } from "./identity/entraClient";
import { createAppCredential } from "./identity/appCredential";
import { TenantAdmin } from "./operator/tenantAdmin";
import { followableNextLink, GRAPH_BUDGET_LIMITS, GRAPH_MAX_TOP, GraphClient } from "./graph/graphClient";
import { createKeyVaultSecretStore, type SecretStore } from "./secrets/secretStore";
import { TenantTokenStore } from "./secrets/tenantTokens";
import { createTableFactory, type TableFactory } from "./state/tables";
import { TenantRegistry } from "./state/tenantRegistry";
import { CONTAINERS, QUEUES } from "./storage/names";
import { blobDedupeSpill } from "./pull/dedupeSpill";
import { DeadLetterRedrive } from "./pull/redrive";
import { BlobDeadLetterStore, type DeadLetterStore } from "./sinks/deadLetters";
import { openQueue } from "./state/queues";
import type { QueueClient } from "@azure/storage-queue";
import { DefenderClient } from "./defender/defenderClient";
import { RateBudget } from "./defender/rateBudget";
import { AccessTokenSource } from "./pull/accessTokens";
import { pullHealthDecorator } from "./pull/health";
import { PullHistoryStore } from "./pull/pullHistory";
import { PullSlots } from "./pull/pullSlots";
import { OperatorConsole } from "./console/operatorConsole";
import { PullStateStore } from "./pull/pullState";
import { TenantPull, type PullTimings, type SourceReader } from "./pull/tenantPull";
import type { PullObserver, Severity } from "./pull/observer";
import { BlobAlertSink } from "./sinks/blobAlertSink";
import type { AlertSink } from "./sinks/alertSink";
import { openContainer } from "./sinks/containers";
import { BlobParkingStore } from "./sinks/parking";
import { everySink, SinkSet, type NamedSink } from "./sinks/sinkSet";
import { buildSinks } from "./sinks/sinkFactory";
import { APP_VERSION } from "./version";
import { createNotifications, type Notifications } from "./notifications";
import { openTelemetry } from "./telemetry/openTelemetry";
import { telemetryObserver } from "./telemetry/telemetry";

/** Everything a function needs, wired once per process from the app settings. */
export interface Services {
  config: AppConfig;
  clock: Clock;
  http: HttpClient;
  secrets: SecretStore;
  tables: TableFactory;
  tenants: TenantRegistry;
  tokens: TenantTokenStore;
  signingKey: SigningKeyProvider;
  entra: EntraClient;
  consent: ConsentFlow;
  /** Consent sign-in sessions, for the purge timer. */
  consentSessions: ConsentSessionStore;
  /** The operator audit trail (GET /api/audit). */
  audit: AuditTrail;
  tenantAdmin: TenantAdmin;
  pullState: PullStateStore;
  accessTokens: AccessTokenSource;
  tenantPull: TenantPull;
  /** One row per pull run, for the console. */
  pullHistory: PullHistoryStore;
  /** Pulls running in this process (a group message's tenants wait for a slot). */
  pullSlots: PullSlots;
  operatorConsole: OperatorConsole;
  deadLetters: DeadLetterStore;
  redrive: DeadLetterRedrive;
  /** The queue the scheduler fills, created on first use. */
  pullQueue: () => Promise<QueueClient>;
  /** Webhook notifications; undefined when NOTIFY_WEBHOOK_URL is not set. */
  notifications?: Notifications;
}

/** Replaceable parts: the benchmark and tests swap the clock, sleep or sink, never a protocol client. */
export interface ServiceOverrides {
  clock?: Clock;
  sleep?: (ms: number) => Promise<void>;
  sink?: AlertSink;
  /** How long a Key Vault, Table or Blob call may take before it is abandoned (default 30 s). */
  storageTimeoutMs?: number;
  /** Wraps the real Table clients (tests inject storage faults here). */
  wrapTables?: (tables: TableFactory) => TableFactory;
  /** The pull's lease and grace periods (tests shorten them). */
  pullTimings?: Partial<PullTimings>;
  /** More pull observers beside the app's own (tests capture reports here). */
  pullObservers?: readonly PullObserver[];
  /** Several named sinks instead of `sink`, each with its own progress (tests inject faulty ones here). */
  sinks?: readonly NamedSink[];
  /** Stands in for the managed identity where none exists (tests signing in to local fakes). */
  credential?: TokenCredential;
  /** The large-buffer pool of the HTTP client and the blob sink (the benchmark shares it with its own blob sink). */
  buffers?: BufferPool;
}

const realSleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** A credential that presents a fixed token: only for a local Key Vault stand-in. */
function staticCredential(token: string): TokenCredential {
  return { getToken: async () => ({ token, expiresOnTimestamp: Date.now() + 3600_000 }) };
}

export function createServices(config: AppConfig, overrides: ServiceOverrides = {}): Services {
  const clock = overrides.clock ?? systemClock;
  const storageTimeoutMs = overrides.storageTimeoutMs ?? 30_000;
  const sleep = overrides.sleep ?? realSleep;
  let azureCredential: TokenCredential | undefined;
  // Built on first use: DefaultAzureCredential probes its sources lazily, and local runs
  // against Azurite never need it.
  const credential = (): TokenCredential =>
    (azureCredential ??=
      overrides.credential ??
      new DefaultAzureCredential(
      config.managedIdentityClientId ? { managedIdentityClientId: config.managedIdentityClientId } : {},
    ));
  const vaultCredential: TokenCredential = config.localDev.vaultAccessToken
    ? staticCredential(config.localDev.vaultAccessToken)
    : {
        getToken: (scopes, options) => credential().getToken(scopes, options),
      };
  // One pool for the pages the HTTP client reads and the NDJSON the blob sink writes of them.
  const buffers = overrides.buffers ?? largeBufferPool();
  const http = createHttpClient({
    ...(config.localDev.caCertPem ? { extraCaPem: config.localDev.caCertPem } : {}),
    buffers,
  });
  const secrets = createKeyVaultSecretStore({
    vaultUrl: config.keyVaultUrl,
    credential: vaultCredential,
    ...(config.localDev.caCertPem ? { localDevCaPem: config.localDev.caCertPem } : {}),
    timeoutMs: storageTimeoutMs,
  });
  const realTables = createTableFactory(config.storage, credential, overrides.storageTimeoutMs ? { tryTimeoutMs: overrides.storageTimeoutMs } : {});
  const tables = overrides.wrapTables ? overrides.wrapTables(realTables) : realTables;
  const tenants = new TenantRegistry(tables, clock);
  const tokens = new TenantTokenStore(secrets);
  const signingKey = new SigningKeyProvider(secrets, clock);
  const entra = new EntraClient({
    clientId: config.clientId,
    credential: createAppCredential(config.credential, {
      // A certificate usually sits in the read-only credential vault, apart from the tokens vault.
      secrets:
        config.credential.kind === "certificate" && config.credential.vaultUrl
          ? createKeyVaultSecretStore({
              vaultUrl: config.credential.vaultUrl,
              credential: vaultCredential,
              ...(config.localDev.caCertPem ? { localDevCaPem: config.localDev.caCertPem } : {}),
              timeoutMs: storageTimeoutMs,
            })
          : secrets,
    }),
    authorityHost: config.entraAuthorityHost,
    redirectUri: config.redirectUri,
    http,
    clock,
  });
  const sessions = new ConsentSessionStore(tables, clock);
  const links = new ConsentLinkStore(tables, clock);
  const audit = new AuditTrail(tables, clock);
  const pullState = new PullStateStore({
    tables,
    clock,
    spill: blobDedupeSpill(openContainer(config.storage, CONTAINERS.pullState, credential)),
    timeoutMs: storageTimeoutMs,
  });
  const deadLetters = new BlobDeadLetterStore(openContainer(config.storage, CONTAINERS.deadLetters, credential), storageTimeoutMs);
  const accessTokens = new AccessTokenSource({
    tokens,
    entra,
    clock,
    sleep,
    refreshTokenPersistAgeMs: config.pull.refreshTokenPersistAgeHours * 3600_000,
  });
  const budget = new RateBudget({ clock, sleep });
  const defender = new DefenderClient({
    http,
    userAgent: `MdePartner-${config.pull.partnerCompany}-${config.pull.partnerProduct}/${APP_VERSION}`,
    requestTimeoutMs: config.pull.requestTimeoutSeconds * 1000,
    budget,
    clock,
    sleep,
  });
  // Graph counts its own calls: its limit is per app per tenant, apart from the Defender API's.
  const graphBudget = new RateBudget({ clock, sleep, source: "graph", ...GRAPH_BUDGET_LIMITS });
  const graph: SourceReader = {
    client: new GraphClient({
      http,
      userAgent: `${config.pull.partnerCompany}-${config.pull.partnerProduct}/${APP_VERSION}`,
      requestTimeoutMs: config.pull.requestTimeoutSeconds * 1000,
      budget: graphBudget,
      clock,
      sleep,
    }),
    budget: graphBudget,
    baseUrl: config.graphApiBaseUrl,
    maxTop: GRAPH_MAX_TOP,
    followable: (link) => followableNextLink(config.graphApiBaseUrl, link),
  };
  const pullHistory = new PullHistoryStore({ tables, clock, timeoutMs: storageTimeoutMs });
  // One sink is written directly (its progress is the checkpoint's); several go through a SinkSet.
  const named: readonly NamedSink[] = overrides.sink
    ? [{ name: "blob", sink: overrides.sink }]
    : (overrides.sinks ??
      buildSinks(config.sinks, {
        blob: () => new BlobAlertSink(openContainer(config.storage, config.pull.alertsContainer, credential), undefined, buffers),
        credential,
        ...(config.localDev.caCertPem ? { caPem: config.localDev.caCertPem } : {}),
      }));
  const [first] = named;
  if (!first) throw new Error("no sink configured");
  const sink: AlertSink = named.length > 1 ? everySink(named) : first.sink;
  const parking = new BlobParkingStore(openContainer(config.storage, CONTAINERS.parked, credential), storageTimeoutMs * 2);
  const sinkSet = named.length > 1 ? new SinkSet(named, parking, clock) : undefined;
  // Who hears about each pull run: telemetry and notifications add themselves here.
  const pullObservers: PullObserver[] = [...(overrides.pullObservers ?? [])];
  pullObservers.push(telemetryObserver(openTelemetry({ reconsentRequired: async () => (await tenants.list("reconsent_required")).length })));
  let notableSeverity: Severity | undefined;
  // Notifications only when a webhook is configured: the threshold makes the pull parse each new
  // alert for its severity, a cost nobody should pay for nothing.
  const notifications = config.notifications
    ? createNotifications({
        settings: config.notifications,
        tables,
        http,
        clock,
        sleep,
        storageTimeoutMs,
        publicBaseUrl: config.publicBaseUrl,
      })
    : undefined;
  if (notifications) {
    pullObservers.push(notifications.observer);
    notableSeverity = config.notifications?.minSeverity;
  }
  const tenantPull = new TenantPull({
    settings: config.pull,
    defenderApiBaseUrl: config.defenderApiBaseUrl,
    tenants,
    pullState,
    tokens: accessTokens,
    defender,
    budget,
    graph,
    sink,
    deadLetters,
    clock,
    history: pullHistory,
    ...(overrides.pullTimings ? { timings: overrides.pullTimings } : {}),
    observers: pullObservers,
    ...(sinkSet ? { sinkSet } : { sinkName: first.name }),
    ...(notableSeverity ? { notableSeverity } : {}),
  });
  let queue: Promise<QueueClient> | undefined;
  const pullQueue = () => {
    if (!queue) {
      queue = (async () => {
        const client = openQueue(config.storage, QUEUES.tenantPulls, credential);
        await client.createIfNotExists();
        return client;
      })();
      // A failed create must not stick for the rest of the process.
      queue.catch(() => {
        queue = undefined;
      });
    }
    return queue;
  };
  const resetPullState = async (tenantId: string): Promise<void> => {
    accessTokens.forget(tenantId);
    await pullState.reset(tenantId);
    // Pages parked for a sink that was down belong to the tenant too.
    await parking.removeAll(tenantId);
  };
  const tenantAdmin = new TenantAdmin({
    config,
    tenants,
    links,
    audit,
    sessions,
    tokens,
    signingKey,
    clock,
    health: pullHealthDecorator(pullState, clock),
    resetPullState,
  });
  return {
    config,
    clock,
    http,
    secrets,
    tables,
    tenants,
    tokens,
    signingKey,
    entra,
    consent: new ConsentFlow({
      config,
      tenants,
      sessions,
      signingKey,
      entra,
      tokens,
      links,
      audit,
      clock,
      application: new ApplicationConsentVerifier({
        entra,
        clock,
        sleep,
        probe: createSourceProbe({ defender, graph: graph.client, defenderApiBaseUrl: config.defenderApiBaseUrl, graphApiBaseUrl: config.graphApiBaseUrl, clock }),
      }),
    }),
    audit,
    consentSessions: sessions,
    tenantAdmin,
    pullState,
    accessTokens,
    tenantPull,
    pullHistory,
    pullSlots: new PullSlots(),
    operatorConsole: new OperatorConsole({ config, tenantAdmin, history: pullHistory, clock }),
    deadLetters,
    redrive: new DeadLetterRedrive({ tenants, pullState, deadLetters, sink, sinkName: first.name, clock }),
    pullQueue,
    ...(notifications ? { notifications } : {}),
  };
}

let processServices: Services | undefined;

/** The process-wide services, built from process.env on first call. Throws ConfigError if settings are invalid. */
export function getServices(): Services {
  processServices ??= createServices(loadConfig(process.env));
  return processServices;
}
