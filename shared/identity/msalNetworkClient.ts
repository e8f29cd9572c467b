import type { INetworkModule, NetworkRequestOptions, NetworkResponse } from "@azure/msal-node";
import type { HttpClient } from "../http/httpClient";

/**
 * Routes MSAL's token and metadata calls through the app's HTTP client, so they share its
 * timeouts, connection pool and (locally) the extra CA for the fake Entra ID.
 */
export function createMsalNetworkClient(http: HttpClient, timeoutMs = 30_000): INetworkModule {
  const send = async <T>(
    method: "GET" | "POST",
    url: string,
    options: NetworkRequestOptions | undefined,
  ): Promise<NetworkResponse<T>> => {
    const response = await http.send(url, {
      method,
      headers: options?.headers ?? {},
      ...(options?.body === undefined ? {} : { body: options.body }),
      timeoutMs,
    });
    let body: unknown = {};
    // Stryker disable next-line ConditionalExpression: an empty body fails JSON.parse and ends as {} all the same
    if (response.body) {
      try {
        body = JSON.parse(response.body);
      } catch {
        // MSAL treats a non-JSON body as a server error from the status alone.
        body = {};
      }
    }
    return { status: response.status, headers: response.headers, body: body as T };
  };
  return {
    sendGetRequestAsync: (url, options) => send("GET", url, options),
    sendPostRequestAsync: (url, options) => send("POST", url, options),
  };
}
