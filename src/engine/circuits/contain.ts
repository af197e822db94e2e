/**
 * Containment of the paths a transcoder folder's configs and indexes lead to (issue 14, class 6): a path named in
 * config.yaml, and every file read by convention (a SAELens subfolder, `layer_<i>.safetensors`, `feature_index.json`),
 * must stay inside the folder. Refused, naming the config key and the path:
 *  - an absolute path (POSIX `/x`, Windows `C:\x` or `\\server\x`);
 *  - a relative path that climbs out (`../x`, `a/../../x`);
 *  - a path that resolves, through a symbolic link anywhere along it, to a place outside the folder.
 * One exception keeps Hugging Face downloads working: a link into a Hub cache's content store (`…/models--o--n/blobs/
 * <hash>`), which is how the Hub cache layout (`snapshots/<rev>/file -> ../../blobs/<hash>`) and older
 * `huggingface-cli download --local-dir` folders (absolute links into the cache) store every file.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ResidualError } from '../errors';

/** True when `p` is `root` or below it (both absolute and normalised). */
export function isInside(root: string, p: string): boolean {
  const rel = path.relative(root, p);
  return rel === '' || (!path.isAbsolute(rel) && rel !== '..' && !rel.startsWith(`..${path.sep}`));
}

/** A file in a Hugging Face cache's content store: `…/(models|datasets|spaces)--<owner>--<name>/blobs/<hash>`. */
export function isHubBlob(real: string): boolean {
  return /[\\/](?:models|datasets|spaces)--[^\\/]+--[^\\/]+[\\/]blobs[\\/][0-9a-f]{40,64}$/.test(real);
}

/** Absolute in POSIX or Windows terms (a config written on either may be read on either). */
function isAbsoluteAnywhere(p: string): boolean {
  return path.posix.isAbsolute(p) || path.win32.isAbsolute(p) || /^[A-Za-z]:/.test(p);
}

function realOrUndefined(p: string): string | undefined {
  try {
    return fs.realpathSync(p);
  } catch {
    return undefined;
  }
}

/**
 * Resolves `rel`, a path `config`'s `key` names, inside `root`; throws a ResidualError naming the key and the path
 * (as `shown`, e.g. the hf:// path it came from) when it is absolute, climbs out, or leads out through a symbolic
 * link. A path that does not exist yet is returned resolved (the reader reports it missing).
 */
export function resolveContained(root: string, rel: string, key: string, config: string, shown = rel): string {
  const where = `${key} "${shown}"`;
  if (isAbsoluteAnywhere(rel)) {
    throw new ResidualError(`${where} is an absolute path; paths in ${path.basename(config)} must be relative to its folder (${root}), and stay inside it`, config);
  }
  const abs = path.resolve(root, ...rel.split(/[\\/]+/));
  if (!isInside(path.resolve(root), abs)) throw new ResidualError(`${where} points outside the transcoder folder ${root}; refusing it`, config);
  checkContained(root, abs, where, config);
  return abs;
}

/**
 * Checks that `file` (inside `root` by its name) does not lead out of `root` through a symbolic link. `what` names
 * it in the message (a config key and path, or the file's name); `file` names where it came from.
 */
export function checkContained(root: string, file: string, what = path.basename(file), source = file): void {
  const rootReal = realOrUndefined(root) ?? path.resolve(root);
  // The deepest part of the path that exists: a link further up leads out even if the file itself is missing.
  let probe = path.resolve(file);
  let real = realOrUndefined(probe);
  while (real === undefined) {
    const up = path.dirname(probe);
    if (up === probe || !isInside(path.resolve(root), up)) return;
    probe = up;
    real = realOrUndefined(probe);
  }
  if (isInside(rootReal, real) || isHubBlob(real)) return;
  throw new ResidualError(
    `${what} resolves through a symbolic link to ${real}, outside the transcoder folder ${rootReal}; refusing it (copy the file into the folder, or link the whole folder instead)`,
    source,
  );
}
