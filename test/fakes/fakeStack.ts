import { randomBytes, randomUUID } from "node:crypto";
import { FakeDefender } from "./fakeDefender";
import { FakeEntra } from "./fakeEntra";
import { FakeKeyVault } from "./fakeKeyVault";
import { createTestCertificate } from "./tls";

/** The app's public origin with the fakes: never contacted, only used to build links. */
export const PUBLIC_BASE_URL = "https://connector.example.test";

/** The three HTTPS fakes wired to each other, with fresh credentials for one MSSP app. */
export interface FakeStack {
  entra: FakeEntra;
  vault: FakeKeyVault;
  defender: FakeDefender;
  certPem: string;
  certFile: string;
  clientId: string;
  clientSecret: string;
  msspTenantId: string;
  vaultToken: string;
  stop(): Promise<void>;
}

/** Used by the test environment and by the benchmark's fakes process alike. */
export async function startFakeStack(options: { defenderLatencyMs?: number; recordServed?: boolean } = {}): Promise<FakeStack> {
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
  await Promise.all([entra.start(), vault.start(), defender.start()]);
  return {
    entra,
    vault,
    defender,
    certPem: tls.certPem,
    certFile: tls.certFile,
    clientId,
    clientSecret,
    msspTenantId,
    vaultToken,
    stop: async () => {
      await Promise.allSettled([entra.stop(), vault.stop(), defender.stop()]);
    },
  };
}
