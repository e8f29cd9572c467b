/** Why jose refused a JWT, in the words the app's error codes and log lines use. */
export type JwtRefusal = "invalid" | "invalid_signature" | "expired" | "not_yet_valid" | "missing_claim" | "wrong_audience";

/** Maps a jose verification error to its refusal; anything unrecognised is plain "invalid". */
export function jwtRefusalOf(error: unknown): JwtRefusal {
  const { code, claim, reason } = error as { code?: unknown; claim?: unknown; reason?: unknown };
  if (code === "ERR_JWT_EXPIRED") return "expired";
  if (code === "ERR_JWS_SIGNATURE_VERIFICATION_FAILED" || code === "ERR_JWKS_NO_MATCHING_KEY") return "invalid_signature";
  // Stryker disable next-line ConditionalExpression: jose sets claim and reason only on its claim validation errors; any other error falls through to "invalid" either way
  if (code === "ERR_JWT_CLAIM_VALIDATION_FAILED") {
    if (reason === "missing") return "missing_claim";
    if (claim === "nbf" || claim === "iat") return "not_yet_valid";
    // Stryker disable next-line ConditionalExpression: with no issuer, subject or type option given to jose, aud is the only other claim it checks
    if (claim === "aud") return "wrong_audience";
  }
  return "invalid";
}
