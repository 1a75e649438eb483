// `npm run build`: dist/pve-dm.mjs, one file that plain `node` runs without node_modules (for
// nodes without npm), and the shipped plugins beside it as dist/plugins/*.mjs.
import { build, type Plugin } from 'esbuild';
import { mkdirSync, readdirSync, realpathSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { VERSION } from '../../pve-dm.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

// The bundled CommonJS packages (undici) call require() for Node's own modules.
const BANNER = `#!/usr/bin/env node
// pve-dm, bundled by \`npm run build\` from pve-dm.ts: run it with plain node.
import { createRequire as pveDmCreateRequire } from 'node:module';
const require = pveDmCreateRequire(import.meta.url);`;

/** A plugin's `import ... from '../pve-dm.ts'` becomes the bundle itself, loaded once. */
const pluginsImportTheBundle: Plugin = {
  name: 'plugins-import-the-bundle',
  setup(context) {
    context.onResolve({ filter: /^\.\.\/pve-dm\.ts$/ }, () => ({ path: '../pve-dm.mjs', external: true }));
  },
};

export async function buildBundle(outDir = path.join(ROOT, 'dist')): Promise<{ file: string; bytes: number; plugins: string[] }> {
  rmSync(outDir, { recursive: true, force: true });
  mkdirSync(outDir, { recursive: true });
  // Minified: Node parses every byte at start-up, and a run lasts well under a second.
  const common = { bundle: true, minify: true, platform: 'node', format: 'esm', target: 'node20', logLevel: 'warning', legalComments: 'none' } as const;
  const file = path.join(outDir, 'pve-dm.mjs');
  const bundle = await build({ ...common, entryPoints: [path.join(ROOT, 'pve-dm.ts')], write: false, outfile: file });
  // esbuild keeps the entry's `#!/usr/bin/env -S npx tsx`: the bundle starts with its own.
  const text = (bundle.outputFiles[0]?.text ?? '').replace(/^#!.*\n/, '');
  writeFileSync(file, `${BANNER}\n${text}`, { mode: 0o755 });
  const sources = readdirSync(path.join(ROOT, 'plugins')).filter((name) => name.endsWith('.ts')).sort();
  await build({
    ...common,
    entryPoints: sources.map((name) => path.join(ROOT, 'plugins', name)),
    outdir: path.join(outDir, 'plugins'),
    outExtension: { '.js': '.mjs' },
    plugins: [pluginsImportTheBundle],
  });
  return { file, bytes: statSync(file).size, plugins: sources.map((name) => name.replace(/\.ts$/, '.mjs')) };
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(realpathSync(process.argv[1])).href) {
  const { file, bytes, plugins } = await buildBundle();
  process.stdout.write(`${path.relative(process.cwd(), file)}: pve-dm ${VERSION}, ${(bytes / 1024).toFixed(0)} KiB; plugins: ${plugins.join(', ')}\n`);
}
