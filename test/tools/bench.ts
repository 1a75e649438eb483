// `npm run bench [-- --runs N --sizes 50,500,5000 --against REV]`: generated captures
// (test/tools/gen-capture.ts) analysed as cron would, whole process and stage by stage, against the
// targets of issue 5, and what the stale-table check of issue 19 adds; with --against, the bundle of git revision REV and this one on the largest
// capture, run by run in turn. Measures; never asserts speed in a test.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { writeCapture } from '../../pve-dm.ts';
import { buildBundle } from './build.ts';
import { generateCapture } from './gen-capture.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const { values } = parseArgs({
  options: { runs: { type: 'string', default: '7' }, sizes: { type: 'string', default: '50,500,5000' }, against: { type: 'string' } },
});
const runs = Number(values.runs);
const sizes = values.sizes.split(',').map(Number);

// The child reports its own peak RSS as it exits: no external tool needed.
const PEAK_RSS_HOOK = `data:text/javascript,${encodeURIComponent("import { writeSync } from 'node:fs'; process.on('exit', () => writeSync(2, `\\n@peak-rss-kib ${process.resourceUsage().maxRSS}\\n`));")}`;
const LAUNCHERS = {
  'node dist/pve-dm.mjs': (bundle: string) => [bundle],
  'node --import tsx pve-dm.ts': () => ['--import', 'tsx', path.join(ROOT, 'pve-dm.ts')],
};

/**
 * Runs get the environment cron gives a job on Debian (and a systemd timer's is as bare): the
 * shell's may hold what a Proxmox node's cron job never has, such as NODE_EXTRA_CA_CERTS, which
 * makes node read and parse a certificate bundle before any of pve-dm runs.
 */
const CRON_ENV = { HOME: os.homedir(), LOGNAME: os.userInfo().username, PATH: '/usr/bin:/bin', SHELL: '/bin/sh' };

const median = (numbers: number[]) => [...numbers].sort((a, b) => a - b)[Math.floor((numbers.length - 1) / 2)] ?? NaN;

function timeProcess(args: string[], env: NodeJS.ProcessEnv = CRON_ENV): { ms: number; rssMiB: number } {
  const started = performance.now();
  const child = spawnSync(process.execPath, ['--import', PEAK_RSS_HOOK, ...args], { encoding: 'utf8', maxBuffer: 1 << 30, cwd: ROOT, env });
  const ms = performance.now() - started;
  const rss = /@peak-rss-kib (\d+)/.exec(child.stderr)?.[1];
  if (child.status === 3 || rss === undefined) throw new Error(`${args.join(' ')} failed (exit ${child.status}): ${child.stderr.slice(0, 500)}`);
  return { ms, rssMiB: Number(rss) / 1024 };
}

const work = mkdtempSync(path.join(os.tmpdir(), 'pve-dm-bench-'));
process.on('exit', () => rmSync(work, { recursive: true, force: true }));
const { file: bundle, bytes, chunks, chunkBytes } = await buildBundle();
const kib = (n: number) => `${(n / 1024).toFixed(0)} KiB`;
process.stdout.write(
  `bundle ${path.relative(ROOT, bundle)}: ${kib(bytes)}, and ${chunks.length} chunks loaded on use: ` +
    `${kib(chunkBytes)}; ${runs} runs each; ${os.cpus().length} CPUs, node ${process.version}\n`,
);
const startUp = (env: NodeJS.ProcessEnv) => median(Array.from({ length: runs }, () => timeProcess(['-e', '0'], env).ms)).toFixed(0);
const shellOnly = Object.keys(process.env).filter((name) => name.startsWith('NODE_')).sort();
process.stdout.write(
  `runs have cron's environment (${Object.keys(CRON_ENV).join(', ')}); node starts in ${startUp(CRON_ENV)} ms there` +
    (shellOnly.length > 0 ? `, in ${startUp(process.env)} ms with this shell's (${shellOnly.join(', ')})` : '') +
    '\n\n',
);

interface Row { guests: number; entries: number; launcher: string; report: string; ms: number; fastest: number; slowest: number; rssMiB: number }
const rows: Row[] = [];
const stageRows: { guests: number; stages: Record<string, number> }[] = [];
for (const guests of sizes) {
  const capture = path.join(work, `guests-${guests}`);
  const generated = generateCapture({ guests });
  await writeCapture(capture, generated.capture);
  const html = path.join(work, `report-${guests}.html`);
  for (const [launcher, argsOf] of Object.entries(LAUNCHERS)) {
    for (const [report, extra] of [['json', []], ['json + html', ['--html', html]]] as const) {
      const samples = Array.from({ length: runs }, () => timeProcess([...argsOf(bundle), '--root', capture, '--report-only', '--json', ...extra]));
      const ms = samples.map((s) => s.ms);
      rows.push({ guests, entries: generated.expected.entries, launcher, report, ms: median(ms), fastest: Math.min(...ms), slowest: Math.max(...ms), rssMiB: Math.max(...samples.map((s) => s.rssMiB)) });
    }
  }
  if (guests === Math.max(...sizes)) await writeCapture(`${capture}-unchecked`, { ...generated.capture, lvsSegments: null, pvs: null });
  const stageSamples = Array.from({ length: runs }, () => {
    const child = spawnSync(process.execPath, ['--import', 'tsx', path.join(ROOT, 'test/tools/stage-times.ts'), capture], { encoding: 'utf8', cwd: ROOT });
    return JSON.parse(child.stdout) as Record<string, number>;
  });
  const names = Object.keys(stageSamples[0] ?? {});
  stageRows.push({ guests, stages: Object.fromEntries(names.map((name) => [name, median(stageSamples.map((s) => s[name] ?? NaN))])) });
}

/** Two commands run by run in turn, `runs` times each (the machine's speed drifts): each one's samples. */
function inTurn(first: string[], second: string[]): [{ ms: number; rssMiB: number }[], { ms: number; rssMiB: number }[]] {
  const samples: [{ ms: number; rssMiB: number }[], { ms: number; rssMiB: number }[]] = [[], []];
  for (let i = 0; i < runs * 2; i++) samples[i % 2]?.push(timeProcess(i % 2 === 0 ? first : second));
  return samples;
}

/**
 * The bundle of git revision `rev` against this one on one capture, in turn run by run (the
 * machine's speed drifts): both medians, and the median of the per-run ratios.
 */
function against(rev: string, capture: string): string {
  const tree = path.join(work, 'against');
  execFileSync('git', ['worktree', 'add', '--detach', '-f', tree, rev], { cwd: ROOT, stdio: 'ignore' });
  try {
    symlinkSync(path.join(ROOT, 'node_modules'), path.join(tree, 'node_modules'));
    execFileSync(process.execPath, ['--import', 'tsx', 'test/tools/build.ts'], { cwd: tree, stdio: 'ignore' });
    const json = ['--root', capture, '--report-only', '--json', '--no-plugins'];
    const [old, now] = inTurn([path.join(tree, 'dist/pve-dm.mjs'), ...json], [bundle, ...json]).map((samples) => samples.map((s) => s.ms)) as [number[], number[]];
    const ratios = now.map((ms, i) => ms / (old[i] ?? NaN));
    return (
      `${rev} → this tree, ${path.basename(capture)}, JSON, ${runs} runs each in turn: median ` +
      `${median(old).toFixed(0)} ms → ${median(now).toFixed(0)} ms; median ratio ${median(ratios).toFixed(3)}\n`
    );
  } finally {
    execFileSync('git', ['worktree', 'remove', '--force', tree], { cwd: ROOT, stdio: 'ignore' });
  }
}

/**
 * What the stale-table check costs (issue 19): the same capture with and without lvs --segments and
 * pvs (two more processes in discovery, about 3 MB more to read at 5,000 guests), run by run in turn.
 */
function staleTableCost(capture: string): string {
  const json = (root: string) => [bundle, '--root', root, '--report-only', '--json', '--no-plugins'];
  const [without, withFiles] = inTurn(json(`${capture}-unchecked`), json(capture));
  const ms = (samples: { ms: number }[]) => median(samples.map((s) => s.ms));
  const rss = (samples: { rssMiB: number }[]) => Math.max(...samples.map((s) => s.rssMiB));
  const ratios = withFiles.map((s, i) => s.ms / (without[i]?.ms ?? NaN));
  return (
    `${path.basename(capture)}, JSON, ${runs} runs each in turn: without lvs-segments.txt and pvs.txt ` +
    `${ms(without).toFixed(0)} ms, ${rss(without).toFixed(0)} MiB; with them (every table checked) ` +
    `${ms(withFiles).toFixed(0)} ms, ${rss(withFiles).toFixed(0)} MiB; median ratio ${median(ratios).toFixed(3)}\n`
  );
}

const pad = (cells: (string | number)[], widths: number[]) => cells.map((cell, i) => String(cell)[i < 2 ? 'padStart' : 'padEnd'](widths[i] ?? 0)).join('  ');
// The runs' spread beside the median: this machine's speed varies from minute to minute.
const widths = [7, 7, 28, 12, 14, 18, 13, 14];
process.stdout.write(`${pad(['guests', 'entries', 'launcher', 'report', 'median wall ms', 'ms per 1,000 entries', 'peak RSS MiB', 'runs ms'], widths)}\n`);
for (const r of rows) {
  process.stdout.write(`${pad([r.guests, r.entries, r.launcher, r.report, r.ms.toFixed(0), (r.ms / (r.entries / 1000)).toFixed(1), r.rssMiB.toFixed(0), `${r.fastest.toFixed(0)}–${r.slowest.toFixed(0)}`], widths)}\n`);
}
const stageNames = Object.keys(stageRows[0]?.stages ?? {});
process.stdout.write(`\nInside the process (median ms of ${runs} cold runs):\n${pad(['guests', '', ...stageNames], [7, 0, ...stageNames.map(() => 9)])}\n`);
for (const s of stageRows) process.stdout.write(`${pad([s.guests, '', ...stageNames.map((name) => (s.stages[name] ?? NaN).toFixed(0))], [7, 0, ...stageNames.map(() => 9)])}\n`);

const row = (guests: number, launcher: string, report: string) => rows.find((r) => r.guests === guests && r.launcher === launcher && r.report === report);
const largest = Math.max(...sizes);
const tenth = sizes.find((size) => size * 10 === largest);
const inProcess = (guests: number | undefined) => {
  const stages = stageRows.find((s) => s.guests === guests)?.stages ?? {};
  return ['discover', 'parse', 'classify', 'grade', 'report'].reduce((sum, name) => sum + (stages[name] ?? NaN), 0);
};
const bundled = row(largest, 'node dist/pve-dm.mjs', 'json')?.ms ?? NaN;
// null: not measured by this run (the linear target needs two sizes ten times apart, as the default has).
const targets: [string, boolean | null][] = [
  [`${largest} guests, report-only JSON with the bundle: ${bundled.toFixed(0)} ms < 1,000 ms`, bundled < 1000],
  tenth === undefined
    ? [`ten times the guests: needs two sizes ten times apart (--sizes ${sizes.join(',')})`, null]
    : [`ten times the guests (${tenth} → ${largest}), inside the process: ×${(inProcess(largest) / inProcess(tenth)).toFixed(1)} ≤ ×12`, inProcess(largest) / inProcess(tenth) <= 12],
  [`HTML report for ${largest} guests rendered and validated: ${(stageRows.find((s) => s.guests === largest)?.stages.html ?? NaN).toFixed(0)} ms < 2,000 ms`, (stageRows.find((s) => s.guests === largest)?.stages.html ?? Infinity) < 2000],
];
process.stdout.write(`\nTargets:\n${targets.map(([text, met]) => `  ${met === null ? 'n/a   ' : met ? 'met   ' : 'MISSED'}  ${text}`).join('\n')}\n`);
process.stdout.write(`\nThe stale-table check:\n  ${staleTableCost(path.join(work, `guests-${largest}`))}`);
if (values.against !== undefined)
  process.stdout.write(`\nAgainst an older bundle:\n  ${against(values.against, path.join(work, `guests-${largest}`))}`);
process.exitCode = targets.every(([, met]) => met !== false) ? 0 : 1;
