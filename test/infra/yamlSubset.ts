/**
 * A parser for the small YAML subset azure.yaml uses (the `yaml` package is not a dependency of
 * this project): block mappings indented by spaces, `key: value` with plain or quoted scalars,
 * and comments. Anything else (sequences, flow collections, anchors, tags, block scalars, tabs)
 * throws, so a later change to azure.yaml that leaves the subset fails the tests loudly instead
 * of being misread.
 */
export type YamlValue = string | YamlMap;
export interface YamlMap {
  readonly [key: string]: YamlValue;
}

interface Line {
  readonly number: number;
  readonly indent: number;
  readonly key: string;
  readonly value: string | undefined;
}

function stripComment(text: string): string {
  let quote: string | undefined;
  for (let i = 0; i < text.length; i += 1) {
    const ch = text[i] as string;
    if (quote) {
      if (ch === quote) quote = undefined;
    } else if (ch === "'" || ch === '"') {
      if (i === 0 || /\s/.test(text[i - 1] as string) || text[i - 1] === ":") quote = ch;
    } else if (ch === "#" && (i === 0 || /\s/.test(text[i - 1] as string))) {
      return text.slice(0, i);
    }
  }
  return text;
}

function scalar(raw: string, number: number): string {
  const text = raw.trim();
  if (/^'.*'$/.test(text)) return text.slice(1, -1).replace(/''/g, "'");
  if (/^".*"$/.test(text)) return JSON.parse(text) as string;
  if (/^[[{&*!|>%@`'"-]/.test(text) || /^-\s/.test(text)) {
    throw new Error(`line ${number}: "${text}" is outside the YAML subset this parser reads`);
  }
  if (/:\s/.test(text)) throw new Error(`line ${number}: ": " inside a plain scalar`);
  return text;
}

export function parseYamlSubset(source: string): YamlMap {
  if (source.includes("\t")) throw new Error("tabs are not allowed in YAML indentation");
  const lines: Line[] = [];
  source.split("\n").forEach((rawLine, index) => {
    const text = stripComment(rawLine.replace(/\r$/, "")).replace(/\s+$/, "");
    if (text.trim() === "" || text.trim() === "---") return;
    const match = /^( *)([A-Za-z0-9_.-]+):(?: (.*))?$/.exec(text);
    if (!match) throw new Error(`line ${index + 1}: "${text.trim()}" is not a "key: value" line of the YAML subset`);
    const value = match[3]?.trim();
    lines.push({ number: index + 1, indent: (match[1] as string).length, key: match[2] as string, value: value === "" ? undefined : value });
  });
  let position = 0;
  const block = (indent: number): YamlMap => {
    const map: Record<string, YamlValue> = {};
    while (position < lines.length) {
      const line = lines[position] as Line;
      if (line.indent < indent) break;
      if (line.indent > indent) throw new Error(`line ${line.number}: unexpected indentation`);
      if (line.key in map) throw new Error(`line ${line.number}: duplicate key ${line.key}`);
      position += 1;
      if (line.value !== undefined) {
        map[line.key] = scalar(line.value, line.number);
      } else {
        const next = lines[position];
        if (!next || next.indent <= indent) throw new Error(`line ${line.number}: ${line.key} has no value`);
        map[line.key] = block(next.indent);
      }
    }
    return map;
  };
  const root = block(0);
  if (position !== lines.length) throw new Error(`line ${lines[position]?.number}: unexpected indentation`);
  return root;
}

/** The value at a dotted path, or undefined. */
export function yamlAt(map: YamlMap, dotted: string): YamlValue | undefined {
  let current: YamlValue | undefined = map;
  for (const part of dotted.split(".")) {
    if (current === undefined || typeof current === "string") return undefined;
    current = current[part];
  }
  return current;
}
