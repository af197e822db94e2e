/**
 * A tiny random GPT-2 checkpoint with the real GPT-2 tokenizer, loaded on the CPU provider, plus its weights as
 * float32 for the plain-loop reference forward. Shared by the unit and oracle tests.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { ModelConfig } from '../../src/engine/checkpoint/config';
import { openCheckpoint } from '../../src/engine/checkpoint/load';
import { writeRandomGpt2, type RandomGpt2Options, type RandomGpt2Shape } from '../../src/engine/checkpoint/random';
import { readTensorF32 } from '../../src/engine/checkpoint/safetensors';
import { Model } from '../../src/engine/model';
import type { Weights } from '../../src/engine/reference/gpt2';
import { silenceOrt } from '../../src/engine/runtime/session';
import { gpt2TokenizerJSON } from '../../tools/gpt2-tokenizer';

export interface TinyModel {
  dir: string;
  model: Model;
  weights: Weights;
  cfg: ModelConfig;
  /** Releases the sessions and deletes the temporary folder. */
  dispose(): Promise<void>;
}

let tokenizerJson: object | undefined;

export async function loadTinyModel(name: string, shape: RandomGpt2Shape, opts: Omit<RandomGpt2Options, 'tokenizerJson'>): Promise<TinyModel> {
  silenceOrt();
  tokenizerJson ??= gpt2TokenizerJSON();
  const root = fs.mkdtempSync(path.join(os.tmpdir(), `residual-${name}-`));
  const dir = path.join(root, 'model');
  writeRandomGpt2(dir, shape, { ...opts, tokenizerJson });
  const model = await Model.load(dir, { providers: ['cpu'], cacheDir: path.join(root, 'cache') });
  const ckpt = openCheckpoint(dir);
  return {
    dir,
    model,
    cfg: ckpt.config,
    weights: new Map([...ckpt.tensors].map(([k, e]) => [k, readTensorF32(e)])),
    dispose: async () => {
      await model.dispose();
      fs.rmSync(root, { recursive: true, force: true });
    },
  };
}
