/** Tolerances shared by the oracle tests: ONNX Runtime's tensors against the plain-loop references. */
import assert from 'node:assert/strict';
import type { Tensor32 } from '../../src/engine/dims';

/** Elementwise |a − b| ≤ tol · (|b| + rms(b)); identical values (including ±∞) always pass. Returns the worst ratio. */
export function closeness(a: Float32Array, b: Float32Array): number {
  let ss = 0;
  let n = 0;
  for (const x of b) if (Number.isFinite(x)) (ss += x * x), n++;
  const rms = Math.sqrt(ss / Math.max(1, n)) || 1;
  let worst = 0;
  for (let i = 0; i < a.length; i++) {
    if (a[i] === b[i]) continue;
    worst = Math.max(worst, Math.abs(a[i] - b[i]) / (Math.abs(b[i]) + rms));
  }
  return worst;
}

/** Same dims and every element within `tol` (see closeness). */
export function assertMatches(name: string, got: Tensor32 | undefined, want: Tensor32 | undefined, tol = 1e-4): void {
  assert.ok(got, `${name}: missing from the ONNX run`);
  assert.ok(want, `${name}: missing from the reference`);
  assert.deepEqual(got.dims, want.dims, `${name}: dims`);
  const worst = closeness(got.data, want.data);
  assert.ok(worst <= tol, `${name}: worst relative error ${worst.toExponential(2)} > ${tol}`);
}
