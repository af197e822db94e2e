// One build: esbuild bundles the extension host, the CLI, the GPU check's child process and the webviews;
// onnxruntime-node and Dawn's node binding (the `webgpu` package, used by the GPU check only) stay real modules
// (native bindings) and are copied, for this platform only, into dist/node_modules so the VSIX carries them.
import * as esbuild from 'esbuild';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const dist = path.join(root, 'dist');
const watch = process.argv.includes('--watch');
const prod = process.argv.includes('--production');

const common = { bundle: true, sourcemap: !prod, minify: prod, logLevel: 'warning', absWorkingDir: root };
const builds = [
  { ...common, entryPoints: ['src/host/extension.ts'], outfile: 'dist/extension.js', platform: 'node', format: 'cjs', target: 'node20', external: ['vscode', 'onnxruntime-node'] },
  { ...common, entryPoints: ['src/cli/main.ts'], outfile: 'dist/cli.js', platform: 'node', format: 'cjs', target: 'node20', external: ['onnxruntime-node'] },
  { ...common, entryPoints: ['src/engine/runtime/probeWorker.ts'], outfile: 'dist/probe.js', platform: 'node', format: 'cjs', target: 'node20', external: ['onnxruntime-node', 'webgpu'] },
  { ...common, entryPoints: ['src/engine/reference/worker.ts'], outfile: 'dist/reference-worker.js', platform: 'node', format: 'cjs', target: 'node20' },
  { ...common, entryPoints: { activations: 'webview/activations/main.ts', inspector: 'webview/inspector/main.ts', steering: 'webview/steering/main.ts', circuit: 'webview/circuit/main.ts' }, outdir: 'dist/webview', platform: 'browser', format: 'iife', target: 'es2022' },
];

function copyRuntime() {
  const dest = path.join(dist, 'node_modules');
  const copy = (from, to) => fs.cpSync(path.join(root, 'node_modules', from), path.join(dest, to ?? from), { recursive: true });
  fs.rmSync(dest, { recursive: true, force: true });
  copy('onnxruntime-common');
  copy('onnxruntime-node/package.json');
  copy('onnxruntime-node/dist');
  copy(`onnxruntime-node/bin/napi-v6/${process.platform}/${process.arch}`);
  copy('webgpu/package.json');
  copy('webgpu/LICENSE.md');
  const dawn = `webgpu/dist/${process.platform}-${process.platform === 'darwin' ? 'universal' : process.arch}`;
  if (fs.existsSync(path.join(root, 'node_modules', dawn))) copy(dawn);
}

if (watch) {
  for (const b of builds) await (await esbuild.context(b)).watch();
} else {
  await Promise.all(builds.map((b) => esbuild.build(b)));
}
copyRuntime();
// Without the trained demo model (models/demo), a random fallback (models/tiny-gpt2) is generated, not committed,
// so the extension always has a default model; the VSIX carries whichever exists.
const hasDemo = fs.existsSync(path.join(root, 'models', 'demo', 'model.safetensors'));
if (!hasDemo && !fs.existsSync(path.join(root, 'models', 'tiny-gpt2', 'model.safetensors'))) {
  execFileSync(process.execPath, ['--import', 'tsx', 'tools/make-tiny-model.ts'], { cwd: root, stdio: 'inherit' });
}
console.log(`built into ${path.relative(root, dist)}/`);
