/**
 * Which files of a repository listing to fetch, and the checks on everything the server names: the repository id
 * the user typed, and every path and checksum the listing returns (a hostile or broken server must not be able to
 * write outside the destination folder or make us skip verification).
 */
import * as nodePath from 'node:path';
import { HubError } from './errors';

/** `owner/name` as the Hub allows it: letters, digits, `-`, `_`, `.`; no `--` or `..`; at most 96 characters a part. */
const REPO_PART = /^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?$/;

/** Null when `id` is a valid `owner/name`, else what is wrong with it (for an input box). */
export function repoIdProblem(id: string): string | null {
  const parts = id.trim().split('/');
  if (parts.length !== 2) return 'expected owner/name, e.g. openai-community/gpt2';
  for (const p of parts) {
    if (!REPO_PART.test(p) || p.includes('--') || p.includes('..')) {
      return `"${p}" is not a valid owner or repository name (letters, digits, "-", "_", "." ; no "--" or "..")`;
    }
  }
  return null;
}

export function checkRepoId(id: string): string {
  const problem = repoIdProblem(id);
  if (problem) throw new HubError('not-found', problem, id);
  return id.trim();
}

/** A branch, tag or commit: no whitespace, control characters, `..` segments or leading `/`. */
export function checkRevision(rev: string): string {
  const r = rev.trim();
  if (!r || /[\s\x00-\x1f\\~^:?*[]/.test(r) || r.startsWith('/') || r.endsWith('/') || r.split('/').some((s) => s === '' || s === '.' || s === '..')) {
    throw new HubError('not-found', `"${rev}" is not a valid revision (a branch, tag or commit id)`);
  }
  return r;
}

/**
 * A repository path from the server, checked: relative, `/`-separated, no empty, `.` or `..` segments, no
 * backslashes, drive letters or control characters. Throws a `hostile` HubError otherwise.
 */
export function checkRepoPath(p: unknown, repo: string): string {
  const ok =
    typeof p === 'string' &&
    p.length > 0 &&
    p.length <= 1024 &&
    !/[\x00-\x1f\\]/.test(p) &&
    !p.startsWith('/') &&
    !/^[A-Za-z]:/.test(p) &&
    p.split('/').every((s) => s !== '' && s !== '.' && s !== '..');
  if (!ok) throw new HubError('hostile', `the server listed an unsafe file path ${JSON.stringify(p)}; refusing to download from it`, repo);
  return p;
}

/** `rel` (already checked) joined under `dir`, refusing anything that would land outside it. */
export function resolveInside(dir: string, rel: string, repo: string): string {
  const root = nodePath.resolve(dir);
  const abs = nodePath.resolve(root, ...rel.split('/'));
  if (!abs.startsWith(root + nodePath.sep)) throw new HubError('hostile', `the file path ${JSON.stringify(rel)} leaves the destination folder; refusing it`, repo);
  return abs;
}

/** One file of the listing as the engine uses it. */
export interface ListedFile {
  /** Path in the repository. */
  path: string;
  size: number;
  /** Git blob sha1 of the content (non-LFS files) or of the LFS pointer. */
  oid?: string;
  /** sha256 of the content, for LFS (and Xet) files. */
  sha256?: string;
}

/** Checks one raw listing entry (the `@huggingface/hub` ListFileEntry shape); undefined for directories. */
export function checkListEntry(e: { type?: string; path?: unknown; size?: unknown; oid?: unknown; lfs?: { oid?: unknown; size?: unknown } }, repo: string): ListedFile | undefined {
  if (e.type !== 'file') {
    if (e.type === 'directory') checkRepoPath(e.path, repo);
    return undefined;
  }
  const path = checkRepoPath(e.path, repo);
  const bad = (what: string) => new HubError('hostile', `the listing gives ${path} ${what}`, repo);
  if (typeof e.size !== 'number' || !Number.isSafeInteger(e.size) || e.size < 0) throw bad(`an invalid size ${JSON.stringify(e.size)}`);
  const f: ListedFile = { path, size: e.size };
  if (e.lfs) {
    if (typeof e.lfs.oid !== 'string' || !/^[0-9a-f]{64}$/.test(e.lfs.oid)) throw bad(`an invalid LFS sha256 ${JSON.stringify(e.lfs.oid)}`);
    if (e.lfs.size !== undefined && e.lfs.size !== e.size) throw bad(`two sizes (${e.size} and LFS ${String(e.lfs.size)})`);
    f.sha256 = e.lfs.oid;
  }
  if (e.oid !== undefined) {
    if (typeof e.oid !== 'string' || !/^[0-9a-f]{40}$/.test(e.oid)) throw bad(`an invalid git oid ${JSON.stringify(e.oid)}`);
    f.oid = e.oid;
  }
  if (!f.sha256 && !f.oid) throw bad('no checksum (neither an LFS sha256 nor a git oid), so it could not be verified');
  return f;
}

/** Extensions never downloaded: pickles run code when loaded, and Residual loads none of the rest. */
export const PICKLE_EXTENSIONS = ['.bin', '.pt', '.pth', '.ckpt', '.pkl', '.pickle'];

/** Root files of a model repository worth having beside the weights (config, tokenizer, licence). */
const MODEL_FILES = new Set([
  'config.json',
  'generation_config.json',
  'tokenizer.json',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'added_tokens.json',
  'vocab.json',
  'merges.txt',
  'model.safetensors.index.json',
  'README.md',
]);

/**
 * The files of a model checkpoint: the root config and tokenizer files, the licence, and the root `*.safetensors`
 * (single or sharded). Subfolders (onnx/, other formats) and pickles are left out. Refuses a repository without
 * config.json or without safetensors weights, saying why.
 */
export function selectModelFiles(files: ListedFile[], repo: string): ListedFile[] {
  const root = files.filter((f) => !f.path.includes('/'));
  const picked = root.filter((f) => MODEL_FILES.has(f.path) || /^LICEN[CS]E(\.[a-z]+)?$/i.test(f.path) || f.path.endsWith('.safetensors'));
  if (!picked.some((f) => f.path.endsWith('.safetensors'))) {
    const pickles = root.filter((f) => PICKLE_EXTENSIONS.includes(nodePath.extname(f.path).toLowerCase())).map((f) => f.path);
    throw new HubError(
      'no-weights',
      pickles.length
        ? `has only PyTorch pickle weights (${pickles.join(', ')}), which Residual never downloads or loads because unpickling can run code; choose a repository (or revision) that publishes model.safetensors`
        : 'has no .safetensors weights at its top level; choose a repository that publishes model.safetensors',
      repo,
    );
  }
  if (!picked.some((f) => f.path === 'config.json')) throw new HubError('no-weights', 'has no config.json at its top level, so it is not a Hugging Face model checkpoint', repo);
  return picked;
}

const TRANSCODER_EXTENSIONS = ['.safetensors', '.json', '.yaml', '.yml', '.md', '.txt'];

/**
 * The files of a transcoder set under `subfolder` (or the whole repository): safetensors, configs (`cfg.json`,
 * `config.yaml`) and notes, keeping the folder structure below `subfolder` (SAELens: one folder per layer;
 * circuit-tracer: `config.yaml` + `layer_<i>.safetensors`). Returns each file with its path below `subfolder`.
 */
export function selectTranscoderFiles(files: ListedFile[], repo: string, subfolder: string): { file: ListedFile; local: string }[] {
  const prefix = subfolder ? `${subfolder}/` : '';
  const out: { file: ListedFile; local: string }[] = [];
  for (const f of files) {
    if (!f.path.startsWith(prefix)) {
      throw new HubError('hostile', `asked for the folder ${subfolder} but the listing includes ${f.path}`, repo);
    }
    const local = f.path.slice(prefix.length);
    if (TRANSCODER_EXTENSIONS.includes(nodePath.extname(local).toLowerCase())) out.push({ file: f, local });
  }
  if (!out.some((x) => x.local.endsWith('.safetensors'))) {
    throw new HubError('no-weights', `has no .safetensors transcoder weights${subfolder ? ` under ${subfolder}/` : ''}`, repo);
  }
  return out;
}

/** The folder name a downloaded model gets: `owner--name`, plus `--revision` for anything but main. */
export function modelFolderName(repo: string, revision = 'main'): string {
  const base = checkRepoId(repo).replace('/', '--');
  return revision === 'main' ? base : `${base}--${revision.replace(/[^A-Za-z0-9._-]/g, '_')}`;
}

/** `REPO[:SUBFOLDER]` as the CLI and the host take a transcoder set. */
export function parseTranscoderSpec(spec: string): { repo: string; subfolder?: string } {
  const i = spec.indexOf(':');
  const repo = checkRepoId(i < 0 ? spec : spec.slice(0, i));
  const sub = i < 0 ? '' : spec.slice(i + 1).replace(/^\/+|\/+$/g, '');
  return { repo, subfolder: sub ? checkRepoPath(sub, repo) : undefined };
}
