/**
 * Runs the bundled demo model through the extension's own engine (ONNX Runtime) and checks it against what the
 * Python side computed:
 *   - the greedy next token of each prompt in models/demo/expected-completions.json;
 *   - each transcoder, read from models/demo/transcoders/layer_{l}/ (SAELens layout), applied to the engine's
 *     `blocks.{l}.ln2.hook_normalized` (the hook named in its cfg.json), reconstructs the engine's
 *     `blocks.{l}.hook_mlp_out` (fraction of variance unexplained on the prompts' positions).
 * Writes tools/demo-model/work/engine_check.json; exit code 1 if a completion differs.
 * Usage (repository root): npx tsx tools/demo-model/engine_check.ts
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Model } from '../../src/engine/model';
import type { HookName } from '../../src/engine/hooks';

function readSafetensors(file: string): Record<string, { shape: number[]; data: Float32Array }> {
  const buf = fs.readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8'));
  const out: Record<string, { shape: number[]; data: Float32Array }> = {};
  for (const [name, info] of Object.entries<{ dtype: string; shape: number[]; data_offsets: [number, number] }>(header)) {
    if (name === '__metadata__') continue;
    if (info.dtype !== 'F32') throw new Error(`${name}: dtype ${info.dtype}`);
    const [b, e] = info.data_offsets;
    const bytes = buf.subarray(8 + n + b, 8 + n + e);
    const copy = new Uint8Array(bytes.length);
    copy.set(bytes);
    out[name] = { shape: info.shape, data: new Float32Array(copy.buffer) };
  }
  return out;
}

async function main() {
  const root = path.resolve(__dirname, '..', '..');
  const dir = path.join(root, 'models', 'demo');
  const expected = JSON.parse(fs.readFileSync(path.join(dir, 'expected-completions.json'), 'utf8')).completions;
  const model = await Model.load(dir, { providers: ['cpu'], threads: 1, cacheDir: path.join(root, 'tools', 'demo-model', 'work', 'ort-cache') });
  const { nLayers: L, dModel: D, vocabSize: V } = model.config;
  const tcs: { k: number; F: number; hookIn: string; hookOut: string; w: ReturnType<typeof readSafetensors> }[] = [];
  for (let l = 0; l < L; l++) {
    const d = path.join(dir, 'transcoders', `layer_${l}`);
    if (!fs.existsSync(path.join(d, 'cfg.json'))) break;
    const cfg = JSON.parse(fs.readFileSync(path.join(d, 'cfg.json'), 'utf8'));
    tcs.push({ k: cfg.k, F: cfg.d_sae, hookIn: cfg.hook_name, hookOut: cfg.hook_name_out, w: readSafetensors(path.join(d, 'sae_weights.safetensors')) });
  }
  const hooks = ['logits', ...tcs.flatMap((t) => [t.hookIn, t.hookOut])] as HookName[];
  const sse = tcs.map(() => 0);
  const ys: Float32Array[][] = tcs.map(() => []);
  const completions: unknown[] = [];
  let bad = 0;
  for (const c of expected) {
    const P = c.prompt_ids.length;
    const r = await model.run({ ids: c.prompt_ids, hooks });
    const logits = r.activations.get('logits')!.data;
    let best = 0;
    for (let v = 1; v < V; v++) if (logits[(P - 1) * V + v] > logits[(P - 1) * V + best]) best = v;
    const want = c.greedy_ids[0];
    if (want !== undefined && best !== want) bad++;
    completions.push({ prompt: c.prompt, engine_next: best, python_next: want, same: best === want });
    tcs.forEach((t, l) => {
      const x = r.activations.get(t.hookIn as HookName)!.data;
      const y = r.activations.get(t.hookOut as HookName)!.data;
      const { W_enc, b_enc, W_dec, b_dec } = t.w;
      for (let p = 0; p < P; p++) {
        const pre = Float64Array.from(b_enc.data);
        for (let i = 0; i < D; i++) {
          const xi = x[p * D + i];
          for (let f = 0; f < t.F; f++) pre[f] += xi * W_enc.data[i * t.F + f];
        }
        const order = Array.from(pre.keys()).sort((a, b) => pre[b] - pre[a]).slice(0, t.k);
        const yh = Float64Array.from(b_dec.data);
        for (const f of order) if (pre[f] > 0) for (let j = 0; j < D; j++) yh[j] += pre[f] * W_dec.data[f * D + j];
        for (let j = 0; j < D; j++) sse[l] += (yh[j] - y[p * D + j]) ** 2;
        ys[l].push(y.slice(p * D, (p + 1) * D));
      }
    });
  }
  const fvu = tcs.map((_, l) => {
    const n = ys[l].length;
    const mean = new Float64Array(D);
    for (const y of ys[l]) for (let j = 0; j < D; j++) mean[j] += y[j] / n;
    let sst = 0;
    for (const y of ys[l]) for (let j = 0; j < D; j++) sst += (y[j] - mean[j]) ** 2;
    return sse[l] / sst;
  });
  const out = { provider: model.provider, completions_same: `${expected.length - bad}/${expected.length}`, transcoder_fvu_on_prompts: fvu, completions };
  fs.writeFileSync(path.join(root, 'tools', 'demo-model', 'work', 'engine_check.json'), JSON.stringify(out, null, 1));
  console.log(JSON.stringify({ provider: out.provider, completions_same: out.completions_same, transcoder_fvu_on_prompts: fvu }));
  process.exit(bad ? 1 : 0);
}

main().catch((e) => {
  console.error(e);
  process.exit(2);
});
