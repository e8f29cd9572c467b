import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";

const root = join(__dirname, "..", "..");

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return sources(path);
    return path.endsWith(".ts") ? [path] : [];
  });
}

describe("layout", () => {
  it("keeps shared/ free of @azure/functions, so the core runs and tests without the Functions runtime", () => {
    const offenders = sources(join(root, "shared")).filter((file) => /from\s+["']@azure\/functions["']/.test(readFileSync(file, "utf8")));
    expect(offenders).toEqual([]);
  });

  it("keeps functions/ thin: registrations and adapters that delegate to shared/", () => {
    for (const file of sources(join(root, "functions"))) {
      const lines = readFileSync(file, "utf8").split("\n").length;
      expect(lines, file).toBeLessThan(120);
    }
  });
});
