/**
 * Hook point names, exactly as TransformerLens spells them, so fetch lists, protocol fields, UI labels, transcoder
 * configs and exports share one vocabulary.
 */
export const GLOBAL_HOOKS = ['hook_embed', 'hook_pos_embed', 'ln_final.hook_scale', 'logits'] as const;
export type GlobalHook = (typeof GLOBAL_HOOKS)[number];

export const BLOCK_HOOKS = [
  'hook_resid_pre',
  'ln1.hook_scale',
  'ln1.hook_normalized',
  'attn.hook_q',
  'attn.hook_k',
  'attn.hook_v',
  'attn.hook_attn_scores',
  'attn.hook_pattern',
  'attn.hook_z',
  'hook_attn_out',
  'hook_resid_mid',
  'ln2.hook_scale',
  'ln2.hook_normalized',
  'mlp.hook_in',
  'mlp.hook_pre',
  'mlp.hook_post',
  'hook_mlp_out',
  'hook_resid_post',
] as const;
/**
 * Hook points only some families have, named as TransformerLens names them: rotated queries/keys (rotary models),
 * the gated MLP's linear branch, Gemma-2's norms after attention and after the MLP.
 */
export const FAMILY_BLOCK_HOOKS = ['attn.hook_rot_q', 'attn.hook_rot_k', 'mlp.hook_pre_linear', 'ln1_post.hook_scale', 'ln2_post.hook_scale'] as const;
export type BlockHook = (typeof BLOCK_HOOKS)[number] | (typeof FAMILY_BLOCK_HOOKS)[number];
export type BlockHookName = `blocks.${number}.${BlockHook}`;
export type HookName = GlobalHook | BlockHookName;

/** Dims of each hook's tensor (see dims.ts for the letters). Batch first, as in TransformerLens. */
export const HOOK_DIMS: Record<GlobalHook | BlockHook, string> = {
  hook_embed: 'BPD',
  hook_pos_embed: 'BPD',
  'ln_final.hook_scale': 'BP1',
  logits: 'BPV',
  hook_resid_pre: 'BPD',
  'ln1.hook_scale': 'BP1',
  'ln1.hook_normalized': 'BPD',
  'attn.hook_q': 'BPHE',
  'attn.hook_k': 'BPGE',
  'attn.hook_v': 'BPGE',
  'attn.hook_rot_q': 'BPHE',
  'attn.hook_rot_k': 'BPGE',
  'mlp.hook_pre_linear': 'BPM',
  'ln1_post.hook_scale': 'BP1',
  'ln2_post.hook_scale': 'BP1',
  'attn.hook_attn_scores': 'BHQS',
  'attn.hook_pattern': 'BHQS',
  'attn.hook_z': 'BPHE',
  hook_attn_out: 'BPD',
  hook_resid_mid: 'BPD',
  'ln2.hook_scale': 'BP1',
  'ln2.hook_normalized': 'BPD',
  'mlp.hook_in': 'BPD',
  'mlp.hook_pre': 'BPM',
  'mlp.hook_post': 'BPM',
  hook_mlp_out: 'BPD',
  hook_resid_post: 'BPD',
};

export function hookName(layer: number, hook: BlockHook): BlockHookName {
  return `blocks.${layer}.${hook}` as BlockHookName;
}

export interface ParsedHook {
  layer: number | null;
  hook: GlobalHook | BlockHook;
}

/** Parses a hook name; returns undefined when it is not one (see `suggestHooks` for a helpful message). */
export function parseHookName(name: string): ParsedHook | undefined {
  if ((GLOBAL_HOOKS as readonly string[]).includes(name)) return { layer: null, hook: name as GlobalHook };
  const m = /^blocks\.(\d+)\.(.+)$/.exec(name);
  if (!m || !([...BLOCK_HOOKS, ...FAMILY_BLOCK_HOOKS] as readonly string[]).includes(m[2])) return undefined;
  return { layer: Number(m[1]), hook: m[2] as BlockHook };
}

/** Every hook name of a GPT-2 model with `nLayers` blocks, in forward order (a loaded model lists its own: Model.hooks). */
export function allHookNames(nLayers: number): HookName[] {
  const out: HookName[] = ['hook_embed', 'hook_pos_embed'];
  for (let l = 0; l < nLayers; l++) for (const h of BLOCK_HOOKS) out.push(hookName(l, h));
  out.push('ln_final.hook_scale', 'logits');
  return out;
}

/** The valid names closest to a mistyped one, for error messages. */
export function suggestHooks(name: string, nLayers: number, n = 3): string[] {
  return allHookNames(nLayers)
    .map((h) => ({ h, d: editDistance(name, h) }))
    .sort((a, b) => a.d - b.d)
    .slice(0, n)
    .map((x) => x.h);
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0];
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = row[j];
      row[j] = Math.min(row[j] + 1, row[j - 1] + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return row[b.length];
}
