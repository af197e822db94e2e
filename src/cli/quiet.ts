/**
 * Imported first by main.ts, before anything else loads: stderr carries only Residual's own lines, so Node's
 * warnings (deprecations, experimental features) are not printed. With RESIDUAL_DEBUG=1 they are, as are stacks.
 */
process.removeAllListeners('warning');
process.on('warning', (w) => {
  if (process.env.RESIDUAL_DEBUG) process.stderr.write(`residual: node warning: ${w.name}: ${w.message}\n`);
});

export {};
