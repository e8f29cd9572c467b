import type { TestProject } from "vitest/node";
import { startAzurite } from "./azurite";

declare module "vitest" {
  export interface ProvidedContext {
    storageConnectionString: string;
  }
}

/** One Azurite for the whole run: starting it takes about a second, and tests isolate themselves by table/queue name. */
export default async function setup({ provide }: Pick<TestProject, "provide">): Promise<() => Promise<void>> {
  const azurite = await startAzurite();
  provide("storageConnectionString", azurite.connectionString);
  return () => azurite.stop();
}
