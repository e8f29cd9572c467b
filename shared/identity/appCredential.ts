import { createPrivateKey, X509Certificate, type KeyObject } from "node:crypto";
import { CredentialUnavailableError, ManagedIdentityCredential, type TokenCredential } from "@azure/identity";
import { ClientAssertion, CryptoProvider } from "@azure/msal-node";
import type { AppCredentialKind, AppCredentialSettings } from "../config";
import { SecretStoreError, type SecretStore } from "../secrets/secretStore";
import { bounded } from "../time/bounded";

/**
 * The MSSP app registration's own credential, turned into what MSAL's
 * ConfidentialClientApplication takes in `auth`:
 * - `secret`: the client secret as is;
 * - `certificate`: a certificate kept in Key Vault (its backing secret, PEM), loaded once and
 *   cached; MSAL's own ClientAssertion signs each assertion with it (PS256, `x5t#S256`);
 * - `managedIdentity`: a managed-identity token for `api://AzureADTokenExchange`, which the app
 *   registration trusts through a federated identity credential, cached until near expiry.
 *
 * The two Key Vault and managed-identity kinds go through MSAL's client-assertion callback:
 * MSAL builds the application synchronously, while the certificate and the token are only
 * reachable asynchronously. The callback serves every token request, delegated (code,
 * refresh) and client credentials alike. No key, assertion or token is ever logged or put into
 * an error message.
 */

/** Scope of the managed-identity token Entra ID accepts as a federated client assertion. */
export const TOKEN_EXCHANGE_SCOPE = "api://AzureADTokenExchange/.default";

/** What MSAL's client-assertion callback is given (msal-common's ClientAssertionConfig). */
export interface AssertionRequest {
  clientId: string;
  tokenEndpoint?: string;
}

/** The credential half of MSAL's `auth` configuration: exactly one of secret or assertion. */
export type MsalCredential =
  | { clientSecret: string }
  | { clientAssertion: (request: AssertionRequest) => Promise<string> };

export interface AppCredential {
  kind: AppCredentialKind;
  /** Spread into MSAL's `auth`. */
  msal(): MsalCredential;
  /** What an operator does when Entra ID rejects it: names the settings, never a value. */
  remedy: string;
}

/** The certificate as MSAL's clientCertificate wants it. Never logged. */
export interface LoadedCertificate {
  /** Hex SHA-256 thumbprint of the DER certificate (MSAL turns it into the `x5t#S256` header). */
  thumbprintSha256: string;
  /** PKCS#8 PEM. */
  privateKey: string;
  /** The PEM chain, leaf first: sent as `x5c`, for subject-name-and-issuer trust. */
  x5c: string;
  notAfter: number;
}

/**
 * A credential that cannot work as configured (the certificate is missing, unreadable, expired,
 * not RSA): carries `errorCode` invalid_client so the pull and the consent treat it as what it is,
 * the MSSP's credential failing for every tenant (shared/identity/tokenErrors.ts).
 */
export class AppCredentialError extends Error {
  readonly errorCode = "invalid_client";
  constructor(
    readonly reason: string,
    message: string,
  ) {
    super(message);
    this.name = "AppCredentialError";
  }
}

export interface AppCredentialDeps {
  secrets: SecretStore;
  /** Milliseconds since the epoch (the certificate's validity and the token cache use it). */
  now?: () => number;
  /** Replaces ManagedIdentityCredential (the local sandbox has no managed identity). */
  managedIdentity?: TokenCredential;
}

/** How long a loaded certificate is used before Key Vault is read again: a renewed version is picked up within it. */
export const CERTIFICATE_RELOAD_MS = 60 * 60_000;
/** A managed-identity token is renewed this long before it expires (Entra checks `exp` on every request). */
const TOKEN_RENEW_MARGIN_MS = 5 * 60_000;
/**
 * How long the managed-identity endpoint may take: every token request of the process waits on
 * this one fetch, and @azure/identity's managed-identity path ignores an abort signal.
 */
export const MANAGED_IDENTITY_TIMEOUT_MS = 15_000;

const REMEDIES: Record<AppCredentialKind, string> = {
  secret: "rotate MSSP_CLIENT_SECRET (a new client secret on the app registration, then the Key Vault secret it references)",
  certificate:
    "check the Key Vault certificate named by MSSP_CLIENT_CERTIFICATE_NAME: it must be current, PEM, and its public key uploaded to the app registration",
  managedIdentity:
    "check the app registration's federated identity credential: issuer, subject (the object id of the identity named by MSSP_FIC_IDENTITY_CLIENT_ID or AZURE_CLIENT_ID) and audience api://AzureADTokenExchange",
};

let activeKind: AppCredentialKind | undefined;

/**
 * What to do about a rejected credential, for the credential this process authenticates with
 * (a process has one; the log lines that report a rejection use it).
 */
export function credentialRemedy(kind: AppCredentialKind | undefined = activeKind): string {
  return kind === undefined ? "check the MSSP app credential (MSSP_CLIENT_CREDENTIAL)" : REMEDIES[kind];
}

export function createAppCredential(settings: AppCredentialSettings, deps: AppCredentialDeps): AppCredential {
  activeKind = settings.kind;
  const now = deps.now ?? Date.now;
  switch (settings.kind) {
    case "secret": {
      const clientSecret = settings.clientSecret;
      return { kind: "secret", remedy: REMEDIES.secret, msal: () => ({ clientSecret }) };
    }
    case "certificate": {
      const certificate = cachedCertificate(settings.certificateName, deps.secrets, now);
      const clientAssertion = async (request: AssertionRequest): Promise<string> => {
        const loaded = await certificate();
        if (!request.tokenEndpoint) throw new AppCredentialError("no_token_endpoint", "MSAL named no token endpoint for the client assertion");
        // MSAL's own signer, as with clientCertificate: a fresh jti, nbf now, exp in 10 minutes.
        return ClientAssertion.fromCertificateWithSha256Thumbprint(loaded.thumbprintSha256, loaded.privateKey, loaded.x5c).getJwt(
          new CryptoProvider(),
          request.clientId,
          request.tokenEndpoint,
        );
      };
      return { kind: "certificate", remedy: REMEDIES.certificate, msal: () => ({ clientAssertion }) };
    }
    case "managedIdentity": {
      const identity = deps.managedIdentity ?? new ManagedIdentityCredential({ clientId: settings.identityClientId });
      const token = cachedToken(identity, now);
      return { kind: "managedIdentity", remedy: REMEDIES.managedIdentity, msal: () => ({ clientAssertion: () => token() }) };
    }
  }
}

/** The managed-identity token for the token exchange, fetched once per lifetime; concurrent callers share one request. */
function cachedToken(identity: TokenCredential, now: () => number): () => Promise<string> {
  let current: { token: string; renewAt: number; expiresAt: number } | undefined;
  let pending: Promise<string> | undefined;
  return async () => {
    if (current && now() < current.renewAt) return current.token;
    pending ??= (async () => {
      try {
        const result = await bounded(
          identity.getToken(TOKEN_EXCHANGE_SCOPE),
          MANAGED_IDENTITY_TIMEOUT_MS,
          () => new Error(`the managed-identity endpoint did not answer within ${MANAGED_IDENTITY_TIMEOUT_MS / 1000} s`),
        );
        if (!result?.token) throw new AppCredentialError("no_managed_identity_token", "the managed identity returned no token for the token exchange");
        current = { token: result.token, renewAt: result.expiresOnTimestamp - TOKEN_RENEW_MARGIN_MS, expiresAt: result.expiresOnTimestamp };
        return result.token;
      } catch (error) {
        // A renewal that failed for a moment: the token in hand still works until it expires.
        if (current && now() < current.expiresAt - 60_000) return current.token;
        // No managed identity with that client id on this host: a setting to fix, not an outage.
        if (error instanceof CredentialUnavailableError) {
          throw new AppCredentialError(
            "managed_identity_unavailable",
            "no managed identity answers for the client id in MSSP_FIC_IDENTITY_CLIENT_ID or AZURE_CLIENT_ID (is the user-assigned identity attached to the function app?)",
          );
        }
        throw error;
      } finally {
        pending = undefined;
      }
    })();
    return pending;
  };
}


/** The certificate, read from Key Vault on first use and again once CERTIFICATE_RELOAD_MS has passed. */
function cachedCertificate(name: string, secrets: SecretStore, now: () => number): () => Promise<LoadedCertificate> {
  let current: { certificate: LoadedCertificate; loadedAt: number } | undefined;
  let pending: Promise<LoadedCertificate> | undefined;
  const load = async (): Promise<LoadedCertificate> => {
    const stored = await secrets.get(name).catch((error: unknown) => {
      // No read access to the vault is a deployment to fix (the role, the firewall), not an outage.
      if (error instanceof SecretStoreError && (error.status === 401 || error.status === 403)) {
        throw new AppCredentialError(
          "certificate_forbidden",
          "the app's identity may not read the certificate named by MSSP_CLIENT_CERTIFICATE_NAME (Key Vault Secrets User on its vault, and the vault's network rules)",
        );
      }
      throw error;
    });
    if (!stored) {
      throw new AppCredentialError(
        "certificate_not_found",
        "the Key Vault has no enabled certificate named by MSSP_CLIENT_CERTIFICATE_NAME (or the app's identity may not read its secret)",
      );
    }
    return parseCertificate(stored.value, now());
  };
  return async () => {
    if (current && now() - current.loadedAt < CERTIFICATE_RELOAD_MS && now() < current.certificate.notAfter) return current.certificate;
    pending ??= (async () => {
      try {
        const certificate = await load();
        current = { certificate, loadedAt: now() };
        return certificate;
      } catch (error) {
        // Key Vault unreachable for a moment: the certificate already loaded still signs while it is valid.
        if (current && !(error instanceof AppCredentialError) && now() < current.certificate.notAfter) return current.certificate;
        throw error;
      } finally {
        pending = undefined;
      }
    })();
    return pending;
  };
}

const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----[\s\S]+?-----END \1-----/g;
/** Far above any real PEM chain; refuses a wrong secret before parsing it. */
const MAX_CERTIFICATE_CHARS = 64 * 1024;

/**
 * A Key Vault certificate's backing secret in PEM form (content type application/x-pem-file): the
 * private key and the certificate chain. PKCS#12 (the other content type Key Vault offers) is
 * refused with what to change: Node cannot read it without a further dependency.
 */
export function parseCertificate(value: string, nowMs: number): LoadedCertificate {
  if (value.length > MAX_CERTIFICATE_CHARS) {
    throw new AppCredentialError("certificate_too_large", "the certificate named by MSSP_CLIENT_CERTIFICATE_NAME is larger than any PEM certificate chain");
  }
  // Stryker disable next-line StringLiteral: the label group is not optional in PEM_BLOCK, so match[1] is always set
  const blocks = [...value.matchAll(PEM_BLOCK)].map((match) => ({ label: match[1] ?? "", pem: match[0] }));
  if (blocks.length === 0) {
    throw new AppCredentialError(
      "certificate_not_pem",
      "the certificate named by MSSP_CLIENT_CERTIFICATE_NAME is not PEM (PKCS#12 is not supported): create it with content type application/x-pem-file",
    );
  }
  const keyBlocks = blocks.filter((block) => block.label.endsWith("PRIVATE KEY"));
  if (keyBlocks.length !== 1 || !keyBlocks[0]) {
    throw new AppCredentialError("certificate_key", "the certificate named by MSSP_CLIENT_CERTIFICATE_NAME must hold exactly one private key (is it exportable?)");
  }
  let key: KeyObject;
  try {
    key = createPrivateKey(keyBlocks[0].pem);
  } catch {
    // Node's message may quote parts of the input: never passed on.
    throw new AppCredentialError("certificate_key", "the private key of the certificate named by MSSP_CLIENT_CERTIFICATE_NAME cannot be read (an encrypted key is not supported)");
  }
  if (key.asymmetricKeyType !== "rsa") {
    throw new AppCredentialError("certificate_key", "the certificate named by MSSP_CLIENT_CERTIFICATE_NAME must have an RSA key (Entra ID client assertions are PS256)");
  }
  const certificates: X509Certificate[] = [];
  for (const block of blocks.filter((candidate) => candidate.label === "CERTIFICATE")) {
    try {
      certificates.push(new X509Certificate(block.pem));
    } catch {
      throw new AppCredentialError("certificate_unreadable", "a certificate in the chain named by MSSP_CLIENT_CERTIFICATE_NAME cannot be read");
    }
  }
  const leaf = certificates.find((certificate) => certificate.checkPrivateKey(key));
  if (!leaf) {
    throw new AppCredentialError("certificate_mismatch", "the Key Vault secret named by MSSP_CLIENT_CERTIFICATE_NAME holds no certificate for its private key");
  }
  const notBefore = Date.parse(leaf.validFrom);
  const notAfter = Date.parse(leaf.validTo);
  if (!(nowMs >= notBefore && nowMs < notAfter)) {
    throw new AppCredentialError(
      "certificate_expired",
      `the certificate named by MSSP_CLIENT_CERTIFICATE_NAME is valid from ${new Date(notBefore).toISOString()} to ${new Date(notAfter).toISOString()}, not now`,
    );
  }
  const chain = [leaf, ...certificates.filter((certificate) => certificate !== leaf)];
  return {
    thumbprintSha256: leaf.fingerprint256.replace(/:/g, "").toLowerCase(),
    privateKey: key.export({ type: "pkcs8", format: "pem" }).toString(),
    // Stryker disable next-line StringLiteral: every PEM block ends in a line break already, so MSAL reads the chain joined either way
    x5c: chain.map((certificate) => certificate.toString()).join("\n"),
    notAfter,
  };
}
