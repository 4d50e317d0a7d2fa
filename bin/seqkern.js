#!/usr/bin/env node
// The `seqkern` command: the compiled bench/cli.ts (`npm run build` or `tsc -p tsconfig.json` makes dist/).
let cli;
try {
  cli = await import('../dist/bench/cli.js');
} catch (e) {
  if (e?.code !== 'ERR_MODULE_NOT_FOUND') throw e;
  console.error(`seqkern: the CLI is not compiled (${e.message}).\n  fix: run \`npx tsc -p tsconfig.json\` (or \`npm run build\`) in the package folder.`);
  process.exit(1);
}
process.exitCode = await cli.main(process.argv.slice(2));
