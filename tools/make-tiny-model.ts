/**
 * Writes the fallback bundled model, models/tiny-gpt2: GPT-2 architecture with deterministic random weights and the
 * real GPT-2 BPE tokenizer. It says nothing meaningful; it is the test fixture and the default until the trained
 * demo model (models/demo) is present. Usage: node --import tsx tools/make-tiny-model.ts [OUT_DIR]
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { writeRandomGpt2 } from '../src/engine/checkpoint/random';
import { gpt2TokenizerJSON } from './gpt2-tokenizer';

export const TINY_GPT2 = { nLayers: 4, dModel: 64, nHeads: 4, dMlp: 256, nCtx: 256, vocabSize: 50257 };

export function makeTinyModel(dir: string): void {
  fs.mkdirSync(dir, { recursive: true });
  writeRandomGpt2(dir, TINY_GPT2, { seed: 20261125, tokenizerJson: gpt2TokenizerJSON() });
}

if (require.main === module) {
  const out = path.resolve(process.argv[2] ?? path.join(__dirname, '..', 'models', 'tiny-gpt2'));
  makeTinyModel(out);
  console.log(`wrote ${out}`);
}
