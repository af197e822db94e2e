/**
 * The fixture the oracle test files share: a temporary root with a cache folder, the GPT-2 tokenizer every tiny
 * checkpoint is written with, and the loaded models, disposed (and the root removed) after the file's tests.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before } from 'node:test';
import type { Model } from '../../src/engine/model';
import { silenceOrt } from '../../src/engine/runtime/session';
import { gpt2TokenizerJSON } from '../../tools/gpt2-tokenizer';

export function modelFolders(prefix: string) {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  const folders = {
    root,
    cacheDir: path.join(root, 'cache'),
    /** Set before the tests run. */
    tokenizerJson: {} as object,
    /** Models to dispose after the tests. */
    loaded: [] as Model[],
  };
  before(() => {
    silenceOrt();
    folders.tokenizerJson = gpt2TokenizerJSON();
  });
  after(async () => {
    for (const m of folders.loaded) await m.dispose();
    fs.rmSync(root, { recursive: true, force: true });
  });
  return folders;
}
