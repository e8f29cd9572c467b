import { webcrypto } from "node:crypto";
import { exportJWK, generateKeyPair, SignJWT, type JWK } from "jose";

type CryptoKey = webcrypto.CryptoKey;
import { beforeAll, describe, expect, it } from "vitest";
import type { HttpClient } from "../../shared/http/httpClient";
import { IdTokenRejectedError, IdTokenValidator, type IdTokenRejection } from "../../shared/identity/idTokenValidator";

/**
 * The app's own id-token checks, one broken claim at a time: MSAL decodes the id token without
 * checking it, so each of these is the only guard against that forgery.
 */

const AUTHORITY = "https://login.example.test";
const CLIENT_ID = "6c3a9f0e-1d2b-4c5a-8e7f-9a0b1c2d3e4f";
const TENANT = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9";
const NONCE = "n-0123456789abcdef";
const NOW = Date.parse("2026-11-30T12:00:00Z");
const nowS = Math.floor(NOW / 1000);

let signing: { privateKey: CryptoKey; jwk: JWK };
let impostor: { privateKey: CryptoKey };
let published: JWK[];
let keyFetches = 0;

const jwksClient: HttpClient = {
  async send(url) {
    keyFetches++;
    if (url.toLowerCase() !== `${AUTHORITY}/${TENANT}/discovery/v2.0/keys`) return { status: 404, headers: {}, body: "" };
    return { status: 200, headers: {}, body: JSON.stringify({ keys: published }) };
  },
};

beforeAll(async () => {
  const pair = await generateKeyPair("RS256");
  signing = { privateKey: pair.privateKey, jwk: { ...(await exportJWK(pair.publicKey)), kid: "k1", alg: "RS256", use: "sig" } };
  impostor = { privateKey: (await generateKeyPair("RS256")).privateKey };
  published = [signing.jwk];
});

function claims(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  const base: Record<string, unknown> = {
    aud: CLIENT_ID,
    iss: `${AUTHORITY}/${TENANT}/v2.0`,
    iat: nowS - 10,
    nbf: nowS - 10,
    exp: nowS + 3600,
    tid: TENANT,
    oid: "9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a",
    preferred_username: "admin@contoso.example",
    nonce: NONCE,
  };
  for (const [key, value] of Object.entries(overrides)) {
    if (value === undefined) delete base[key];
    else base[key] = value;
  }
  return base;
}

async function token(overrides: Record<string, unknown> = {}, options: { key?: CryptoKey; kid?: string } = {}): Promise<string> {
  return new SignJWT(claims(overrides)).setProtectedHeader({ alg: "RS256", typ: "JWT", kid: options.kid ?? "k1" }).sign(options.key ?? signing.privateKey);
}

function validator(): IdTokenValidator {
  return new IdTokenValidator(jwksClient, AUTHORITY, CLIENT_ID, () => NOW);
}

async function rejection(idToken: string, expected = { tenantId: TENANT, nonce: NONCE }): Promise<IdTokenRejection | "accepted"> {
  try {
    await validator().validate(idToken, expected);
    return "accepted";
  } catch (error) {
    if (error instanceof IdTokenRejectedError) {
      // The message is for logs: it names the reason and never quotes the token.
      expect(error.message).not.toContain(idToken.slice(0, 20));
      expect(error.message).toBe(`id token rejected: ${error.reason}`);
      expect(error.name).toBe("IdTokenRejectedError");
      return error.reason;
    }
    throw error;
  }
}

describe("IdTokenValidator", () => {
  it("accepts a well-formed token and returns who signed in", async () => {
    const identity = await validator().validate(await token(), { tenantId: TENANT.toUpperCase(), nonce: NONCE });
    expect(identity).toEqual({ tenantId: TENANT, objectId: "9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a", username: "admin@contoso.example" });
  });

  it.each<[string, Record<string, unknown>, IdTokenRejection]>([
    ["another issuer", { iss: `https://sts.windows.net/${TENANT}/` }, "wrong_issuer"],
    ["the issuer of another tenant", { iss: `${AUTHORITY}/11111111-2222-4333-8444-555555555555/v2.0` }, "wrong_issuer"],
    ["a wrong nonce", { nonce: "n-somebody-elses" }, "nonce_mismatch"],
    ["no nonce", { nonce: undefined }, "nonce_mismatch"],
    ["a nonce that is not a string", { nonce: 12345 }, "nonce_mismatch"],
    ["an expiry past the 5-minute tolerance", { exp: nowS - 301 }, "expired"],
    ["a not-before in the future past the tolerance", { nbf: nowS + 301 }, "not_yet_valid"],
    ["another application's audience", { aud: "00000000-1111-4222-8333-444444444444" }, "wrong_audience"],
    ["several audiences, ours among them", { aud: [CLIENT_ID, "00000000-1111-4222-8333-444444444444"] }, "wrong_audience"],
    ["no exp", { exp: undefined }, "missing_claim"],
    ["no iat", { iat: undefined }, "missing_claim"],
    ["no tid", { tid: undefined }, "missing_claim"],
    ["another tenant (issuer to match)", { tid: "11111111-2222-4333-8444-555555555555", iss: `${AUTHORITY}/11111111-2222-4333-8444-555555555555/v2.0` }, "tenant_mismatch"],
  ])("refuses %s", async (_name, overrides, reason) => {
    expect(await rejection(await token(overrides))).toBe(reason);
  });

  it("accepts an expiry inside the 5-minute clock tolerance", async () => {
    expect(await rejection(await token({ exp: nowS - 200 }))).toBe("accepted");
  });

  it("refuses a token signed by another key, after fetching the keys again once", async () => {
    const before = keyFetches;
    expect(await rejection(await token({}, { key: impostor.privateKey, kid: "k1" }))).toBe("invalid_signature");
    const unknownKid = await token({}, { key: impostor.privateKey, kid: "k9" });
    expect(await rejection(unknownKid)).toBe("invalid_signature");
    // A fresh validator reads the keys once; an unknown kid makes it read them once more.
    expect(keyFetches - before).toBe(3);
  });

  it("follows a key rotation: a token signed with a newly published key is accepted", async () => {
    const next = await generateKeyPair("RS256");
    const jwk = { ...(await exportJWK(next.publicKey)), kid: "k2", alg: "RS256", use: "sig" };
    const v = validator();
    await v.validate(await token(), { tenantId: TENANT, nonce: NONCE });
    published = [signing.jwk, jwk];
    try {
      const identity = await v.validate(await token({}, { key: next.privateKey, kid: "k2" }), { tenantId: TENANT, nonce: NONCE });
      expect(identity.tenantId).toBe(TENANT);
    } finally {
      published = [signing.jwk];
    }
  });

  it("refuses a token with its signature stripped, and one that is not a JWT", async () => {
    const [header, payload] = (await token()).split(".");
    expect(await rejection(`${header}.${payload}.`)).toBe("invalid_signature");
    expect(await rejection("not-a-jwt")).toBe("invalid");
  });
});

describe("IdTokenValidator's signing keys and claims it passes on", () => {
  it("reads the tenant's signing keys once an hour, with a bounded GET", async () => {
    let clock = NOW;
    const requests: Array<{ url: string; method: string; timeoutMs: number | undefined }> = [];
    const http: HttpClient = {
      async send(url, request) {
        requests.push({ url, method: request.method, timeoutMs: request.timeoutMs });
        return jwksClient.send(url, request);
      },
    };
    const v = new IdTokenValidator(http, AUTHORITY, CLIENT_ID, () => clock);
    await v.validate(await token(), { tenantId: TENANT, nonce: NONCE });
    clock += 60 * 60_000 - 1;
    await v.validate(await token(), { tenantId: TENANT, nonce: NONCE });
    expect(requests).toHaveLength(1);
    clock += 1;
    await v.validate(await token(), { tenantId: TENANT, nonce: NONCE });
    expect(requests).toHaveLength(2);
    expect(requests[0]).toEqual({ url: `${AUTHORITY}/${TENANT}/discovery/v2.0/keys`, method: "GET", timeoutMs: expect.any(Number) });
    expect(requests[0]?.timeoutMs).toBeLessThanOrEqual(30_000);
  });

  it("reports unavailable signing keys as an outage, not as a refused token", async () => {
    for (const answer of [
      { status: 503, headers: {}, body: "" },
      { status: 200, headers: {}, body: JSON.stringify({ value: [] }) },
    ]) {
      const v = new IdTokenValidator({ send: async () => answer }, AUTHORITY, CLIENT_ID, () => NOW);
      const outcome = await v.validate(await token(), { tenantId: TENANT, nonce: NONCE }).catch((error: unknown) => error);
      expect(outcome).toBeInstanceOf(Error);
      expect(outcome).not.toBeInstanceOf(IdTokenRejectedError);
      expect((outcome as Error).message).toMatch(/signing keys/);
    }
  });

  it("accepts a tenant id in upper case in the token and returns it in lower case", async () => {
    const upper = TENANT.toUpperCase();
    const identity = await validator().validate(await token({ tid: upper }), { tenantId: TENANT, nonce: NONCE });
    expect(identity.tenantId).toBe(TENANT);
  });

  it("passes on an empty object id and user name when the token carries none", async () => {
    const identity = await validator().validate(await token({ oid: undefined, preferred_username: 42 }), { tenantId: TENANT, nonce: NONCE });
    expect(identity).toEqual({ tenantId: TENANT, objectId: "", username: "" });
  });

  it("refuses a tenant id that is not a string, and an iat that is not a timestamp", async () => {
    expect(await rejection(await token({ tid: 7 }))).toBe("missing_claim");
    expect(await rejection(await token({ tid: "" }))).toBe("missing_claim");
    expect(await rejection(await token({ iat: "yesterday" }))).toBe("not_yet_valid");
  });

  it("gives the reason of the second check when a token with an unknown key is also expired", async () => {
    const next = await generateKeyPair("RS256");
    const jwk = { ...(await exportJWK(next.publicKey)), kid: "k3", alg: "RS256", use: "sig" };
    const v = validator();
    await v.validate(await token(), { tenantId: TENANT, nonce: NONCE });
    published = [signing.jwk, jwk];
    try {
      const stale = await token({ exp: nowS - 400 }, { key: next.privateKey, kid: "k3" });
      const outcome = await v.validate(stale, { tenantId: TENANT, nonce: NONCE }).catch((error: unknown) => error);
      expect(outcome).toBeInstanceOf(IdTokenRejectedError);
      expect((outcome as IdTokenRejectedError).reason).toBe("expired");
    } finally {
      published = [signing.jwk];
    }
  });
});
