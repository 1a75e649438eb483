// `npm run build`: dist/pve-dm.mjs, which plain `node` runs without node_modules (for nodes
// without npm), the libraries only some runs use as chunks it imports on first use
// (dist/chunks/*.mjs), and the shipped plugins beside it as dist/plugins/*.mjs.
import { build, type Plugin } from 'esbuild';
import { mkdirSync, readdirSync, realpathSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { VERSION } from '../../pve-dm.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const require = createRequire(path.join(ROOT, 'package.json'));

const SHEBANG = `#!/usr/bin/env node
// pve-dm, bundled by \`npm run build\` from pve-dm.ts: run it with plain node.`;

// The bundled CommonJS packages (undici) call require() for Node's own modules, which an ES module
// lacks: esbuild's __require (in a shared chunk) uses this one, so every file of the split has it.
const REQUIRE = "import { createRequire as pveDmCreateRequire } from 'node:module';\n" +
  'const require = pveDmCreateRequire(import.meta.url);';

/** A shipped plugin imports only types from pve-dm.ts (erased): a value would bundle a second pve-dm into it. */
const pluginsImportOnlyTypes: Plugin = {
  name: 'plugins-import-only-types',
  setup(context) {
    context.onResolve({ filter: /^\.\.\/pve-dm\.ts$/ }, ({ importer }) => ({
      errors: [{ text: `${importer} imports a value from pve-dm.ts: a plugin imports only types (import type)` }],
    }));
  },
};

/**
 * undici is CommonJS, and in a split build esbuild gives a dynamic import() of a CommonJS module
 * only its `default` (evanw/esbuild#3245), where node gives the named exports too (pve-dm.ts takes
 * `request`). pve-dm.ts's `import('undici')` gets this ES module instead, which names them.
 */
const undiciNamedExports: Plugin = {
  name: 'undici-named-exports',
  setup(context) {
    // From the project's files only: this module's own `import undici` is the real package.
    context.onResolve({ filter: /^undici$/ }, ({ namespace }) =>
      namespace === 'file' ? { path: 'undici', namespace: 'undici-named-exports' } : undefined);
    context.onLoad({ filter: /.*/, namespace: 'undici-named-exports' }, () => {
      // undici 7 needs Node 20's global File: under Node 18 pve-dm gives it one first (loadUndici).
      if (globalThis.File === undefined) Object.assign(globalThis, { File: require('node:buffer').File });
      const names = Object.keys(require('undici')).filter((name) => name !== 'default');
      const exported = names.map((name) => `export const ${name} = undici.${name};`).join('\n');
      return { contents: `import undici from 'undici';\nexport default undici;\n${exported}\n`, resolveDir: ROOT };
    });
  },
};

export interface Bundle {
  /** The entry, dist/pve-dm.mjs. */
  file: string;
  bytes: number;
  /** The chunks the entry imports, by path from outDir (chunks/...), sorted. */
  chunks: string[];
  chunkBytes: number;
  /** The shipped plugins' files in outDir/plugins. */
  plugins: string[];
}

// Minified: Node parses every byte of what it loads, and a run lasts well under a second.
const COMMON = { bundle: true, minify: true, platform: 'node', format: 'esm', target: 'node18', logLevel: 'warning',
  legalComments: 'none' } as const;

/**
 * pve-dm.ts split by esbuild: its dynamic imports of cheerio/slim, undici and @clack/prompts become
 * chunks under chunks/, loaded only by the runs that use them; the entry keeps its own name.
 */
async function buildEntry(outDir: string): Promise<Pick<Bundle, 'file' | 'bytes' | 'chunks' | 'chunkBytes'>> {
  const built = await build({
    ...COMMON,
    entryPoints: { 'pve-dm': path.join(ROOT, 'pve-dm.ts') },
    splitting: true,
    outdir: outDir,
    chunkNames: 'chunks/[name]-[hash]',
    outExtension: { '.js': '.mjs' },
    banner: { js: REQUIRE },
    plugins: [undiciNamedExports],
    write: false,
  });
  const file = path.join(outDir, 'pve-dm.mjs');
  const chunks: string[] = [];
  let chunkBytes = 0;
  for (const output of built.outputFiles) {
    mkdirSync(path.dirname(output.path), { recursive: true });
    if (output.path !== file) {
      writeFileSync(output.path, output.contents, { mode: 0o644 });
      chunks.push(path.relative(outDir, output.path));
      chunkBytes += output.contents.length;
      continue;
    }
    // esbuild keeps the entry's `#!/usr/bin/env -S npx tsx`: the bundle starts with its own.
    writeFileSync(file, `${SHEBANG}\n${output.text.replace(/^#!.*\n/, '')}`, { mode: 0o755 });
  }
  return { file, bytes: statSync(file).size, chunks: chunks.sort(), chunkBytes };
}

export async function buildBundle(outDir = path.join(ROOT, 'dist')): Promise<Bundle> {
  rmSync(outDir, { recursive: true, force: true });
  mkdirSync(outDir, { recursive: true });
  const entry = await buildEntry(outDir);
  const sources = readdirSync(path.join(ROOT, 'plugins')).filter((name) => name.endsWith('.ts')).sort();
  await build({
    ...COMMON,
    entryPoints: sources.map((name) => path.join(ROOT, 'plugins', name)),
    outdir: path.join(outDir, 'plugins'),
    outExtension: { '.js': '.mjs' },
    plugins: [pluginsImportOnlyTypes],
  });
  return { ...entry, plugins: sources.map((name) => name.replace(/\.ts$/, '.mjs')) };
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(realpathSync(process.argv[1])).href) {
  // `npm run build [-- DIR]`: dist/ beside the project, or DIR.
  const out = process.argv[2] === undefined ? undefined : path.resolve(process.argv[2]);
  const { file, bytes, chunks, chunkBytes, plugins } = await buildBundle(out);
  const kib = (n: number) => `${(n / 1024).toFixed(0)} KiB`;
  process.stdout.write(`${path.relative(process.cwd(), file)}: pve-dm ${VERSION}, ${kib(bytes)}; ` +
    `${chunks.length} chunks, ${kib(chunkBytes)}; plugins: ${plugins.join(', ')}\n`);
}
