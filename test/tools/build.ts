// `npm run build`: dist/pve-dm.mjs, one file that plain `node` runs without node_modules (for
// nodes without npm), and the shipped plugins beside it as dist/plugins/*.mjs.
import { build, type Plugin } from 'esbuild';
import { mkdirSync, readdirSync, realpathSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { VERSION } from '../../pve-dm.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

const LIBRARY_MARKER = '//pve-dm-library ';

// The bundled CommonJS packages (undici) call require() for Node's own modules. pveDmLibrary
// reads the text of a library compiled on use from the bundle's own last lines.
const BANNER = `#!/usr/bin/env node
// pve-dm, bundled by \`npm run build\` from pve-dm.ts: run it with plain node.
import { createRequire as pveDmCreateRequire } from 'node:module';
import { readFileSync as pveDmReadFileSync } from 'node:fs';
const require = pveDmCreateRequire(import.meta.url);
const pveDmLibrary = (name) => {
  const bundle = pveDmReadFileSync(new URL(import.meta.url), 'utf8');
  const marker = \`\\n${LIBRARY_MARKER}\${name} \`;
  const at = bundle.indexOf(marker);
  if (at < 0) throw new Error(\`\${new URL(import.meta.url).pathname} lacks its copy of \${name}: build it again (npm run build)\`);
  return JSON.parse(bundle.slice(at + marker.length, bundle.indexOf('\\n', at + marker.length)));
};`;

/**
 * The libraries only some runs use (cheerio for --html, undici for notifiers, @clack/prompts for
 * the interactive cleanup) travel in the bundle as text, compiled when first imported: V8 parses
 * every byte of a module as it loads, and these are nine tenths of the bundle (about 40 ms of every
 * start here). Each is bundled alone as CommonJS; its text is run as the body of a function given
 * `module`, `exports` and the bundle's `require` (for Node's own modules only). The texts are the
 * bundle's last lines, each one JSON string in a `//` comment: V8 skips a comment faster than it
 * scans a string literal (about 6 ms of every start), and the bundle reads them back when used.
 */
const COMPILED_ON_USE = { 'cheerio/slim': 'load', undici: 'request', '@clack/prompts': 'multiselect' } as const;

/** A library's line at the end of the bundle: JSON, with the line separators a comment would end at escaped. */
const libraryLine = (specifier: string, source: string) =>
  `${LIBRARY_MARKER}${specifier} ${JSON.stringify(source).replace(/\u2028/g, '\\u2028').replace(/\u2029/g, '\\u2029')}`;

async function compiledOnUse(common: object): Promise<{ plugin: Plugin; lines: string[] }> {
  const sources = new Map<string, string>();
  for (const [specifier, used] of Object.entries(COMPILED_ON_USE)) {
    const built = await build({ ...common, format: 'cjs', write: false, stdin: { contents: `module.exports = require(${JSON.stringify(specifier)});`, resolveDir: ROOT } });
    const source = built.outputFiles[0]?.text ?? '';
    // Checked here rather than on a node at night: the text runs and gives what pve-dm uses.
    // undici 7 needs Node 20's global File: under Node 18 pve-dm gives it one first (loadUndici).
    if (globalThis.File === undefined) Object.assign(globalThis, { File: (await import('node:buffer')).File });
    const module = { exports: {} as Record<string, unknown> };
    new Function('module', 'exports', 'require', source)(module, module.exports, createRequire(import.meta.url));
    if (typeof module.exports[used] !== 'function') throw new Error(`${specifier}, bundled alone, has no ${used}()`);
    sources.set(specifier, source);
  }
  const plugin: Plugin = {
    name: 'compiled-on-use',
    setup(context) {
      const filter = new RegExp(`^(?:${[...sources.keys()].map((specifier) => specifier.replace(/[/.]/g, '\\$&')).join('|')})$`);
      context.onResolve({ filter }, ({ path: specifier }) => ({ path: specifier, namespace: 'compiled-on-use' }));
      context.onLoad({ filter: /.*/, namespace: 'compiled-on-use' }, ({ path: specifier }) => ({
        loader: 'js',
        contents: `const library = { exports: {} };
new Function('module', 'exports', 'require', pveDmLibrary(${JSON.stringify(specifier)}))(library, library.exports, require);
module.exports = library.exports;`,
      }));
    },
  };
  return { plugin, lines: [...sources].map(([specifier, source]) => libraryLine(specifier, source)) };
}

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
  const common = { bundle: true, minify: true, platform: 'node', format: 'esm', target: 'node18', logLevel: 'warning', legalComments: 'none' } as const;
  const file = path.join(outDir, 'pve-dm.mjs');
  const libraries = await compiledOnUse(common);
  const bundle = await build({ ...common, entryPoints: [path.join(ROOT, 'pve-dm.ts')], write: false, outfile: file, plugins: [libraries.plugin] });
  // esbuild keeps the entry's `#!/usr/bin/env -S npx tsx`: the bundle starts with its own.
  const text = (bundle.outputFiles[0]?.text ?? '').replace(/^#!.*\n/, '');
  writeFileSync(file, `${BANNER}\n${text}\n${libraries.lines.join('\n')}\n`, { mode: 0o755 });
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
  // `npm run build [-- DIR]`: dist/ beside the project, or DIR.
  const { file, bytes, plugins } = await buildBundle(process.argv[2] === undefined ? undefined : path.resolve(process.argv[2]));
  process.stdout.write(`${path.relative(process.cwd(), file)}: pve-dm ${VERSION}, ${(bytes / 1024).toFixed(0)} KiB; plugins: ${plugins.join(', ')}\n`);
}
