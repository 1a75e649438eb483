// The HTML reports in a real browser (issue 18; npm run test:browser runs this file through
// test/browser/browser-test.sh). Every sample's report and the clusters' (samples/cluster-migrated*
// as three --root, samples/cluster-stale* as two) is rendered in this process and opened from file://
// in Debian's headless Chromium, driven by playwright-core (which never downloads a browser of its
// own). At 1280 and 400 px wide: a full-page screenshot into test/browser/screenshots/ (CI keeps
// them), nothing past the right edge, the headline, the grade and every remedy visible and whole,
// names and remedies wrapped only at a space, and axe-core with no serious or critical violation. The
// page is one self-contained file: any other request is blocked and counted, and must not happen.
// Named *.browser.ts so that npm test (test/run.mjs, *.test.ts) leaves it to its own tier.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { chromium, type Browser, type Page } from 'playwright-core';
import { test as uvuTest } from 'uvu';
import * as assert from 'uvu/assert';
import { describeRun, PROJECT, runMain, SAMPLE_NAMES, SAMPLES, tempDir, test } from '../harness.ts';
import {
  breaksInNames,
  GRADE,
  HEADLINE,
  measureLayout,
  NAMES,
  REMEDIES,
  runAxe,
  SUBPIXEL,
  visibility,
  type Break,
  type Layout,
  type Shown,
  type Violation,
} from './page-facts.ts';

const CHROMIUM = '/usr/bin/chromium';
const WIDTHS = [1280, 400] as const;
/** A phone's screen height: at 400 px wide the headline must still be on the first screen. */
const HEIGHT = 800;
const SCREENSHOTS = path.join(PROJECT, 'test', 'browser', 'screenshots');
const AXE = readFileSync(path.join(PROJECT, 'node_modules', 'axe-core', 'axe.min.js'), 'utf8');
const CLUSTER = ['cluster-migrated', 'cluster-migrated-pve2', 'cluster-migrated-pve3'];
/** The two nodes whose tables of one shared LV differ (a stale table in a cluster finding). */
const STALE_CLUSTER = ['cluster-stale', 'cluster-stale-pve2'];
/** Every capture in samples/ (each has an expected.json and is analysed alone), then the clusters. */
const PAGES = [
  ...SAMPLE_NAMES.map((name) => ({ name, roots: [name] })),
  { name: 'cluster', roots: CLUSTER },
  { name: 'cluster-stale-both', roots: STALE_CLUSTER },
];
const HTML = tempDir('pve-dm-browser-');
/**
 * tsx compiles with esbuild's keepNames, which wraps a named inner function in __name(fn, 'name');
 * page.evaluate sends a function's source to the page, where __name does not exist. The page gets
 * one that does nothing.
 */
const KEEP_NAMES = 'globalThis.__name = (fn) => fn;';

/** What a page showed at one width. */
interface AtWidth {
  screenshot: string;
  layout: Layout;
  headline: Shown[];
  grade: Shown[];
  remedies: Shown[];
  breaks: Break[];
  violations: Violation[];
}
interface Visit {
  /** Every request but the page's own file, blocked. */
  requests: string[];
  widths: Map<number, AtWidth>;
}

let browser: Promise<Browser> | undefined;
// --no-sandbox: Chromium will not start as root with its sandbox on, and this tier runs as root.
const launched = () => (browser ??= chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] }));
uvuTest.after(async () => {
  if (browser !== undefined) await (await browser).close();
});

/** Opens an HTML file in a fresh browser context, every other request blocked, and looks at it at each width. */
async function visit(file: string, shots: string, name: string): Promise<Visit> {
  const context = await (await launched()).newContext({ viewport: { width: WIDTHS[0], height: HEIGHT } });
  try {
    const url = pathToFileURL(file).href;
    const requests: string[] = [];
    context.on('request', (request) => {
      if (request.url() !== url) requests.push(request.url());
    });
    await context.route('**/*', (route) =>
      route.request().url() === url ? route.continue() : route.abort('blockedbyclient'),
    );
    await context.addInitScript(KEEP_NAMES);
    const page = await context.newPage();
    await page.goto(url, { waitUntil: 'load' });
    const widths = new Map<number, AtWidth>();
    for (const width of WIDTHS) widths.set(width, await atWidth(page, width, path.join(shots, `${name}-${width}.png`)));
    return { requests, widths };
  } finally {
    await context.close();
  }
}

/** The page at one width: measured first, then photographed, then axe-core, which adds its script. */
async function atWidth(page: Page, width: number, screenshot: string): Promise<AtWidth> {
  await page.setViewportSize({ width, height: HEIGHT });
  const shown = (selector: string, firstScreen: boolean) =>
    page.evaluate(visibility, { selector, slack: SUBPIXEL, firstScreen });
  const layout = await page.evaluate(measureLayout, SUBPIXEL);
  const [headline, grade, remedies] = [
    await shown(HEADLINE, true),
    await shown(GRADE, true),
    await shown(REMEDIES, false),
  ];
  const breaks = await page.evaluate(breaksInNames, NAMES);
  await page.screenshot({ path: screenshot, fullPage: true });
  if (!(await page.evaluate(() => 'axe' in window))) await page.addScriptTag({ content: AXE });
  return { screenshot, layout, headline, grade, remedies, breaks, violations: await page.evaluate(runAxe) };
}

/** The parts of the --json report that name remedies: one node's, or a cluster's (its nodes, its findings). */
interface NodeReport {
  entries: { status: string; remedy: string | null }[];
  orphanLvs: { remedy: string | null }[];
  pools: { problems: { remedy: string | null }[] }[];
}
type Report = NodeReport | { nodes: NodeReport[]; cluster: { findings: { activeOn: { remedy: string | null }[] }[] } };

/** How many remedies the report's data holds: the page must show each (REMEDIES finds them). */
function remedyCount(report: Report): number {
  const given = (items: { remedy: string | null }[]) => items.filter((item) => item.remedy !== null).length;
  const ofNode = (node: NodeReport) =>
    given(node.entries.filter((entry) => entry.status === 'conflict' || entry.status === 'duplicate' || entry.status === 'tombstone')) +
    given(node.orphanLvs) +
    given(node.pools.flatMap((pool) => pool.problems));
  if (!('nodes' in report)) return ofNode(report);
  const nodes = report.nodes.reduce((sum, node) => sum + ofNode(node), 0);
  return nodes + given(report.cluster.findings.flatMap((finding) => finding.activeOn));
}

/** A sample's report (or the cluster's), written as --html writes it, with its --json data. */
async function render(name: string, roots: string[]): Promise<{ file: string; report: Report }> {
  const file = path.join(HTML, `${name}.html`);
  const args = [...roots.flatMap((root) => ['--root', path.join(SAMPLES, root)]), '--report-only', '--json'];
  const run = await runMain([...args, '--no-plugins', '--html', file]);
  if (run.code === null || run.code > 2 || !existsSync(file))
    throw new Error(`${name}: no report: ${describeRun(run)}`);
  return { file, report: JSON.parse(run.stdout) as Report };
}

const listed = (lines: string[]) => lines.map((line) => `\n    ${line}`).join('');

function checkLayout(where: string, { layout }: AtWidth): void {
  const { clientWidth, scrollWidth, count, outermost } = layout;
  const shown = outermost
    .slice(0, 20)
    .map(
      (o) =>
        `<${o.tag}${o.data ? ` ${o.data}` : ''}> in ${o.within || 'the page'}` +
        ` to ${o.right} px: ${JSON.stringify(o.text)}`,
    );
  const more = outermost.length > 20 ? [`and ${outermost.length - 20} more`] : [];
  assert.ok(
    count === 0,
    `${where}: ${count} element(s) end past the right edge (${clientWidth} px); ` +
      `the outermost ${outermost.length}:${listed([...shown, ...more])}`,
  );
  assert.ok(
    scrollWidth <= clientWidth,
    `${where}: the document scrolls sideways (${scrollWidth} px in ${clientWidth})`,
  );
}

function checkShown(where: string, what: string, shown: Shown[], expected: number): void {
  assert.is(shown.length, expected, `${where}: ${expected} ${what} expected on the page, ${shown.length} found`);
  const hidden = shown.filter((s) => s.problems.length > 0 || s.text === '');
  const lines = hidden.map((s) => `${JSON.stringify(s.text)}: ${s.problems.join('; ') || 'empty'}`);
  assert.ok(
    hidden.length === 0,
    `${where}: ${hidden.length} of ${shown.length} ${what} not visible whole:${listed(lines)}`,
  );
}

const violationLine = (v: Violation) =>
  `${v.id} (${v.impact}): ${v.help}; ${v.nodes} node(s), first ${v.target}: ${v.html} (${v.why})`;

function checkAxe(where: string, violations: Violation[]): void {
  for (const v of violations) console.log(`[axe] ${where}: ${violationLine(v)}`);
  const grave = violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  assert.ok(
    grave.length === 0,
    `${where}: axe-core, ${grave.length} serious or critical:${listed(grave.map(violationLine))}`,
  );
}

/** One report's tests: rendered and visited once (by the first test), then each check on its own. */
function reportTests(name: string, roots: string[]): void {
  let seen: Promise<{ report: Report; visit: Visit }> | undefined;
  const get = () =>
    (seen ??= render(name, roots).then(async ({ file, report }) => ({
      report,
      visit: await visit(file, SCREENSHOTS, name),
    })));
  test(`${name}: the report renders and opens`, () => get(), 120_000);
  for (const width of WIDTHS) {
    const where = `${name} at ${width} px`;
    const at = async () => (await get()).visit.widths.get(width)!;
    test(`${where}: a full-page screenshot`, async () => {
      const file = (await at()).screenshot;
      assert.ok(existsSync(file) && statSync(file).size > 0, `${where}: ${file} written`);
    });
    test(`${where}: nothing past the right edge, no sideways scroll`, async () => checkLayout(where, await at()));
    test(`${where}: the headline and the grade are visible`, async () => {
      checkShown(where, 'headline', (await at()).headline, 1);
      checkShown(where, 'grade', (await at()).grade, 1);
    });
    test(`${where}: every remedy is visible, whole`, async () => {
      checkShown(where, 'remedies', (await at()).remedies, remedyCount((await get()).report));
    });
    test(`${where}: names and remedies wrap only at a space`, async () => {
      const lines = (await at()).breaks.map((b) => `${b.at} in ${JSON.stringify(b.text)}`);
      assert.ok(lines.length === 0, `${where}: ${lines.length} line break(s) inside a name:${listed(lines)}`);
    });
    test(`${where}: axe-core, no serious or critical violation`, async () => checkAxe(where, (await at()).violations));
  }
  test(`${name}: no request but for the report's own file`, async () => {
    const { requests } = (await get()).visit;
    assert.ok(requests.length === 0, `${name}: ${requests.length} request(s), blocked:${listed(requests)}`);
  });
}

test(`the driver runs Debian's Chromium, ${CHROMIUM}`, async () => {
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} installed (apt-get install chromium)`);
  const said = execFileSync(CHROMIUM, ['--version'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  const version = (await launched()).version();
  const tools = (name: string) =>
    JSON.parse(readFileSync(path.join(PROJECT, 'node_modules', name, 'package.json'), 'utf8'));
  console.log(
    `[browser] ${said}; playwright-core ${tools('playwright-core').version}, axe-core ${tools('axe-core').version}`,
  );
  assert.ok(said.includes(` ${version} `), `the browser launched is ${version}; ${CHROMIUM} says ${said}`);
}, 60_000);

test('the checks find what they look for, on a page with every defect', async () => {
  const dir = tempDir('pve-dm-browser-canary-');
  const file = path.join(dir, 'canary.html');
  writeFileSync(file, CANARY);
  const { requests, widths } = await visit(file, dir, 'canary');
  const narrow = widths.get(400)!;
  // axe-core fetches a page's style sheets again (to read their rules): a URL may come more than once.
  assert.equal([...new Set(requests.map((url) => path.basename(url)))].sort(), ['pixel.png', 'style.css'], 'both seen');
  assert.ok(
    narrow.layout.outermost.some((o) => o.data === 'data-wide'),
    'the wide block past the edge',
  );
  assert.ok(narrow.layout.scrollWidth > narrow.layout.clientWidth, 'the document scrolls sideways');
  assert.match(narrow.headline[0]?.problems.join() ?? '', /hidden/, 'the hidden headline');
  assert.match(narrow.remedies[0]?.problems.join() ?? '', /cut off by <div>/, 'the clipped remedy');
  assert.match(narrow.remedies[1]?.problems.join() ?? '', /its own text cut off/, 'the remedy in a scrolling box');
  assert.match(narrow.breaks.map((b) => b.at).join(), /-\|-?ha01/, 'the name broken after a hyphen');
  assert.ok(
    narrow.violations.some((v) => v.id === 'image-alt' && v.impact === 'critical'),
    'axe: the image without alt',
  );
}, 60_000);

/**
 * Each defect the checks look for, once: two requests, a hidden headline, a block too wide, a name
 * broken at a hyphen, a remedy clipped by its cell, and one in a box of its own that scrolls (only
 * its start in sight).
 */
const CANARY = `<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>canary</title>
<link rel="stylesheet" href="https://example.invalid/style.css"></head><body>
<div data-header><span data-field="grade">F</span> <strong style="visibility:hidden">headline</strong></div>
<img src="pixel.png"><div data-wide style="width:600px">wide</div>
<p style="width:90px">name <code>ssd--ha01-vm--170--disk--2</code></p>
<table><tr data-entry><td><div style="width:40px;overflow:hidden">
<code>lvchange -an pve/vm-100-disk-0</code></div></td></tr><tr data-entry><td>
<code style="display:inline-block;max-width:80px;overflow-x:auto;white-space:nowrap">dmsetup remove pve-vm--100</code>
</td></tr></table>
</body></html>`;

// Screenshots of this run only: a sample removed leaves no stale picture behind.
mkdirSync(SCREENSHOTS, { recursive: true });
for (const old of readdirSync(SCREENSHOTS)) if (old.endsWith('.png')) rmSync(path.join(SCREENSHOTS, old));
for (const { name, roots } of PAGES) reportTests(name, roots);
test.run();
