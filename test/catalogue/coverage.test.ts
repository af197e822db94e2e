/**
 * The catalogue as a whole: at least 150 distinct bad inputs, every class of issue 14 covered. Each
 * test/catalogue/<area>.cases.ts exports `cases`; its <area>.test.ts runs them.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { it } from 'node:test';
import { BAD_INPUT_CLASSES, type BadInputCase } from '../helpers/catalogue';

it('the catalogue holds at least 150 distinct bad inputs and covers every class', async () => {
  const files = fs.readdirSync(__dirname).filter((f) => f.endsWith('.cases.ts'));
  const all: BadInputCase[] = [];
  for (const f of files) all.push(...((await import(path.join(__dirname, f))) as { cases: BadInputCase[] }).cases);
  const names = all.map((c) => c.name);
  const dupes = names.filter((n, i) => names.indexOf(n) !== i);
  assert.deepEqual(dupes, [], 'case names are distinct');
  const missing = Object.keys(BAD_INPUT_CLASSES).filter((k) => !all.some((c) => c.class === Number(k)));
  assert.deepEqual(missing, [], 'every class has cases');
  assert.ok(all.length >= 150, `${all.length} cases; at least 150 wanted`);
  // Each runner file runs its own cases.
  for (const f of files) assert.ok(fs.existsSync(path.join(__dirname, f.replace('.cases.ts', '.test.ts'))), `${f} has a runner`);
});
