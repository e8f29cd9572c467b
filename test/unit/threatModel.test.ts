import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";

/** docs/threat-model.md names the test behind each mitigation: every one it names must exist. */

const ROOT = join(__dirname, "..", "..");
const model = readFileSync(join(ROOT, "docs", "threat-model.md"), "utf8");

/** Test files by name (unit and integration may share one), each with its source. */
function testFiles(dir: string, files = new Map<string, string[]>()): Map<string, string[]> {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) testFiles(path, files);
    else if (entry.name.endsWith(".test.ts")) files.set(entry.name, [...(files.get(entry.name) ?? []), readFileSync(path, "utf8")]);
  }
  return files;
}

describe("the threat model's evidence", () => {
  const files = testFiles(join(ROOT, "test"));
  const rows = model.split("\n").filter((line) => line.startsWith("| ") && line.includes(".test.ts"));

  it("names a test for every mitigation row", () => {
    expect(rows.length).toBeGreaterThanOrEqual(15);
  });

  it("names only test files that exist, and test titles those files hold", () => {
    for (const row of rows) {
      const evidence = row.split("|").at(-2) ?? "";
      // `file.test.ts` optionally followed by quoted titles (a trailing … shortens a title).
      for (const [, file, titles] of evidence.matchAll(/`([\w.]+\.test\.ts)`((?:\s*"[^"]+",?)*)/g)) {
        const sources = files.get(file ?? "");
        expect(sources, `${file} named in docs/threat-model.md`).toBeDefined();
        for (const [, title] of (titles ?? "").matchAll(/"([^"]+)"/g)) {
          const prefix = (title ?? "").replace(/…$/, "").split("…")[0] ?? "";
          expect(sources?.some((source) => source.includes(prefix)), `${file} holds a test titled "${prefix}"`).toBe(true);
        }
      }
    }
  });
});
