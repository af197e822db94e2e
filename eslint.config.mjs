// ESLint 9 flat config. Syntax-only (no type information), so `npm run lint` stays fast on a 2-core CI machine.
//
// Besides typescript-eslint's recommended rules (tuned to the code base's deliberate style below), it encodes the
// layering: the arrows between folders that must never exist (see Layering), and no import cycles.
import { builtinModules } from 'node:module';
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'eslint/config';
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import importX, { createNodeResolver } from 'eslint-plugin-import-x';
import globals from 'globals';

// ---- Layering ------------------------------------------------------------------------------------------------------
// The arrows that must never exist, in two parts:
//  - between folders: import-x/no-restricted-paths, which compares the *resolved* file with the zones. A pattern over
//    the specifier as written cannot do this: `../host` is src/host from src/engine/x.ts, but webview/host.ts from
//    webview/activations/x.ts and src/engine/host from src/engine/circuits/x.ts. It checks imports, re-exports,
//    `import x = require()` and `import()`; `require()` itself is refused everywhere by no-require-imports.
//    (An import that does not resolve is not checked here, but then the type-check fails first.)
//  - on packages (`vscode`, Node built-ins, any package at all for src/protocol): the specifier as written, with
//    @typescript-eslint/no-restricted-imports for static imports/re-exports (`import type` included) and
//    no-restricted-syntax for `import('…')`, `require('…')` and `typeof import('…')`.

const root = fileURLToPath(new URL('.', import.meta.url));

const zones = [
  { target: 'src/engine', from: 'src/host', message: 'src/engine is pure TypeScript: it never imports the VS Code glue (src/host).' },
  { target: 'src/engine', from: 'webview', message: 'src/engine never imports webview/ (browser code, bundled separately).' },
  { target: 'src/engine', from: 'src/cli', message: 'src/engine never imports src/cli (an entry point); move what both need into src/engine.' },
  { target: 'webview', from: 'src/host', message: 'webview/ never imports src/host; messages go through the types in src/protocol.' },
  { target: 'webview', from: 'src/engine', message: 'webview/ never imports src/engine (Node side); engine results reach it as src/protocol types.' },
  { target: 'src/cli', from: 'src/host', message: 'src/cli never imports src/host (the VS Code glue); share code through src/engine.' },
  { target: 'src/protocol', from: '.', except: ['src/protocol', 'node_modules'], message: 'src/protocol imports nothing outside src/protocol.' },
];

const nodeBuiltins = [...new Set(builtinModules.map((m) => m.replace(/^node:/, '')))].map((m) => m.replace(/[/]/g, '\\/'));
const vscode = { regex: '^vscode(/|$)', message: 'Only src/host imports vscode.' };
const builtins = { regex: `^(node:.*|(${nodeBuiltins.join('|')})(/.*)?)$`, message: 'webviews run in a browser: no Node built-ins.' };
const anyPackage = { regex: '^(?![./])', message: 'src/protocol holds plain types shared by host and webviews: it imports no package.' };

const packageBans = [
  { name: 'engine', files: ['src/engine/**'], bans: [vscode] },
  { name: 'webview', files: ['webview/**'], bans: [vscode, builtins] },
  { name: 'cli', files: ['src/cli/**'], bans: [vscode] },
  { name: 'protocol', files: ['src/protocol/**'], bans: [anyPackage] },
];

/** esquery regex literal for a ban: `/` must be escaped inside it. */
const esq = (regex) => `/${regex.replace(/(?<!\\)\//g, '\\/')}/`;

const layerConfigs = [
  {
    name: 'residual/layers/folders',
    plugins: { 'import-x': importX },
    rules: { 'import-x/no-restricted-paths': ['error', { basePath: root, zones }] },
  },
  ...packageBans.map(({ name, files, bans }) => ({
    name: `residual/layers/packages/${name}`,
    files,
    rules: {
      'no-restricted-imports': 'off',
      '@typescript-eslint/no-restricted-imports': ['error', { patterns: bans.map(({ regex, message }) => ({ regex, message })) }],
      'no-restricted-syntax': [
        'error',
        ...bans.flatMap(({ regex, message }) => [
          { selector: `ImportExpression[source.value=${esq(regex)}]`, message },
          { selector: `CallExpression[callee.name='require'][arguments.0.value=${esq(regex)}]`, message },
          { selector: `TSImportType[argument.literal.value=${esq(regex)}]`, message },
        ]),
      ],
    },
  })),
];

// ---- Local rules ---------------------------------------------------------------------------------------------------

/**
 * @typescript-eslint/no-unused-expressions, except statements like `(lo = Math.min(lo, v)), (hi = Math.max(hi, v));`
 * or `feature.push(f), act.push(a);`: a comma sequence of assignments, updates and calls is the code base's
 * deliberate way to do two things in one short loop body. Lone unused expressions (`a === b;`) stay errors.
 */
const effectful = (e) => ['AssignmentExpression', 'UpdateExpression', 'CallExpression', 'NewExpression', 'AwaitExpression'].includes(e.type);
const baseUnusedExpressions = tseslint.plugin.rules['no-unused-expressions'];
const noUnusedExpressions = {
  meta: baseUnusedExpressions.meta,
  defaultOptions: baseUnusedExpressions.defaultOptions,
  create(context) {
    const report = (d) => {
      const e = d.node?.type === 'ExpressionStatement' ? d.node.expression : d.node;
      if (e?.type === 'SequenceExpression' && e.expressions.every(effectful)) return;
      context.report(d);
    };
    return baseUnusedExpressions.create(Object.create(context, { report: { value: report } }));
  },
};
const local = { rules: { 'no-unused-expressions': noUnusedExpressions } };

// ---- Everything else -------------------------------------------------------------------------------------------------

export default defineConfig(
  {
    name: 'residual/ignores',
    ignores: [
      'dist/',
      'out/',
      '**/node_modules/',
      'bench/.cache/',
      'bench/results/',
      'models/',
      'tools/demo-model/work/',
      'media/',
      '**/*.vsix',
      '.e2e-artifacts/',
      'demo-workspace/',
      '**/__pycache__/',
    ],
  },
  js.configs.recommended,
  tseslint.configs.recommended,
  {
    name: 'residual/base',
    linterOptions: { reportUnusedDisableDirectives: 'error' },
    languageOptions: { sourceType: 'module' },
    plugins: { 'import-x': importX, residual: local },
    settings: {
      'import-x/extensions': ['.ts', '.mts', '.cts', '.js', '.mjs', '.cjs'],
      'import-x/parsers': { '@typescript-eslint/parser': ['.ts', '.mts', '.cts'] },
      'import-x/resolver-next': [createNodeResolver({ extensions: ['.ts', '.mts', '.cts', '.js', '.mjs', '.cjs', '.json'] })],
    },
    rules: {
      // Unused things are errors, except the deliberate `_`-prefixed ones and the rest siblings used to omit keys.
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrorsIgnorePattern: '^_', destructuredArrayIgnorePattern: '^_', ignoreRestSiblings: true },
      ],
      '@typescript-eslint/no-unused-expressions': 'off',
      'residual/no-unused-expressions': ['error', { allowShortCircuit: false, allowTernary: false, allowTaggedTemplates: false }],
      // Control characters in regular expressions are deliberate here (names and paths are validated by rejecting them).
      'no-control-regex': 'off',
      // onnxruntime-node is require()d lazily on purpose (src/engine/runtime/session.ts): its native binding is slow to load.
      '@typescript-eslint/no-require-imports': ['error', { allow: ['^onnxruntime-node$'] }],
      // Non-null assertions are used deliberately (after checks TypeScript cannot follow); recommended leaves them on.
      '@typescript-eslint/no-non-null-assertion': 'off',
      'import-x/no-cycle': ['error', { ignoreExternal: true }],
      'import-x/no-self-import': 'error',
      'import-x/no-duplicates': 'error',
    },
  },
  ...layerConfigs,
  {
    name: 'residual/node-globals',
    ignores: ['webview/**'],
    languageOptions: { globals: { ...globals.node } },
  },
  {
    name: 'residual/webview-globals',
    files: ['webview/**'],
    languageOptions: { globals: { ...globals.browser } },
  },
  {
    // The end-to-end tests run in Node but pass callbacks to the browser page (page.evaluate).
    name: 'residual/e2e-globals',
    files: ['test/e2e/**'],
    languageOptions: { globals: { ...globals.node, ...globals.browser } },
  },
  {
    name: 'residual/commonjs',
    files: ['**/*.cjs', 'bin/**/*.js'],
    languageOptions: { sourceType: 'commonjs' },
    rules: { '@typescript-eslint/no-require-imports': 'off' },
  },
);
