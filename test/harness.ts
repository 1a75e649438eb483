// Shared test helpers. Every test gets a time limit (uvu has none), so a hung promise fails the
// test instead of hanging CI.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test as uvuTest } from 'uvu';
import * as assert from 'uvu/assert';
import { classify, grade, narrowToGuests, parse, type Capture, type Classification, type LiveNode, type Result } from '../pve-dm.ts';

export const PROJECT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const SAMPLES = path.join(PROJECT, 'samples');

/** A sample's expected.json: the oracle worked out by hand (samples/README.md). */
export interface Expected {
  node: string;
  grade: string;
  exitCode: number;
  summary: Record<'entries' | 'valid' | 'conflict' | 'duplicate' | 'tombstone' | 'ignored' | 'unjudged' | 'orphanLvs' | 'poolProblems', number>;
  /** Orphan LVs by `vg/lv`, in lvs order. */
  orphanLvs?: Record<string, { reason: string; active: boolean }>;
  /** Thin pools by `vg/pool`: severity, the kinds of their problems, their guests, their repair leftovers, their use (null: not known). */
  pools: Record<string, {
    active: boolean; severity: string; problems: string[]; guests: number[]; leftovers: string[]; dataPercent: number | null; metadataPercent: number | null;
  }>;
  /** VGs with a PV missing, by name. */
  volumeGroups?: Record<string, { severity: string; guests: number[] }>;
  entries: Record<string, { status: string; reason: string }>;
  guests: Record<string, string>;
  warnings: { file: string; line: number | null }[];
  /** Notes (a storage plugin pve-dm does not know): shown, but no fault; none when absent. */
  notes?: { file: string; line: number | null }[];
}
/** Every sample that has an expected.json. */
export const SAMPLE_NAMES = readdirSync(SAMPLES).filter((name) => existsSync(path.join(SAMPLES, name, 'expected.json'))).sort();
export const expectedOf = (name: string): Expected => JSON.parse(readFileSync(path.join(SAMPLES, name, 'expected.json'), 'utf8'));
export const REAL = path.join(PROJECT, 'test', 'fixtures', 'real');

export function withTimeout<T>(what: string, ms: number, work: () => T | Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    Promise.resolve().then(work),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: no result within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** uvu's test, with a time limit (default 20 s). */
export function test(name: string, body: () => unknown, timeoutMs = 20_000): void {
  uvuTest(name, async () => {
    await withTimeout(name, timeoutMs, body);
  });
}
test.run = () => uvuTest.run();

export interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** This machine's environment without its PVE_DM_* settings: a test says which settings it runs with. */
export function isolatedEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith('PVE_DM_')));
}

/** Runs pve-dm.ts as a user would, as a separate process, with its own time limit. */
export function runCli(args: string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 30_000): Promise<CliRun> {
  return runNode(['--import', 'tsx', path.join(PROJECT, 'pve-dm.ts'), ...args], { env, timeoutMs });
}
/** Plain `node` with these arguments (the bundle, say), its environment isolated as for runCli. */
export function runNode(nodeArgs: string[], { env = {}, timeoutMs = 30_000, cwd = PROJECT }: { env?: NodeJS.ProcessEnv; timeoutMs?: number; cwd?: string } = {}): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, nodeArgs, {
      cwd,
      env: { ...isolatedEnv(), NO_COLOR: undefined, FORCE_COLOR: undefined, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk) => (stdout += chunk));
    child.stderr.on('data', (chunk) => (stderr += chunk));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`node ${nodeArgs.join(' ')}: no exit within ${timeoutMs} ms`));
    }, timeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

export const describeRun = (run: CliRun) => `exit ${run.code}\n--- stdout\n${run.stdout.slice(0, 3000)}\n--- stderr\n${run.stderr.slice(0, 3000)}`;

/** A user's mistake is one line, never a stack trace or an internal error. */
export function noStackTrace(run: CliRun): void {
  assert.not.match(run.stderr, /^\s+at /m, `no stack trace: ${describeRun(run)}`);
  assert.not.match(run.stdout, /^\s+at /m, `no stack trace on stdout: ${describeRun(run)}`);
  assert.not.ok(run.stderr.includes('internal error'), `not an internal error: ${describeRun(run)}`);
}

/** Exit 3 with exactly one line on stderr, `pve-dm: ` and a message that matches; returns the message. */
export function refusedWith(run: CliRun, message?: string | RegExp): string {
  assert.is(run.code, 3, describeRun(run));
  noStackTrace(run);
  assert.ok(run.stderr.startsWith('pve-dm: ') && run.stderr.endsWith('\n') && run.stderr.split('\n').length === 2, `exactly one line on stderr: ${describeRun(run)}`);
  const line = run.stderr.slice(0, -1);
  if (typeof message === 'string') assert.is(line, `pve-dm: ${message}`);
  else if (message !== undefined) assert.match(line, message, describeRun(run));
  return line.slice('pve-dm: '.length);
}

const temporary: string[] = [];
process.on('exit', () => {
  for (const dir of temporary) rmSync(dir, { recursive: true, force: true });
});

/** A temporary directory, removed when the test file's process exits. */
export function tempDir(prefix = 'pve-dm-test-'): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  temporary.push(dir);
  return dir;
}

/** A capture in memory, for rule tests: a node `pve1` with the default storages unless given. */
export function capture(parts: Partial<Capture> & { configs?: Capture['configs'] }): Capture {
  return {
    hostname: 'pve1',
    dmsetupInfo: 'No devices found\n',
    dmsetupTable: null,
    lvs: null,
    running: null,
    system: null,
    meta: null,
    storageCfg: 'dir: local\n\tpath /var/lib/vz\n\tcontent iso,vztmpl,backup\n\nlvmthin: local-lvm\n\tthinpool data\n\tvgname pve\n\tcontent rootdir,images\n',
    configs: [],
    root: null,
    warnings: [],
    ...parts,
  };
}

/** A guest config file of a capture. */
export function config(vmid: number, text: string, { node = 'pve1', type = 'qemu' as 'qemu' | 'lxc' } = {}): Capture['configs'][number] {
  return { path: `etc/pve/nodes/${node}/${type === 'qemu' ? 'qemu-server' : 'lxc'}/${vmid}.conf`, node, type, vmid, text };
}

export { unwrapConsole } from './support/console.mjs';

/**
 * A Result as runPipeline makes it, from a capture (parsed and classified) or a classification:
 * graded, narrowed to `vmids` when given, no notification sent, no cleanup run.
 */
export function resultOf(
  from: Capture | Classification,
  { vmids = [] as number[], generatedAt = '2026-11-25T10:00:00.000Z' } = {},
): Result {
  const full = 'entries' in from ? from : classify(parse(from));
  const classification = vmids.length > 0 ? narrowToGuests(full, vmids) : full;
  const narrowed = vmids.length > 0 ? vmids : null;
  return { ...classification, ...grade(classification), generatedAt, vmids: narrowed, notifications: [], cleanup: null, cluster: null };
}

/** The lines of a console text wider than 80 columns that are more than one word (a dm name or command stays whole). */
export function overlongLines(text: string): string[] {
  const plain = text.replace(/\u001b\[[0-9;]*m/g, '');
  return plain.split('\n').filter((line) => line.length > 80 && /\S\s+\S/.test(line.trim()) && !isWholeCommand(line.trim()));
}

/** A line that is one command (a remedy kept whole), with its label. */
const isWholeCommand = (line: string) => /^(?:remedy: |would run: |on \S+: )?(?:dmsetup|lvchange|qm|pct) /.test(line) && !line.includes(' && ');

/**
 * pve-dm's main() in this process, its output captured, for what a subprocess would prove nothing
 * more about. The environment is the one runCli gives (this machine's without PVE_DM_*, plus `env`),
 * set for the call: tests in a file run one at a time.
 */
export async function runMain(argv: string[], env: NodeJS.ProcessEnv = {}, live: LiveNode = {}): Promise<CliRun> {
  let stdout = '';
  let stderr = '';
  const write = (add: (text: string) => void) => ({ write: (text: string) => (add(text), true) });
  const io = { stdout: write((t) => (stdout += t)), stderr: write((t) => (stderr += t)), isTty: false };
  const { main } = await import('../pve-dm.ts');
  const saved = process.env;
  process.env = Object.fromEntries(Object.entries({ ...isolatedEnv(), ...env }).filter(([, value]) => value !== undefined));
  try {
    return { code: await main(argv, io, live), stdout, stderr };
  } finally {
    process.env = saved;
  }
}
