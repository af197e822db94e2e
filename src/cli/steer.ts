/**
 * `residual steer --model DIR --text TEXT (--feature LAYER:INDEX --transcoders DIR | --vector FILE) --layer L
 *  --strength S [--hook resid_pre|resid_mid|resid_post] [--relative] [--positions all|from:N|i,j,k] [--generate N]
 *  [--seed S] [--temperature T] [--top-p P] [--top K] [--providers LIST] [--json]`
 *
 * Adds strength × the vector at `blocks.L.hook_<hook>` and prints the next-token effect (and, with --generate, the
 * baseline and steered continuations with the same seed). JSON: `{hook, strength, baseline: {top, text?}, steered:
 * {top, text?}, kl}` plus `relative`, `scale`, `positions`, `vector`, `non_finite`, `tokens_per_second`. When the
 * steered model outputs NaN/Inf, `steered.top` is empty, `kl` null, `non_finite` true, a note goes to stderr and the
 * exit status stays 0 (the baseline is still shown). Errors are ResidualErrors (the caller prints them).
 */
import * as fs from 'node:fs';
import { parseArgs } from 'node:util';
import { ResidualError } from '../engine/errors';
import { hookName } from '../engine/hooks';
import { Model } from '../engine/model';
import { RESID_POINTS, type SteeringSpec, type SteeringVector, type SteerPointName, type TopToken } from '../engine/results';
import { silenceOrt } from '../engine/runtime/session';
import { compareGeneration, nextTokenEffect, parsePositions } from '../engine/steering/steer';
import { featureVector, l2, loadVectorFile } from '../engine/steering/vectors';

const WHAT = 'residual steer';

export const STEER_USAGE = `residual steer --model DIR --text TEXT (--feature LAYER:INDEX --transcoders DIR | --vector FILE) --layer L --strength S
               [--hook resid_pre|resid_mid|resid_post] [--relative] [--positions all|from:N|i,j,k]
               [--generate N] [--seed S] [--temperature T] [--top-p P] [--top K] [--providers LIST] [--json]`;

export async function steerCommand(args: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        model: { type: 'string' },
        text: { type: 'string' },
        feature: { type: 'string' },
        transcoders: { type: 'string' },
        vector: { type: 'string' },
        layer: { type: 'string' },
        strength: { type: 'string' },
        hook: { type: 'string', default: 'resid_pre' },
        relative: { type: 'boolean', default: false },
        positions: { type: 'string', default: 'all' },
        generate: { type: 'string' },
        seed: { type: 'string', default: '0' },
        temperature: { type: 'string', default: '0' },
        'top-p': { type: 'string', default: '1' },
        top: { type: 'string', default: '10' },
        providers: { type: 'string' },
        json: { type: 'boolean', default: false },
      },
      strict: true,
    }));
  } catch (e) {
    throw new ResidualError(`${(e as Error).message}\nusage: ${STEER_USAGE}`, WHAT);
  }
  if (!values.model) throw new ResidualError('--model DIR is required', WHAT);
  if (values.text === undefined) throw new ResidualError('--text TEXT is required (use --text - for standard input)', WHAT);
  if (!values.feature === !values.vector) throw new ResidualError('give exactly one of --feature LAYER:INDEX (with --transcoders DIR) or --vector FILE', WHAT);
  if (values.feature && !values.transcoders) throw new ResidualError('--feature needs --transcoders DIR', WHAT);
  if (values.strength === undefined) throw new ResidualError('--strength S is required', WHAT);
  const strength = num(values.strength, '--strength');
  const point = `hook_${values.hook}` as SteerPointName;
  if (!RESID_POINTS.includes(point)) {
    throw new ResidualError(`--hook must be resid_pre, resid_mid or resid_post, got "${values.hook}"`, WHAT);
  }
  const positions = parsePositions(values.positions ?? 'all');
  const k = int(values.top ?? '10', '--top', 1);
  const generateN = values.generate !== undefined ? int(values.generate, '--generate', 0) : undefined;
  const settings = {
    maxNewTokens: generateN ?? 0,
    temperature: num(values.temperature ?? '0', '--temperature'),
    topP: num(values['top-p'] ?? '1', '--top-p'),
    seed: int(values.seed ?? '0', '--seed', 0),
  };
  let featureRef: { layer: number; index: number } | undefined;
  if (values.feature) {
    const m = /^(\d+):(\d+)$/.exec(values.feature.trim());
    if (!m) throw new ResidualError(`--feature must be LAYER:INDEX (e.g. 2:417), got "${values.feature}"`, WHAT);
    featureRef = { layer: Number(m[1]), index: Number(m[2]) };
  }
  const text = values.text === '-' ? fs.readFileSync(0, 'utf8') : values.text;
  if (text.length === 0) throw new ResidualError('--text is empty', WHAT);

  silenceOrt();
  const model = await Model.load(values.model, { providers: values.providers?.split(',').map((s) => s.trim()) });
  try {
    const c = model.config;
    let vec: SteeringVector;
    if (featureRef) {
      if (featureRef.layer >= c.nLayers) throw new ResidualError(`--feature layer ${featureRef.layer} does not exist (the model has layers 0..${c.nLayers - 1})`, WHAT);
      vec = featureVector(values.transcoders!, featureRef.layer, featureRef.index);
      if (vec.vector.length !== c.dModel) {
        throw new ResidualError(`the feature's decoder row has ${vec.vector.length} values but the model's d_model is ${c.dModel}`, String(vec.provenance.file));
      }
    } else {
      const loaded = loadVectorFile(values.vector!, { dModel: c.dModel, nLayers: c.nLayers, name: c.name });
      for (const w of loaded.warnings) process.stderr.write(`residual: warning: ${w}\n`);
      vec = loaded;
    }
    const layer = values.layer !== undefined ? int(values.layer, '--layer', 0) : vec.layer;
    if (layer >= c.nLayers) throw new ResidualError(`--layer ${layer} does not exist (the model has layers 0..${c.nLayers - 1})`, WHAT);
    const spec: SteeringSpec = { vector: vec.vector, layer, point, strength, relative: !!values.relative, positions };
    const effect = await nextTokenEffect(model, text, spec, k);
    let gen: Awaited<ReturnType<typeof compareGeneration>> | undefined;
    if (generateN !== undefined) gen = await compareGeneration(model, text, settings, spec);
    const nonFinite = effect.nonFinite || !!gen?.steered.nonFinite;
    if (nonFinite) {
      process.stderr.write(`residual: the steered model produced NaN or Inf (strength ${strength}${values.relative ? ' relative' : ''}); only the baseline is shown\n`);
    }
    const hook = hookName(layer, point);
    const top = (t: TopToken[]) => t.map(({ id, text: s, prob, logit }) => ({ id, text: s, prob, logit }));
    const out = {
      hook,
      strength,
      relative: values.relative,
      scale: effect.scale,
      positions: values.positions,
      vector: { label: vec.label, source: vec.source, norm: l2(vec.vector), made_for: { layer: vec.layer, point: vec.point } },
      baseline: { top: top(effect.baseline), ...(gen ? { text: gen.baseline.text } : {}) },
      steered: { top: top(effect.steered), ...(gen ? { text: gen.steered.text } : {}) },
      kl: Number.isFinite(effect.kl) ? effect.kl : null,
      non_finite: nonFinite,
      ...(gen ? { generation: { ...gen.settings }, tokens_per_second: gen.tokensPerSecond } : {}),
    };
    if (values.json) process.stdout.write(JSON.stringify(out, null, 1) + '\n');
    else {
      const fmt = (t: TopToken[]) => (t.length ? t.slice(0, 5).map((x) => `${JSON.stringify(x.text)} ${(x.prob * 100).toFixed(1)}%`).join(', ') : '(NaN/Inf)');
      const lines = [
        `steering ${vec.label} at ${hook}, strength ${strength}${values.relative ? ' × mean norm' : ''} (scale ${effect.scale.toPrecision(4)}), positions ${values.positions}`,
        `baseline: ${fmt(effect.baseline)}`,
        `steered:  ${fmt(effect.steered)}`,
        `KL(baseline ‖ steered) = ${Number.isFinite(effect.kl) ? effect.kl.toFixed(4) : 'n/a'} nats`,
      ];
      if (gen) {
        lines.push(`baseline continuation: ${JSON.stringify(gen.baseline.text)}`, `steered continuation:  ${JSON.stringify(gen.steered.text)}`);
        lines.push(`${gen.tokensPerSecond.toFixed(1)} tokens/s`);
      }
      process.stdout.write(lines.join('\n') + '\n');
    }
  } finally {
    await model.dispose();
  }
  return 0;
}

function num(s: string, flag: string): number {
  const v = Number(s);
  if (s.trim() === '' || !Number.isFinite(v)) throw new ResidualError(`${flag} must be a number, got "${s}"`, WHAT);
  return v;
}

function int(s: string, flag: string, min: number): number {
  const v = Number(s);
  if (s.trim() === '' || !Number.isInteger(v) || v < min) throw new ResidualError(`${flag} must be an integer ≥ ${min}, got "${s}"`, WHAT);
  return v;
}
