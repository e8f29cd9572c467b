/**
 * How a failed token request should be handled, decided from Entra's `error` and AADSTS code
 * (never from the description, which Microsoft says may change):
 * - reconsent: the customer must consent again; stop pulling that tenant.
 * - app_credential: our own client credential is wrong or expired; every tenant is affected.
 * - transient: retry later.
 */
export type TokenFailureCategory = "reconsent" | "app_credential" | "transient";

export interface TokenFailure {
  category: TokenFailureCategory;
  /** e.g. `invalid_grant` */
  error: string;
  /** e.g. `AADSTS700082`, when Entra sent a code */
  aadsts?: string;
}

const APP_CREDENTIAL_CODES = new Set(["7000215", "7000222", "700027", "50012"]);
// The customer disabled or removed our enterprise app, or its consent: theirs to fix, by consenting
// again. 7000229 (no service principal in the tenant) comes as invalid_client and 500011 (resource
// principal not found) or 65001 (no consent) with other errors; checked first, so none of them is
// taken for our own credential's fault.
const CUSTOMER_APP_CODES = new Set(["700016", "7000112", "7000229", "500011", "65001"]);
// MSAL's own checks of a response (nonce, state, missing tokens): retrying the same answer cannot help.
const CLIENT_VALIDATION_ERRORS = new Set(["nonce_mismatch", "state_mismatch", "token_parsing_error", "no_tokens_found"]);
const TRANSIENT_CODES = new Set(["50033", "90006", "90033", "90090", "50087", "90024", "90055", "50196"]);
const RECONSENT_ERRORS = new Set([
  "invalid_grant",
  "interaction_required",
  "consent_required",
  "login_required",
  "bad_token",
  "invalid_resource",
]);
// Stryker disable next-line ArrayDeclaration,StringLiteral: an error Stryker drops from this list is still retried, as every unknown error is (the last line); the list documents the ones Entra names
const TRANSIENT_ERRORS = new Set(["temporarily_unavailable", "server_error", "network_error", "request_timeout"]);

interface MsalLikeError {
  errorCode?: unknown;
  errorNo?: unknown;
  status?: unknown;
  name?: unknown;
}

export function classifyTokenFailure(error: unknown): TokenFailure {
  const e = (typeof error === "object" && error !== null ? error : {}) as MsalLikeError;
  const code = typeof e.errorCode === "string" && e.errorCode ? e.errorCode : "unknown_error";
  // Typed as a string, but MSAL copies error_codes[0] through as the JSON number it is.
  // Stryker disable next-line ConditionalExpression,StringLiteral: String() of anything else (undefined, true, an object) is not all digits, so errorNo stays unset either way
  const rawNo = typeof e.errorNo === "number" || typeof e.errorNo === "string" ? String(e.errorNo) : "";
  const errorNo = /^\d+$/.test(rawNo) ? rawNo : undefined;
  const aadsts = errorNo ? { aadsts: `AADSTS${errorNo}` } : {};
  const status = typeof e.status === "number" ? e.status : undefined;
  // 700016 is "application not found in the directory": in a customer tenant that means the
  // service principal is gone (consent revoked), which is the customer's to fix, not ours.
  if (errorNo && CUSTOMER_APP_CODES.has(errorNo)) return { category: "reconsent", error: code, ...aadsts };
  if (CLIENT_VALIDATION_ERRORS.has(code)) return { category: "reconsent", error: code, ...aadsts };
  if (code === "invalid_client" || code === "unauthorized_client" || (errorNo && APP_CREDENTIAL_CODES.has(errorNo))) {
    return { category: "app_credential", error: code, ...aadsts };
  }
  if (errorNo && TRANSIENT_CODES.has(errorNo)) return { category: "transient", error: code, ...aadsts };
  // Stryker disable next-line ConditionalExpression: undefined is neither >= 500 nor 429, so the undefined test changes nothing
  if (TRANSIENT_ERRORS.has(code) || (status !== undefined && (status >= 500 || status === 429))) {
    return { category: "transient", error: code, ...aadsts };
  }
  if (RECONSENT_ERRORS.has(code) || e.name === "InteractionRequiredAuthError") {
    return { category: "reconsent", error: code, ...aadsts };
  }
  // Unknown failures are retried rather than declared fatal: a wrong "reconsent" verdict
  // would stop a healthy tenant until a human notices.
  return { category: "transient", error: code, ...aadsts };
}
