/**
 * The small YAML subset circuit-tracer's `config.yaml` uses: `key: value` scalars, `#` comments, quoted strings,
 * inline lists `[a, b]`, and block lists (`key:` followed by `- item` lines). Anything else is refused by line.
 */
import { ResidualError } from '../errors';

export type YamlScalar = string | number | boolean | null;
export type YamlValue = YamlScalar | YamlValue[] | { [k: string]: YamlValue };

/** Parses the flat mapping of a circuit-tracer config.yaml. */
export function parseSimpleYaml(text: string, file: string): Record<string, YamlValue> {
  const out: Record<string, YamlValue> = {};
  let listKey: string | undefined;
  let listItemMap: Record<string, YamlValue> | undefined;
  const lines = text.replace(/^\uFEFF/, '').split(/\r?\n/);
  lines.forEach((raw, i) => {
    const line = stripComment(raw).replace(/\s+$/, '');
    if (line.trim() === '' || line.trim() === '---') return;
    const indent = line.length - line.trimStart().length;
    const body = line.trim();
    if (body.startsWith('- ') || body === '-') {
      if (!listKey) throw new ResidualError(`line ${i + 1}: list item outside a list`, file);
      const item = body.slice(1).trim();
      const kv = splitKeyValue(item);
      const list = out[listKey] as YamlValue[];
      if (kv && !/^["']/.test(item)) {
        // `- id: x` starts a mapping item (old circuit-tracer format: transcoders: [{id, layer, filepath}]).
        listItemMap = { [kv[0]]: parseScalar(kv[1], file, i) };
        list.push(listItemMap);
      } else {
        listItemMap = undefined;
        list.push(parseScalar(item, file, i));
      }
      return;
    }
    if (indent > 0 && listItemMap) {
      const kv = splitKeyValue(body);
      if (!kv) throw new ResidualError(`line ${i + 1}: expected "key: value" inside a list item`, file);
      listItemMap[kv[0]] = parseScalar(kv[1], file, i);
      return;
    }
    if (indent > 0) throw new ResidualError(`line ${i + 1}: nested mappings are not supported in this config`, file);
    const kv = splitKeyValue(body);
    if (!kv) throw new ResidualError(`line ${i + 1}: expected "key: value", got "${body}"`, file);
    const [key, value] = kv;
    listItemMap = undefined;
    if (value === '') {
      out[key] = [];
      listKey = key;
    } else {
      listKey = undefined;
      out[key] = parseScalar(value, file, i);
    }
  });
  // A key with nothing under it is null, not an empty list.
  for (const [k, v] of Object.entries(out)) if (Array.isArray(v) && v.length === 0 && k !== listKey) out[k] = null;
  return out;
}

function stripComment(line: string): string {
  let quote: string | undefined;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (quote) {
      if (c === quote) quote = undefined;
    } else if (c === '"' || c === "'") quote = c;
    else if (c === '#' && (i === 0 || /\s/.test(line[i - 1]))) return line.slice(0, i);
  }
  return line;
}

function splitKeyValue(s: string): [string, string] | undefined {
  const m = /^([A-Za-z_][\w.-]*)\s*:(?:\s+(.*)|$)/.exec(s);
  return m ? [m[1], (m[2] ?? '').trim()] : undefined;
}

function parseScalar(s: string, file: string, line: number): YamlValue {
  if (s.startsWith('[')) {
    if (!s.endsWith(']')) throw new ResidualError(`line ${line + 1}: unterminated inline list`, file);
    const inner = s.slice(1, -1).trim();
    return inner === '' ? [] : inner.split(',').map((x) => parseScalar(x.trim(), file, line));
  }
  if ((s.startsWith('"') && s.endsWith('"')) || (s.startsWith("'") && s.endsWith("'"))) return s.slice(1, -1);
  if (s === 'null' || s === '~') return null;
  if (s === 'true' || s === 'True') return true;
  if (s === 'false' || s === 'False') return false;
  if (/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(s)) return Number(s);
  return s;
}
