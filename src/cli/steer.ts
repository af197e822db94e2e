/**
 * `residual steer --model DIR --text TEXT (--feature LAYER:INDEX --transcoders DIR | --vector FILE) --layer L
 *  --strength S [--hook resid_pre|resid_mid|resid_post] [--relative] [--positions all|from:N|i,j,k] [--generate N]
 *  [--seed S] [--temperature T] [--top-p P] [--top K] [--providers LIST] [--json]`
 *
 * Adds strength × the vector at `blocks.L.hook_<hook>` and prints the next-token effect (and, with --generate, the
 * baseline and steered continuations with the same seed). JSON: `{hook, strength, baseline: {top, text?}, steered:
 * {top, text?}, kl}` plus `relative`, `scale`, `positions`, `vector`, `non_finite`, `tokens_per_second`. When the
 * steered model outputs NaN/Inf, `steered.top` is empty, `kl` null, `non_finite` true, a note goes to stderr and the
 * exit status stays 0 (the baseline is still shown). Errors are ResidualErrors (the caller prints them). Every
 * flag is listed in STEER (the usage text is made from it); `--strength -4` is a negative strength.
 */
import { ResidualError } from '../engine/errors';
import { hookName } from '../engine/hooks';
import { RESID_POINTS, STEER_OPS, type SteeringSpec, type SteeringVector, type SteerPointName, type TopToken } from '../engine/results';
import { compareGeneration, nextTokenEffect, parsePositions } from '../engine/steering/steer';
import { steeringVectorFromGguf } from '../engine/steering/gguf';
import { featureVector, loadVectorFile } from '../engine/steering/vectors';
import { l2 } from '../engine/numeric';
import { parseFlags, usageOf, type CommandSpec, type Flags } from './args';
import { checkInputFolder } from '../engine/files';
import { loadModel, MODEL_FLAGS, promptOf, precisionOf, processIo, readText, release, type Io } from './common';

const WHAT = 'residual steer';

export const STEER: CommandSpec = {
  name: 'steer',
  synopsis: '--model DIR --text TEXT (--feature LAYER:INDEX --transcoders DIR | --vector FILE) (--strength S | --op ablate|cap|set [--value X]) [--layer L] [flags]',
  summary:
    "Adds strength × a vector (a transcoder feature's decoder row, a saved vector or a llama.cpp control vector) at blocks.L.hook_<hook> — or ablates, sets or caps the residual's component along it (--op) — and prints the next-token effect and, with --generate, the baseline and steered continuations (JSON fields: CLI.md).",
  flags: {
    model: MODEL_FLAGS.model,
    text: MODEL_FLAGS.text,
    chat: MODEL_FLAGS.chat,
    feature: { value: 'LAYER:INDEX', help: 'steer along this transcoder feature (with --transcoders)' },
    transcoders: { value: 'DIR', help: 'the transcoder folder of --feature' },
    vector: { value: 'FILE', help: 'steer along a saved vector (.json + .safetensors), or a llama.cpp control vector (.gguf: the direction for --layer/--hook, else its own layer at resid_post)' },
    layer: { value: 'L', help: "the block to steer at (default: the feature's layer, or the layer the vector was made for)" },
    strength: { value: 'S', help: 'how much of the vector to add (any finite number; negative subtracts) — required with --op add' },
    op: { value: 'add|ablate|cap|set', help: "what to do along the vector (default add): ablate removes the residual's component along it, set makes it --value, cap lowers it to --value where it is above" },
    value: { value: 'X', help: 'the component along the (unit) vector for --op set and --op cap' },
    hook: { value: 'resid_pre|resid_mid|resid_post', help: 'where in the block (default resid_pre)' },
    relative: { help: 'strength is a multiple of the mean residual norm there' },
    positions: { value: 'all|from:N|i,j|generated', help: 'the positions to steer (default all; generated: only the tokens --generate adds)' },
    generate: { value: 'N', help: 'also generate N tokens, baseline and steered, with the same seed' },
    seed: { value: 'S', help: 'seed of the sampling, 0 to 4294967295 (default 0)' },
    temperature: { value: 'T', help: 'sampling temperature, ≥ 0 (default 0: greedy)' },
    'top-p': { value: 'P', help: 'nucleus sampling mass, in (0, 1] (default 1)' },
    top: { value: 'K', help: 'next tokens to show (default 10)' },
    json: { help: 'print the JSON of CLI.md instead of a text summary' },
    precision: MODEL_FLAGS.precision,
    providers: MODEL_FLAGS.providers,
    'skip-memory-check': MODEL_FLAGS['skip-memory-check'],
    'check-memory': MODEL_FLAGS['check-memory'],
  },
};

export async function steerCommand(args: string[], io: Io = processIo()): Promise<number> {
  const parsed = parseFlags(STEER, args);
  if (parsed === 'help') {
    io.out(usageOf(STEER));
    return 0;
  }
  const f: Flags = parsed;
  f.required('model');
  const feature = f.str('feature');
  const vectorFile = f.str('vector');
  const transcoders = f.str('transcoders');
  if (!feature === !vectorFile) f.fail('give exactly one of --feature LAYER:INDEX (with --transcoders DIR) or --vector FILE');
  if (feature && !transcoders) f.fail('--feature needs --transcoders DIR');
  if (vectorFile && transcoders) f.fail('--transcoders goes with --feature, not with --vector');
  const op = f.choice('op', STEER_OPS) ?? 'add';
  const opValue = f.num('value');
  if (op === 'add') {
    f.required('strength', ' (or --op ablate|cap|set)');
    if (opValue !== undefined) f.fail('--value goes with --op cap or --op set; --op add uses --strength');
  } else {
    if (f.str('strength') !== undefined) f.fail(`--strength scales an added vector; --op ${op} ${op === 'ablate' ? 'removes the component along it' : 'uses --value'} instead`);
    if (f.bool('relative')) f.fail(`--relative goes with --op add; --op ${op} works on the component along the unit vector`);
    if (op === 'ablate' && opValue !== undefined) f.fail('--op ablate takes no --value (it sets the component to 0)');
    if (op !== 'ablate' && opValue === undefined) f.fail(`--op ${op} needs --value X (the component along the unit vector to ${op === 'set' ? 'set' : 'cap at'})`);
  }
  const strength = op === 'add' ? f.num('strength')! : 0;
  let point = `hook_${f.choice('hook', ['resid_pre', 'resid_mid', 'resid_post'] as const) ?? 'resid_pre'}` as SteerPointName;
  if (!RESID_POINTS.includes(point)) f.fail(`--hook ${point} is not a residual point`);
  const positionsArg = f.str('positions') ?? 'all';
  if (positionsArg === 'generated' && (f.int('generate', { min: 0 }) ?? 0) < 2) {
    f.fail('--positions generated steers the tokens --generate adds, as the model reads them back to make the next: give --generate 2 or more');
  }
  let positions: SteeringSpec['positions'] = { kind: 'all' };
  if (positionsArg !== 'generated') {
    try {
      positions = parsePositions(positionsArg);
    } catch {
      f.fail(`--positions must be all, from:N, generated or a list of positions like 0,3,4, got ${JSON.stringify(positionsArg)}`);
    }
  }
  const k = f.int('top', { min: 1 }) ?? 10;
  const generateN = f.int('generate', { min: 0 });
  const layerArg = f.int('layer', { min: 0 });
  const settings = {
    maxNewTokens: generateN ?? 0,
    temperature: f.num('temperature', { min: 0, note: '0: greedy' }) ?? 0,
    topP: f.num('top-p', { min: 0, minExclusive: true, max: 1 }) ?? 1,
    seed: f.int('seed', { min: 0, max: 2 ** 32 - 1 }) ?? 0,
  };
  let featureRef: { layer: number; index: number } | undefined;
  if (feature) {
    const m = /^(\d+):(\d+)$/.exec(feature.trim());
    if (!m) f.fail(`--feature must be LAYER:INDEX (e.g. 2:417), got ${JSON.stringify(feature)}`);
    featureRef = { layer: Number(m[1]), index: Number(m[2]) };
    checkInputFolder(transcoders!, 'transcoders folder');
  }
  const selection = readText(f, io);

  const model = await loadModel(f, io, { precision: precisionOf(f) });
  // Set once the result is printed: a failure to dispose after that is a warning, not a failed run (common.ts release).
  let done = false;
  try {
    // With --chat, the model runs the text as a user turn of its chat template.
    const text = promptOf(f, model, selection);
    const c = model.config;
    let vec: SteeringVector;
    if (featureRef) {
      if (featureRef.layer >= c.nLayers) throw new ResidualError(`--feature layer ${featureRef.layer} does not exist (the model has layers 0..${c.nLayers - 1})`, WHAT);
      vec = featureVector(transcoders!, featureRef.layer, featureRef.index);
      if (vec.vector.length !== c.dModel) {
        throw new ResidualError(`the feature's decoder row has ${vec.vector.length} values but the model's d_model is ${c.dModel}`, String(vec.provenance.file));
      }
    } else if (/\.gguf$/i.test(vectorFile!)) {
      // A llama.cpp control vector: the direction for --layer/--hook when given, else the file's own slot.
      const at = layerArg !== undefined ? { layer: layerArg, point } : undefined;
      const cv = await steeringVectorFromGguf(vectorFile!, { dModel: c.dModel, nLayers: c.nLayers, name: c.name, architecture: c.architecture }, at);
      for (const w of cv.warnings) io.err(`residual: warning: ${w}\n`);
      if (!at && f.str('hook') !== undefined && point !== cv.point) f.fail(`--hook: ${vectorFile} adds at blocks.${cv.layer}.${cv.point}; give --layer too to steer elsewhere`);
      point = cv.point;
      vec = { vector: cv.vector, layer: cv.layer, point: cv.point, label: cv.label, source: 'file', provenance: { file: vectorFile, model_hint: cv.modelHint } };
    } else {
      const loaded = loadVectorFile(vectorFile!, { dModel: c.dModel, nLayers: c.nLayers, name: c.name });
      for (const w of loaded.warnings) io.err(`residual: warning: ${w}\n`);
      vec = loaded;
    }
    if (k > c.vocabSize) f.fail(`--top ${k} is more than the model's vocabulary (${c.vocabSize} tokens)`);
    const layer = layerArg ?? vec.layer;
    if (layer >= c.nLayers) throw new ResidualError(`--layer ${layer} does not exist (the model has layers 0..${c.nLayers - 1})`, WHAT);
    // "generated": from the first position after the prompt, so only what --generate adds is steered.
    if (positionsArg === 'generated') positions = parsePositions(positionsArg, () => model.tokenizer.encodeForModel(text).ids.length);
    const spec: SteeringSpec = { vector: vec.vector, layer, point, strength, relative: f.bool('relative'), positions, op, ...(opValue !== undefined ? { value: opValue } : {}) };
    const effect = await nextTokenEffect(model, text, spec, k, { generated: positionsArg === 'generated' ? generateN : 0 });
    let gen: Awaited<ReturnType<typeof compareGeneration>> | undefined;
    if (generateN !== undefined) gen = await compareGeneration(model, text, settings, spec);
    const nonFinite = effect.nonFinite || !!gen?.steered.nonFinite;
    if (nonFinite) {
      const why = effect.nonFiniteReason ?? gen?.steered.nonFiniteReason ?? `the steered model produced NaN or Inf (strength ${strength}${f.bool('relative') ? ' relative' : ''})`;
      io.err(`residual steer: --strength: ${why}; only the baseline is shown\n`);
    }
    const hook = hookName(layer, point);
    const top = (t: TopToken[]) => t.map(({ id, text: s, prob, logit }) => ({ id, text: s, prob, logit }));
    const out = {
      hook,
      op,
      value: opValue ?? null,
      strength,
      relative: f.bool('relative'),
      scale: op === 'add' ? effect.scale : null,
      positions: positionsArg,
      vector: { label: vec.label, source: vec.source, norm: l2(vec.vector), made_for: { layer: vec.layer, point: vec.point } },
      baseline: { top: top(effect.baseline), ...(gen ? { text: gen.baseline.text } : {}) },
      steered: { top: top(effect.steered), ...(gen ? { text: gen.steered.text } : {}) },
      kl: Number.isFinite(effect.kl) ? effect.kl : null,
      non_finite: nonFinite,
      ...(gen ? { generation: { ...gen.settings }, tokens_per_second: gen.tokensPerSecond } : {}),
    };
    if (f.bool('json')) io.out(JSON.stringify(out, null, 1) + '\n');
    else {
      const fmt = (t: TopToken[]) => (t.length ? t.slice(0, 5).map((x) => `${JSON.stringify(x.text)} ${(x.prob * 100).toFixed(1)}%`).join(', ') : '(NaN/Inf)');
      const lines = [
        op === 'add'
          ? `steering ${vec.label} at ${hook}, strength ${strength}${f.bool('relative') ? ' × mean norm' : ''} (scale ${effect.scale.toPrecision(4)}), positions ${positionsArg}`
          : `steering: ${op} the component along ${vec.label} at ${hook}${op === 'ablate' ? '' : ` (${op === 'set' ? 'set to' : 'capped at'} ${opValue})`}, positions ${positionsArg}`,
        `baseline: ${fmt(effect.baseline)}`,
        `steered:  ${fmt(effect.steered)}`,
        `KL(baseline ‖ steered) = ${Number.isFinite(effect.kl) ? effect.kl.toFixed(4) : 'n/a'} nats`,
      ];
      if (gen) {
        lines.push(`baseline continuation: ${JSON.stringify(gen.baseline.text)}`, `steered continuation:  ${JSON.stringify(gen.steered.text)}`);
        lines.push(`${gen.tokensPerSecond.toFixed(1)} tokens/s`);
      }
      io.out(lines.join('\n') + '\n');
    }
    done = true;
  } finally {
    await release(io, done, model);
  }
  return 0;
}

