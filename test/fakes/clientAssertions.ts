import { X509Certificate } from "node:crypto";
import { registerSecrets } from "../harness/secrecy";
import { compactVerify, decodeJwt, decodeProtectedHeader, type JWTPayload, type KeyInput, type ProtectedHeaderParameters } from "jose";

/**
 * The fake Entra ID's client authentication by assertion (`client_assertion_type`
 * urn:ietf:params:oauth:client-assertion-type:jwt-bearer), as Entra does it for an app
 * registration with certificates and federated identity credentials:
 * - a certificate assertion is signed by a certificate uploaded to the app (found by its
 *   `x5t#S256` or `x5t` header), has `iss` = `sub` = the client id, `aud` = the token endpoint it
 *   is sent to, a current `nbf`..`exp`, and a `jti` not seen before;
 * - a federated assertion (a managed identity's token for api://AzureADTokenExchange) is signed by
 *   its issuer's key and matches one federated credential of the app by `iss`, `aud` and `sub`
 *   (case-sensitive), within its validity. Such a token is meant to be presented many times
 *   during its lifetime, so its `jti` is not tracked.
 * Rejections carry the AADSTS code Entra uses (protocol.md §3; reference-error-codes), with
 * `invalid_client` and HTTP 401 like the real token endpoint.
 */

export const JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
export const TOKEN_EXCHANGE_AUDIENCE = "api://AzureADTokenExchange";

/** Entra tolerates this much clock difference on `nbf` and `exp`. */
export const CLOCK_SKEW_MS = 5 * 60_000;
/** Longer than any assertion is kept: refuses what no client sends. */
const MAX_ASSERTION_CHARS = 16 * 1024;

/** A federated identity credential on an app registration (Graph `federatedIdentityCredential`). */
export interface FederatedCredential {
  name: string;
  issuer: string;
  subject: string;
  audiences: string[];
}

export class AssertionRejection extends Error {
  constructor(
    readonly status: number,
    readonly error: string,
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

interface RegisteredCertificate {
  certificate: X509Certificate;
  sha256: string;
  sha1: string;
}

export interface AssertionCheck {
  clientId: string;
  assertion: string;
  /** The token endpoint the request was sent to (the certificate assertion's audience). */
  tokenEndpoint: string;
}

export interface AssertionStats {
  certificate: number;
  federated: number;
  rejected: number;
}

const WIF_DOC = "https://learn.microsoft.com/entra/workload-id/workload-identity-federation";
const CERT_DOC = "https://learn.microsoft.com/entra/identity-platform/certificate-credentials";

export class ClientAssertionVerifier {
  readonly stats: AssertionStats = { certificate: 0, federated: 0, rejected: 0 };
  private readonly certificates = new Map<string, RegisteredCertificate[]>();
  private readonly federated = new Map<string, FederatedCredential[]>();
  /** Issuers whose tokens may be federated credentials, with the key that signs them. */
  private readonly issuers = new Map<string, KeyInput>();
  /** `${clientId}|${jti}` of certificate assertions accepted, until they expire. */
  private readonly seen = new Map<string, number>();

  /** Every assertion presented: secrets for the after-each scan (a certificate assertion is a credential while it lives). */
  private readonly presented: string[] = [];

  constructor(private readonly clock: () => number) {
    registerSecrets(() => this.presented, "client assertion presented to the fake Entra");
  }

  // ---- app registration ----------------------------------------------------------------

  /** Uploads a certificate (PEM) to the app registration, as "Certificates & secrets" does. */
  addCertificate(clientId: string, certPem: string): void {
    const certificate = new X509Certificate(certPem);
    const entry = {
      certificate,
      sha256: Buffer.from(certificate.fingerprint256.replace(/:/g, ""), "hex").toString("base64url"),
      sha1: Buffer.from(certificate.fingerprint.replace(/:/g, ""), "hex").toString("base64url"),
    };
    this.certificates.set(clientId, [...(this.certificates.get(clientId) ?? []), entry]);
  }

  removeCertificates(clientId: string): void {
    this.certificates.delete(clientId);
  }

  /** Replaces the app's federated identity credentials. */
  setFederatedCredentials(clientId: string, credentials: FederatedCredential[]): void {
    this.federated.set(clientId, credentials.map((credential) => ({ ...credential, audiences: [...credential.audiences] })));
  }

  federatedCredentials(clientId: string): FederatedCredential[] {
    return (this.federated.get(clientId) ?? []).map((credential) => ({ ...credential, audiences: [...credential.audiences] }));
  }

  /** An issuer this Entra trusts to sign federated tokens (the managed-identity endpoint's key). */
  trustIssuer(issuer: string, publicKey: KeyInput): void {
    this.issuers.set(issuer, publicKey);
  }

  // ---- verification --------------------------------------------------------------------

  async verify(check: AssertionCheck): Promise<void> {
    if (check.assertion.length <= MAX_ASSERTION_CHARS) this.presented.push(check.assertion);
    try {
      await this.check(check);
    } catch (error) {
      if (error instanceof AssertionRejection) this.stats.rejected += 1;
      throw error;
    }
  }

  private async check({ clientId, assertion, tokenEndpoint }: AssertionCheck): Promise<void> {
    if (assertion.length > MAX_ASSERTION_CHARS) throw malformed();
    let header: ProtectedHeaderParameters;
    let claims: JWTPayload;
    try {
      header = decodeProtectedHeader(assertion);
      claims = decodeJwt(assertion);
    } catch {
      throw malformed();
    }
    const x5tS256 = typeof header["x5t#S256"] === "string" ? header["x5t#S256"] : undefined;
    const x5t = typeof header.x5t === "string" ? header.x5t : undefined;
    if (x5tS256 !== undefined || x5t !== undefined) {
      await this.certificateAssertion(clientId, assertion, claims, tokenEndpoint, { x5tS256, x5t });
      this.stats.certificate += 1;
      return;
    }
    await this.federatedAssertion(clientId, assertion, claims);
    this.stats.federated += 1;
  }

  private async certificateAssertion(
    clientId: string,
    assertion: string,
    claims: JWTPayload,
    tokenEndpoint: string,
    thumbprint: { x5tS256: string | undefined; x5t: string | undefined },
  ): Promise<void> {
    const registered = this.certificates.get(clientId) ?? [];
    const match = registered.find((entry) =>
      thumbprint.x5tS256 !== undefined ? entry.sha256 === thumbprint.x5tS256 : entry.sha1 === thumbprint.x5t,
    );
    const shown = Buffer.from(thumbprint.x5tS256 ?? thumbprint.x5t ?? "", "base64url").toString("hex").toUpperCase();
    if (!match) {
      throw invalidClient(
        700027,
        `Client assertion failed signature validation. [Reason - The key was not found., Thumbprint of key used by client: '${shown}', ` +
          `Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for app Id '${clientId}'.]`,
      );
    }
    try {
      await compactVerify(assertion, match.certificate.publicKey, { algorithms: ["PS256", "RS256"] });
    } catch {
      throw invalidClient(
        700027,
        `Client assertion failed signature validation. [Reason - The provided signature value did not match the expected signature value., ` +
          `Thumbprint of key used by client: '${shown}', Found key 'Start=${match.certificate.validFrom}, End=${match.certificate.validTo}']`,
      );
    }
    if (claims.iss !== clientId || claims.sub !== clientId) {
      throw invalidClient(700021, `Client assertion application identifier doesn't match 'client_id' parameter. Review the documentation at ${CERT_DOC} .`);
    }
    const audiences = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
    if (!audiences.some((aud) => typeof aud === "string" && sameEndpoint(aud, tokenEndpoint))) {
      throw invalidClient(700023, `Client assertion audience claim does not match Realm issuer. Review the documentation at ${CERT_DOC} .`);
    }
    const expiresAt = this.checkTimes(claims, CERT_DOC);
    if (typeof claims.jti !== "string" || claims.jti.length === 0) {
      throw invalidClient(50027, "JWT token is invalid or malformed: the client assertion has no 'jti' claim.");
    }
    this.forgetExpired();
    const key = `${clientId}|${claims.jti}`;
    if (this.seen.has(key)) {
      // Entra documents no code of its own for a reused jti; 50013 is its generic invalid-assertion code.
      throw invalidClient(50013, `Assertion failed validation: the client assertion with jti '${claims.jti}' was already presented.`);
    }
    this.seen.set(key, expiresAt + CLOCK_SKEW_MS);
  }

  private async federatedAssertion(clientId: string, assertion: string, claims: JWTPayload): Promise<void> {
    const credentials = this.federated.get(clientId) ?? [];
    const issuer = typeof claims.iss === "string" ? claims.iss : "";
    const byIssuer = credentials.filter((credential) => credential.issuer === issuer);
    if (byIssuer.length === 0) {
      throw invalidClient(
        700211,
        `No matching federated identity record found for presented assertion issuer '${issuer}'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion. ${WIF_DOC}`,
      );
    }
    const key = this.issuers.get(issuer);
    let verified = false;
    if (key) {
      try {
        await compactVerify(assertion, key, { algorithms: ["RS256"] });
        verified = true;
      } catch {
        verified = false;
      }
    }
    if (!verified) {
      throw invalidClient(700027, `Client assertion failed signature validation. [Reason - The key used to sign the federated token of issuer '${issuer}' was not found or did not match.]`);
    }
    const audiences = (Array.isArray(claims.aud) ? claims.aud : [claims.aud]).filter((aud): aud is string => typeof aud === "string");
    const byAudience = byIssuer.filter((credential) => credential.audiences.some((aud) => audiences.includes(aud)));
    if (byAudience.length === 0) {
      throw invalidClient(
        700212,
        `No matching federated identity record found for presented assertion audience '${audiences.join(",")}'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion. ${WIF_DOC}`,
      );
    }
    const subject = typeof claims.sub === "string" ? claims.sub : "";
    if (!byAudience.some((credential) => credential.subject === subject)) {
      throw invalidClient(
        700213,
        `No matching federated identity record found for presented assertion subject '${subject}'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion. ${WIF_DOC}`,
      );
    }
    this.checkTimes(claims, WIF_DOC);
  }

  /** `nbf`..`exp` against the fake's clock with Entra's skew; returns `exp` in milliseconds. */
  private checkTimes(claims: JWTPayload, doc: string): number {
    const now = this.clock();
    const nbf = typeof claims.nbf === "number" ? claims.nbf * 1000 : undefined;
    const exp = typeof claims.exp === "number" ? claims.exp * 1000 : undefined;
    if (exp === undefined || now >= exp + CLOCK_SKEW_MS || (nbf !== undefined && now + CLOCK_SKEW_MS < nbf)) {
      const iso = (ms: number | undefined) => (ms === undefined ? "(none)" : new Date(ms).toISOString());
      throw invalidClient(
        700024,
        `Client assertion is not within its valid time range. Current time: ${iso(now)}, assertion valid from ${iso(nbf)}, expiry time of assertion ${iso(exp)}. Review the documentation at ${doc} .`,
      );
    }
    return exp;
  }

  private forgetExpired(): void {
    const now = this.clock();
    for (const [key, until] of this.seen) if (until <= now) this.seen.delete(key);
  }
}

function invalidClient(code: number, message: string): AssertionRejection {
  return new AssertionRejection(401, "invalid_client", code, message);
}

function malformed(): AssertionRejection {
  return invalidClient(50027, "JWT token is invalid or malformed.");
}

/** The audience MSAL writes is the token endpoint exactly; a trailing slash or letter case is no reason to refuse. */
function sameEndpoint(aud: string, endpoint: string): boolean {
  const strip = (url: string) => url.replace(/\/+$/, "").toLowerCase();
  return strip(aud) === strip(endpoint);
}

/**
 * The assertion half of a token request's client authentication. Resolves when the request
 * carries no assertion at all (the caller then checks the client secret); throws an
 * AssertionRejection for a bad one; returns true once an assertion authenticated the client.
 */
export async function authenticateByAssertion(
  verifier: ClientAssertionVerifier,
  request: { clientId: string; form: URLSearchParams; tokenEndpoint: string; secretSent: boolean },
): Promise<boolean> {
  const type = request.form.get("client_assertion_type");
  const assertion = request.form.get("client_assertion");
  if (type === null && assertion === null) return false;
  if (request.secretSent) {
    throw new AssertionRejection(400, "invalid_request", 900144, "Only one of 'client_assertion' and 'client_secret' may be sent.");
  }
  if (type !== JWT_BEARER) {
    throw new AssertionRejection(400, "invalid_request", 900144, `The request body must contain the following parameter: 'client_assertion_type' with the value '${JWT_BEARER}'.`);
  }
  if (!assertion) {
    throw new AssertionRejection(400, "invalid_request", 900144, "The request body must contain the following parameter: 'client_assertion'.");
  }
  await verifier.verify({ clientId: request.clientId, assertion, tokenEndpoint: request.tokenEndpoint });
  return true;
}
