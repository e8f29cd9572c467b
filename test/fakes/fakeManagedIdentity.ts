import { randomBytes, randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { generateKeyPair, SignJWT, type GenerateKeyPairResult } from "jose";
import { registerSecrets } from "../harness/secrecy";
import { sendJson } from "./http";

/**
 * The local managed-identity endpoint of App Service and Azure Functions (Flex Consumption
 * included): what `IDENTITY_ENDPOINT` and `IDENTITY_HEADER` point at. @azure/identity 4.13's
 * ManagedIdentityCredential hands the request to msal-node's ManagedIdentityApplication, which
 * picks its "AppService" source when exactly these two variables are set (ServiceFabric would
 * also need IDENTITY_SERVER_THUMBPRINT) and sends
 *   GET {IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=<resource>&client_id=<uami client id>
 *   X-IDENTITY-HEADER: <IDENTITY_HEADER>
 * answered with `{ access_token, expires_on (Unix seconds, as a string), resource, token_type,
 * client_id }`. Plain HTTP on loopback, as on App Service. Tokens are JWTs signed with this
 * fake's own key, for the user-assigned identities it knows only; the fake Entra trusts that key
 * for the federated credential (test/fakes/clientAssertions.ts).
 */

export const APP_SERVICE_MSI_API_VERSION = "2019-08-01";

export interface FakeIdentity {
  /** The identity's client (application) id: what the app names it by. */
  clientId: string;
  /** Its object (principal) id: the `sub` of its tokens and the federated credential's subject. */
  objectId: string;
}

export interface FakeManagedIdentityOptions {
  /** `iss` of every token: the identity's tenant as Entra names it, e.g. `{authority}/{tenantId}/v2.0`. */
  issuer: string;
  tenantId: string;
  identities: FakeIdentity[];
  tokenLifetimeSeconds?: number;
  /** Milliseconds since the epoch. */
  clock?: () => number;
}

export interface ManagedIdentityStats {
  tokenRequests: number;
  refused: number;
}

export class FakeManagedIdentity {
  readonly stats: ManagedIdentityStats = { tokenRequests: 0, refused: 0 };
  /** The value of IDENTITY_HEADER: the platform's per-site secret. */
  readonly identityHeader = `mi-header-${randomBytes(18).toString("base64url")}`;
  private readonly identities: Map<string, FakeIdentity>;
  private readonly lifetimeSeconds: number;
  private clock: () => number;
  private key: GenerateKeyPairResult | undefined;
  private server: Server | undefined;
  private baseUrl: string | undefined;
  private readonly issued: string[] = [];
  private readonly kid = randomBytes(12).toString("base64url");

  constructor(private readonly options: FakeManagedIdentityOptions) {
    this.identities = new Map(options.identities.map((identity) => [identity.clientId.toLowerCase(), { ...identity }]));
    this.lifetimeSeconds = options.tokenLifetimeSeconds ?? 3600;
    this.clock = options.clock ?? Date.now;
    registerSecrets(() => [this.identityHeader, ...this.issued], "fake managed identity token or IDENTITY_HEADER");
  }

  /** IDENTITY_ENDPOINT. */
  get endpoint(): string {
    if (this.baseUrl === undefined) throw new Error("FakeManagedIdentity is not started");
    return `${this.baseUrl}/msi/token`;
  }

  get issuer(): string {
    return this.options.issuer;
  }

  /** The key that verifies this endpoint's tokens (what Entra trusts for the issuer). */
  get publicKey(): GenerateKeyPairResult["publicKey"] {
    if (!this.key) throw new Error("FakeManagedIdentity is not started");
    return this.key.publicKey;
  }

  /** The environment the platform gives a function app with a managed identity. */
  get environment(): { IDENTITY_ENDPOINT: string; IDENTITY_HEADER: string } {
    return { IDENTITY_ENDPOINT: this.endpoint, IDENTITY_HEADER: this.identityHeader };
  }

  setClock(clock: () => number): void {
    this.clock = clock;
  }

  /** Signs from now on with a new key the fake Entra does not know: every later token fails its signature check. */
  async rotateKeyUnannounced(): Promise<void> {
    this.key = await generateKeyPair("RS256");
  }

  issuedTokens(): string[] {
    return [...this.issued];
  }

  async start(): Promise<void> {
    if (this.server) return;
    this.key ??= await generateKeyPair("RS256");
    const server = createServer((req, res) => {
      void this.handle(req, res).catch((err: unknown) => {
        process.stderr.write(`[FakeManagedIdentity] internal error: ${err instanceof Error ? err.stack : String(err)}\n`);
        if (!res.headersSent) sendJson(res, 500, { statusCode: 500, message: "fake managed identity bug" });
        else res.destroy();
      });
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.baseUrl === undefined ? 0 : Number(new URL(this.baseUrl).port), "127.0.0.1", () => {
        server.off("error", reject);
        resolve();
      });
    });
    this.server = server;
    this.baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  }

  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeAllConnections();
    await closed;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", this.baseUrl ?? "http://127.0.0.1");
    if (url.pathname !== "/msi/token") return this.refuse(res, 404, "Not found.");
    if (req.method !== "GET") return this.refuse(res, 405, "Only GET is supported.");
    this.stats.tokenRequests += 1;
    if (req.headers["x-identity-header"] !== this.identityHeader) {
      return this.refuse(res, 401, "The X-IDENTITY-HEADER header is missing or wrong.");
    }
    const query = url.searchParams;
    if (query.get("api-version") !== APP_SERVICE_MSI_API_VERSION) {
      return this.refuse(res, 400, `The api-version must be ${APP_SERVICE_MSI_API_VERSION}.`);
    }
    const resource = query.get("resource");
    if (!resource || resource.length > 512) return this.refuse(res, 400, "The resource parameter is required.");
    // The site has only user-assigned identities: a request must name one of them.
    const clientId = query.get("client_id")?.toLowerCase();
    const identity = clientId === undefined ? undefined : this.identities.get(clientId);
    if (!identity) {
      return this.refuse(res, 400, "No User Assigned or Delegated Managed Identity found for specified ClientId/ResourceId/PrincipalId.");
    }
    const key = this.key;
    if (!key) throw new Error("not started");
    const nowS = Math.floor(this.clock() / 1000);
    const expiresOn = nowS + this.lifetimeSeconds;
    const token = await new SignJWT({
      aud: resource,
      iss: this.options.issuer,
      iat: nowS,
      nbf: nowS,
      exp: expiresOn,
      sub: identity.objectId,
      oid: identity.objectId,
      tid: this.options.tenantId,
      azp: identity.clientId,
      idtyp: "app",
      uti: randomBytes(16).toString("base64url"),
      ver: "2.0",
    })
      .setProtectedHeader({ alg: "RS256", typ: "JWT", kid: this.kid })
      .sign(key.privateKey);
    this.issued.push(token);
    sendJson(res, 200, {
      access_token: token,
      expires_on: String(expiresOn),
      resource,
      token_type: "Bearer",
      client_id: identity.clientId,
    });
  }

  private refuse(res: ServerResponse, status: number, message: string): void {
    this.stats.refused += 1;
    sendJson(res, status, { statusCode: status, message, correlationId: randomUUID() });
  }
}
