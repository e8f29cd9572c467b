import { randomBytes, randomUUID } from "node:crypto";
import { FakeDefender } from "./fakeDefender";
import { FakeEntra } from "./fakeEntra";
import { FakeGraph } from "./fakeGraph";
import { FakeKeyVault } from "./fakeKeyVault";
import { FakeManagedIdentity } from "./fakeManagedIdentity";
import { TOKEN_EXCHANGE_AUDIENCE } from "./clientAssertions";
import { createTestCertificate } from "./tls";

/** The app's public origin with the fakes: never contacted, only used to build links. */
export const PUBLIC_BASE_URL = "https://connector.example.test";

/** The HTTPS fakes wired to each other, with fresh credentials for one MSSP app. */
export interface FakeStack {
  entra: FakeEntra;
  vault: FakeKeyVault;
  defender: FakeDefender;
  /** Microsoft Graph `security/alerts_v2`; its `url` is the GRAPH_API_BASE_URL to configure. It accepts the fake Entra's Graph tokens. */
  graph: FakeGraph;
  certPem: string;
  /** The private key of that certificate: lets a test start another HTTPS server the app already trusts. */
  keyPem: string;
  certFile: string;
  clientId: string;
  clientSecret: string;
  msspTenantId: string;
  vaultToken: string;
  /**
   * With `browserSignIn`: the plain-HTTP origin of the fake Entra's sign-in page (for
   * LOCAL_DEV_SIGN_IN_BASE_URL), so a person's browser never meets the self-signed certificate.
   */
  signInUrl?: string;
  /**
   * With `managedIdentity`: the function app's managed-identity endpoint (IDENTITY_ENDPOINT and
   * IDENTITY_HEADER), with one user-assigned identity that the MSSP app trusts through a
   * federated identity credential on the fake Entra.
   */
  managedIdentity?: FakeManagedIdentity;
  /** That identity's client id (AZURE_CLIENT_ID). */
  managedIdentityClientId?: string;
  stop(): Promise<void>;
}

export interface FakeStackOptions {
  defenderLatencyMs?: number;
  /** Latency of the fake Graph (default: defenderLatencyMs, so a bench compares like with like). */
  graphLatencyMs?: number;
  recordServed?: boolean;
  /** Also serve the fake Entra's /authorize over plain HTTP on loopback and expose it as `signInUrl`. */
  browserSignIn?: boolean;
  /** Also start the managed-identity endpoint, its identity the federated credential of the MSSP app. */
  managedIdentity?: boolean;
}

/**
 * The app settings that point the app at the stack: the MSSP app's credentials, the fakes'
 * endpoints and the trust in their certificate. Storage and the rest are the caller's.
 */
export function stackSettings(stack: FakeStack): Record<string, string> {
  return {
    MSSP_CLIENT_ID: stack.clientId,
    MSSP_CLIENT_SECRET: stack.clientSecret,
    MSSP_TENANT_ID: stack.msspTenantId,
    MSSP_PUBLIC_BASE_URL: PUBLIC_BASE_URL,
    KEY_VAULT_URL: stack.vault.url,
    ENTRA_AUTHORITY_HOST: stack.entra.url,
    DEFENDER_API_BASE_URL: stack.defender.url,
    GRAPH_API_BASE_URL: stack.graph.url,
    LOCAL_DEV_CA_CERT_FILE: stack.certFile,
    LOCAL_DEV_VAULT_TOKEN: stack.vaultToken,
  };
}

/** Used by the test environment and by the benchmark's fakes process alike. */
export async function startFakeStack(options: FakeStackOptions = {}): Promise<FakeStack> {
  const tls = await createTestCertificate();
  const clientId = randomUUID();
  const clientSecret = `secret-${randomBytes(18).toString("base64url")}`;
  const msspTenantId = randomUUID();
  const vaultToken = `vault-${randomBytes(18).toString("base64url")}`;
  const entra = new FakeEntra({
    certPem: tls.certPem,
    keyPem: tls.keyPem,
    clients: [{ clientId, clientSecret, redirectUris: [`${PUBLIC_BASE_URL}/api/consent/callback`] }],
  });
  const vault = new FakeKeyVault({ certPem: tls.certPem, keyPem: tls.keyPem, acceptedToken: vaultToken, tenantId: msspTenantId });
  const defender = new FakeDefender({
    certPem: tls.certPem,
    keyPem: tls.keyPem,
    verifyAccessToken: (token) => entra.verifyAccessToken(token),
    ...(options.defenderLatencyMs === undefined ? {} : { latencyMs: options.defenderLatencyMs }),
    ...(options.recordServed === undefined ? {} : { recordServed: options.recordServed }),
  });
  const graphLatencyMs = options.graphLatencyMs ?? options.defenderLatencyMs;
  const graph = new FakeGraph({
    certPem: tls.certPem,
    keyPem: tls.keyPem,
    verifyAccessToken: (token) => entra.verifyAccessToken(token),
    ...(graphLatencyMs === undefined ? {} : { latencyMs: graphLatencyMs }),
    ...(options.recordServed === undefined ? {} : { recordServed: options.recordServed }),
  });
  await Promise.all([entra.start(), vault.start(), defender.start(), graph.start()]);
  let managedIdentity: FakeManagedIdentity | undefined;
  const identity = { clientId: randomUUID(), objectId: randomUUID() };
  if (options.managedIdentity) {
    // Entra issues the identity's tokens, so their issuer is this MSSP tenant at the fake Entra.
    const issuer = `${entra.url}/${msspTenantId}/v2.0`;
    managedIdentity = new FakeManagedIdentity({ issuer, tenantId: msspTenantId, identities: [identity] });
    await managedIdentity.start().catch(async (err: unknown) => {
      await Promise.allSettled([entra.stop(), vault.stop(), defender.stop(), graph.stop()]);
      throw err;
    });
    entra.clientAssertions.trustIssuer(issuer, managedIdentity.publicKey);
    entra.clientAssertions.setFederatedCredentials(clientId, [
      { name: "function-app-identity", issuer, subject: identity.objectId, audiences: [TOKEN_EXCHANGE_AUDIENCE] },
    ]);
  }
  let signInUrl: string | undefined;
  if (options.browserSignIn) {
    // Only one ephemeral port more; should it fail, the three servers just started must not leak.
    signInUrl = await entra.startBrowserListener().catch(async (err: unknown) => {
      await Promise.allSettled([entra.stop(), vault.stop(), defender.stop(), graph.stop(), managedIdentity?.stop()]);
      throw err;
    });
  }
  return {
    entra,
    vault,
    defender,
    graph,
    certPem: tls.certPem,
    keyPem: tls.keyPem,
    certFile: tls.certFile,
    clientId,
    clientSecret,
    msspTenantId,
    vaultToken,
    ...(signInUrl === undefined ? {} : { signInUrl }),
    ...(managedIdentity === undefined ? {} : { managedIdentity, managedIdentityClientId: identity.clientId }),
    stop: async () => {
      await Promise.allSettled([entra.stop(), vault.stop(), defender.stop(), graph.stop(), managedIdentity?.stop()]);
    },
  };
}
