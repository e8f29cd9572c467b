import { describe, expect, it } from "vitest";
import { classifyTokenFailure } from "../../shared/identity/tokenErrors";

const serverError = (errorCode: string, errorNo?: number | string, name = "ServerError") => ({ name, errorCode, errorNo });

describe("classifyTokenFailure", () => {
  it.each([
    [serverError("invalid_grant", 700082), "reconsent", "AADSTS700082"],
    [serverError("invalid_grant", "70008"), "reconsent", "AADSTS70008"],
    [serverError("invalid_grant", 50173), "reconsent", "AADSTS50173"],
    [serverError("invalid_grant", 70043), "reconsent", "AADSTS70043"],
    [serverError("invalid_grant", 65001, "InteractionRequiredAuthError"), "reconsent", "AADSTS65001"],
    [serverError("interaction_required", 50076, "InteractionRequiredAuthError"), "reconsent", "AADSTS50076"],
    [serverError("interaction_required", 53003, "InteractionRequiredAuthError"), "reconsent", "AADSTS53003"],
    [serverError("unauthorized_client", 700016), "reconsent", "AADSTS700016"],
    [serverError("unauthorized_client", 7000112), "reconsent", "AADSTS7000112"],
    [{ name: "ClientAuthError", errorCode: "nonce_mismatch" }, "reconsent", undefined],
    [serverError("invalid_client", 7000215), "app_credential", "AADSTS7000215"],
    [serverError("invalid_client", 7000222), "app_credential", "AADSTS7000222"],
    [serverError("invalid_client"), "app_credential", undefined],
    [serverError("temporarily_unavailable", 50033), "transient", "AADSTS50033"],
    [serverError("server_error"), "transient", undefined],
    [serverError("invalid_request", 90055), "transient", "AADSTS90055"],
    [new Error("socket hang up"), "transient", undefined],
  ])("%o is %s", (error, category, aadsts) => {
    const failure = classifyTokenFailure(error);
    expect(failure.category).toBe(category);
    expect(failure.aadsts).toBe(aadsts);
  });
});
