#!/usr/bin/env node
// The `residual` command: a thin launcher for the bundled CLI (npm run build makes dist/cli.js).
const path = require('node:path');
const fs = require('node:fs');
const cli = path.join(__dirname, '..', 'dist', 'cli.js');
if (!fs.existsSync(cli)) {
  process.stderr.write(`residual: ${cli} is missing; run \`npm run build\` first\n`);
  process.exit(2);
}
require(cli);
