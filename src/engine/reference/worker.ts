/**
 * The reference forward in a worker thread (parity.ts starts it; built as dist/reference-worker.js): its plain loops
 * take up to seconds on a large model, which must not stall the extension host or a CLI's progress. It opens the
 * checkpoint itself and reads each tensor as the reference first asks for it.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { openCheckpoint } from '../checkpoint/load';
import { readRows, readTensorF32 } from '../checkpoint/safetensors';
import type { Checkpoint } from '../checkpoint/load';
import { referenceDecoderForward } from './decoder';
import { referenceForward, type Weights } from './gpt2';

export interface ReferenceJob {
  dir: string;
  ids: number[];
  layers: number;
  /** Whether the logits are computed (every layer): only then is the whole unembedding read. */
  withLogits: boolean;
}

export type ReferenceReply = { ok: true; hooks: [string, number[], Float32Array][] } | { ok: false; error: string };

/**
 * The checkpoint's tensors as the reference asks for them, read on first use. The token embedding is the exception: only
 * the probe's rows are read, behind a view indexed like the whole [V, D] table, so a large vocabulary costs nothing
 * when the logits are not checked.
 */
function checkpointWeights(ckpt: Checkpoint, ids: readonly number[], withLogits: boolean): Weights {
  const cache = new Map<string, Float32Array>();
  const get = (name: string): Float32Array | undefined => {
    const hit = cache.get(name);
    if (hit) return hit;
    const entry = ckpt.tensors.get(name);
    if (!entry) return undefined;
    let data: Float32Array;
    if (name === ckpt.embedName && !(withLogits && name === ckpt.unembedName)) {
      // Only the probe's rows, behind an index view: the reference reads emb[id · D + d] and nothing else of it.
      const D = entry.shape[1];
      const unique = [...new Set(ids)];
      const rows = readRows(entry, unique);
      const rowOf = new Map(unique.map((id, i) => [id, i]));
      data = new Proxy(new Float32Array(0), {
        get(target, prop) {
          if (typeof prop === 'string' && /^\d+$/.test(prop)) {
            const i = Number(prop);
            const r = rowOf.get(Math.floor(i / D));
            return r === undefined ? 0 : rows[r * D + (i % D)];
          }
          return prop === 'length' ? entry.shape[0] * D : Reflect.get(target, prop);
        },
      });
    } else data = readTensorF32(entry);
    cache.set(name, data);
    return data;
  };
  // Map-shaped (the reference calls get), reading through to the checkpoint.
  return { get, has: (name: string) => ckpt.tensors.has(name) } as unknown as Weights;
}

function run(job: ReferenceJob): ReferenceReply {
  try {
    const ckpt = openCheckpoint(job.dir);
    const c = ckpt.config;
    const forward = c.family ? referenceDecoderForward : referenceForward;
    const out = forward(c, checkpointWeights(ckpt, job.ids, job.withLogits), job.ids, new Map(), { layers: job.layers });
    return { ok: true, hooks: [...out].map(([name, t]) => [name, t.dims, t.data as Float32Array]) };
  } catch (e) {
    return { ok: false, error: e instanceof Error ? e.message : String(e) };
  }
}

if (parentPort && workerData) {
  const reply = run(workerData as ReferenceJob);
  parentPort.postMessage(reply, reply.ok ? reply.hooks.map(([, , data]) => data.buffer as ArrayBuffer) : []);
}
