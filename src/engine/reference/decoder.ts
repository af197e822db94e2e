/**
 * An independent forward pass of the rotary decoder families in plain float64 loops, written from each
 * architecture's definition (transformers' modeling files: LlamaDecoderLayer, Qwen2/Qwen3 attention, Gemma2's
 * sandwich norms and soft-caps, GPTNeoXLayer's parallel residual and partial rotary), not from the ONNX graph.
 * Weight names are spelled out here per family rather than taken from families.ts, so a mistake in either is caught
 * by the oracle tests. Slow; for tiny configs.
 */
import type { ModelConfig } from '../checkpoint/config';
import type { Tensor32 } from '../dims';
import type { HookName } from '../hooks';
import type { SteerPoint } from '../onnx/ops';
import { act, steerAt, type ReferenceOptions, type ReferenceSteer, type Weights } from './gpt2';

/**
 * Hook values for `ids` at absolute positions 0..P−1 ([1, …] like the graph's outputs). Weights are keyed by the
 * canonical names (no `model.` / `gpt_neox.` prefix).
 */
export function referenceDecoderForward(cfg: ModelConfig, W: Weights, ids: number[], steer: ReferenceSteer = new Map(), opts: ReferenceOptions = {}): Map<HookName, Tensor32> {
  const f = cfg.family;
  if (!f) throw new Error('reference: not a rotary-family config');
  const arch = cfg.architecture;
  const neox = arch === 'gpt_neox';
  const gemma = arch === 'gemma2';
  const { dModel: D, nHeads: H, dHead: E, dMlp: M, vocabSize: V, nLayers: L } = cfg;
  const G = cfg.nKvHeads ?? H;
  const P = ids.length;
  const out = new Map<HookName, Tensor32>();
  const put = (name: string, dims: number[], data: ArrayLike<number>) => out.set(name as HookName, { dims: [1, ...dims], data: Float32Array.from(data) });
  const get = (n: string): Float32Array => {
    const t = W.get(n);
    if (!t) throw new Error(`reference: missing weight ${n}`);
    return t;
  };
  const opt = (n: string): Float32Array | undefined => W.get(n);

  // y[p, o] = Σ_i x[p, i] · W[o, i] + b[o]   (PyTorch Linear: weight [out, in])
  const linear = (x: Float64Array, inDim: number, w: Float32Array, outDim: number, b?: Float32Array): Float64Array => {
    const y = new Float64Array(P * outDim);
    for (let p = 0; p < P; p++)
      for (let o = 0; o < outDim; o++) {
        let s = b ? b[o] : 0;
        for (let i = 0; i < inDim; i++) s += x[p * inDim + i] * w[o * inDim + i];
        y[p * outDim + o] = s;
      }
    return y;
  };

  /** Norm over rows of width n: returns [output, scale, normalized]. */
  const normRows = (x: Float64Array, n: number, w: Float32Array, b?: Float32Array): [Float64Array, Float64Array, Float64Array] => {
    const rows = x.length / n;
    const y = new Float64Array(x.length);
    const normalized = new Float64Array(x.length);
    const scale = new Float64Array(rows);
    for (let r = 0; r < rows; r++) {
      let mean = 0;
      if (neox) {
        for (let d = 0; d < n; d++) mean += x[r * n + d];
        mean /= n;
      }
      let ss = 0;
      for (let d = 0; d < n; d++) ss += (x[r * n + d] - mean) ** 2;
      scale[r] = Math.sqrt(ss / n + cfg.lnEps);
      for (let d = 0; d < n; d++) {
        const v = (x[r * n + d] - mean) / scale[r];
        normalized[r * n + d] = v;
        // Gemma stores the gain minus one: x̂ · (1 + w).
        y[r * n + d] = v * (gemma ? 1 + w[d] : w[d]) + (b ? b[d] : 0);
      }
    }
    return [y, scale, normalized];
  };

  const addSteer = (l: number, point: SteerPoint, x: Float64Array) => steerAt(`${l}:${point}`, x, P, D, steer, opts);

  // Rotary inverse frequencies, from the definitions (llama3: Llama 3.1's frequency-dependent scaling).
  const R = f.rope.dims;
  const invFreq: number[] = [];
  for (let i = 0; i < R / 2; i++) {
    let freq = Math.pow(f.rope.theta, -(2 * i) / R);
    const s = f.rope.scaling;
    if (s.type === 'linear') freq = freq / s.factor;
    else if (s.type === 'llama3') {
      const wavelen = (2 * Math.PI) / freq;
      const lowWavelen = s.originalMaxPositions / s.lowFreqFactor;
      const highWavelen = s.originalMaxPositions / s.highFreqFactor;
      if (wavelen < highWavelen) {
        // high frequency: unchanged
      } else if (wavelen > lowWavelen) freq = freq / s.factor;
      else {
        const smooth = (s.originalMaxPositions / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
        freq = (1 - smooth) * (freq / s.factor) + smooth * freq;
      }
    }
    invFreq.push(freq);
  }
  /** Rotates each head vector of x [P, heads, E] in place: pairs (i, i + R/2) of the first R dims. */
  const rotate = (x: Float64Array, heads: number) => {
    for (let p = 0; p < P; p++)
      for (let h = 0; h < heads; h++) {
        const o = (p * heads + h) * E;
        for (let i = 0; i < R / 2; i++) {
          const th = p * invFreq[i];
          const a = x[o + i];
          const b = x[o + i + R / 2];
          x[o + i] = a * Math.cos(th) - b * Math.sin(th);
          x[o + i + R / 2] = b * Math.cos(th) + a * Math.sin(th);
        }
      }
  };

  // Embedding.
  const emb = get(neox ? 'embed_in.weight' : 'embed_tokens.weight');
  let resid = new Float64Array(P * D);
  for (let p = 0; p < P; p++) for (let d = 0; d < D; d++) resid[p * D + d] = emb[ids[p] * D + d] * (gemma ? Math.sqrt(D) : 1);
  put('hook_embed', [P, D], resid);

  const blocks = Math.min(L, opts.layers ?? L);
  for (let l = 0; l < blocks; l++) {
    const pre = `layers.${l}.`;
    addSteer(l, 'hook_resid_pre', resid);
    put(`blocks.${l}.hook_resid_pre`, [P, D], resid);
    const [x1, s1, n1] = normRows(resid, D, get(pre + 'input_layernorm.weight'), opt(pre + 'input_layernorm.bias'));
    put(`blocks.${l}.ln1.hook_scale`, [P, 1], s1);
    put(`blocks.${l}.ln1.hook_normalized`, [P, D], n1);

    let q: Float64Array, k: Float64Array, v: Float64Array;
    if (neox) {
      const qkv = linear(x1, D, get(pre + 'attention.query_key_value.weight'), 3 * D, opt(pre + 'attention.query_key_value.bias'));
      q = new Float64Array(P * H * E);
      k = new Float64Array(P * H * E);
      v = new Float64Array(P * H * E);
      // view(P, H, 3E): head h holds its q, k and v back to back.
      for (let p = 0; p < P; p++)
        for (let h = 0; h < H; h++)
          for (let e = 0; e < E; e++) {
            const base = p * 3 * D + h * 3 * E;
            q[(p * H + h) * E + e] = qkv[base + e];
            k[(p * H + h) * E + e] = qkv[base + E + e];
            v[(p * H + h) * E + e] = qkv[base + 2 * E + e];
          }
    } else {
      const a = pre + 'self_attn.';
      q = linear(x1, D, get(a + 'q_proj.weight'), H * E, opt(a + 'q_proj.bias'));
      k = linear(x1, D, get(a + 'k_proj.weight'), G * E, opt(a + 'k_proj.bias'));
      v = linear(x1, D, get(a + 'v_proj.weight'), G * E, opt(a + 'v_proj.bias'));
    }
    for (const [n, x] of [['q', q], ['k', k], ['v', v]] as const) opts.hook?.(`blocks.${l}.attn.hook_${n}`, x);
    put(`blocks.${l}.attn.hook_q`, [P, H, E], q);
    put(`blocks.${l}.attn.hook_k`, [P, G, E], k);
    put(`blocks.${l}.attn.hook_v`, [P, G, E], v);
    if (arch === 'qwen3') {
      q = normRows(q, E, get(pre + 'self_attn.q_norm.weight'))[0];
      k = normRows(k, E, get(pre + 'self_attn.k_norm.weight'))[0];
    }
    rotate(q, H);
    rotate(k, G);
    put(`blocks.${l}.attn.hook_rot_q`, [P, H, E], q);
    put(`blocks.${l}.attn.hook_rot_k`, [P, G, E], k);

    const window = f.window[l];
    const scores = new Float64Array(H * P * P);
    const pattern = new Float64Array(H * P * P);
    const z = new Float64Array(P * H * E);
    for (let h = 0; h < H; h++) {
      const kvh = Math.floor(h / (H / G));
      for (let i = 0; i < P; i++) {
        let max = -Infinity;
        for (let j = 0; j < P; j++) {
          const idx = (h * P + i) * P + j;
          const visible = j <= i && (!window || i - j < window);
          if (!visible) {
            scores[idx] = -Infinity;
            continue;
          }
          let s = 0;
          for (let e = 0; e < E; e++) s += q[(i * H + h) * E + e] * k[(j * G + kvh) * E + e];
          s *= f.attnScale;
          if (f.attnSoftcap) s = f.attnSoftcap * Math.tanh(s / f.attnSoftcap);
          scores[idx] = s;
          max = Math.max(max, s);
        }
        let sum = 0;
        for (let j = 0; j < P; j++) {
          const idx = (h * P + i) * P + j;
          pattern[idx] = scores[idx] === -Infinity ? 0 : Math.exp(scores[idx] - max);
          sum += pattern[idx];
        }
        for (let j = 0; j < P; j++) pattern[(h * P + i) * P + j] /= sum;
        for (let e = 0; e < E; e++) {
          let acc = 0;
          for (let j = 0; j < P; j++) acc += pattern[(h * P + i) * P + j] * v[(j * G + kvh) * E + e];
          z[(i * H + h) * E + e] = acc;
        }
      }
    }
    put(`blocks.${l}.attn.hook_attn_scores`, [H, P, P], scores);
    put(`blocks.${l}.attn.hook_pattern`, [H, P, P], pattern);
    opts.hook?.(`blocks.${l}.attn.hook_z`, z);
    put(`blocks.${l}.attn.hook_z`, [P, H, E], z);
    let attnOut = neox
      ? linear(z, H * E, get(pre + 'attention.dense.weight'), D, opt(pre + 'attention.dense.bias'))
      : linear(z, H * E, get(pre + 'self_attn.o_proj.weight'), D, opt(pre + 'self_attn.o_proj.bias'));
    if (gemma) {
      const [y, s] = normRows(attnOut, D, get(pre + 'post_attention_layernorm.weight'));
      put(`blocks.${l}.ln1_post.hook_scale`, [P, 1], s);
      attnOut = y;
    }
    put(`blocks.${l}.hook_attn_out`, [P, D], attnOut);

    const mid = new Float64Array(P * D);
    for (let i = 0; i < P * D; i++) mid[i] = resid[i] + attnOut[i];
    addSteer(l, 'hook_resid_mid', mid);
    put(`blocks.${l}.hook_resid_mid`, [P, D], mid);

    // GPT-NeoX parallel residual: the MLP reads the block's input, not resid_mid.
    const mlpIn = neox && f.parallel ? resid : mid;
    const ln2Name = neox || !gemma ? 'post_attention_layernorm' : 'pre_feedforward_layernorm';
    const [x2, s2, n2] = normRows(mlpIn, D, get(pre + ln2Name + '.weight'), opt(pre + ln2Name + '.bias'));
    put(`blocks.${l}.ln2.hook_scale`, [P, 1], s2);
    put(`blocks.${l}.ln2.hook_normalized`, [P, D], n2);
    put(`blocks.${l}.mlp.hook_in`, [P, D], x2);
    const post = new Float64Array(P * M);
    let mlpOut: Float64Array;
    if (neox) {
      const h1 = linear(x2, D, get(pre + 'mlp.dense_h_to_4h.weight'), M, get(pre + 'mlp.dense_h_to_4h.bias'));
      put(`blocks.${l}.mlp.hook_pre`, [P, M], h1);
      for (let i = 0; i < P * M; i++) post[i] = act(cfg.act, h1[i]);
      put(`blocks.${l}.mlp.hook_post`, [P, M], post);
      mlpOut = linear(post, M, get(pre + 'mlp.dense_4h_to_h.weight'), D, get(pre + 'mlp.dense_4h_to_h.bias'));
    } else {
      const m = pre + 'mlp.';
      const gate = linear(x2, D, get(m + 'gate_proj.weight'), M, opt(m + 'gate_proj.bias'));
      const up = linear(x2, D, get(m + 'up_proj.weight'), M, opt(m + 'up_proj.bias'));
      put(`blocks.${l}.mlp.hook_pre`, [P, M], gate);
      put(`blocks.${l}.mlp.hook_pre_linear`, [P, M], up);
      for (let i = 0; i < P * M; i++) post[i] = act(cfg.act, gate[i]) * up[i];
      put(`blocks.${l}.mlp.hook_post`, [P, M], post);
      mlpOut = linear(post, M, get(m + 'down_proj.weight'), D, opt(m + 'down_proj.bias'));
    }
    if (gemma) {
      const [y, s] = normRows(mlpOut, D, get(pre + 'post_feedforward_layernorm.weight'));
      put(`blocks.${l}.ln2_post.hook_scale`, [P, 1], s);
      mlpOut = y;
    }
    opts.hook?.(`blocks.${l}.hook_mlp_out`, mlpOut);
    put(`blocks.${l}.hook_mlp_out`, [P, D], mlpOut);
    const next = new Float64Array(P * D);
    for (let i = 0; i < P * D; i++) next[i] = mid[i] + mlpOut[i];
    addSteer(l, 'hook_resid_post', next);
    put(`blocks.${l}.hook_resid_post`, [P, D], next);
    resid = next;
  }
  if (blocks < L) return out;

  const [xf, sf] = neox
    ? normRows(resid, D, get('final_layer_norm.weight'), get('final_layer_norm.bias'))
    : normRows(resid, D, get('norm.weight'));
  put('ln_final.hook_scale', [P, 1], sf);
  const U = W.get(neox ? 'embed_out.weight' : 'lm_head.weight') ?? emb;
  const logits = new Float64Array(P * V);
  for (let p = 0; p < P; p++)
    for (let t = 0; t < V; t++) {
      let s = 0;
      for (let d = 0; d < D; d++) s += xf[p * D + d] * U[t * D + d];
      logits[p * V + t] = f.finalSoftcap ? f.finalSoftcap * Math.tanh(s / f.finalSoftcap) : s;
    }
  put('logits', [P, V], logits);
  return out;
}
