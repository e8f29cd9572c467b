import type { IncomingMessage, ServerResponse } from "node:http";
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import { expect } from "vitest";
import { RateBudget, type RateBudgetOptions } from "../../shared/defender/rateBudget";
import type { FetchedPage, PageQuery } from "../../shared/defender/types";
import { DefenderApiError } from "../../shared/sources/sourceErrors";
import type { TestCertificate } from "../fakes/tls";

/**
 * What the alert-client tests (DefenderClient against FakeDefender, GraphClient against FakeGraph)
 * share: a client on a fake clock that only the injected sleep moves, a budget that counts its
 * acquires, a page query over a fixed window, the failure collector for the secrecy check and a
 * tiny HTTPS server for exact bytes on the wire.
 */

export interface ClientRig<C> {
  client: C;
  budget: RateBudget;
  sleeps: number[];
  readonly acquires: number;
  now: () => number;
  query: (tenantId: string, overrides?: Partial<PageQuery>) => PageQuery;
  /** The `force` flag of every accessToken call. */
  tokenCalls: boolean[];
}

/** What every client under test is given by the rig: the counting budget, the fake clock and sleep, fixed jitter. */
export interface RigDeps {
  budget: RateBudget;
  clock: () => number;
  sleep: (ms: number) => Promise<void>;
  random: () => number;
}

export interface ClientRigSetup<C> {
  /** Budget limits and source; the rig supplies clock and sleep. */
  budget: Omit<RateBudgetOptions, "clock" | "sleep">;
  client: (deps: RigDeps) => C;
  /** The [from, to) window every query reads. */
  from: string;
  to: string;
  baseUrl: string;
  /** Where the `tok-<tid>` tokens handed to the client are recorded, for the secrecy check. */
  issuedTokens: Set<string>;
}

/** A client on the real HTTP stack with a fake clock that only the injected sleep moves. */
export function clientRig<C>(setup: ClientRigSetup<C>): ClientRig<C> {
  let now = Date.now();
  const sleeps: number[] = [];
  const clock = () => now;
  const sleep = async (ms: number) => {
    sleeps.push(ms);
    now += ms;
  };
  const state = { acquires: 0 };
  class CountingBudget extends RateBudget {
    override async acquire(tenantId: string, deadline: number): Promise<void> {
      state.acquires++;
      return super.acquire(tenantId, deadline);
    }
  }
  const budget = new CountingBudget({ clock, sleep, ...setup.budget });
  const client = setup.client({ budget, clock, sleep, random: () => 0.5 });
  const tokenCalls: boolean[] = [];
  return {
    client,
    budget,
    sleeps,
    get acquires() {
      return state.acquires;
    },
    now: clock,
    tokenCalls,
    query: (tenantId, overrides = {}) => ({
      tenantId,
      from: setup.from,
      to: setup.to,
      top: 50,
      skip: 0,
      expandEvidence: false,
      baseUrl: setup.baseUrl,
      accessToken: async (force) => {
        tokenCalls.push(force);
        const token = `tok-${tenantId}`;
        setup.issuedTokens.add(token);
        return token;
      },
      deadline: now + 10 * 60_000,
      ...overrides,
    }),
  };
}

/** The page's alert ids, in the order served. */
export const idsOf = (page: FetchedPage): string[] => page.alerts.map((a) => a.id);

/** The DefenderApiError a page request fails with, recorded in `seen` for the secrecy check at the end. */
export async function expectFailure(pending: Promise<FetchedPage>, seen: DefenderApiError[]): Promise<DefenderApiError> {
  let page: FetchedPage;
  try {
    page = await pending;
  } catch (error) {
    expect(error).toBeInstanceOf(DefenderApiError);
    seen.push(error as DefenderApiError);
    return error as DefenderApiError;
  }
  throw new Error(`expected the page request to fail, it returned ${page.alerts.length} alerts`);
}

export interface TinyServer {
  url: string;
  requests: IncomingMessage[];
  close: () => Promise<void>;
}

/** A tiny HTTPS server for what the fakes cannot do (exact request bytes, hand-written bodies). */
export async function tinyHttpsServer(cert: TestCertificate, handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<TinyServer> {
  const requests: IncomingMessage[] = [];
  const server: Server = createServer({ cert: cert.certPem, key: cert.keyPem }, (req, res) => {
    requests.push(req);
    handler(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `https://127.0.0.1:${port}`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
