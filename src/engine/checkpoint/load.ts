/**
 * Opens a Hugging Face model folder (GPT-2, Llama, Qwen2/3, Gemma-2, GPT-NeoX): config.json + model.safetensors (or sharded via
 * model.safetensors.index.json) + tokenizer.json. Reads headers only and checks every weight the config implies;
 * tensor data is read later with readTensorF32. Pickle weights are refused, never opened.
 */
import * as fs from 'fs';
import * as nodePath from 'path';
import { ResidualError } from '../errors';
import { checkInputFile, checkInputFolder } from '../files';
import type { ModelConfig } from './config';
import { lexists, parseConfig } from './parse-config';
import { expectedFamilyShapes, FAMILY_IGNORED_BUFFER, familyPrefixes, familyWeightNames } from './families';
import { FLOAT_DTYPES, isPlainObject, readSafetensorsHeader, type TensorEntry } from './safetensors';

export interface Checkpoint {
  /** Absolute path of the model folder. */
  dir: string;
  config: ModelConfig;
  /** Canonical names (without the `transformer.` / `model.` / `gpt_neox.` prefix) → where each weight lives. Only the weights the model uses. */
  tensors: Map<string, TensorEntry>;
  /** Absolute paths of the safetensors files read, sorted. */
  files: string[];
  /** Bytes of the weights in `tensors` as stored (what reading them all costs on disk). */
  totalBytes: number;
  /** The float dtype holding the most bytes of weights. */
  dtype: string;
  /** Absolute path of tokenizer.json. */
  tokenizerPath: string;
  /** True when there is no separate unembedding: it is the token embedding (transposed). */
  tiedUnembed: boolean;
  /** Canonical name of the token embedding [V, D]. */
  embedName: string;
  /** Canonical name of the [V, D] tensor the unembedding reads (lm_head.weight, embed_out.weight, or the embedding). */
  unembedName: string;
  /** Non-fatal findings: unused bytes, tensors that were ignored. */
  warnings: string[];
}

const PICKLE_EXTENSIONS = ['.bin', '.pt', '.pth', '.ckpt', '.pkl'];
const INDEX_FILE = 'model.safetensors.index.json';
const SINGLE_FILE = 'model.safetensors';

/** Buffers in GPT-2 checkpoints that are not weights (causal mask, masked fill value). */
const IGNORED_BUFFER = /^h\.\d+\.attn\.(bias|masked_bias)$/;

/** How a family's weights are named and checked. */
interface WeightSpec {
  prefixes: string[];
  expected: Map<string, number[]>;
  embed: string;
  unembed: string;
  ignored: RegExp;
  layerOf: RegExp;
  /** Whether a missing unembedding may fall back to the embedding. */
  tieAllowed: boolean;
  dimsText: string;
}

function weightSpec(cfg: ModelConfig): WeightSpec {
  if (!cfg.family) {
    return {
      prefixes: ['transformer.'],
      expected: expectedGpt2Shapes(cfg),
      embed: 'wte.weight',
      unembed: 'lm_head.weight',
      ignored: IGNORED_BUFFER,
      layerOf: /^h\.(\d+)\./,
      tieAllowed: true,
      dimsText: `n_layer ${cfg.nLayers}, n_embd ${cfg.dModel}, n_inner ${cfg.dMlp}, n_positions ${cfg.nCtx}, vocab_size ${cfg.vocabSize}`,
    };
  }
  const names = familyWeightNames(cfg);
  return {
    prefixes: familyPrefixes(cfg),
    expected: expectedFamilyShapes(cfg),
    embed: names.embed,
    unembed: names.unembed,
    ignored: FAMILY_IGNORED_BUFFER,
    layerOf: /^layers\.(\d+)\./,
    tieAllowed: cfg.family.tiedEmbeddings,
    dimsText:
      `num_hidden_layers ${cfg.nLayers}, hidden_size ${cfg.dModel}, num_attention_heads ${cfg.nHeads}, num_key_value_heads ${cfg.nKvHeads ?? cfg.nHeads}, ` +
      `head_dim ${cfg.dHead}, intermediate_size ${cfg.dMlp}, vocab_size ${cfg.vocabSize}`,
  };
}

/** Shape every GPT-2 weight must have under `cfg`, canonical name → shape. lm_head.weight is optional. */
export function expectedGpt2Shapes(cfg: ModelConfig): Map<string, number[]> {
  const D = cfg.dModel;
  const M = cfg.dMlp;
  const m = new Map<string, number[]>();
  m.set('wte.weight', [cfg.vocabSize, D]);
  m.set('wpe.weight', [cfg.nCtx, D]);
  for (let l = 0; l < cfg.nLayers; l++) {
    const p = `h.${l}.`;
    m.set(`${p}ln_1.weight`, [D]);
    m.set(`${p}ln_1.bias`, [D]);
    m.set(`${p}attn.c_attn.weight`, [D, 3 * D]);
    m.set(`${p}attn.c_attn.bias`, [3 * D]);
    m.set(`${p}attn.c_proj.weight`, [D, D]);
    m.set(`${p}attn.c_proj.bias`, [D]);
    m.set(`${p}ln_2.weight`, [D]);
    m.set(`${p}ln_2.bias`, [D]);
    m.set(`${p}mlp.c_fc.weight`, [D, M]);
    m.set(`${p}mlp.c_fc.bias`, [M]);
    m.set(`${p}mlp.c_proj.weight`, [M, D]);
    m.set(`${p}mlp.c_proj.bias`, [D]);
  }
  m.set('ln_f.weight', [D]);
  m.set('ln_f.bias', [D]);
  return m;
}

export function openCheckpoint(dir: string): Checkpoint {
  let root = nodePath.resolve(dir);
  let stat: fs.Stats;
  try {
    stat = fs.statSync(root);
  } catch (e) {
    if (isSymlink(root)) {
      throw new ResidualError(`model folder is a symbolic link to ${fs.readlinkSync(root)}, which does not exist`, root, 'missing');
    }
    if ((e as NodeJS.ErrnoException).code === 'ELOOP') throw new ResidualError('model folder is a symbolic link that loops', root);
    throw new ResidualError('model folder not found; check the path (it should hold config.json, model.safetensors and tokenizer.json)', root, 'missing');
  }
  if (stat.isFile()) {
    throw new ResidualError('is a file, not a model folder; pass the folder that holds config.json, model.safetensors and tokenizer.json', root);
  }
  checkInputFolder(root, 'model folder'); // a FIFO, a device, … named as such
  root = hubSnapshot(root);
  const names = listFolder(root);

  // 1. Which weight files.
  const warnings: string[] = [];
  let shardOf: Map<string, string> | undefined; // tensor name (as stored) → absolute shard path, sharded case only
  let files: string[];
  if (names.includes(INDEX_FILE)) {
    shardOf = readIndex(root, nodePath.join(root, INDEX_FILE));
    files = [...new Set(shardOf.values())].sort();
  } else if (names.includes(SINGLE_FILE)) {
    files = [nodePath.join(root, SINGLE_FILE)];
  } else {
    const pickles = names.filter((n) => PICKLE_EXTENSIONS.includes(nodePath.extname(n).toLowerCase()));
    if (pickles.length) {
      throw new ResidualError(
        `holds only PyTorch pickle weights (${pickles.join(', ')}). Residual never loads pickle files, because unpickling ` +
          'can run arbitrary code. Use a model.safetensors instead: download it from the model page if one is published, ' +
          'or convert in a Python environment you trust with `AutoModelForCausalLM.from_pretrained(folder)' +
          '.save_pretrained(folder, safe_serialization=True)` (transformers) and point Residual at the result.',
        root,
        'unsupported',
      );
    }
    const others = names.filter((n) => n.endsWith('.safetensors'));
    throw new ResidualError(
      `no ${SINGLE_FILE} or ${INDEX_FILE} in the model folder` +
        (others.length ? ` (found ${others.join(', ')}; rename the weights file to ${SINGLE_FILE})` : '; download the weights in safetensors format'),
      root,
      'missing',
    );
  }

  // 2. Config and tokenizer.
  const configPath = nodePath.join(root, 'config.json');
  if (lexists(configPath)) checkInputFile(configPath, 'config.json'); // a folder or FIFO by that name, named as such
  const config = parseConfig(configPath);
  const tokenizerPath = nodePath.join(root, 'tokenizer.json');
  if (!lexists(tokenizerPath)) {
    throw new ResidualError(
      'tokenizer.json not found; download tokenizer.json from the model page (for GPT-2 checkpoints the gpt2 tokenizer.json works) and put it in the model folder',
      tokenizerPath,
      'missing',
    );
  }
  checkInputFile(tokenizerPath, 'tokenizer.json'); // a FIFO would hang the tokenizer's read; a folder, a dangling link

  // 3. Headers → stored name → entry.
  const stored = new Map<string, TensorEntry>();
  for (const file of files) {
    const header = readSafetensorsHeader(file);
    warnings.push(...header.warnings);
    const inHeader = new Set(header.entries.map((e) => e.name));
    for (const e of header.entries) {
      if (shardOf) {
        const listed = shardOf.get(e.name);
        if (listed !== file) {
          if (listed === undefined) warnings.push(`${file}: tensor "${e.name}" is not listed in ${INDEX_FILE}; ignored`);
          continue;
        }
      }
      stored.set(e.name, e);
    }
    if (shardOf) {
      for (const [name, shard] of shardOf) {
        if (shard === file && !inHeader.has(name)) {
          throw new ResidualError(
            `${INDEX_FILE} lists tensor "${name}" in this shard but the shard's header does not contain it; the download is incomplete or the index is stale`,
            file,
          );
        }
      }
    }
  }

  // 4. Canonical names.
  const spec = weightSpec(config);
  const canonical = new Map<string, TensorEntry>();
  for (const [name, e] of stored) {
    const prefix = spec.prefixes.find((p) => name.startsWith(p));
    const c = prefix ? name.slice(prefix.length) : name;
    const other = canonical.get(c);
    if (other) {
      throw new ResidualError(`tensor "${c}" appears twice, as "${other.name}" (${other.file}) and "${name}"`, e.file);
    }
    canonical.set(c, { ...e });
  }

  // 5. Every required weight, with the shape config.json implies.
  const expected = spec.expected;
  const configFile = nodePath.join(root, 'config.json');
  const missing = [...expected.keys()].filter((n) => !canonical.has(n));
  if (missing.length) {
    const shown = missing.slice(0, 8).join(', ') + (missing.length > 8 ? `, … (${missing.length} in all)` : '');
    throw new ResidualError(
      `missing weight${missing.length > 1 ? 's' : ''} ${shown} that ${configFile} (${config.family ? 'num_hidden_layers' : 'n_layer'} ${config.nLayers}) requires; the checkpoint is incomplete or not ${config.architecture} shaped`,
      files.length === 1 ? files[0] : root,
    );
  }
  const tensors = new Map<string, TensorEntry>();
  const check = (name: string, want: number[]): void => {
    const e = canonical.get(name)!;
    if (e.shape.length !== want.length || e.shape.some((d, i) => d !== want[i])) {
      throw new ResidualError(
        `tensor "${e.name}" has shape [${e.shape.join(', ')}] but ${configFile} implies [${want.join(', ')}] ` +
          `(${spec.dimsText}); config.json does not belong to these weights`,
        e.file,
      );
    }
    if (!(FLOAT_DTYPES as readonly string[]).includes(e.dtype)) {
      throw new ResidualError(
        `tensor "${e.name}" has dtype ${e.dtype}; weights must be ${FLOAT_DTYPES.join(', ')} (quantized checkpoints are not supported; use the unquantized weights)`,
        e.file,
        'unsupported',
      );
    }
    tensors.set(name, e);
  };
  for (const [name, want] of expected) check(name, want);
  const tiedUnembed = !canonical.has(spec.unembed);
  if (!tiedUnembed) check(spec.unembed, [config.vocabSize, config.dModel]);
  else if (!spec.tieAllowed) {
    throw new ResidualError(
      `missing weight ${spec.unembed}: config.json says "tie_word_embeddings": false, so the unembedding must be its own tensor; the checkpoint is incomplete`,
      files.length === 1 ? files[0] : root,
    );
  }
  const unembedName = tiedUnembed ? spec.embed : spec.unembed;

  for (const [name, e] of canonical) {
    if (tensors.has(name) || spec.ignored.test(name)) continue;
    const layer = spec.layerOf.exec(name);
    if (layer && Number(layer[1]) >= config.nLayers) {
      throw new ResidualError(
        `tensor "${e.name}" belongs to layer ${layer[1]}, but ${configFile} says ${config.family ? 'num_hidden_layers' : 'n_layer'} ${config.nLayers}; config.json does not belong to these weights`,
        e.file,
      );
    }
    warnings.push(`${e.file}: tensor "${e.name}" is not a ${config.architecture} weight; ignored`);
  }

  // 6. Summary.
  let totalBytes = 0;
  const bytesByDtype = new Map<string, number>();
  for (const e of tensors.values()) {
    totalBytes += e.byteLength;
    bytesByDtype.set(e.dtype, (bytesByDtype.get(e.dtype) ?? 0) + e.byteLength);
  }
  let dtype = 'F32';
  let most = -1;
  for (const [d, b] of bytesByDtype) {
    if (b > most) {
      most = b;
      dtype = d;
    }
  }
  return { dir: root, config, tensors, files, totalBytes, dtype, tokenizerPath, tiedUnembed, embedName: spec.embed, unembedName, warnings };
}

/** Reads model.safetensors.index.json → stored tensor name → absolute shard path (validated to stay in `root`). */
function readIndex(root: string, indexPath: string): Map<string, string> {
  checkInputFile(indexPath, INDEX_FILE);
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(indexPath, 'utf8'));
  } catch (e) {
    throw new ResidualError(`cannot read the shard index: ${(e as Error).message}; re-download it`, indexPath);
  }
  if (!isPlainObject(raw) || !isPlainObject(raw.weight_map)) {
    throw new ResidualError('has no "weight_map" object (tensor name → shard file); re-download it', indexPath);
  }
  const out = new Map<string, string>();
  const checked = new Set<string>();
  for (const [name, shard] of Object.entries(raw.weight_map)) {
    if (typeof shard !== 'string' || shard === '') {
      throw new ResidualError(`weight_map entry for tensor "${name}" is ${JSON.stringify(shard)}, not a file name`, indexPath);
    }
    if (nodePath.isAbsolute(shard) || nodePath.win32.isAbsolute(shard) || shard.split(/[\\/]/).includes('..')) {
      throw new ResidualError(
        `weight_map sends tensor "${name}" to "${shard}", outside the model folder; shard paths must be plain file names inside the folder`,
        indexPath,
      );
    }
    const abs = nodePath.resolve(root, shard);
    const rel = nodePath.relative(root, abs);
    if (rel === '' || rel.startsWith('..') || nodePath.isAbsolute(rel)) {
      throw new ResidualError(`weight_map sends tensor "${name}" to "${shard}", outside the model folder`, indexPath);
    }
    if (!checked.has(abs)) {
      if (!lexists(abs)) {
        throw new ResidualError(
          `shard "${shard}" (holding tensor "${name}") is missing from the model folder; download all shards`,
          indexPath,
          'missing',
        );
      }
      checkInputFile(abs, `shard "${shard}"`); // a FIFO, a folder or a dangling symlink, named before any read
      checked.add(abs);
    }
    out.set(name, abs);
  }
  if (out.size === 0) throw new ResidualError('weight_map is empty', indexPath);
  return out;
}

function isSymlink(p: string): boolean {
  try {
    return fs.lstatSync(p).isSymbolicLink();
  } catch {
    return false;
  }
}

function statOrUndefined(p: string): fs.Stats | undefined {
  try {
    return fs.statSync(p);
  } catch {
    return undefined;
  }
}

function listFolder(root: string): string[] {
  try {
    return fs.readdirSync(root);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new ResidualError(`model folder cannot be read (${code === 'EACCES' || code === 'EPERM' ? 'permission denied' : (code ?? (e as Error).message)})`, root);
  }
}

/**
 * A repository folder of the Hugging Face cache (`models--org--name/` with `refs/`, `snapshots/<revision>/` and
 * `blobs/`) stands for its snapshot: the one `refs/main` names, else its only snapshot. Any other folder is itself.
 */
export function hubSnapshot(root: string): string {
  const snapshots = nodePath.join(root, 'snapshots');
  if (lexists(nodePath.join(root, 'config.json')) || !statOrUndefined(snapshots)?.isDirectory()) return root;
  const revs = listFolder(snapshots).sort().filter((r) => statOrUndefined(nodePath.join(snapshots, r))?.isDirectory());
  const refMain = nodePath.join(root, 'refs', 'main');
  let rev: string | undefined;
  if (statOrUndefined(refMain)?.isFile()) {
    const named = fs.readFileSync(refMain, 'utf8').trim();
    if (/^[A-Za-z0-9._-]+$/.test(named) && named !== '.' && named !== '..' && revs.includes(named)) rev = named;
  }
  if (!rev && revs.length === 1) rev = revs[0];
  if (!rev) {
    throw new ResidualError(
      revs.length === 0
        ? 'is a Hugging Face cache folder with no snapshots; download the model again'
        : `is a Hugging Face cache folder with ${revs.length} snapshots (${revs.slice(0, 4).join(', ')}${revs.length > 4 ? ', …' : ''}) and no refs/main naming one; pass the folder snapshots/<revision> you want`,
      root,
      'missing',
    );
  }
  return nodePath.join(snapshots, rev);
}
