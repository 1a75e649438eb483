#!/usr/bin/env -S npx tsx
/**
 * pve-dm: find, explain and safely clear stale device-mapper entries on a Proxmox VE node.
 *
 * One pipeline, one section per stage:
 *   discover → parse → classify → grade → report → cleanup
 * Each stage is a plain function from a typed input to a typed output (see `Stages`), so that a
 * plugin can replace or wrap it. Facts this file relies on are referenced to their Proxmox / LVM
 * source in README.md ("How pve-dm decides").
 *
 * Sections, in this order:
 *   The pipeline       Stages, runPipeline, runCluster, main
 *   Errors             UserError, warnings with file and line
 *   Capture            the node's state as data, and its files
 *   Stage 1 discover   a capture directory, or the live node with a fixed number of processes
 *   Stage 2 parse      one parser per format
 *   Stage 3 classify   entries, duplicate sets, orphan LVs, thin pools and VGs
 *   Stage 4 grade      A+ to F and the exit code
 *   Stage 5 report     console, JSON, HTML, Nagios, Checkmk, Prometheus
 *   Stage 6 cleanup    plan, journal, execute, restore
 *   Plugins            the Plugin type, stage hooks, settings, notifiers and their context
 *   Command runner     the one runner every command that changes the system goes through
 *   Cluster            several nodes' results and what only the cluster shows
 *   Command line       options, parsing, and main's steps
 */
import { execFile, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  closeSync,
  constants,
  type Dirent,
  existsSync,
  fstatSync,
  fsyncSync,
  ftruncateSync,
  lstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  readSync,
  realpathSync,
  statSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import fsPromises, { mkdir, open, readFile, readdir, readlink, writeFile, rename, unlink } from 'node:fs/promises';
import { isIPv4, isIPv6 } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import util from 'node:util';
import { closest, distance } from 'fastest-levenshtein';
import { match } from 'ts-pattern';

// Debian 12 (Proxmox VE 8) ships Node.js 18.20. An older one gets one line, not a stack trace from
// an API it lacks: the built-ins newer than Node 16 (fs statfs, util parseArgs) are not imported by name.
const [NODE_MAJOR = 0, NODE_MINOR = 0] = process.versions.node.split('.').map(Number);
if (NODE_MAJOR < 18 || (NODE_MAJOR === 18 && NODE_MINOR < 19)) {
  process.stderr.write(`pve-dm: needs Node.js 18.19 or newer; this is ${process.versions.node} (apt install nodejs)\n`);
  process.exit(3);
}

export const VERSION = '0.1.0';
const HERE = path.dirname(fileURLToPath(import.meta.url));
/** Running as the plain-node bundle (`npm run build`: dist/pve-dm.mjs), not as pve-dm.ts under tsx. */
const BUNDLED = !import.meta.url.endsWith('.ts');

/** Where pve-dm reads its settings and plugins and writes its reports. */
export interface Paths {
  config: string;
  plugins: string[];
  reports: string;
}
/** Where the Debian package puts the bundle (`npm run deb`). */
export const PACKAGE_DIR = '/usr/lib/pve-dm';

/** Installed by the package: /etc and /var/lib, as Proxmox's own packages do; otherwise beside this file. */
export function pathsFor(here: string): Paths {
  if (here === PACKAGE_DIR) {
    const plugins = [path.join(PACKAGE_DIR, 'plugins'), '/etc/pve-dm/plugins'];
    return { config: '/etc/pve-dm/pve-dm.conf', plugins, reports: '/var/lib/pve-dm/reports' };
  }
  return {
    config: path.join(here, 'pve-dm.conf'),
    plugins: [path.join(here, 'plugins')],
    reports: path.join(here, 'reports'),
  };
}
const PATHS = pathsFor(HERE);

/** pve-dm as the user ran it, for the commands it prints: `pve-dm`, `node dist/pve-dm.mjs`, `npx tsx pve-dm.ts`. */
export function programName(here = HERE, script = process.argv[1] ?? '', cwd = process.cwd()): string {
  if (here === PACKAGE_DIR) return 'pve-dm';
  const relative = path.relative(cwd, script);
  const shown = relative.startsWith('..') || path.isAbsolute(relative) ? script : relative;
  return script.endsWith('.ts') ? `npx tsx ${shown}` : `node ${shown}`;
}
const PROGRAM = programName();

// ============================================================================================
// The pipeline: the stages a plugin may replace or wrap, run in order; main, the command line's
// entry, around them. Each stage's section follows in pipeline order.
// ============================================================================================

export interface Stages {
  discover: (input: DiscoverInput) => Promise<Capture>;
  parse: (capture: Capture) => ParsedState;
  classify: (state: ParsedState) => Classification;
  grade: (classification: Classification) => Graded;
  report: (result: Result, options: ReportOptions) => Promise<Reports>;
  cleanup: (result: Result, selection: CleanupSelection) => CleanupPlan;
}

export const defaultStages: Stages = { discover, parse, classify, grade, report, cleanup: planCleanup };

/** What to analyse, and which reports to render (ReportOptions). */
export interface RunOptions extends ReportOptions {
  root?: string;
  /** Where the live node keeps its files, and its name (tests point them at a fake node). */
  liveRoot?: string;
  hostname?: string;
  vmids: number[];
  runner: Runner;
  now?: Date;
  /** Which problems cleanup considers (--only, --vmid, --name); all of them by default. */
  selection?: CleanupSelection;
  /** What was wrong before the analysis (a plugin that did not load, an unknown setting): the report carries it. */
  warnings?: readonly Warning[];
  /** PVE_DM_POOL_WARNING and PVE_DM_POOL_CRITICAL; DEFAULT_POOL_THRESHOLDS when absent. */
  poolThresholds?: PoolThresholds;
}

export interface RunOutput {
  capture: Capture;
  result: Result;
  reports: Reports;
  plan: CleanupPlan;
}

export async function runPipeline(stages: Stages, options: RunOptions): Promise<RunOutput> {
  const capture = await stages.discover({
    root: options.root,
    runner: options.runner,
    liveRoot: options.liveRoot,
    hostname: options.hostname,
  });
  const parsed = stages.parse(capture);
  const state = options.poolThresholds === undefined ? parsed : { ...parsed, poolThresholds: options.poolThresholds };
  const full = stages.classify(state);
  const classification =
    options.vmids.length > 0
      ? narrowToGuests(full, options.vmids, new Set(state.guests.map((guest) => guest.vmid)))
      : full;
  const warned = { ...classification, warnings: [...(options.warnings ?? []), ...classification.warnings] };
  const graded = stages.grade(warned);
  const result: Result = {
    ...warned,
    ...graded,
    generatedAt: (options.now ?? new Date()).toISOString(),
    vmids: options.vmids.length > 0 ? options.vmids : null,
    notifications: [],
    cleanup: null,
    cluster: null,
  };
  const { json, html, color, nagios, checkmk, prometheus } = options;
  const reports = await stages.report(result, {
    json,
    console: options.console,
    html,
    color,
    nagios,
    checkmk,
    prometheus,
  });
  return { capture, result, reports, plan: stages.cleanup(result, options.selection ?? SELECT_ALL) };
}

/** Several nodes (captures, or the live cluster over ssh) analysed together; cleanup stays per node. */
export interface ClusterRunOptions extends RunOptions {
  roots: string[];
  /** The live cluster: this node, then every member over ssh. */
  live: boolean;
  nodeTimeoutMs: number;
  /** Told as each member's capture arrives, and each second while any is awaited (a terminal's spinner). */
  progress?: (state: ClusterProgress) => void;
}

export interface ClusterProgress {
  done: number;
  total: number;
  /** The member awaited longest, and for how many seconds; null when none is. */
  slowest: { node: string; seconds: number } | null;
}

const CLUSTER_PARALLEL = 4;

export async function runCluster(stages: Stages, options: ClusterRunOptions): Promise<RunOutput> {
  // This node's settings and plugins: their warnings belong to the first node, not to every one.
  const nodeOptions = { ...options, json: false, console: false, html: false, warnings: [] };
  const runs: NodeRun[] = [];
  const unreachable: ClusterView['unreachable'] = [];
  if (options.live) {
    runs.push(await runPipeline(stages, { ...nodeOptions, root: undefined, warnings: options.warnings }));
    const others = (await clusterMembers(options.liveRoot ?? '/')).filter(
      (member) => member.name !== runs[0]?.result.node,
    );
    for (const item of await fetchMembers(others, options)) {
      if ('error' in item) unreachable.push(item);
      else runs.push(await runPipeline({ ...stages, discover: async () => item }, nodeOptions));
    }
  } else {
    for (const [i, root] of options.roots.entries())
      runs.push(await runPipeline(stages, { ...nodeOptions, root, warnings: i === 0 ? options.warnings : [] }));
  }
  const twice = runs.find((run, index) => runs.findIndex((other) => other.result.node === run.result.node) !== index);
  if (twice !== undefined)
    throw new UserError(`node ${twice.result.node} is there twice: give each node's capture once`);
  const result = analyseCluster(runs, unreachable, (options.now ?? new Date()).toISOString());
  const reports = await stages.report(result, options);
  return { capture: (runs[0] as NodeRun).capture, result, reports, plan: { actions: [] } };
}

/** The other members' captures over ssh, CLUSTER_PARALLEL at a time, or why a member gave none. */
async function fetchMembers(
  others: readonly ClusterMember[],
  options: ClusterRunOptions,
): Promise<(Capture | ClusterView['unreachable'][number])[]> {
  const command = remoteCaptureCommand();
  const limit = (await import('p-limit')).default(CLUSTER_PARALLEL);
  const awaited = new Map<string, number>();
  let done = 0;
  const tell = () => {
    const [node, since] = [...awaited].sort((a, b) => a[1] - b[1])[0] ?? [];
    const slowest = node === undefined ? null : { node, seconds: Math.floor((Date.now() - (since ?? 0)) / 1000) };
    options.progress?.({ done, total: others.length, slowest });
  };
  const ticker = options.progress === undefined ? undefined : setInterval(tell, 1000);
  const fetchOne = async (member: ClusterMember) => {
    try {
      if (member.online === false)
        return { node: member.name, error: 'offline as pmxcfs sees it (/etc/pve/.members): not queried' };
      awaited.set(member.name, Date.now());
      tell();
      return await fetchRemoteCapture(options.runner, member, command, options.nodeTimeoutMs);
    } catch (error) {
      if (error instanceof UserError) return { node: member.name, error: error.message };
      throw error;
    } finally {
      awaited.delete(member.name);
      done++;
      tell();
    }
  };
  try {
    return await Promise.all(others.map((member) => limit(() => fetchOne(member))));
  } finally {
    clearInterval(ticker);
  }
}

/** The command line: analyse (the pipeline), act (cleanup, when asked), render; the exit code. */
export async function main(
  argv: string[],
  io: Io = { stdout: process.stdout, stderr: process.stderr, isTty: Boolean(process.stdout.isTTY) },
  live: LiveNode = {},
): Promise<number> {
  const asked = formatAsked(argv);
  const print = (text: string) => {
    io.stdout.write(text);
    return 0;
  };
  try {
    const options = parseCli(argv, process.env, io.isTty);
    if (options.command === 'help') return print(`${usageText()}\n`);
    if (options.command === 'version') return print(`pve-dm ${VERSION}\n`);
    const interactive =
      io.isTty &&
      Boolean(process.stdin.isTTY) &&
      options.command === 'analyse' &&
      options.format === 'console' &&
      !options.yes &&
      !options.reportOnly &&
      !options.dryRun;
    // The one place changes are allowed: an explicit --yes or restore, never --report-only or --dry-run.
    const allowChanges =
      (options.yes || interactive || options.command === 'restore') && !options.dryRun && !options.reportOnly;
    const runner = createRunner({ allowChanges, dryRun: options.dryRun, exec: live.exec });
    const context: RunContext = { io, runner, live, liveRoot: live.liveRoot ?? '/', interactive };
    if (options.command === 'journal')
      return print(renderJournal(readJournal(options.journal), options.format === 'json'));
    if (options.command === 'restore') return await restoreCommand(options, runner, context.liveRoot, io);
    if (options.command === 'capture') return await captureCommand(options, context);
    if (options.command === 'guard') return await guardCommand(options, context);
    const setup = await loadSetup(options);
    if (options.command === 'plugins') {
      for (const w of setup.warnings) io.stderr.write(`pve-dm: warning: ${terminalSafe(formatWarning(w))}\n`);
      return print(renderPluginList(setup.loaded, options.pluginDirs, setup.settings));
    }
    return await analyse(options, setup, context);
  } catch (error) {
    return failed(error, asked, io);
  }
}

// ============================================================================================
// Errors and diagnostics
// ============================================================================================

/** A mistake of the user's or of the input's: printed as one line, never as a stack trace. */
export class UserError extends Error {
  constructor(
    message: string,
    readonly exitCode = 3,
  ) {
    super(message);
  }
}

/** Something the run could not read or understand; the rest of the work goes on. */
export interface Warning {
  /** File (relative to the capture root) or command the problem was found in. */
  source: string;
  line: number | null;
  message: string;
  /** In a cluster's result: the node it was found on. */
  node?: string;
}

const warn = (source: string, line: number | null, message: string): Warning => ({ source, line, message });
/** Where a warning was found: `[node:]source[:line]`. */
export const warningPlace = (w: Warning) =>
  `${w.node === undefined ? '' : `${w.node}:`}${w.source}${w.line === null ? '' : `:${w.line}`}`;
export const formatWarning = (w: Warning) => `${warningPlace(w)}: ${w.message}`;

/** A dm name as shown: shell-safe (mangleDmName), after its node in a cluster's result. */
export const shownName = (name: string, node?: string) =>
  node === undefined ? mangleDmName(name) : `${node}:${mangleDmName(name)}`;

/** An error's errno code (`ENOENT`, `EACCES`), or undefined for any other error. */
export const errnoOf = (error: unknown): string | undefined => (error as NodeJS.ErrnoException | null)?.code;
/** An error in one word or line, as a message shows it: its errno code, else its own message. */
export const errorText = (error: unknown): string => errnoOf(error) ?? (error as Error).message;

// ============================================================================================
// Capture: the node's state as data. A capture directory holds exactly what discover produces.
// ============================================================================================

export interface SystemFacts {
  pveVersion: string | null;
  kernel: string | null;
  uptimeSeconds: number | null;
  cpuPercent: number | null;
  memory: { totalBytes: number; usedBytes: number } | null;
  rootfs: { totalBytes: number; usedBytes: number } | null;
}

export interface CaptureMeta {
  capturedAt: string | null;
  pveDm: string | null;
  commands: Record<string, { exitCode: number; stderr: string }>;
}

const isRecord = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

/** A field of a JSON object of a given type, or null ("not known"); noted in `wrong` if missing or of another type. */
function field<T>(
  record: Record<string, unknown>,
  key: string,
  check: (value: unknown) => value is T,
  wrong: string[],
): T | null {
  if (record[key] === null) return null;
  if (check(record[key])) return record[key] as T;
  wrong.push(key);
  return null;
}
const isText = (value: unknown): value is string => typeof value === 'string';
const isCount = (value: unknown): value is number => typeof value === 'number' && Number.isFinite(value) && value >= 0;
const isUsage = (value: unknown): value is { totalBytes: number; usedBytes: number } =>
  isRecord(value) && isCount(value.totalBytes) && isCount(value.usedBytes);

/** system.json, field by field: a field missing or of the wrong type is "not known". */
export function systemFactsFrom(value: unknown, wrong: string[] = []): SystemFacts | null {
  if (!isRecord(value)) return null;
  const usage = (key: string) => {
    const found = field(value, key, isUsage, wrong);
    return found && { totalBytes: found.totalBytes, usedBytes: found.usedBytes };
  };
  return {
    pveVersion: field(value, 'pveVersion', isText, wrong),
    kernel: field(value, 'kernel', isText, wrong),
    uptimeSeconds: field(value, 'uptimeSeconds', isCount, wrong),
    cpuPercent: field(value, 'cpuPercent', isCount, wrong),
    memory: usage('memory'),
    rootfs: usage('rootfs'),
  };
}

/** meta.json, field by field. */
export function captureMetaFrom(value: unknown, wrong: string[] = []): CaptureMeta | null {
  if (!isRecord(value)) return null;
  const commands = isRecord(value.commands) ? value.commands : {};
  return {
    capturedAt: field(value, 'capturedAt', isText, wrong),
    pveDm: field(value, 'pveDm', isText, wrong),
    commands: Object.fromEntries(
      Object.entries(commands).flatMap(([name, result]) => {
        if (isRecord(result) && isCount(result.exitCode) && isText(result.stderr))
          return [[name, { exitCode: result.exitCode, stderr: result.stderr }]];
        wrong.push(`commands.${name}`);
        return [];
      }),
    ),
  };
}

export type GuestType = 'qemu' | 'lxc';

export interface ConfigFile {
  /** Path relative to the capture root, e.g. `etc/pve/nodes/pve1/qemu-server/100.conf`. */
  path: string;
  node: string;
  type: GuestType;
  vmid: number;
  /** null when the file could not be read (the reason is in `readError`). */
  text: string | null;
  readError?: string;
}

export interface Capture {
  hostname: string;
  /** `dmsetup info -c --noheadings --separator '|' -o name,major,minor,open,attr,uuid` */
  dmsetupInfo: string;
  /** `dmsetup table`; null = not known. */
  dmsetupTable: string | null;
  /** `lvs` as LVS_ARGS asks for it; null: not known. */
  lvs: string | null;
  /** `dmsetup status` of the thin pools (POOL_STATUS_ARGS); null or absent: not known (an older capture). */
  poolStatus?: string | null;
  /** `lvs --segments` as LVS_SEGMENTS_ARGS asks for it, and `pvs` as PVS_ARGS: what each active LV should map. */
  lvsSegments?: string | null;
  pvs?: string | null;
  /** Each zvol's device and dataset, `230:16 rpool/data/vm-134-disk-0` a line (liveZvols); null, absent: not known. */
  zvols?: string | null;
  /** VMIDs of the guests running on this node, one a line; null = not known. */
  running: string | null;
  system: SystemFacts | null;
  meta: CaptureMeta | null;
  storageCfg: string;
  configs: ConfigFile[];
  /** Where it was read from (a capture directory), or null for the live node. */
  root: string | null;
  /** Problems met while discovering (a command that failed, a file that could not be read). */
  warnings: Warning[];
}

export const CAPTURE_FILES = {
  hostname: 'hostname',
  dmsetupInfo: 'dmsetup.txt',
  dmsetupTable: 'dmsetup-table.txt',
  lvs: 'lvs.txt',
  poolStatus: 'dmsetup-status.txt',
  lvsSegments: 'lvs-segments.txt',
  pvs: 'pvs.txt',
  zvols: 'zvols.txt',
  running: 'running.txt',
  system: 'system.json',
  meta: 'meta.json',
  storageCfg: 'etc/pve/storage.cfg',
  nodes: 'etc/pve/nodes',
} as const;

/**
 * dmsetup prints names unmangled by default (`odd name$x`, even `pipe|name`, which would break the
 * `|` columns): `--manglename none` prints them as the kernel holds them, `\xNN`-mangled.
 */
export const DM_INFO_ARGS = [
  '--manglename',
  'none',
  'info',
  '-c',
  '--noheadings',
  '--separator',
  '|',
  '-o',
  'name,major,minor,open,attr,uuid',
];
export const DM_TABLE_ARGS = ['--manglename', 'none', 'table'];
/** How pve-dm asks LVM for a report: no header, `|` between fields, sizes as bare numbers in `units`. */
const lvmReport = (units: 'b' | 's') => ['--noheadings', '--separator', '|', '--units', units, '--nosuffix'];
export const LVS_ARGS = [
  '-a',
  // Sizes in bytes, without a unit: `1073741824`.
  ...lvmReport('b'),
  '-o',
  'vg_name,lv_name,lv_attr,lv_tags,lv_uuid,vg_uuid,pool_lv,lv_size,' +
    'data_percent,metadata_percent,lv_metadata_size,vg_attr,vg_free',
];
/** The kernel's own view of every thin pool (mode, needs_check, Fail), which lvs does not fully show. */
export const POOL_STATUS_ARGS = ['--manglename', 'none', 'status', '--target', 'thin-pool'];
/**
 * Each LV's segments in sectors, with its PV extents, thin id and pool, and the kernel device it
 * has: with PVS_ARGS, what the kernel's table of an active LV should be (test/fixtures/real/conflicts).
 * lv_attr must stay: only with it does a pool's row give its `-tpool` device, which thin LVs map.
 */
export const LVS_SEGMENTS_ARGS = [
  '-a',
  '--segments',
  ...lvmReport('s'),
  '-o',
  'vg_name,lv_name,lv_uuid,vg_uuid,lv_attr,vg_extent_size,seg_start,seg_size,segtype,stripes,stripe_size,' +
    'chunk_size,seg_pe_ranges,thin_id,pool_lv,origin,lv_kernel_major,lv_kernel_minor',
];
export const PVS_ARGS = [...lvmReport('s'), '-o', 'pv_name,pv_uuid,vg_name,vg_uuid,pe_start,pv_major,pv_minor'];
const GUEST_DIRS: Record<GuestType, string> = { qemu: 'qemu-server', lxc: 'lxc' };
const CONFIG_FILE_RE = /^([1-9][0-9]{2,8})\.conf$/;
/** A host name as Proxmox names its nodes (PVE::INotify::nodename: the short host name). */
const NODE_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9.-]*$/;

/**
 * The most pve-dm reads, far above any real node's, so that a capture from a bug report (or a
 * command gone wrong) cannot exhaust memory. pmxcfs holds no file in /etc/pve over 1 MiB and no
 * more than 128 MiB in all (pve-cluster memdb: MEMDB_MAX_FILE_SIZE, MEMDB_MAX_FSSIZE); the
 * largest clusters have tens of thousands of guests; a node of 50,000 guests prints about 20 MiB
 * of `dmsetup info` lines.
 */
export const LIMITS = {
  /** storage.cfg, one guest config, and the capture's small files (hostname, running.txt, system.json, meta.json). */
  fileBytes: 1024 * 1024,
  /** All guest configs together. */
  configBytes: 128 * 1024 * 1024,
  guestConfigs: 50_000,
  /** dmsetup.txt, dmsetup-table.txt, dmsetup-status.txt and lvs.txt, and what a live command may print. */
  commandOutputBytes: 64 * 1024 * 1024,
} as const;

// ============================================================================================
// Stage 1: discover. From a capture directory (`--root`), or from the live node with a fixed
// number of processes: one dmsetup info, one dmsetup table, one dmsetup status of the thin pools,
// one lvs, one pveversion.
// ============================================================================================

export interface DiscoverInput {
  /** A capture directory; absent for the live node. */
  root?: string;
  runner: Runner;
  /** Where the live node keeps its files (tests point it at a fake tree). */
  liveRoot?: string;
  /** The live node's name; Proxmox uses the short host name (PVE::INotify::nodename). */
  hostname?: string;
}

export async function discover(input: DiscoverInput): Promise<Capture> {
  return input.root === undefined
    ? discoverLive(input.runner, input.liveRoot ?? '/', input.hostname ?? os.hostname().split('.')[0] ?? '')
    : readCapture(input.root);
}

/** Why a file was not read (a file that does not exist is not refused: it is null). */
class Unreadable extends Error {}

/** The real path of `file`, refused when a symbolic link leads it out of `root` (a real path). */
function realPathInside(root: string, file: string): string {
  const real = realpathSync.native(file);
  const inside = path.relative(root, real);
  if (inside === '..' || inside.startsWith(`..${path.sep}`) || path.isAbsolute(inside))
    throw new Unreadable(`a symbolic link out of ${root} (to ${real}); not followed`);
  return real;
}

/** A read error as the reason a file was not read, or null when the file does not exist. */
function unreadable(error: unknown): Unreadable | null {
  if (error instanceof Unreadable) return error;
  const code = errnoOf(error);
  return code === 'ENOENT' || code === 'ENOTDIR' ? null : new Unreadable(errorText(error));
}

const tooLarge = (bytes: number, maxBytes: number) =>
  new Unreadable(`${humanBytes(bytes)}, more than the ${humanBytes(maxBytes)} pve-dm reads (no node's is that large)`);

/**
 * The file `name` under `root` (a real path) as text, or null when it does not exist. Refused
 * when it is a symbolic link leading out of `root` (a capture from a bug report may hold
 * `etc/pve/storage.cfg -> /etc/shadow`), is not a regular file (a FIFO would hang the read), or is
 * larger than `maxBytes`: its size is checked before anything is read. Nothing outside `root` is
 * ever opened.
 */
function readUnder(root: string, name: string, maxBytes: number): string | null {
  let fd: number | undefined;
  try {
    fd = openSync(realPathInside(root, path.join(root, name)), constants.O_RDONLY | constants.O_NONBLOCK);
    const stat = fstatSync(fd);
    if (!stat.isFile()) throw new Unreadable('not a regular file');
    if (stat.size > maxBytes) throw tooLarge(stat.size, maxBytes);
    return readFileSync(fd, 'utf8');
  } catch (error) {
    const reason = unreadable(error);
    if (reason === null) return null;
    throw reason;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/** A file of the live node's kernel (/proc) or runtime (/run), or null when it does not exist. */
async function readOptional(file: string): Promise<string | null> {
  try {
    return await readFile(file, 'utf8');
  } catch (error) {
    if (errnoOf(error) === 'ENOENT') return null;
    throw error;
  }
}

/**
 * A file its folder's listing says is regular, in a folder already checked to be inside the
 * capture: opened without following a link, and read into `buffer` (maxBytes + 1 long, shared by
 * thousands of guest configs) up to one byte more than is accepted. Three system calls where
 * readUnder makes six: a node of 5,000 guests has 5,000 configs.
 */
function readListedFile(file: string, maxBytes: number, buffer: Buffer): string {
  const fd = openSync(file, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOFOLLOW);
  try {
    let length = 0;
    for (let read = -1; read !== 0 && length < buffer.length; length += read)
      read = readSync(fd, buffer, length, buffer.length - length, null);
    if (length > maxBytes) throw tooLarge(fstatSync(fd).size, maxBytes);
    return buffer.toString('utf8', 0, length);
  } finally {
    closeSync(fd);
  }
}

/** A config file found in /etc/pve/nodes, and the regular file it is. */
type ListedConfig = Omit<ConfigFile, 'text'> & { regular: string };

/**
 * Every guest config of the cluster, as text; one that cannot be read keeps its error. `unchanged`
 * may give a regular file's text known already (recheck: the analysis's, for a file not changed since). Read
 * synchronously: thousands of small files cost a tenth of what the thread pool's round trips do.
 * Counted before any is read: more than any cluster has is refused, as is more text than pmxcfs holds.
 */
function readConfigs(base: string, unchanged: (config: ListedConfig) => string | null = () => null): ConfigFile[] {
  const root = realpathSync(base);
  const nodesDir = path.join(root, CAPTURE_FILES.nodes);
  // `regular`: a regular file of a checked folder, read directly; anything else (a link, a FIFO, a
  // folder out of the capture) goes through every check of readUnder.
  const listed: (Omit<ConfigFile, 'text'> & { regular: string | null })[] = [];
  const buffer = Buffer.allocUnsafe(LIMITS.fileBytes + 1);
  // A node folder's guest folders may be missing (a node without guests of that type).
  for (const node of readdirSafe(nodesDir).sort()) {
    for (const type of ['qemu', 'lxc'] as const) {
      const dir = `${CAPTURE_FILES.nodes}/${node}/${GUEST_DIRS[type]}`;
      let files: Dirent[];
      try {
        files = readdirSync(path.join(root, dir), { withFileTypes: true });
      } catch {
        continue;
      }
      let realDir: string | null = null;
      try {
        realDir = realPathInside(root, path.join(root, dir));
      } catch {
        // A folder out of the capture: readUnder says so for each of its configs.
      }
      for (const file of files.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
        const vmid = CONFIG_FILE_RE.exec(file.name)?.[1];
        if (vmid === undefined) continue;
        const regular = realDir !== null && file.isFile() ? `${realDir}/${file.name}` : null;
        listed.push({ path: `${dir}/${file.name}`, node, type, vmid: Number(vmid), regular });
      }
    }
  }
  const where = path.join(base, CAPTURE_FILES.nodes);
  if (listed.length > LIMITS.guestConfigs)
    throw new UserError(
      `${where} holds ${listed.length} guest configs, more than the ${LIMITS.guestConfigs} pve-dm reads (no ` +
        `cluster has that many guests)`,
    );
  let total = 0;
  return listed.map(({ regular, ...config }) => {
    let text: string | null = regular === null ? null : unchanged({ ...config, regular });
    // Listed a moment ago: removed since (a guest deleted meanwhile).
    let readError = 'ENOENT';
    try {
      text ??=
        regular === null
          ? readUnder(root, config.path, LIMITS.fileBytes)
          : readListedFile(regular, LIMITS.fileBytes, buffer);
    } catch (error) {
      readError = unreadable(error)?.message ?? readError;
    }
    if (text === null) return { ...config, text, readError };
    total += text.length;
    if (total > LIMITS.configBytes)
      throw new UserError(
        `the guest configs in ${where} hold more than ${humanBytes(LIMITS.configBytes)}, more than /etc/pve ` +
          `can (pmxcfs)`,
      );
    return { ...config, text };
  });
}

export async function readCapture(root: string): Promise<Capture> {
  const kind = statSync(root, { throwIfNoEntry: false });
  if (kind === undefined) throw new UserError(`capture ${root} does not exist`);
  if (!kind.isDirectory()) throw new UserError(`capture ${root} is not a directory`);
  const requiredFiles = [CAPTURE_FILES.hostname, CAPTURE_FILES.dmsetupInfo, CAPTURE_FILES.storageCfg];
  if (!requiredFiles.some((name) => existsSync(path.join(root, name)))) {
    throw new UserError(
      `${root} is not a capture: it holds none of ${requiredFiles.join(', ')} (pve-dm.ts capture DIR makes one)`,
    );
  }
  const realRoot = realpathSync(root);
  const warnings: Warning[] = [];
  const required = (name: string, maxBytes: number) => {
    let text: string | null;
    try {
      text = readUnder(realRoot, name, maxBytes);
    } catch (error) {
      throw error instanceof Unreadable
        ? new UserError(`capture ${root}: cannot read ${name}: ${error.message}`)
        : error;
    }
    if (text === null) throw new UserError(`capture ${root}: required file ${name} is missing`);
    return text;
  };
  // An optional file that cannot be read is not known, as if it were missing; a warning says why.
  const optional = (name: string, maxBytes: number) => {
    try {
      return readUnder(realRoot, name, maxBytes);
    } catch (error) {
      if (!(error instanceof Unreadable)) throw error;
      warnings.push(warn(name, null, `${error.message}; not read, treated as not known`));
      return null;
    }
  };
  const json = <T>(name: string, shape: (value: unknown, wrong: string[]) => T | null): T | null => {
    const text = optional(name, LIMITS.fileBytes);
    if (text === null) return null;
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (error) {
      warnings.push(warn(name, null, `not valid JSON (${(error as Error).message}); ignored`));
      return null;
    }
    const wrong: string[] = [];
    const result = shape(value, wrong);
    if (result === null) warnings.push(warn(name, null, 'not a JSON object; ignored'));
    else if (wrong.length > 0)
      warnings.push(warn(name, null, `missing or of the wrong type, shown as not known: ${wrong.join(', ')}`));
    return result;
  };
  const hostname = required(CAPTURE_FILES.hostname, LIMITS.fileBytes);
  const dmsetupInfo = required(CAPTURE_FILES.dmsetupInfo, LIMITS.commandOutputBytes);
  const storageCfg = required(CAPTURE_FILES.storageCfg, LIMITS.fileBytes);
  // What the commands printed; a file missing is what the command did not tell (not known).
  const outputs = Object.fromEntries(
    (['dmsetupTable', 'lvs', 'poolStatus', 'lvsSegments', 'pvs', 'zvols'] as const).map((key) => [
      key,
      optional(CAPTURE_FILES[key], LIMITS.commandOutputBytes),
    ]),
  ) as Pick<Capture, 'dmsetupTable' | 'lvs' | 'poolStatus' | 'lvsSegments' | 'pvs' | 'zvols'>;
  const running = optional(CAPTURE_FILES.running, LIMITS.fileBytes);
  const system = json(CAPTURE_FILES.system, systemFactsFrom);
  const meta = json(CAPTURE_FILES.meta, captureMetaFrom);
  const configs = readConfigs(root);
  const node = hostname.trim();
  if (!NODE_NAME_RE.test(node)) throw new UserError(`capture ${root}: hostname file does not hold a node name`);
  return {
    hostname: node,
    dmsetupInfo,
    ...outputs,
    running,
    system,
    meta,
    storageCfg,
    configs,
    root,
    warnings,
  };
}

/** `pveversion` prints `pve-manager/9.1.2/9d436f37a0ac4172 (running kernel: 6.14.11-4-pve)`. */
export const parsePveVersion = (text: string) => /^pve-manager\/([^/\s]+)/m.exec(text)?.[1] ?? null;

async function cpuTimes(procRoot: string): Promise<{ idle: number; total: number } | null> {
  const stat = await readOptional(path.join(procRoot, 'proc/stat'));
  const fields = stat?.split('\n', 1)[0]?.trim().split(/\s+/).slice(1).map(Number);
  if (!fields || fields.length < 4 || fields.some(Number.isNaN)) return null;
  return { idle: (fields[3] ?? 0) + (fields[4] ?? 0), total: fields.reduce((a, b) => a + b, 0) };
}

async function liveSystemFacts(liveRoot: string, pveversion: CommandResult): Promise<SystemFacts> {
  const before = await cpuTimes(liveRoot);
  await new Promise((resolve) => setTimeout(resolve, 200));
  const after = await cpuTimes(liveRoot);
  const meminfo = (await readOptional(path.join(liveRoot, 'proc/meminfo'))) ?? '';
  const kib = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+)`, 'm').exec(meminfo)?.[1] ?? NaN) * 1024;
  const fs = await fsPromises.statfs(liveRoot).catch(() => null);
  const totalMemory = kib('MemTotal');
  const availableMemory = kib('MemAvailable');
  const busy =
    before && after && after.total > before.total
      ? 1 - (after.idle - before.idle) / (after.total - before.total)
      : null;
  return {
    pveVersion: pveversion.exitCode === 0 ? parsePveVersion(pveversion.stdout) : null,
    kernel: os.release(),
    uptimeSeconds: Math.round(os.uptime()),
    cpuPercent: busy === null ? null : Math.round(busy * 1000) / 10,
    memory:
      Number.isFinite(totalMemory) && Number.isFinite(availableMemory)
        ? { totalBytes: totalMemory, usedBytes: totalMemory - availableMemory }
        : null,
    rootfs: fs ? { totalBytes: fs.blocks * fs.bsize, usedBytes: (fs.blocks - fs.bfree) * fs.bsize } : null,
  };
}

/**
 * Running guests without a process per guest: a VM runs when its pid file names a live QEMU
 * started with that pid file (qemu-server's check_running); a container when its LXC command
 * socket `@/var/lib/lxc/<vmid>/command` is bound (pve-container).
 */
export async function liveRunningGuests(liveRoot: string, only?: ReadonlySet<number>): Promise<number[]> {
  const running = new Set<number>();
  const pidDir = path.join(liveRoot, 'run/qemu-server');
  const pidFiles = (await readdir(pidDir).catch(() => [] as string[])).filter(
    (file) => /^[1-9][0-9]{2,8}\.pid$/.test(file) && (only === undefined || only.has(Number(file.slice(0, -4)))),
  );
  await Promise.all(
    pidFiles.map(async (file) => {
      const pid = Number((await readOptional(path.join(pidDir, file)))?.trim());
      if (!Number.isInteger(pid) || pid <= 0) return;
      const cmdline = (await readOptional(path.join(liveRoot, `proc/${pid}/cmdline`)))?.split('\0') ?? [];
      const pidfileAt = cmdline.indexOf('-pidfile');
      const program = path.basename(cmdline[0] ?? '');
      if (
        pidfileAt >= 0 &&
        cmdline[pidfileAt + 1] === `/var/run/qemu-server/${file}` &&
        /^(kvm|qemu-.*)$/.test(program)
      ) {
        running.add(Number(file.slice(0, -4)));
      }
    }),
  );
  const unix = (await readOptional(path.join(liveRoot, 'proc/net/unix'))) ?? '';
  for (const [, vmid] of unix.matchAll(/@\/var\/lib\/lxc\/([1-9][0-9]{2,8})\/command$/gm))
    if (only === undefined || only.has(Number(vmid))) running.add(Number(vmid));
  return [...running].sort((a, b) => a - b);
}

async function discoverLive(runner: Runner, liveRoot: string, hostname: string): Promise<Capture> {
  let storageCfg: string | null;
  try {
    storageCfg = readUnder(realpathSync(liveRoot), CAPTURE_FILES.storageCfg, LIMITS.fileBytes);
  } catch (error) {
    throw error instanceof Unreadable
      ? new UserError(`cannot read /${CAPTURE_FILES.storageCfg}: ${error.message}`)
      : error;
  }
  if (storageCfg === null)
    throw new UserError(
      `/${CAPTURE_FILES.storageCfg} is missing: not a Proxmox VE node, or /etc/pve is not mounted (analyse a ` +
        `capture with --root DIR)`,
    );
  const warnings: Warning[] = [];
  // When reading began: a cleanup's recheck reads again every config changed since.
  const capturedAt = new Date().toISOString();
  const [info, table, poolStatus, lvs, segments, pvs, pveversion, configs, running, zvols] = await Promise.all([
    runner('dmsetup', DM_INFO_ARGS),
    runner('dmsetup', DM_TABLE_ARGS),
    runner('dmsetup', POOL_STATUS_ARGS),
    runner('lvs', LVS_ARGS),
    runner('lvs', LVS_SEGMENTS_ARGS),
    runner('pvs', PVS_ARGS),
    runner('pveversion', []),
    readConfigs(liveRoot),
    liveRunningGuests(liveRoot),
    liveZvols(liveRoot),
  ]);
  const commands = {
    'dmsetup info': info,
    'dmsetup table': table,
    'dmsetup status': poolStatus,
    lvs,
    'lvs --segments': segments,
    pvs,
    pveversion,
  };
  const noDevices = info.exitCode !== 0 && /No devices found/.test(info.stdout + info.stderr);
  if (info.exitCode !== 0 && !noDevices) {
    throw new UserError(`dmsetup info failed (exit ${info.exitCode}): ${info.stderr.trim() || 'no message'}`);
  }
  const known = (name: string, result: CommandResult) => {
    if (result.exitCode === 0) return result.stdout;
    warnings.push(
      warn(
        name,
        null,
        `failed (exit ${result.exitCode}): ${result.stderr.trim().split('\n')[0] ?? ''}; treated as not known`,
      ),
    );
    return null;
  };
  return {
    hostname,
    dmsetupInfo: noDevices ? 'No devices found\n' : info.stdout,
    dmsetupTable: known('dmsetup table', table),
    lvs: known('lvs', lvs),
    // No device at all, so no pool: nothing to know, not a failure.
    poolStatus: /No devices found/.test(poolStatus.stdout + poolStatus.stderr)
      ? ''
      : known('dmsetup status', poolStatus),
    lvsSegments: known('lvs --segments', segments),
    pvs: known('pvs', pvs),
    zvols,
    running: running.map((vmid) => `${vmid}\n`).join(''),
    system: await liveSystemFacts(liveRoot, pveversion),
    meta: {
      capturedAt,
      pveDm: VERSION,
      commands: Object.fromEntries(
        Object.entries(commands).map(([name, result]) => [name, { exitCode: result.exitCode, stderr: result.stderr }]),
      ),
    },
    storageCfg,
    configs,
    root: null,
    warnings,
  };
}

/**
 * Every zvol's device number and dataset (`230:16 rpool/data/vm-134-disk-0`), from udev's links under
 * /dev/zvol and /sys/block/zdN/dev: no process, however many zvols. Null: no /dev/zvol (no ZFS here).
 */
/** A dataset path as ZFS names them (zfs(8): letters, digits, `_ - : .`), components joined by `/`. */
const ZFS_NAME_RE = /^[\w.:-]+(?:\/[\w.:-]+)*$/;

async function liveZvols(liveRoot: string): Promise<string | null> {
  const top = path.join(liveRoot, 'dev/zvol');
  if (!lstatSync(top, { throwIfNoEntry: false })?.isDirectory()) return null;
  const found: string[] = [];
  const walk = async (dir: string, dataset: string): Promise<void> => {
    for (const item of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
      const name = dataset === '' ? item.name : `${dataset}/${item.name}`;
      if (item.isDirectory()) await walk(path.join(dir, item.name), name);
      // `vm-134-disk-0-part1` is a partition of the zvol, not a zvol. A name ZFS never makes (white
      // space, a control character) could forge a second line of zvols.txt: skipped.
      if (!item.isSymbolicLink() || /-part\d+$/.test(item.name) || !ZFS_NAME_RE.test(name)) continue;
      const device = path.basename(await readlink(path.join(dir, item.name)).catch(() => ''));
      const number = await readFile(path.join(liveRoot, 'sys/block', device, 'dev'), 'utf8').catch(() => '');
      if (/^\d+:\d+\s*$/.test(number)) found.push(`${number.trim()} ${name}`);
    }
  };
  await walk(top, '');
  return found
    .sort()
    .map((line) => `${line}\n`)
    .join('');
}

/**
 * Writes a capture directory that `readCapture` reads back to the same Capture. Every folder and
 * file in it is created here, never opened if it exists already: running as root, pve-dm never
 * writes through a symbolic link someone else put in the directory.
 */
export async function writeCapture(dir: string, capture: Capture): Promise<void> {
  if (lstatSync(dir, { throwIfNoEntry: false })?.isSymbolicLink())
    throw new UserError(`capture directory ${dir} is a symbolic link: give the directory itself`);
  const existing = await readdir(dir).catch(() => null);
  if (existing !== null && existing.length > 0) throw new UserError(`capture directory ${dir} is not empty`);
  await mkdir(dir, { recursive: true });
  const made = new Set<string>();
  const create = async (target: string, make: () => Promise<unknown>) => {
    try {
      await make();
    } catch (error) {
      if (errnoOf(error) !== 'EEXIST') throw error;
      throw new UserError(
        `${target} appeared while the capture was written (something else writes in ${dir}); stopped`,
      );
    }
  };
  const put = async (name: string, text: string | null) => {
    if (text === null) return;
    let folder = dir;
    for (const part of path
      .dirname(name)
      .split('/')
      .filter((p) => p !== '.')) {
      folder = path.join(folder, part);
      if (!made.has(folder)) await create(folder, () => mkdir(folder));
      made.add(folder);
    }
    await create(path.join(dir, name), () => writeFile(path.join(dir, name), text, { mode: 0o600, flag: 'wx' }));
  };
  await put(CAPTURE_FILES.hostname, `${capture.hostname}\n`);
  await put(CAPTURE_FILES.dmsetupInfo, capture.dmsetupInfo);
  await put(CAPTURE_FILES.dmsetupTable, capture.dmsetupTable);
  await put(CAPTURE_FILES.lvs, capture.lvs);
  await put(CAPTURE_FILES.poolStatus, capture.poolStatus ?? null);
  await put(CAPTURE_FILES.lvsSegments, capture.lvsSegments ?? null);
  await put(CAPTURE_FILES.pvs, capture.pvs ?? null);
  await put(CAPTURE_FILES.zvols, capture.zvols ?? null);
  await put(CAPTURE_FILES.running, capture.running);
  await put(CAPTURE_FILES.system, capture.system && `${JSON.stringify(capture.system, null, 2)}\n`);
  await put(CAPTURE_FILES.meta, capture.meta && `${JSON.stringify(capture.meta, null, 2)}\n`);
  await put(CAPTURE_FILES.storageCfg, capture.storageCfg);
  for (const config of capture.configs) await put(config.path, config.text);
}

/** The same replacement for the same value, numbered per kind (node1, guest1, iqn...:target1). */
type Alias = (kind: string, value: string, make: (n: number) => string) => string;

function aliasing(): Alias {
  const aliases = new Map<string, string>();
  const counts = new Map<string, number>();
  return (kind, value, make) => {
    const key = `${kind}\0${value}`;
    let replacement = aliases.get(key);
    if (replacement === undefined) {
      const n = (counts.get(kind) ?? 0) + 1;
      counts.set(kind, n);
      replacement = make(n);
      aliases.set(key, replacement);
    }
    return replacement;
  };
}

const hexByte = (n: number) => (n & 255).toString(16).padStart(2, '0').toUpperCase();

/** IP and MAC addresses, iSCSI and EUI names in a text, each replaced by its alias. */
const scrubAddresses = (alias: Alias, text: string) =>
  text
    .replace(/\biqn\.\d{4}-\d{2}\.[A-Za-z0-9.:_-]+/g, (iqn) =>
      alias('iqn', iqn, (n) => `iqn.2000-01.org.example:target${n}`),
    )
    .replace(/\beui\.[0-9A-Fa-f]{16}\b/g, (eui) => alias('eui', eui, (n) => `eui.${n.toString(16).padStart(16, '0')}`))
    .replace(/\b([0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5})\b/g, (mac) =>
      alias('mac', mac.toUpperCase(), (n) => `02:00:00:00:${hexByte(n >> 8)}:${hexByte(n)}`),
    )
    .replace(/\b(?:\d{1,3}\.){3}\d{1,3}\b/g, (ip) =>
      isIPv4(ip) ? alias('ip4', ip, (n) => `198.${18 + (n >> 16)}.${(n >> 8) & 255}.${n & 255}`) : ip,
    )
    .replace(/(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![\w:])/g, (ip) =>
      isIPv6(ip) ? alias('ip6', ip.toLowerCase(), (n) => `2001:db8::${n.toString(16)}`) : ip,
    );

/** A guest config line with what identifies a site replaced: name, description, keys, addresses. */
function scrubConfigLine(alias: Alias, type: GuestType, line: string): string {
  if (line.startsWith('#')) return '#anonymised description';
  const entry = /^([a-z][a-z_-]*\d*):\s*(.*)$/s.exec(line);
  if (entry === null) return scrubAddresses(alias, line);
  const [, key = '', value = ''] = entry;
  if (key === 'description') return `${key}: anonymised description`;
  if ((type === 'qemu' && key === 'name') || (type === 'lxc' && key === 'hostname'))
    return `${key}: ${alias('guest', value, (n) => `guest${n}`)}`;
  if (key === 'sshkeys' || key === 'ssh-public-keys' || key === 'cipassword') return `${key}: anonymised`;
  if (key === 'searchdomain') return `${key}: example.org`;
  return `${key}: ${scrubAddresses(alias, value)}`;
}

/** A storage.cfg line with node lists, hosts and credentials replaced. */
function scrubStorageLine(alias: Alias, line: string): string {
  const nodeAlias = (name: string) => alias('node', name, (n) => `node${n}`);
  // `s` on each: `.` takes U+2028 and `\r`, which `\s` takes too (see CONFIG_KEY_RE).
  const nodesLine = /^(\s+nodes\s+)(.*)$/s.exec(line);
  if (nodesLine) {
    const nodes = (nodesLine[2] ?? '').split(',').map((name) => nodeAlias(name.trim()));
    return `${nodesLine[1]}${nodes.join(',')}`;
  }
  const hostLine = /^(\s+(?:server2?|portal|monhost|domain)\s+)(.*)$/s.exec(line);
  if (hostLine) {
    // Split with its separators kept: the odd items are the separators.
    const hosts = (hostLine[2] ?? '')
      .split(/([\s,;]+)/)
      .map((host, i) =>
        i % 2 === 1 || isIPv4(host.split(':')[0] ?? '')
          ? scrubAddresses(alias, host)
          : alias('host', host, (n) => `host${n}.example.org`),
      );
    return `${hostLine[1]}${hosts.join('')}`;
  }
  const secret = /^(\s+(?:username|password|fingerprint|keyring|encryption-key|master-pubkey)\s+).*$/s;
  return scrubAddresses(alias, line.replace(secret, '$1anonymised'));
}

/**
 * Replaces, consistently across the whole capture, what identifies a site: node and guest
 * names, descriptions, ssh keys, cloud-init passwords, IP and MAC addresses, iSCSI names.
 * Volume names, VMIDs and storage IDs stay: they are what a bug report is about.
 */
export function anonymiseCapture(capture: Capture): Capture {
  const alias = aliasing();
  const nodeAlias = (name: string) => alias('node', name, (n) => `node${n}`);
  const nodeNames = new Set([capture.hostname, ...capture.configs.map((config) => config.node)]);
  // Numbered in name order, whatever order the configs come in.
  for (const name of [...nodeNames].sort()) nodeAlias(name);
  const scrubConfig = (type: GuestType, text: string) =>
    text
      .split('\n')
      .map((line) => scrubConfigLine(alias, type, line))
      .join('\n');
  return {
    ...capture,
    hostname: nodeAlias(capture.hostname),
    storageCfg: capture.storageCfg
      .split('\n')
      .map((line) => scrubStorageLine(alias, line))
      .join('\n'),
    configs: capture.configs.map((config) => ({
      ...config,
      node: nodeAlias(config.node),
      path: config.path.replace(`/nodes/${config.node}/`, `/nodes/${nodeAlias(config.node)}/`),
      text: config.text === null ? null : scrubConfig(config.type, config.text),
    })),
  };
}

// ============================================================================================
// Stage 2: parse. One parser per format, each tested against real lines (test/parse.test.ts).
// ============================================================================================

export interface DmEntry {
  /** The kernel's own name, as `dmsetup --manglename none` prints and takes it: what every command addresses. */
  name: string;
  /** The name as dmsetup's default mode shows it (libdm unmangles `\xNN`): what the entry was meant to be called. */
  realName: string;
  major: number;
  minor: number;
  open: number;
  attr: string;
  uuid: string;
  line: number;
}

/** What libdm leaves as it is in a name (libdm-common.c _is_whitelisted_char); every other byte it writes as `\xNN`. */
const DM_NAME_BYTE_RE = /[0-9A-Za-z#+\-.:=@_]/;
/** A name in libdm's mangled form: whitelisted bytes and `\xNN` escapes. */
const DM_MANGLED_RE = /^(?:[0-9A-Za-z#+\-.:=@_]|\\x[0-9a-fA-F]{2})*$/;

/** libdm's unmangling (dmsetup's default display): each `\xNN` back to its byte, read as UTF-8. */
export function unmangleDmName(name: string): string {
  if (!name.includes('\\x')) return name;
  const bytes: number[] = [];
  for (let i = 0; i < name.length; i++) {
    const hex = name[i] === '\\' && name[i + 1] === 'x' ? /^[0-9A-Fa-f]{2}/.exec(name.slice(i + 2, i + 4)) : null;
    if (hex) {
      bytes.push(parseInt(hex[0], 16));
      i += 3;
    } else {
      bytes.push(...Buffer.from(name[i] ?? '', 'utf8'));
    }
  }
  return Buffer.from(bytes).toString('utf8');
}

/**
 * Whether dmsetup, in its default mangling mode, addresses the kernel name `name` when given it as
 * it is. libdm (mangle_string, mode auto) keeps a name of whitelisted bytes and `\xNN` escapes, and
 * refuses one holding `\x5cx` ("mangled more than once"); any other byte it escapes first, so a name
 * the kernel holds raw (made with `--manglename none`, or by a tool without libdm) is out of its reach.
 */
export const dmsetupTakesAsIs = (name: string) => DM_MANGLED_RE.test(name) && !name.includes('\\x5cx');

/**
 * A kernel name as pve-dm shows it: the name itself when dmsetup's default mode addresses it (every
 * name LVM and libdm make), else a bash `$'...'` word with every byte outside libdm's whitelist as
 * `\xNN`. That word gives the exact bytes to `dmsetup --manglename none` through a shell; dmsetup's
 * default mode refuses it (a `$` then `\x`: mangled and unmangled mixed) rather than act on the name
 * it would make of it. So two kernel names never show alike, and a shown name pasted into dmsetup
 * never reaches another device.
 */
export function mangleDmName(name: string): string {
  if (dmsetupTakesAsIs(name)) return name;
  return bashHexWord(name, (byte) => byte < 128 && DM_NAME_BYTE_RE.test(String.fromCharCode(byte)));
}

/** A bash `$'...'` word of the UTF-8 bytes of `text`: those `keep` allows as they are, every other as `\xNN`. */
function bashHexWord(text: string, keep: (byte: number) => boolean): string {
  let word = '';
  for (const byte of Buffer.from(text, 'utf8'))
    word += keep(byte) ? String.fromCharCode(byte) : `\\x${byte.toString(16).padStart(2, '0')}`;
  return `$'${word}'`;
}

/**
 * LVM's dm name rule (libdm dm_split_lvm_name): components are separated by a single `-`, and
 * `--` stands for a `-` inside a component: `<vg>-<lv>[-<layer>]`.
 */
export function splitLvmName(name: string): { vg: string; lv: string; layer: string; rest: string } | null {
  // Where the first three components end: at a `-` before the last character, not doubled.
  let vgEnd = -1;
  let lvEnd = -1;
  let layerEnd = -1;
  for (let i = name.indexOf('-'); i >= 0 && i < name.length - 1 && layerEnd < 0; i = name.indexOf('-', i)) {
    if (name[i + 1] === '-') {
      i += 2;
      continue;
    }
    if (vgEnd < 0) vgEnd = i;
    else if (lvEnd < 0) lvEnd = i;
    else layerEnd = i;
    i += 1;
  }
  if (vgEnd < 0) return null;
  const vg = unquoteLvmPart(name.slice(0, vgEnd));
  const lv = unquoteLvmPart(lvEnd < 0 ? name.slice(vgEnd + 1) : name.slice(vgEnd + 1, lvEnd));
  const layer = lvEnd < 0 ? '' : unquoteLvmPart(layerEnd < 0 ? name.slice(lvEnd + 1) : name.slice(lvEnd + 1, layerEnd));
  // Everything after the VG, unquoted: what a hand-made name put there (`vm-169-disk-0-dup`);
  // without a layer, that is the LV itself.
  const rest = lvEnd < 0 ? lv : unquoteLvmPart(name.slice(vgEnd + 1));
  return vg && lv ? { vg, lv, layer, rest } : null;
}

const unquoteLvmPart = (part: string) => (part.includes('--') ? part.replaceAll('--', '-') : part);

/** The usual line, whose name holds no `|`: one match reads it whole. */
const DM_INFO_LINE_RE = /^([^|]*)\|(\d+)\|(\d+)\|(\d+)\|([L-][I-][s-][rw-])\|(.*)$/s;
const DIGITS_RE = /^\d+$/;
const dmInfoColumnsAt = (fields: string[], i: number) =>
  DIGITS_RE.test(fields[i] ?? '') &&
  DIGITS_RE.test(fields[i + 1] ?? '') &&
  DIGITS_RE.test(fields[i + 2] ?? '') &&
  DM_ATTR_RE.test(fields[i + 3] ?? '');
/** dmsetup's attr column: live table, inactive table, suspended, read-only or writable. */
const DM_ATTR_RE = /^[L-][I-][s-][rw-]$/;

/**
 * name, major, minor, open, attr and uuid of a `dmsetup info -c` line, or null. An unmangled name
 * may itself hold `|`: then the numeric columns and attr locate the name's end.
 */
function dmInfoFields(line: string): string[] | null {
  const usual = DM_INFO_LINE_RE.exec(line);
  if (usual !== null) return usual.slice(1);
  const fields = line.split('|');
  let at = 1;
  while (at + 4 < fields.length && !dmInfoColumnsAt(fields, at)) at++;
  if (at + 4 >= fields.length) return null;
  return [fields.slice(0, at).join('|'), ...fields.slice(at, at + 4), fields.slice(at + 4).join('|')];
}

export function parseDmsetupInfo(
  text: string,
  source = CAPTURE_FILES.dmsetupInfo,
): { entries: DmEntry[]; warnings: Warning[] } {
  const entries: DmEntry[] = [];
  const warnings: Warning[] = [];
  const seen = new Set<string>();
  const notUtf8 = text.includes('\ufffd');
  const all = lines(text);
  for (let index = 0; index < all.length; index++) {
    const line = all[index] as string;
    const lineNo = index + 1;
    const trimmed = line.trim();
    if (trimmed === '' || trimmed === 'No devices found') continue;
    // Bytes that are not UTF-8 (a raw name dmsetup printed unmangled) were read as U+FFFD: the
    // name would not be the kernel's, and a cleanup would name another device.
    if (notUtf8 && line.includes('\ufffd')) {
      warnings.push(
        warn(source, lineNo, `bytes that are not UTF-8: the device's name cannot be known exactly; entry skipped`),
      );
      continue;
    }
    const fields = dmInfoFields(line);
    if (fields === null) {
      warnings.push(warn(source, lineNo, `not a "name|major|minor|open|attr|uuid" line: ${clip(line)}; entry skipped`));
      continue;
    }
    // The kernel's name as it is: two names dmsetup's default mode would show alike (`a b` and
    // `a\x20b`) stay two entries, each addressed by its own.
    const name = fields[0] as string;
    if (seen.has(name)) {
      warnings.push(warn(source, lineNo, `device ${mangleDmName(name)} listed twice; second line skipped`));
      continue;
    }
    seen.add(name);
    entries.push({
      name,
      realName: unmangleDmName(name),
      major: Number(fields[1]),
      minor: Number(fields[2]),
      open: Number(fields[3]),
      attr: fields[4] as string,
      uuid: fields[5] as string,
      line: lineNo,
    });
  }
  return { entries, warnings };
}

// An unmangled name may hold ": " itself: the name ends where "<start> <length> <target>" begins.
// `s`: a U+2028 or `\r` in the line is text (a `.` stopping there backtracks quadratically).
const TABLE_LINE_RE = /^(.+?): (\d+ \d+ \S.*)$/s;
const EMPTY_TABLE_LINE_RE = /^(.+?):\s*$/s;

/**
 * Reads each line of a command's output that says something (not blank, not dmsetup's "No devices
 * found"); a line `read` refuses is one warning naming the file and the line, and the rest goes on.
 */
function readOutput(text: string, source: string, what: string, read: (line: string) => boolean): Warning[] {
  const warnings: Warning[] = [];
  const all = lines(text);
  for (let index = 0; index < all.length; index++) {
    const line = all[index] as string;
    const said = line.trim();
    if (said === '' || said === 'No devices found') continue;
    if (!read(line)) warnings.push(warn(source, index + 1, `not ${what}: ${clip(line)}; skipped`));
  }
  return warnings;
}

/** `dmsetup table`: `<name>: <start> <length> <target> <args>`, one line per segment. */
export function parseDmsetupTable(
  text: string,
  source: string = CAPTURE_FILES.dmsetupTable,
): { tables: Map<string, string>; warnings: Warning[] } {
  const tables = new Map<string, string>();
  const warnings = readOutput(text, source, 'a "<name>: <start> <length> <target> ..." line', (line) => {
    const segmentLine = TABLE_LINE_RE.exec(line) ?? EMPTY_TABLE_LINE_RE.exec(line);
    if (segmentLine === null) return false;
    const name = segmentLine[1] ?? '';
    const segment = (segmentLine[2] ?? '').trim();
    const previous = tables.get(name);
    tables.set(name, previous === undefined ? segment : `${previous}\n${segment}`);
    return true;
  });
  return { tables, warnings };
}

/** One segment of an LV as LVM's metadata holds it (`lvs --segments`, sizes in 512-byte sectors). */
export interface LvSegment {
  start: number;
  size: number;
  type: string;
  stripes: number;
  stripeSize: number;
  /** Each stripe's PV and extents, `<pv>:<first>-<last>`, inclusive. */
  ranges: { pv: string; first: number; last: number }[];
  thinId: number | null;
  pool: string | null;
}

/** An LV's layout in LVM's metadata, and the kernel device LVM knows it by. */
export interface LvLayout {
  vg: string;
  lv: string;
  /** Its and its VG's uuids as lvs prints them: its top device's dm uuid is `LVM-` + both without dashes. */
  lvUuid: string;
  vgUuid: string;
  attr: string;
  extentSize: number;
  segments: LvSegment[];
  /** `major:minor`, or null when it has no device (inactive). */
  device: string | null;
}

/** A decimal number of lvs' or pvs' output, or null. */
const decimal = (text: string | undefined) => (text !== undefined && /^\d+$/.test(text) ? Number(text) : null);

// One `lvs --segments` line, LVS_SEGMENTS_ARGS' 18 fields: vg, lv, lv uuid, vg uuid, attr, extent size,
// start, size, type, stripes, stripe size, (chunk size), PE ranges, thin id, pool, (origin), major, minor.
// One expression checks and splits it (17,000 lines on a 5,000-guest node), a group per field.
const SEGMENT_LINE_RE = new RegExp(
  '^([^|]+)\\|([^|]+)\\|([^|]*)\\|([^|]*)\\|([^|]+)\\|(\\d+)\\|(\\d+)\\|(\\d+)\\|([^|]+)\\|(\\d+)\\|(\\d+)\\|' +
    '([^|]*)\\|([^|]*)\\|([^|]*)\\|([^|]*)\\|([^|]*)\\|([^|]*)\\|([^|]*)$',
);
const PE_RANGE_RE = /^(.+):(\d+)-(\d+)$/;

/** One `lvs --segments` line, or null when it is not one. */
function segmentLine(line: string): { layout: Omit<LvLayout, 'segments'>; segment: LvSegment } | null {
  const f = SEGMENT_LINE_RE.exec(line.trim());
  if (f === null) return null;
  const [, vg = '', lv = '', lvUuid = '', vgUuid = '', attr = '', extent, start, size, type = '', stripes] = f;
  const [stripeSize, , rangesText = '', thinId, pool, , major, minor] = f.slice(11);
  const ranges: LvSegment['ranges'] = [];
  for (const range of rangesText.split(' ')) {
    const m = range === '' ? undefined : PE_RANGE_RE.exec(range);
    if (m === null) return null;
    if (m !== undefined) ranges.push({ pv: m[1] ?? '', first: Number(m[2]), last: Number(m[3]) });
  }
  const device = decimal(major) !== null && decimal(minor) !== null ? `${major}:${minor}` : null;
  // `lvs -a` shows LVM's own sub-LVs in brackets: `[data_tdata]`.
  const name = lv.startsWith('[') && lv.endsWith(']') ? lv.slice(1, -1) : lv;
  return {
    layout: { vg, lv: name, lvUuid, vgUuid, attr, extentSize: Number(extent), device },
    segment: {
      start: Number(start),
      size: Number(size),
      type,
      stripes: Number(stripes),
      stripeSize: Number(stripeSize),
      ranges,
      thinId: decimal(thinId),
      pool: pool || null,
    },
  };
}

/** `lvs --segments` output: each LV's layout, by VG and LV; a line that is not one is a warning. */
export function parseLvsSegments(
  text: string,
  source: string = CAPTURE_FILES.lvsSegments,
): { layouts: ByVolume<LvLayout>; warnings: Warning[] } {
  const layouts = new ByVolume<LvLayout>();
  const warnings = readOutput(text, source, "an lvs --segments line of pve-dm's fields", (line) => {
    const parsed = segmentLine(line);
    if (parsed === null) return false;
    const known = layouts.get(parsed.layout.vg, parsed.layout.lv);
    if (known === undefined)
      layouts.set(parsed.layout.vg, parsed.layout.lv, { ...parsed.layout, segments: [parsed.segment] });
    else known.segments.push(parsed.segment);
    return true;
  });
  return { layouts, warnings };
}

/** `pvs` output (PVS_ARGS): each PV's first extent (sectors) and device, by the name lvs gives it. */
export function parsePvs(
  text: string,
  source: string = CAPTURE_FILES.pvs,
): { pvs: Map<string, { peStart: number; device: string }>; warnings: Warning[] } {
  const pvs = new Map<string, { peStart: number; device: string }>();
  const warnings = readOutput(text, source, "a pvs line of pve-dm's fields", (line) => {
    const [name, , , , peStart, major, minor, ...rest] = line.trim().split('|');
    const numbers = [peStart, major, minor].map(decimal);
    if (!name || rest.length > 0 || numbers.some((n) => n === null)) return false;
    pvs.set(name, { peStart: Number(peStart), device: `${major}:${minor}` });
    return true;
  });
  return { pvs, warnings };
}

/** zvols.txt (liveZvols): each zvol's dataset by its device number; a line that is not one is a warning. */
export function parseZvols(
  text: string,
  source: string = CAPTURE_FILES.zvols,
): { zvols: Map<string, string>; warnings: Warning[] } {
  const zvols = new Map<string, string>();
  const warnings = readOutput(text, source, 'a "<major>:<minor> <dataset>" line', (line) => {
    const [, device, dataset] = /^\s*(\d+:\d+) (\S+)\s*$/.exec(line) ?? [];
    if (device === undefined || dataset === undefined) return false;
    zvols.set(device, dataset);
    return true;
  });
  return { zvols, warnings };
}

/** LVM's metadata of every LV (lvs --segments) and PV (pvs): what each LV's table should be. */
export interface LvmLayout {
  lvs: ByVolume<LvLayout>;
  pvs: ReadonlyMap<string, { peStart: number; device: string }>;
}

/**
 * The table the kernel should hold for the LV `vg/lv` whose top device has the dm uuid `dmUuid`, from
 * its metadata: linear and striped segments from their PV extents (`pe_start + extent * extent size`),
 * a thin volume from its pool's device and its thin id. Null, not checked: an LV LVM does not list
 * active under that uuid, of any other layout (a pool, an origin, a snapshot, RAID, cache), or whose
 * PV or pool has no device.
 */
export function expectedTable(lvm: LvmLayout, vg: string, lv: string, dmUuid: string): string | null {
  const layout = lvm.lvs.get(vg, lv);
  if (layout === undefined || !mapsLv(layout, dmUuid)) return null;
  // `-` a plain LV, `V` a thin volume: the types whose top device maps its own segments. Only an
  // active one (`a`; `X` where LVM itself finds the kernel's segments do not match) has a table.
  if (layout.attr[0] !== '-' && layout.attr[0] !== 'V') return null;
  if ((layout.attr[4] !== 'a' && layout.attr[4] !== 'X') || layout.device === null) return null;
  const table: string[] = [];
  for (const segment of layout.segments) {
    const line = expectedSegment(layout, segment, lvm);
    if (line === null) return null;
    table.push(line);
  }
  return table.join('\n');
}

function expectedSegment(layout: LvLayout, segment: LvSegment, lvm: LvmLayout): string | null {
  const head = `${segment.start} ${segment.size}`;
  const at = ({ pv, first }: LvSegment['ranges'][number]) => {
    const found = lvm.pvs.get(pv);
    return found === undefined ? null : `${found.device} ${found.peStart + first * layout.extentSize}`;
  };
  if (segment.type === 'thin') {
    const pool = segment.pool === null ? undefined : lvm.lvs.get(layout.vg, segment.pool);
    return pool?.device == null || segment.thinId === null ? null : `${head} thin ${pool.device} ${segment.thinId}`;
  }
  const places = segment.ranges.map(at);
  if (places.length !== segment.stripes || places.some((place) => place === null)) return null;
  if (segment.type === 'linear' && places.length === 1) return `${head} linear ${places[0]}`;
  if (segment.type === 'striped') return `${head} striped ${segment.stripes} ${segment.stripeSize} ${places.join(' ')}`;
  return null;
}

/** A thin pool as the kernel reports it: `dmsetup status` of its thin-pool target. */
export interface PoolStatus {
  /**
   * The kernel's mode (`rw`; `ro`: metadata switched read-only after an error; `out_of_data_space`),
   * `fail` (it printed `Fail`: the pool failed), or `error` (it printed `Error`: no status to read).
   */
  mode: 'rw' | 'ro' | 'out_of_data_space' | 'fail' | 'error';
  /** The metadata is flagged for a check (thin_check) before the next activation. */
  needsCheck: boolean;
  dataPercent: number | null;
  metadataPercent: number | null;
}

// Linux Documentation/admin-guide/device-mapper/thin-provisioning.rst, "Status": <transaction id>
// <used>/<total metadata blocks> <used>/<total data blocks> <held root> ro|rw|out_of_data_space
// [no_]discard_passdown error|queue_if_no_space needs_check|- [metadata_low_watermark]
const POOL_STATUS_RE =
  /^thin-pool \d+ (\d+)\/(\d+) (\d+)\/(\d+) \S+ (rw|ro|out_of_data_space) \S+ \S+ (needs_check|-)(?: |$)/;
const POOL_FAILED_RE = /^thin-pool (Fail|Error)\s*$/;

/**
 * `dmsetup status --target thin-pool`: one line per pool, `<name>: <start> <length> thin-pool ...`,
 * by the pool's VG and LV (its dm name is `<vg>-<lv>-tpool`, or `<vg>-<lv>` for a pool no thin LV uses).
 */
export function parsePoolStatus(
  text: string,
  source = CAPTURE_FILES.poolStatus,
): { pools: ByVolume<PoolStatus>; warnings: Warning[] } {
  const pools = new ByVolume<PoolStatus>();
  const what = `a thin pool's "<name>: <start> <length> thin-pool ..." line`;
  const warnings = readOutput(text, source, what, (line) => {
    const [, name = '', segment = ''] = TABLE_LINE_RE.exec(line) ?? [];
    const split = splitLvmName(name);
    const pool = poolStatusOf(segment.replace(/^\d+ \d+ /, '').trim());
    if (split === null || (split.layer !== '' && split.layer !== 'tpool') || pool === null) return false;
    pools.set(split.vg, split.lv, pool);
    return true;
  });
  return { pools, warnings };
}

function poolStatusOf(status: string): PoolStatus | null {
  const failed = POOL_FAILED_RE.exec(status);
  if (failed !== null)
    return {
      mode: failed[1] === 'Fail' ? 'fail' : 'error',
      needsCheck: false,
      dataPercent: null,
      metadataPercent: null,
    };
  const fields = POOL_STATUS_RE.exec(status);
  if (fields === null) return null;
  const [, metaUsed, metaTotal, dataUsed, dataTotal, mode, check] = fields.map(String);
  // As lvs shows it: two decimals (lib/metadata/lv.c, dm_make_percent).
  const percent = (used: string, total: string) =>
    Number(total) === 0 ? null : Math.round((10000 * Number(used)) / Number(total)) / 100;
  return {
    mode: mode as PoolStatus['mode'],
    needsCheck: check === 'needs_check',
    dataPercent: percent(dataUsed, dataTotal),
    metadataPercent: percent(metaUsed, metaTotal),
  };
}

export interface LogicalVolume {
  vg: string;
  lv: string;
  attr: string;
  tags: readonly string[];
  /** Shown by `lvs -a` in brackets: LVM's own sub-LVs (`[data_tdata]`). */
  hidden: boolean;
  /** The LV's and its VG's uuids as lvs prints them (null: an lvs.txt without uuids); see mapsLv. */
  lvUuid: string | null;
  vgUuid: string | null;
  /** A thin LV's pool (null: none, or not known). */
  pool: string | null;
  /** Its size in bytes (null: an lvs.txt without sizes). */
  sizeBytes: number | null;
  /** A thin pool's data and metadata use in percent (null: not a pool, not active, or not known). */
  dataPercent: number | null;
  metadataPercent: number | null;
  /** A thin pool's metadata size in bytes (null: not a pool, or not known). */
  metadataBytes: number | null;
  /** Its VG's attributes (`wz--n-`; the fourth `p`: a PV is missing) and free bytes; null: not known. */
  vgAttr: string | null;
  vgFreeBytes: number | null;
}

export const lvKey = (vg: string, lv: string) => `${vg}/${lv}`;

/**
 * lv_attr's fifth character: `-` not active, `h` historical, `X` not known; any other is a mapping
 * (`a`, `s` suspended, `c` a thin pool whose check is needed, `d`/`i` tables missing or inactive...).
 */
export const lvActive = (lv: Pick<LogicalVolume, 'attr'>) => !'-hX'.includes(lv.attr[4] ?? '-');

/**
 * Values by volume group, then LV name: lookups with the strings in hand, where a `vg/lv` key
 * would be a new string to build, flatten and hash on every lookup (tens of thousands on a large node).
 */
export class ByVolume<T> {
  readonly #groups = new Map<string, Map<string, T>>();
  #size = 0;
  get size(): number {
    return this.#size;
  }
  get(vg: string, lv: string): T | undefined {
    return this.#groups.get(vg)?.get(lv);
  }
  has(vg: string, lv: string): boolean {
    return this.#groups.get(vg)?.has(lv) ?? false;
  }
  set(vg: string, lv: string, value: T): void {
    let group = this.#groups.get(vg);
    if (group === undefined) this.#groups.set(vg, (group = new Map()));
    const before = group.size;
    group.set(lv, value);
    this.#size += group.size - before;
  }
  /** Grouped by volume group. */
  *values(): Generator<T> {
    for (const group of this.#groups.values()) yield* group.values();
  }
}

/** Appends to the list kept for a volume. */
function pushToVolume<V>(map: ByVolume<V[]>, vg: string, lv: string, value: V): void {
  const list = map.get(vg, lv);
  if (list === undefined) map.set(vg, lv, [value]);
  else list.push(value);
}

const LV_ATTR_RE = /^[-a-zA-Z]{10}$/;
const NO_TAGS: readonly string[] = Object.freeze([]);

/** LVM prints a uuid as 32 characters in groups of 6-4-4-4-4-4-6 (lib/uuid/uuid.c id_write_format). */
const LVM_DISPLAY_UUID_RE = /^[A-Za-z0-9]{6}(?:-[A-Za-z0-9]{4}){5}-[A-Za-z0-9]{6}$/;

/** Whether the 32 characters of `compact` from `at` are the uuid lvs printed as `shown` (its dashes left out). */
function sameLvmId(compact: string, at: number, shown: string): boolean {
  let next = at;
  for (let i = 0; i < shown.length; i++) if (shown[i] !== '-' && shown[i] !== compact[next++]) return false;
  return next === at + 32;
}

/**
 * Whether a dm uuid is that of the LV's own mapping, `LVM-` + VG uuid + LV uuid without their
 * dashes (lib/misc/lvm-string.c build_dm_uuid); null when lvs.txt has no uuids.
 */
export function mapsLv(lv: Pick<LogicalVolume, 'lvUuid' | 'vgUuid'>, dmUuid: string): boolean | null {
  if (lv.lvUuid === null || lv.vgUuid === null) return null;
  return (
    dmUuid.length === 68 &&
    dmUuid.startsWith('LVM-') &&
    sameLvmId(dmUuid, 4, lv.vgUuid) &&
    sameLvmId(dmUuid, 36, lv.lvUuid)
  );
}

/** The columns of lvs.txt: LVS_ARGS's, and the fewer that captures of earlier pve-dm versions have. */
const LVS_COLUMNS = 'vg|lv|attr|tags|lv_uuid|vg_uuid|pool_lv|lv_size|data%|metadata%|metadata_size|vg_attr|vg_free';
const LVS_FIELD_COUNTS: ReadonlySet<number> = new Set([4, 7, 8, 13]);
const PERCENT_RE = /^\d{1,3}(?:\.\d+)?$/;
const VG_ATTR_RE = /^[-a-zA-Z]{6}$/;

/**
 * `lvs` as LVS_ARGS asks for it (LVS_COLUMNS). Captures of earlier pve-dm versions have fewer
 * columns: 8 (no pool use, no VG state), 7 (no sizes) or 4 (no uuids either); what they lack is
 * not known, never zero.
 */
export function parseLvs(
  text: string,
  source = CAPTURE_FILES.lvs,
): { lvs: ByVolume<LogicalVolume>; warnings: Warning[] } {
  const lvs = new ByVolume<LogicalVolume>();
  const warnings: Warning[] = [];
  const all = lines(text);
  for (let index = 0; index < all.length; index++) {
    const raw = all[index] as string;
    const line = raw.trim();
    if (line === '') continue;
    const lv = lvFrom(line.split('|'));
    if (lv === null) warnings.push(warn(source, index + 1, `not a "${LVS_COLUMNS}" line: ${clip(line)}; skipped`));
    else lvs.set(lv.vg, lv.lv, lv);
  }
  return { lvs, warnings };
}

/** One lvs.txt line's fields as an LV, or null when they are not what lvs prints. */
function lvFrom(fields: readonly string[]): LogicalVolume | null {
  const count = fields.length;
  if (!LVS_FIELD_COUNTS.has(count)) return null;
  const vg = fields[0] ?? '';
  const name = fields[1] ?? '';
  const attr = fields[2] ?? '';
  const tags = fields[3] ?? '';
  if (vg === '' || name === '' || !LV_ATTR_RE.test(attr)) return null;
  // Columns an earlier pve-dm did not ask for are null: not known.
  const lvUuid = count >= 7 ? (fields[4] ?? '') : null;
  const vgUuid = count >= 7 ? (fields[5] ?? '') : null;
  if (lvUuid !== null && !(LVM_DISPLAY_UUID_RE.test(lvUuid) && LVM_DISPLAY_UUID_RE.test(vgUuid ?? ''))) return null;
  const size = count >= 8 ? (fields[7] ?? '') : null;
  if (size !== null && !DIGITS_RE.test(size)) return null;
  // A thin pool's use and metadata size (empty for other LVs, and inactive pools), its VG's attributes and free space.
  const data = count === 13 ? (fields[8] ?? '') : '';
  const metadata = count === 13 ? (fields[9] ?? '') : '';
  const metadataSize = count === 13 ? (fields[10] ?? '') : '';
  const vgAttr = count === 13 ? (fields[11] ?? '') : null;
  const vgFree = count === 13 ? (fields[12] ?? '') : null;
  if (!poolColumnsFine(data, metadata, metadataSize, vgAttr, vgFree)) return null;
  const hidden = name.startsWith('[') && name.endsWith(']');
  return {
    vg,
    lv: hidden ? name.slice(1, -1) : name,
    attr,
    tags: tags === '' ? NO_TAGS : tags.split(','),
    hidden,
    lvUuid,
    vgUuid,
    pool: (count >= 7 && fields[6]) || null,
    sizeBytes: size === null ? null : Number(size),
    dataPercent: data === '' ? null : Number(data),
    metadataPercent: metadata === '' ? null : Number(metadata),
    metadataBytes: metadataSize === '' ? null : Number(metadataSize),
    vgAttr,
    vgFreeBytes: vgFree === null ? null : Number(vgFree),
  };
}

const poolColumnsFine = (data: string, metadata: string, size: string, vgAttr: string | null, vgFree: string | null) =>
  (data === '' || PERCENT_RE.test(data)) &&
  (metadata === '' || PERCENT_RE.test(metadata)) &&
  (size === '' || DIGITS_RE.test(size)) &&
  (vgAttr === null || VG_ATTR_RE.test(vgAttr)) &&
  (vgFree === null || DIGITS_RE.test(vgFree));

export interface Storage {
  id: string;
  type: string;
  /** The volume group, for `lvm` and `lvmthin` storages. */
  vg: string | null;
  thinpool: string | null;
  shared: boolean;
  disabled: boolean;
  nodes: string[] | null;
  /** Its `content` types; null: the plugin's default (lvm: images; lvmthin: images and rootdir). */
  content: string[] | null;
  /** lvm `tagged_only`: it lists only LVs tagged `pve-vm-<vmid>`. */
  taggedOnly: boolean;
  line: number;
}

/** Storage types Proxmox VE ships (pve-storage's plugin list). */
const KNOWN_STORAGE_TYPES = new Set([
  'dir',
  'nfs',
  'cifs',
  'glusterfs',
  'iscsi',
  'iscsidirect',
  'rbd',
  'cephfs',
  'lvm',
  'lvmthin',
  'zfs',
  'zfspool',
  'pbs',
  'btrfs',
  'esxi',
]);
/** pve-storage's `pve-storage-id` format (PVE::JSONSchema parse_id). */
export const STORAGE_ID_RE = /^[a-z][a-z0-9\-_.]*[a-z0-9]$/i;

/** pve-common's split_list: the items of a list property (`nodes`, `content`, `fleecing-images`...). */
const splitList = (value: string) => value.split(/[,;\s]+/).filter(Boolean);

/** A storage.cfg section being read: its header, then its `key value` lines. */
interface StorageSection {
  section: Pick<Storage, 'id' | 'type' | 'line'>;
  props: Map<string, string>;
}

/** A section's storage from its `key value` lines. */
function storageFrom({ section, props }: StorageSection): Storage {
  const list = (key: string) => {
    const value = props.get(key);
    return value === undefined ? null : splitList(value);
  };
  const flag = (key: string) => props.has(key) && props.get(key) !== '0';
  return {
    ...section,
    vg: section.type === 'lvm' || section.type === 'lvmthin' ? (props.get('vgname') ?? null) : null,
    thinpool: props.get('thinpool') ?? null,
    shared: props.get('shared') === '1',
    disabled: flag('disable'),
    nodes: list('nodes'),
    content: list('content'),
    taggedOnly: flag('tagged_only'),
  };
}

/**
 * storage.cfg as PVE::SectionConfig writes it: `<type>: <id>` then indented `key value` lines. A
 * storage type pve-dm does not know (a third-party plugin) is a note, not a warning: a healthy node
 * with a storage plugin reads OK.
 */
export function parseStorageCfg(
  text: string,
  source = CAPTURE_FILES.storageCfg,
): { storages: Storage[]; warnings: Warning[]; notes: Warning[] } {
  const storages: Storage[] = [];
  const warnings: Warning[] = [];
  const notes: Warning[] = [];
  let current: StorageSection | null = null;
  let skipping = false;
  const finish = () => {
    if (current === null) return;
    const { section, props } = current;
    if ((section.type === 'lvm' || section.type === 'lvmthin') && !props.has('vgname')) {
      warnings.push(
        warn(source, section.line, `${section.type} storage ${section.id} has no vgname; its volumes cannot be mapped`),
      );
    }
    storages.push(storageFrom(current));
    current = null;
  };
  const all = lines(text);
  for (let index = 0; index < all.length; index++) {
    const line = all[index] as string;
    const lineNo = index + 1;
    if (line.trim() === '' || /^\s*#/.test(line)) continue;
    // SectionConfig's header `^(\S+):\s*(\S+)\s*$`, as two linear regexes (with and without the
    // space): as one, its first `\S+` backtracks over every `:` of a long line, each time scanning
    // the rest of it (quadratic).
    const trimmed = line.trimEnd();
    const header = /\s/.test(trimmed) ? /^(\S+):\s+(\S+)$/.exec(trimmed) : /^(\S+):(\S+)$/.exec(trimmed);
    if (header) {
      finish();
      const type = (header[1] ?? '').toLowerCase();
      const id = header[2] ?? '';
      skipping = !STORAGE_ID_RE.test(id);
      if (skipping) {
        warnings.push(warn(source, lineNo, `invalid storage ID ${clip(id)}; section skipped`));
        continue;
      }
      if (!KNOWN_STORAGE_TYPES.has(type)) {
        notes.push(
          warn(
            source,
            lineNo,
            `storage ${id} has type ${clip(type)}, which pve-dm does not know (a storage plugin): guest volumes ` +
              'in a volume group no lvm or lvmthin storage names are not judged',
          ),
        );
      }
      current = { section: { id, type, line: lineNo }, props: new Map() };
      continue;
    }
    // SectionConfig's `^\s+(\S+)(\s+(.*\S))?\s*$` on the line without its trailing space: as one
    // regex, `\s+` and `.*\S` share a long run of trailing spaces and backtrack quadratically over
    // it. `s`: `.` takes U+2028 and `\r` as Perl's does (see CONFIG_KEY_RE).
    const property = /^\s+(\S+)(?:\s+(.*))?$/s.exec(trimmed);
    if (property && skipping) continue;
    if (property && current !== null) {
      const { section, props } = current as StorageSection;
      const key = property[1] ?? '';
      // SectionConfig refuses a second line of a key ("duplicate attribute") and keeps the first.
      if (props.has(key))
        warnings.push(
          warn(
            source,
            lineNo,
            `${clip(key)} given twice in storage ${section.id}; the first is kept, as Proxmox keeps it`,
          ),
        );
      else props.set(key, property[2] ?? '1');
      continue;
    }
    warnings.push(warn(source, lineNo, `cannot parse line: ${clip(line)}`));
  }
  finish();
  return { storages, warnings, notes };
}

/** A volume a guest config refers to, in one section of the config. */
export interface VolumeRef {
  /** `storeid:volname`, or an absolute device path. */
  volume: string;
  key: string;
  /** `current`, `pending`, `special:fleecing`, or a snapshot's name. */
  section: string;
  line: number;
}

export interface GuestConfig {
  vmid: number;
  type: GuestType;
  node: string;
  path: string;
  name: string | null;
  lock: string | null;
  template: boolean;
  snapshots: string[];
  refs: VolumeRef[];
  /** false: the file could not be read or is not a guest config at all. */
  readable: boolean;
  /** Some lines could not be parsed: the config may reference volumes we cannot see. */
  partial: boolean;
}

/** qemu-server's drives and volumes; `cdrom` is its alias of `ide2` (parse_vm_config). */
const QEMU_VOLUME_KEY_RE = /^(?:(?:ide|scsi|virtio|sata)\d+|efidisk0|tpmstate0|unused\d+|vmstate|cdrom)$/;
const LXC_VOLUME_KEY_RE = /^(?:rootfs|mp\d+|unused\d+)$/;
/**
 * qemu-server parse_vm_config / pve-container parse_pct_config key line, `^(key):\s*(.+?)\s*$`:
 * a key, `:`, then at least one character. Lines are split at `\n` only, so `.` takes any other
 * character, as Perl's does (the `s` flag; a JS `.` stops at U+2028 and `\r`). Tested, not
 * matched: the value is cut out only for the few keys pve-dm reads (configValue).
 */
const CONFIG_KEY_RE = /^[a-z][a-z_-]*\d*:./s;
/** pve-container keeps raw `lxc.*` keys (`lxc.mount.entry: ...`, `lxc.cap.drop =`). */
const LXC_RAW_KEY_RE = /^lxc\.[a-z0-9_.-]+(?::|\s*=)/;
const SNAPSHOT_SECTION_RE = /^\[([a-z][a-z0-9_-]+)\]\s*$/i;
/** NUL, control characters but tab, or bytes that were not UTF-8. */
const BINARY_LINE_RE = /[\u0000-\u0008\u000b-\u001f\ufffd]/;
const BLANK_RE = /^\s*$/;
const NO_VOLUMES: readonly string[] = Object.freeze([]);
const QEMU_PENDING_RE = /^\[PENDING\]\s*$/i;
const LXC_PENDING_RE = /^\[pve:pending\]\s*$/i;

/**
 * The value of a key line whose key ends at `colon`, as `:\s*(.+?)\s*$` captures it: trimmed (`\s`
 * and String#trim take the same characters), or, when it is all blanks, the last of them.
 */
function configValue(line: string, colon: number): string {
  const value = line.slice(colon + 1).trim();
  return value === '' ? line.slice(-1) : value;
}

/**
 * The volumes of a drive or mount point value, read as pve-common's parse_property_string reads it:
 * items split at `,` (there is no quoting), blank items skipped, the item without `=` (the default
 * key: qemu-server's `file`, pve-container's `volume`) wherever it stands, or `file=`/`volume=`.
 * Proxmox refuses a value naming two and drops the line; pve-dm reads each (see README, "Where pve-dm
 * reads more than Proxmox"). `none` and `cdrom` are no volume.
 */
export function volumesOfPropertyString(value: string): string[] {
  const volumes: string[] = [];
  for (const item of value.split(',')) {
    const named = item.startsWith('file=') || item.startsWith('volume=');
    if (!named && item.includes('=')) continue;
    const volume = named ? item.slice(item.indexOf('=') + 1) : item;
    if (volume !== 'none' && volume !== 'cdrom' && !BLANK_RE.test(volume)) volumes.push(volume);
  }
  return volumes;
}

/** The volumes a config line names: a drive's or mount point's, `vmstate`'s, or `[special:fleecing]`'s images. */
function volumesOfLine(
  line: string,
  colon: number,
  key: string,
  section: string,
  volumeKeys: RegExp,
): readonly string[] {
  // fleecing-images is a pve-volume-id-list: `,`, `;` or blanks between its items.
  if (section === 'special:fleecing' && key === 'fleecing-images') return splitList(configValue(line, colon));
  if (!volumeKeys.test(key)) return NO_VOLUMES;
  const value = configValue(line, colon);
  return key === 'vmstate' ? [value] : volumesOfPropertyString(value);
}

export function parseGuestConfig(file: ConfigFile): { config: GuestConfig; warnings: Warning[] } {
  const warnings: Warning[] = [];
  const config: GuestConfig = {
    vmid: file.vmid,
    type: file.type,
    node: file.node,
    path: file.path,
    name: null,
    lock: null,
    template: false,
    snapshots: [],
    refs: [],
    readable: file.text !== null,
    partial: false,
  };
  if (file.text === null) {
    warnings.push(
      warn(
        file.path,
        null,
        `cannot read the guest config (${file.readError ?? 'unknown error'}); the guest's entries are not judged`,
      ),
    );
    return { config, warnings };
  }
  const volumeKeys = file.type === 'qemu' ? QEMU_VOLUME_KEY_RE : LXC_VOLUME_KEY_RE;
  const pendingHeader = file.type === 'qemu' ? QEMU_PENDING_RE : LXC_PENDING_RE;
  const nameKey = file.type === 'qemu' ? 'name' : 'hostname';
  // One look at the whole file: almost no config holds such a byte.
  const binary = BINARY_LINE_RE.test(file.text);
  let section = 'current';
  let keyLines = 0;
  const all = lines(file.text);
  for (let index = 0; index < all.length; index++) {
    const line = all[index] as string;
    const lineNo = index + 1;
    if (line.trim() === '' || line.startsWith('#')) continue;
    if (binary && BINARY_LINE_RE.test(line)) {
      config.partial = true;
      warnings.push(warn(file.path, lineNo, 'binary bytes (NUL, control characters or invalid UTF-8); line skipped'));
      continue;
    }
    if (line.startsWith('[')) {
      const snapshot = SNAPSHOT_SECTION_RE.exec(line)?.[1];
      if (pendingHeader.test(line)) section = 'pending';
      else if (/^\[special:[a-z]+\]\s*$/i.test(line)) section = line.trim().slice(1, -1).toLowerCase();
      else if (snapshot !== undefined) config.snapshots.push((section = snapshot));
      else {
        warnings.push(warn(file.path, lineNo, `unknown section ${clip(line)}; its lines are read as a snapshot's`));
        section = line.trim();
      }
      continue;
    }
    if (!CONFIG_KEY_RE.test(line)) {
      if (file.type === 'lxc' && LXC_RAW_KEY_RE.test(line)) continue;
      config.partial = true;
      warnings.push(warn(file.path, lineNo, `cannot parse line: ${clip(line)}`));
      continue;
    }
    keyLines++;
    const colon = line.indexOf(':');
    const key = line.slice(0, colon);
    if (section === 'current') {
      if (key === 'lock') config.lock = configValue(line, colon);
      else if (key === 'template') config.template = configValue(line, colon) === '1';
      else if (key === nameKey) config.name = configValue(line, colon);
    }
    for (const volume of volumesOfLine(line, colon, key, section, volumeKeys))
      config.refs.push({ volume, key, section, line: lineNo });
  }
  if (keyLines === 0) {
    warnings.push(
      warn(file.path, null, 'no "key: value" line: not a guest config; the guest\'s entries are not judged'),
    );
    return { config: { ...config, readable: false }, warnings };
  }
  return { config, warnings };
}

export type VolumeKind = 'disk' | 'base' | 'cloudinit' | 'state' | 'fleece' | 'snapshot' | 'other';

/** A way to read a snapshot LV's name: the volume it is a snapshot of, and the snapshot's name. */
export interface SnapshotReading {
  origin: string;
  snapshot: string;
}

export interface GuestVolume {
  kind: VolumeKind;
  /** The VMID in the volume's name. */
  vmid: number;
  /** For snapshots: the first reading of the name (the volume's name up to its first `_`). */
  origin: string | null;
  snapshot: string | null;
  /**
   * For snapshots: every reading of the name. `snap_vm-100-my_disk_s1` is volume `vm-100-my_disk`'s
   * snapshot `s1` or volume `vm-100-my`'s snapshot `disk_s1`: classify takes the one whose volume is known.
   */
  readings: readonly SnapshotReading[];
}

/** Guest volume names (pve-storage LvmThinPlugin / LVMPlugin parse_volname and their callers). */
const GUEST_VOLUME_PATTERNS: { kind: Exclude<VolumeKind, 'snapshot'>; pattern: RegExp }[] = [
  { kind: 'disk', pattern: /^vm-(\d+)-disk-\d+(?:\.qcow2)?$/ },
  { kind: 'base', pattern: /^base-(\d+)-disk-\d+(?:\.qcow2)?$/ },
  { kind: 'cloudinit', pattern: /^vm-(\d+)-cloudinit(?:\.qcow2)?$/ },
  { kind: 'state', pattern: /^vm-(\d+)-state-.+$/ },
  { kind: 'fleece', pattern: /^vm-(\d+)-fleece-\d+(?:\.qcow2)?$/ },
  { kind: 'other', pattern: /^(?:vm|base)-(\d+)-\S+$/ },
];
const NO_READINGS: readonly SnapshotReading[] = Object.freeze([]);
/** A volume name an LVM storage lists (LvmThinPlugin parse_volname), as the start of a snapshot's name. */
const SNAPSHOT_ORIGIN_RE = /^(?:vm|base)-(\d+)-\S+$/;
/**
 * A snapshot's name (pve-snapshot-name: pve-configid, at most 40 characters; pve-dm also takes a
 * single letter, which Proxmox never makes).
 */
const SNAPSHOT_NAME_RE = /^[A-Za-z][A-Za-z0-9_-]{0,39}$/;
const MAX_SNAPSHOT_NAME = 40;

/**
 * The readings of `snap_<volume>_<snapshot>` (LVM-thin, LvmThinPlugin volume_snapshot) or
 * `snap_<volume without .qcow2>_<snapshot>.qcow2` (PVE 9 volume chains, LVMPlugin get_snap_name):
 * one for each `_` that may end the volume's name, the shortest volume first.
 */
function snapshotReadings(lv: string): SnapshotReading[] {
  const chain = lv.endsWith('.qcow2');
  const body = lv.slice('snap_'.length, chain ? -'.qcow2'.length : undefined);
  const readings: SnapshotReading[] = [];
  // Only the last 41 characters can hold the `_` before the snapshot's name.
  for (
    let at = body.indexOf('_', Math.max(0, body.length - MAX_SNAPSHOT_NAME - 1));
    at >= 0;
    at = body.indexOf('_', at + 1)
  ) {
    const origin = body.slice(0, at);
    const snapshot = body.slice(at + 1);
    if (SNAPSHOT_ORIGIN_RE.test(origin) && SNAPSHOT_NAME_RE.test(snapshot))
      readings.push({ origin: chain ? `${origin}.qcow2` : origin, snapshot });
  }
  return readings;
}

export function parseGuestVolumeName(lv: string): GuestVolume | null {
  if (lv.startsWith('snap_')) {
    const readings = snapshotReadings(lv);
    const first = readings[0];
    if (first === undefined) return null;
    const vmid = Number(SNAPSHOT_ORIGIN_RE.exec(first.origin)?.[1]);
    return { kind: 'snapshot', vmid, origin: first.origin, snapshot: first.snapshot, readings };
  }
  for (const { kind, pattern } of GUEST_VOLUME_PATTERNS) {
    const m = pattern.exec(lv);
    if (m !== null) return { kind, vmid: Number(m[1]), origin: null, snapshot: null, readings: NO_READINGS };
  }
  return null;
}

/**
 * A name made by hand from a volume's name plus a suffix (`vm-169-disk-0-dup`): the volume's name.
 * The suffix may be anything, a line break included (`s`): a dm name may hold any byte but `/`.
 */
const COPY_OF_VOLUME_RE = /^((?:vm|base)-\d+-(?:disk|fleece)-\d+(?:\.qcow2)?|vm-\d+-cloudinit)[-_.~].*$/s;

export function stripCopySuffix(lv: string): string | null {
  return COPY_OF_VOLUME_RE.exec(lv)?.[1] ?? null;
}

/** An LV name holding an LVM component marker is one of LVM's own sub-LVs (lvm.8 VALID NAMES). */
// prettier-ignore
const LVM_SUB_LV_MARKERS = [
  'cdata', 'cmeta', 'corig', 'cpool', 'cvol', 'wcorig', String.raw`mimage_\d+`, 'mlog', String.raw`rimage_\d+`,
  String.raw`rmeta_\d+`, 'tdata', 'tmeta', 'vdata', 'imeta', 'iorig', 'pmspare', 'vorigin',
];
const LVM_SUB_LV_RE = new RegExp(`_(?:${LVM_SUB_LV_MARKERS.join('|')})(?:$|_)`);

export interface ParsedState {
  node: string;
  entries: DmEntry[];
  /** dmsetup tables by name; null = not known. */
  tables: Map<string, string> | null;
  /** LVM's LVs by VG and LV name; null = not known. */
  lvs: ByVolume<LogicalVolume> | null;
  /** The kernel's status of each active thin pool, by VG and pool name; null = not known. */
  poolStatus: ByVolume<PoolStatus> | null;
  /** LVM's metadata of LVs and PVs, to work out each active LV's table; null or absent: not known (not checked). */
  lvmLayout?: LvmLayout | null;
  /** Each zvol's dataset by its device number (`230:16`); null or absent: not known. */
  zvols?: Map<string, string> | null;
  /** Where a thin pool's use turns into a warning and a critical finding (percent); defaults when absent. */
  poolThresholds?: PoolThresholds;
  storages: Storage[];
  guests: GuestConfig[];
  running: Set<number> | null;
  system: SystemFacts | null;
  meta: CaptureMeta | null;
  root: string | null;
  warnings: Warning[];
  /** What is worth knowing but no fault (a storage plugin pve-dm does not know): it raises no exit code. */
  notes: Warning[];
}

export function parse(capture: Capture): ParsedState {
  const info = parseDmsetupInfo(capture.dmsetupInfo);
  const table = capture.dmsetupTable === null ? null : parseDmsetupTable(capture.dmsetupTable);
  const lvs = capture.lvs === null ? null : parseLvs(capture.lvs);
  const poolStatus = capture.poolStatus == null ? null : parsePoolStatus(capture.poolStatus);
  const segments = capture.lvsSegments == null ? null : parseLvsSegments(capture.lvsSegments);
  const pvs = capture.pvs == null ? null : parsePvs(capture.pvs);
  const zvols = capture.zvols == null ? null : parseZvols(capture.zvols);
  const storage = parseStorageCfg(capture.storageCfg);
  const guests = capture.configs.map(parseGuestConfig);
  const runningWarnings: Warning[] = [];
  const running =
    capture.running === null
      ? null
      : new Set(
          lines(capture.running).flatMap((line, index) => {
            if (line.trim() === '') return [];
            if (/^\s*[1-9][0-9]{2,8}\s*$/.test(line)) return [Number(line)];
            runningWarnings.push(warn(CAPTURE_FILES.running, index + 1, `not a VMID: ${clip(line)}`));
            return [];
          }),
        );
  const storageIds = new Set(storage.storages.map((s) => s.id));
  const unknownStorages = new Map<string, Warning>();
  for (const { config } of guests) {
    for (const ref of config.refs) {
      const id = storeIdOf(ref.volume);
      if (id !== null && !storageIds.has(id) && !unknownStorages.has(id)) {
        unknownStorages.set(id, warn(config.path, ref.line, `storage ${id} is not defined in storage.cfg`));
      }
    }
  }
  return {
    node: capture.hostname,
    entries: info.entries,
    tables: table?.tables ?? null,
    lvs: lvs?.lvs ?? null,
    poolStatus: poolStatus?.pools ?? null,
    lvmLayout: segments === null || pvs === null ? null : { lvs: segments.layouts, pvs: pvs.pvs },
    zvols: zvols?.zvols ?? null,
    storages: storage.storages,
    guests: guests.map((g) => g.config),
    running,
    system: capture.system,
    meta: capture.meta,
    root: capture.root,
    warnings: [
      ...capture.warnings,
      ...info.warnings,
      ...(table?.warnings ?? []),
      ...(lvs?.warnings ?? []),
      ...(poolStatus?.warnings ?? []),
      ...(segments?.warnings ?? []),
      ...(pvs?.warnings ?? []),
      ...(zvols?.warnings ?? []),
      ...storage.warnings,
      ...guests.flatMap((g) => g.warnings),
      ...runningWarnings,
      ...unknownStorages.values(),
    ],
    notes: storage.notes,
  };
}

/** pve-storage parse_volume_id: `storeid:volname`. */
const VOLUME_ID_RE = /^([a-z][a-z0-9\-_.]*[a-z0-9]):(.+)$/i;
const storeIdOf = (volume: string) => VOLUME_ID_RE.exec(volume)?.[1] ?? null;

// ============================================================================================
// Stage 3: classify. Every dm entry gets one status and a documented reason.
// ============================================================================================

/**
 * valid, duplicate and tombstone are judgements; ignored is an entry that is not pve-dm's to judge
 * (LVM's own layers, multipath, work in flight...); unjudged is one pve-dm should judge and cannot
 * (its guest's config cannot be read): a node with any is never shown as healthy.
 */
export type Status = 'valid' | 'conflict' | 'duplicate' | 'tombstone' | 'ignored' | 'unjudged';

/** Every reason, with the status it gives and what it means (README lists the same). */
export const REASONS = {
  referenced: ['valid', 'a guest config on this node references the volume'],
  'snapshot-in-config': ['valid', 'a snapshot LV whose guest on this node has that snapshot'],
  'stale-table': [
    'conflict',
    "an LV whose kernel table differs from what LVM's metadata says it maps (its size, its extents or its thin " +
      "id): the guest reads and writes other blocks than LVM gave it, maybe another guest's",
  ],
  'stacked-on-guest-volume': [
    'conflict',
    "a device stacked on a guest volume's dm device (kpartx partitions, an LV of the guest's own VG active on the " +
      "host): it holds the guest's disk open, and while the guest runs host and guest write one filesystem",
  ],
  'duplicate-name': [
    'duplicate',
    "a hand-made entry named like a guest volume plus a suffix, beside the volume's own entry",
  ],
  'duplicate-table': ['duplicate', "a second mapping with exactly the same dmsetup table as a guest volume's entry"],
  'storage-unknown': ['tombstone', 'no lvm or lvmthin storage in storage.cfg names its volume group'],
  'lv-missing': ['tombstone', 'LVM no longer knows the LV (deleted on another node of a shared VG: Proxmox bug 4997)'],
  'lv-mismatch': ['tombstone', 'LVM knows the LV but not as this mapping: it is inactive, or has another uuid'],
  'guest-on-other-node': [
    'tombstone',
    'the guest lives on another node and references the volume there (left after a migration)',
  ],
  'guest-missing': ['tombstone', 'the VMID has no config on any node of the cluster'],
  'volume-unreferenced': ['tombstone', 'the guest exists but no config references this volume'],
  'partition-of-problem': ['tombstone', 'a kpartx partition of a problem entry: it goes with (and before) its parent'],
  'lvm-internal': [
    'ignored',
    "one of LVM's own layers or sub-LVs (thin pool, tdata/tmeta, snapshot origin/cow, raid image...)",
  ],
  'not-guest-volume': ['ignored', 'an LVM volume that is not a guest volume (root, swap, data...)'],
  multipath: ['ignored', 'a multipath map'],
  crypt: ['ignored', 'a dm-crypt / LUKS mapping'],
  'ceph-osd': ['ignored', 'a Ceph OSD volume'],
  partition: ['ignored', 'a kpartx partition of an entry that is not a problem'],
  foreign: ['ignored', 'a device-mapper device that is not an LVM guest volume'],
  'saferemove-in-flight': ['ignored', "a volume Proxmox's saferemove is wiping (del-<volume>)"],
  'in-flight': ['ignored', 'a volume of a guest locked by an operation that makes, copies or moves volumes'],
  'foreign-vg': ['ignored', 'a guest volume in a VG no LVM storage names, while a plugin may own it or it is open'],
  'config-unreadable': ['unjudged', "the guest's config cannot be read, so its entries cannot be judged"],
} as const satisfies Record<string, readonly [Status, string]>;

export type Reason = keyof typeof REASONS;

export interface Classified {
  name: string;
  realName: string;
  uuid: string;
  major: number;
  minor: number;
  open: number;
  status: Status;
  reason: Reason;
  /**
   * The command an administrator would run for a problem, which works as printed; null for the
   * other entries, and for a problem no command may touch now (its guest is locked, it is held open).
   */
  remedy: string | null;
  /** What to do instead when a problem has no remedy, or why an entry is not judged; null otherwise. */
  advice: string | null;
  /** The guest the entry belongs to: the config that references it, else the VMID in its name. */
  vmid: number | null;
  /** That guest's type, from its config on any node (null: it has none). */
  guestType: GuestType | null;
  vg: string | null;
  lv: string | null;
  kind: VolumeKind | null;
  /**
   * The entry is LVM's own mapping of a known LV: LVM lists the LV as active, with this entry's
   * uuid when lvs.txt has uuids (false: hand-made, or the LV is gone, inactive or another; null: not known).
   */
  lvmKnown: boolean | null;
  /** For a duplicate: the member that stays. For a partition: its parent. */
  relatedTo: string | null;
  /** The node whose guest references the volume, for guest-on-other-node. */
  otherNode: string | null;
  /** The `lock:` of the guest the entry belongs to, on whatever node it lives (a migration in flight). */
  lock: string | null;
  /** For a problem held open: the dm entries stacked on it (their tables map it). */
  holders: readonly string[];
  /** In a cluster's result: the node whose dm entry this is (its name stays the dm name). */
  node?: string;
  /**
   * A conflict's details. A stale table: what LVM's metadata says the table should be, and the
   * kernel's. A device stacked on a guest volume: the guest's own VG it belongs to (active on the
   * host), or null (a kpartx partition, another mapping), and the zvol it sits on (null: a dm device).
   */
  conflict?: { expected: string; actual: string } | { guestVg: string | null; zvol: string | null };
}

export interface DuplicateSet {
  vg: string;
  lv: string;
  vmid: number;
  kept: string;
  extras: string[];
  /** In a cluster's result: the node of these entries. */
  node?: string;
}

export interface GuestSummary {
  vmid: number;
  type: GuestType;
  name: string | null;
  running: boolean | null;
  lock: string | null;
  template: boolean;
  health: 'clean' | 'conflict' | 'duplicate' | 'tombstone';
  readable: boolean;
  /** In a cluster run's single result: the node the guest lives on (otherwise the result's node). */
  node?: string;
}

/**
 * A guest volume LVM knows that no config references: active or not, it blocks its name
 * (`lvcreate: Logical Volume "vm-100-disk-0" already exists`), and it holds space.
 */
export interface OrphanLv {
  vg: string;
  lv: string;
  vmid: number;
  reason: 'guest-missing' | 'volume-unreferenced' | 'guest-on-other-node';
  active: boolean;
  sizeBytes: number | null;
  /** On a shared VG (one LV that every node sees), or on this node's own. */
  shared: boolean;
  /** The node whose guest references it, for guest-on-other-node. */
  otherNode: string | null;
  /** What it blocks, in words: `VM 100 cannot create vm-100-disk-0 on local-lvm`. */
  blocks: string;
  /** A command that works as printed and changes no data (a rescan), or null. */
  remedy: string | null;
  /** What to do by hand, with its warning: pve-dm never removes an LV. */
  advice: string;
}

export interface Classification {
  node: string;
  entries: Classified[];
  /** Guest volumes LVM knows (active or not) that no config references. */
  orphanLvs: OrphanLv[];
  /** Every thin pool LVM knows, with its problems; and the VGs with a PV missing. */
  pools: ThinPool[];
  volumeGroups: VolumeGroupProblem[];
  duplicates: DuplicateSet[];
  /** The guests of this node. */
  guests: GuestSummary[];
  /** VMIDs with tombstones that have no config on any node (in a cluster's result, with the entries' node). */
  missingGuests: { vmid: number; entries: string[]; node?: string }[];
  system: SystemFacts | null;
  meta: CaptureMeta | null;
  root: string | null;
  warnings: Warning[];
  notes: Warning[];
}

/** What an entry is, from its uuid first, then its name. */
export type Identity =
  | { kind: 'lvm-layer' }
  | { kind: 'lvm-sub-lv' }
  | { kind: 'multipath' }
  | { kind: 'crypt' }
  | { kind: 'partition'; parentUuid: string }
  | { kind: 'ceph-osd' }
  | { kind: 'saferemove'; vg: string; lv: string }
  | { kind: 'lvm-volume'; vg: string; lv: string }
  | { kind: 'guest-volume'; vg: string; lv: string; volume: GuestVolume; lvmOwned: boolean; copyOf: string | null }
  | { kind: 'foreign' };

/** LVM dm uuid: `LVM-` + 32-char VG id + 32-char LV id, then `-<layer>` for LVM's own layers. */
const LVM_UUID_RE = /^LVM-[A-Za-z0-9]{64}(?:-.+)?$/;
const LVM_UUID_LENGTH = 'LVM-'.length + 64;
/** kpartx: `part<N>-<parent's uuid>`. */
const PARTITION_UUID_RE = /^part\d+-(.+)$/;

export function identify(entry: Pick<DmEntry, 'realName' | 'uuid'>): Identity {
  const lvmOwned = entry.uuid.startsWith('LVM-') && LVM_UUID_RE.test(entry.uuid);
  if (lvmOwned && entry.uuid.length > LVM_UUID_LENGTH) return { kind: 'lvm-layer' };
  if (entry.uuid.startsWith('mpath-')) return { kind: 'multipath' };
  if (entry.uuid.startsWith('CRYPT-')) return { kind: 'crypt' };
  const parentUuid = entry.uuid.startsWith('part') ? PARTITION_UUID_RE.exec(entry.uuid)?.[1] : undefined;
  if (parentUuid !== undefined) return { kind: 'partition', parentUuid };
  if (!lvmOwned && entry.uuid !== '') return { kind: 'foreign' };
  const split = splitLvmName(entry.realName);
  if (split === null) return { kind: 'foreign' };
  const { vg } = split;
  // Only LVM's own layers carry a layer in the name; in a hand-made name it is part of the copy's suffix.
  const lv = lvmOwned ? split.lv : split.rest;
  // Every marker starts with `_`, which no guest volume's name holds but a snapshot's: a quick look first.
  if (lv.includes('_') && LVM_SUB_LV_RE.test(lv)) return { kind: 'lvm-sub-lv' };
  if (vg.startsWith('ceph-') && lv.startsWith('osd-')) return { kind: 'ceph-osd' };
  if (lv.startsWith('del-') && parseGuestVolumeName(lv.slice(4)) !== null) return { kind: 'saferemove', vg, lv };
  const volume = parseGuestVolumeName(lv);
  const copyOf = lvmOwned ? null : stripCopySuffix(lv);
  // A hand-made `vm-169-disk-0-dup` also matches the loose `other` pattern: the copy reading wins.
  if (volume !== null && !(copyOf !== null && volume.kind === 'other'))
    return { kind: 'guest-volume', vg, lv, volume, lvmOwned, copyOf: null };
  if (copyOf !== null)
    return { kind: 'guest-volume', vg, lv, volume: parseGuestVolumeName(copyOf) as GuestVolume, lvmOwned, copyOf };
  return lvmOwned ? { kind: 'lvm-volume', vg, lv } : { kind: 'foreign' };
}

/** The volume a guest-volume entry maps: its own LV, or the one a hand-made copy was named after. */
const volumeLvOf = (id: Extract<Identity, { kind: 'guest-volume' }>) => id.copyOf ?? id.lv;

/** Quotes a word for a POSIX shell when it needs it: remedies are meant to be pasted. */
const SHELL_SAFE_RE = /^[A-Za-z0-9_@%+=:,./-]+$/;
/** What terminalSafe shows escaped: such a word is written `$'...'` (bash), so that a command shows as it is pasted. */
const TERMINAL_UNSAFE_RE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]/;
export const shellQuote = (word: string) => {
  if (SHELL_SAFE_RE.test(word)) return word;
  if (!TERMINAL_UNSAFE_RE.test(word)) return `'${word.replaceAll("'", `'\\''`)}'`;
  return bashHexWord(word, (byte) => byte >= 0x20 && byte < 0x7f && byte !== 0x27 && byte !== 0x5c);
};
/** A command as words to paste into a shell. */
export const shellLine = (words: readonly string[]) => words.map(shellQuote).join(' ');

interface GuestRef {
  guest: GuestConfig;
  ref: VolumeRef;
}
const NO_REFS: readonly GuestRef[] = Object.freeze([]);

/** Every `vg/lv` any config references, with who references it. */
function referencesByVolume(guests: readonly GuestConfig[], vgOfStorage: Map<string, string>): ByVolume<GuestRef[]> {
  const refsByVolume = new ByVolume<GuestRef[]>();
  for (const guest of guests)
    for (const ref of guest.refs)
      for (const [vg, lv] of volumesOfRef(ref.volume, vgOfStorage)) pushToVolume(refsByVolume, vg, lv, { guest, ref });
  return refsByVolume;
}

/** What classify knows of the node while it judges its entries. */
interface Judging {
  state: ParsedState;
  /** A config on this node. */
  local: (guest: GuestConfig) => boolean;
  /** A reference from a config on this node (one function for every entry, not a closure each). */
  fromHere: (ref: GuestRef) => boolean;
  refsOf: (vg: string, lv: string) => readonly GuestRef[];
  guestsById: Map<number, GuestConfig[]>;
  /** Volume groups an lvm or lvmthin storage names, and those of them a `shared 1` storage names. */
  storageVgs: Set<string>;
  sharedVgs: Set<string>;
  /** Storage types in storage.cfg that pve-dm does not know (third-party plugins). */
  pluginTypes: string[];
  /** The `lock:` of each guest that has one (the first config of its VMID that does). */
  locks: Map<number, string>;
}

function judging(state: ParsedState): Judging {
  const local = (guest: GuestConfig) => guest.node === state.node;
  const vgOfStorage = new Map(state.storages.filter((s) => s.vg !== null).map((s) => [s.id, s.vg as string]));
  const guestsById = new Map<number, GuestConfig[]>();
  for (const guest of state.guests) pushTo(guestsById, guest.vmid, guest);
  const refsByVolume = referencesByVolume(state.guests, vgOfStorage);
  // Few guests hold a lock at any time.
  const locks = new Map<number, string>();
  for (const guest of state.guests) {
    if (guest.lock !== null && !locks.has(guest.vmid)) locks.set(guest.vmid, guest.lock);
  }
  return {
    state,
    local,
    fromHere: (ref) => local(ref.guest),
    refsOf: (vg, lv) => refsByVolume.get(vg, lv) ?? NO_REFS,
    guestsById,
    storageVgs: new Set(vgOfStorage.values()),
    sharedVgs: new Set(state.storages.filter((s) => s.shared && s.vg !== null).map((s) => s.vg as string)),
    pluginTypes: [...new Set(state.storages.filter((s) => !KNOWN_STORAGE_TYPES.has(s.type)).map((s) => s.type))],
    locks,
  };
}

type GuestVolumeIdentity = Extract<Identity, { kind: 'guest-volume' }>;

export function classify(state: ParsedState): Classification {
  const j = judging(state);
  const identities = state.entries.map(identify);
  const tables = state.entries.map((entry) => state.tables?.get(entry.name) ?? null);
  const sets = duplicateSets(j, identities, tables, state.entries);
  const entries: Classified[] = [];
  const partitions: { index: number; parentUuid: string }[] = [];
  for (let index = 0; index < state.entries.length; index++) {
    const entry = state.entries[index] as DmEntry;
    const id = identities[index] as Identity;
    const extra = sets.extraOf[index];
    if (extra !== undefined) {
      const kept = identities[extra.kept] as GuestVolumeIdentity;
      entries.push(duplicateVerdict(j, entry, extra.how, kept, (state.entries[extra.kept] as DmEntry).name));
      continue;
    }
    if (id.kind === 'partition') partitions.push({ index, parentUuid: id.parentUuid });
    // Most entries are guest volumes: they go straight to their rules, the rest through the matcher.
    entries.push(id.kind === 'guest-volume' ? judgeGuestVolume(j, entry, id) : judgeOther(j, entry, id));
  }
  judgePartitions(state.entries, entries, partitions);
  judgeStacked(j, entries, tables);
  settleHeldEntries(entries, tables);
  return {
    node: state.node,
    entries,
    orphanLvs: orphanLvsOf(j),
    pools: thinPoolsOf(j),
    volumeGroups: volumeGroupProblemsOf(j),
    duplicates: sets.duplicates,
    guests: guestSummaries(j, entries, sets.keptMembers),
    missingGuests: missingGuestsOf(entries),
    system: state.system,
    meta: state.meta,
    root: state.root,
    warnings: state.warnings,
    notes: state.notes,
  };
}

/**
 * The guest an entry belongs to: its own VMID's when that guest references it here (a template's
 * base volume, which its linked clones reference too), else the first local guest that does (a
 * borrowed disk), else the VMID in its name.
 */
function localOwner(j: Judging, refs: readonly GuestRef[], vmid: number): number {
  let first: number | undefined;
  for (const { guest } of refs) {
    if (!j.local(guest)) continue;
    if (guest.vmid === vmid) return vmid;
    first ??= guest.vmid;
  }
  return first ?? vmid;
}

const typeOf = (j: Judging, vmid: number | null): GuestType | null =>
  vmid === null ? null : (j.guestsById.get(vmid)?.[0]?.type ?? null);

/** An entry judged for the guest `vmid`, with that guest's lock and type. */
function verdict(
  j: Judging,
  entry: DmEntry,
  status: Status,
  reason: Reason,
  vmid: number | null,
  facts: VolumeFacts,
  action: Action = NO_ACTION,
): Classified {
  const guest = vmid === null ? NO_GUEST : { vmid, guestType: typeOf(j, vmid), lock: j.locks.get(vmid) ?? null };
  return judged(entry, status, reason, guest, facts, action);
}

/** A problem entry, with the remedy that works for it now (or why none does). */
function problem(
  j: Judging,
  status: 'duplicate' | 'tombstone',
  reason: Reason,
  entry: DmEntry,
  facts: VolumeFacts,
  vmid: number,
): Classified {
  return verdict(j, entry, status, reason, vmid, facts, remedyOf(j, entry, reason, facts, vmid));
}

/** An extra member of a duplicate set: it belongs to the guest of the member that stays. */
function duplicateVerdict(
  j: Judging,
  entry: DmEntry,
  how: 'name' | 'table',
  kept: GuestVolumeIdentity,
  keptName: string,
): Classified {
  const keptOwner = localOwner(j, j.refsOf(kept.vg, kept.lv), kept.volume.vmid);
  const facts = {
    vg: kept.vg,
    lv: kept.lv,
    kind: kept.volume.kind,
    lvmKnown: false,
    relatedTo: keptName,
    otherNode: null,
  };
  return problem(j, 'duplicate', how === 'table' ? 'duplicate-table' : 'duplicate-name', entry, facts, keptOwner);
}

/** What makes a snapshot LV valid: a config holding that snapshot of its volume, for the first reading that has one. */
function snapshotRefsOf(j: Judging, vg: string, volume: GuestVolume): readonly GuestRef[] {
  for (const { origin, snapshot } of volume.readings) {
    const refs = j.refsOf(vg, origin).filter((r) => r.guest.snapshots.includes(snapshot));
    if (refs.length > 0) return refs;
  }
  return NO_REFS;
}

type LvmView = 'owned' | 'missing' | 'other';

/**
 * LVM's word on an entry with an LVM uuid: 'owned' (LVM lists the LV with a mapping present and,
 * when lvs.txt has uuids, this entry's uuid), 'missing' (no such LV), 'other' (the LV is inactive or
 * has another uuid: this mapping is not LVM's), or null (not known: no lvs.txt, or state `X`).
 */
function lvmView(lvs: ByVolume<LogicalVolume> | null, vg: string, lv: string, uuid: string): LvmView | null {
  if (lvs === null) return null;
  const known = lvs.get(vg, lv);
  if (known === undefined) return 'missing';
  // State `X`: LVM does not know whether it is active.
  if (known.attr[4] === 'X') return null;
  if (!lvActive(known)) return 'other';
  return mapsLv(known, uuid) === false ? 'other' : 'owned';
}

/** Classified.lvmKnown from LVM's word. */
const lvmKnownOf = (view: LvmView | null) => (view === null ? null : view === 'owned');

/** What the rules for a guest volume's entry look at: the entry, LVM's view of it, the configs that name it. */
interface GuestVolumeCase {
  j: Judging;
  entry: DmEntry;
  id: GuestVolumeIdentity;
  view: LvmView | null;
  base: VolumeFacts;
  /** Configs referencing the volume, and those holding it as a snapshot (none for a hand-made copy). */
  refs: readonly GuestRef[];
  snapshotRefs: readonly GuestRef[];
  /** The guest a valid entry belongs to; a problem belongs to `vmid`, the VMID in its name. */
  owner: number;
  vmid: number;
  configs: readonly GuestConfig[];
}

type GuestVolumeRule = (c: GuestVolumeCase) => Classified | null;

/**
 * A guest volume's rules, in the order they are tried (README "Reason codes" gives each its
 * status and meaning): the first that holds decides. A config here makes it valid; a guest whose
 * config cannot be read, or that an operation holds, is not judged; then LVM and the cluster speak.
 */
const GUEST_VOLUME_RULES: readonly GuestVolumeRule[] = [
  staleTable,
  function referenced(c) {
    return c.refs.some(c.j.fromHere) ? verdict(c.j, c.entry, 'valid', 'referenced', c.owner, c.base) : null;
  },
  function snapshotInConfig(c) {
    return c.snapshotRefs.some(c.j.fromHere)
      ? verdict(c.j, c.entry, 'valid', 'snapshot-in-config', c.owner, c.base)
      : null;
  },
  function configUnreadable({ j, entry, vmid, base, configs }) {
    if (!configs.some((g) => !g.readable || (g.partial && j.local(g)))) return null;
    const label = guestLabel(vmid, typeOf(j, vmid));
    const advice = `${label}'s config cannot be read (see the warnings): fix it, then look again`;
    return verdict(j, entry, 'unjudged', 'config-unreadable', vmid, base, adviceOnly(advice));
  },
  function inFlight({ j, entry, vmid, base }) {
    const lock = j.locks.get(vmid);
    if (lock === undefined || SETTLED_LOCKS.has(lock)) return null;
    return verdict(j, entry, 'ignored', 'in-flight', vmid, base, adviceOnly(lockAdvice(lock, vmid, typeOf(j, vmid))));
  },
  function storageUnknown({ j, entry, id, vmid, base }) {
    if (j.storageVgs.has(id.vg)) return null;
    const notOurs = foreignVgWhy(j, entry, id.vg);
    return notOurs === null
      ? problem(j, 'tombstone', 'storage-unknown', entry, base, vmid)
      : verdict(j, entry, 'ignored', 'foreign-vg', vmid, base, adviceOnly(notOurs));
  },
  function lvMissing({ j, entry, id, view, vmid, base }) {
    return view === 'missing' && id.lvmOwned ? problem(j, 'tombstone', 'lv-missing', entry, base, vmid) : null;
  },
  function lvMismatch({ j, entry, view, vmid, base }) {
    return view === 'other' ? problem(j, 'tombstone', 'lv-mismatch', entry, base, vmid) : null;
  },
  function guestOnOtherNode({ j, entry, refs, snapshotRefs, base }) {
    const elsewhere = [...refs, ...snapshotRefs].find((r) => !j.local(r.guest));
    if (elsewhere === undefined) return null;
    const facts = { ...base, otherNode: elsewhere.guest.node };
    return problem(j, 'tombstone', 'guest-on-other-node', entry, facts, elsewhere.guest.vmid);
  },
  function guestMissing({ j, entry, vmid, base, configs }) {
    return configs.length === 0 ? problem(j, 'tombstone', 'guest-missing', entry, base, vmid) : null;
  },
  function volumeUnreferenced({ j, entry, vmid, base }) {
    return problem(j, 'tombstone', 'volume-unreferenced', entry, base, vmid);
  },
];

/** The same table, whatever the spacing dmsetup and pve-dm each use. */
const sameTable = (a: string, b: string) =>
  a === b || a.replace(/[ \t]+/g, ' ').trim() === b.replace(/[ \t]+/g, ' ').trim();

/**
 * An LV whose kernel table is not what LVM's metadata says it maps: the guest reads and writes
 * other blocks (a resize, a pvmove or a thin id reused behind an active LV, another node's change
 * on shared LVM). `lvchange --refresh` reloads the table from the metadata (lvchange(8); shown on
 * a real kernel in test/fixtures/real/conflicts), for a guest that is stopped and not locked.
 */
function staleTable({ j, entry, id, owner, base, refs }: GuestVolumeCase): Classified | null {
  const lvm = j.state.lvmLayout;
  const expected = lvm == null ? null : expectedTable(lvm, id.vg, id.lv, entry.uuid);
  const actual = j.state.tables?.get(entry.name);
  if (expected === null || actual === undefined || sameTable(expected, actual)) return null;
  const label = guestLabel(owner, typeOf(j, owner));
  const lock = j.locks.get(owner) ?? null;
  const runs = j.state.running?.has(owner) ?? false;
  // A guest of another node needs no mapping here: deactivated, the LV is activated afresh from
  // LVM's metadata wherever the guest starts (Proxmox activates a volume before it uses it).
  const away = refs.some(j.fromHere) ? null : (refs.find((ref) => !j.local(ref.guest))?.guest.node ?? null);
  const facts = { ...base, otherNode: away };
  const command =
    away === null
      ? shellLine(refreshArgv(id.vg, id.lv))
      : removalText({ name: entry.name, lvmKnown: base.lvmKnown, vg: id.vg, lv: id.lv, reason: 'stale-table' });
  const advice =
    away !== null && lock === null
      ? `${label} lives on ${away}: ${command} here; the node the guest runs or starts on activates it there from ` +
        "LVM's metadata"
      : runs
        ? `${label} runs on the old table: stop it first (a refresh under a running guest moves its disk to ` +
          `other blocks mid-write), check its data, then ${command}; what was written through the old table ` +
          'stays where it went'
        : lock !== null
          ? `once ${label}'s operation has ended (lock: ${lock}): ${command}`
          : `${command} loads the table LVM's metadata describes; what was written through the old table stays ` +
            'where it went';
  // Something else holds it open (a host mount, a stacked device): no command works as printed then.
  const held = !runs && lock === null && entry.open > 0;
  const action =
    runs || lock !== null || held
      ? adviceOnly(
          held ? `open ${entry.open} time(s) though ${label} is stopped: find the holder, then ${advice}` : advice,
        )
      : { remedy: command, advice };
  return { ...verdict(j, entry, 'conflict', 'stale-table', owner, facts, action), conflict: { expected, actual } };
}

/** A guest volume's entry: the first of GUEST_VOLUME_RULES that holds (the last always does). */
function judgeGuestVolume(j: Judging, entry: DmEntry, id: GuestVolumeIdentity): Classified {
  const view = id.lvmOwned ? lvmView(j.state.lvs, id.vg, id.lv, entry.uuid) : 'missing';
  // A hand-made copy that is no duplicate (the volume's own entry is not here) is judged as
  // itself: no config references `vm-169-disk-0-dup`, whether or not one references the volume.
  const lvmKnown = lvmKnownOf(view);
  const base: VolumeFacts = { vg: id.vg, lv: id.lv, kind: id.volume.kind, lvmKnown, relatedTo: null, otherNode: null };
  const refs = id.copyOf === null ? j.refsOf(id.vg, id.lv) : NO_REFS;
  const snapshotRefs =
    id.volume.kind === 'snapshot' && id.copyOf === null ? snapshotRefsOf(j, id.vg, id.volume) : NO_REFS;
  const owner = localOwner(j, snapshotRefs.length === 0 ? refs : [...refs, ...snapshotRefs], id.volume.vmid);
  const vmid = id.volume.vmid;
  const configs = j.guestsById.get(vmid) ?? [];
  const c: GuestVolumeCase = { j, entry, id, view, base, refs, snapshotRefs, owner, vmid, configs };
  for (const rule of GUEST_VOLUME_RULES) {
    const judgedEntry = rule(c);
    if (judgedEntry !== null) return judgedEntry;
  }
  throw new Error('GUEST_VOLUME_RULES ends with a rule that always holds');
}

/** Why a guest volume in a VG no LVM storage names is not pve-dm's to judge; null when it is a tombstone. */
function foreignVgWhy(j: Judging, entry: DmEntry, vg: string): string | null {
  const unnamed = `no lvm or lvmthin storage names volume group ${vg}`;
  const types = j.pluginTypes.join(', ');
  if (types !== '') return `${unnamed}, and storage.cfg has types pve-dm does not know (${types}): a plugin may own it`;
  if (entry.open > 0) return `${unnamed}, and the entry is open ${entry.open} time(s): something uses it`;
  return null;
}

/** Every entry that is not a guest volume's: what it is decides. */
function judgeOther(j: Judging, entry: DmEntry, id: Exclude<Identity, GuestVolumeIdentity>): Classified {
  const ignored = (reason: Reason, vmid: number | null = null, facts: Partial<VolumeFacts> = {}) =>
    verdict(j, entry, 'ignored', reason, vmid, { ...NO_FACTS, ...facts });
  return match(id)
    .with({ kind: 'lvm-layer' }, { kind: 'lvm-sub-lv' }, () => ignored('lvm-internal'))
    .with({ kind: 'multipath' }, () => ignored('multipath'))
    .with({ kind: 'crypt' }, () => ignored('crypt'))
    .with({ kind: 'ceph-osd' }, () => ignored('ceph-osd'))
    .with({ kind: 'saferemove' }, ({ vg, lv }) =>
      ignored('saferemove-in-flight', parseGuestVolumeName(lv.slice(4))?.vmid ?? null, { vg, lv }),
    )
    .with({ kind: 'lvm-volume' }, ({ vg, lv }) => {
      const lvmKnown = lvmKnownOf(lvmView(j.state.lvs, vg, lv, entry.uuid));
      return ignored('not-guest-volume', null, { vg, lv, lvmKnown });
    })
    .with({ kind: 'foreign' }, () => ignored('foreign'))
    .with({ kind: 'partition' }, () => ignored('partition'))
    .exhaustive();
}

/**
 * kpartx partitions, a handful at most: their parents, found in one pass over the entries. A
 * partition of a problem entry goes with it, and before it.
 */
function judgePartitions(
  dm: readonly DmEntry[],
  entries: Classified[],
  partitions: readonly { index: number; parentUuid: string }[],
): void {
  if (partitions.length === 0) return;
  const parentUuids = new Set(partitions.map((partition) => partition.parentUuid));
  const parentByUuid = new Map<string, number>();
  for (let index = 0; index < dm.length; index++) {
    const entry = dm[index] as DmEntry;
    if (parentUuids.has(entry.uuid)) parentByUuid.set(entry.uuid, index);
  }
  for (const { index, parentUuid } of partitions) {
    const parentIndex = parentByUuid.get(parentUuid);
    const parent = parentIndex === undefined ? undefined : entries[parentIndex];
    if (parent === undefined) continue;
    const entry = dm[index] as DmEntry;
    if (!isRemovable(parent)) {
      entries[index] = judged(entry, 'ignored', 'partition', NO_GUEST, { ...NO_FACTS, relatedTo: parent.name });
      continue;
    }
    const { vg, lv, kind } = parent;
    const facts = { vg, lv, kind, lvmKnown: false, relatedTo: parent.name, otherNode: null };
    // A parent no command may touch now (its guest is locked) holds back its partitions too.
    const action =
      parent.lock === null ? { remedy: dmRemoveText(entry.name), advice: null } : adviceOnly(parent.advice);
    // A tombstone whatever its parent is (REASONS): it is a leftover stacked on a problem, not a second copy.
    entries[index] = judged(entry, REASONS['partition-of-problem'][0], 'partition-of-problem', parent, facts, action);
  }
}

/**
 * Devices stacked on a guest volume's dm device, other than LVM's own layers (which lie beneath
 * it): a kpartx partition, an LV of the guest's own VG active on the host, any mapping whose table
 * maps the guest volume. Each holds the guest's disk open (a migration, a removal or a resize fails
 * with "Device or resource busy") and, while the guest runs, host and guest write one filesystem: a
 * conflict. The guest volume's entry keeps its verdict and names what holds it.
 */
function judgeStacked(j: Judging, entries: Classified[], tables: readonly (string | null)[]): void {
  // A device number two entries claim (a capture pieced together by hand) points at neither.
  const claims = new Map<string, number>();
  for (const entry of entries)
    claims.set(`${entry.major}:${entry.minor}`, (claims.get(`${entry.major}:${entry.minor}`) ?? 0) + 1);
  const guestVolumeAt = new Map<string, number>();
  for (let index = 0; index < entries.length; index++) {
    const entry = entries[index] as Classified;
    const device = `${entry.major}:${entry.minor}`;
    if (entry.kind !== null && entry.vmid !== null && entry.uuid.startsWith('LVM-') && !isRemovable(entry))
      if (claims.get(device) === 1) guestVolumeAt.set(device, index);
  }
  const zvolAt = guestZvols(j);
  if (guestVolumeAt.size === 0 && zvolAt.size === 0) return;
  for (let holder = 0; holder < tables.length; holder++) {
    for (const [major, minor] of stackedDevices(tables[holder] ?? null)) {
      const device = `${major}:${minor}`;
      const target = guestVolumeAt.get(device);
      const zvol = zvolAt.get(device);
      if (zvol !== undefined) entries[holder] = stackedVerdict(j, entries[holder] as Classified, zvol);
      if (target === undefined || target === holder) continue;
      const volume = entries[target] as Classified;
      entries[holder] = stackedVerdict(j, entries[holder] as Classified, {
        ...volume,
        shown: mangleDmName(volume.name),
      });
      if (!volume.holders.includes((entries[holder] as Classified).name))
        entries[target] = { ...volume, holders: [...volume.holders, (entries[holder] as Classified).name] };
    }
  }
}

/** What a device is stacked on: a guest volume's dm entry, or a guest's zvol (name null; its dataset). */
interface StackTarget {
  name: string | null;
  /** How the advice names it: its dm name, or `zvol rpool/data/vm-134-disk-0`. */
  shown: string;
  vmid: number | null;
  guestType: GuestType | null;
  lock: string | null;
  zvol?: string;
}

/** The zvols of guest disks (ZFSPool's `vm-<vmid>-...` and `base-<vmid>-...`), by device number. */
function guestZvols(j: Judging): Map<string, StackTarget> {
  const targets = new Map<string, StackTarget>();
  for (const [device, dataset] of j.state.zvols ?? []) {
    const vmid = /^(?:vm|base)-([1-9][0-9]{2,8})-/.exec(dataset.slice(dataset.lastIndexOf('/') + 1))?.[1];
    if (vmid === undefined) continue;
    const guestType = typeOf(j, Number(vmid));
    const lock = j.locks.get(Number(vmid)) ?? null;
    targets.set(device, { name: null, shown: `zvol ${dataset}`, vmid: Number(vmid), guestType, lock, zvol: dataset });
  }
  return targets;
}

/** LVM's own targets, which map its layers (a thin volume its pool, a snapshot its origin and COW). */
const LVM_LAYER_TARGETS = new Set(['thin', 'thin-pool', 'snapshot', 'snapshot-origin', 'snapshot-merge']);

/** The devices a table maps data onto, but through LVM's own layer targets: `[major, minor]` pairs. */
function* stackedDevices(table: string | null): Generator<[string, string]> {
  for (const line of table?.split('\n') ?? []) {
    const target = line.trim().split(/\s+/)[2];
    if (target === undefined || LVM_LAYER_TARGETS.has(target)) continue;
    for (const [, major, minor] of line.matchAll(TABLE_DEVICE_RE)) yield [major as string, minor as string];
  }
}

/** A device stacked on a guest volume: a conflict of that guest, with the command that takes it away. */
function stackedVerdict(j: Judging, holder: Classified, volume: StackTarget): Classified {
  const label = guestLabel(volume.vmid ?? 0, volume.guestType);
  const runs = j.state.running?.has(volume.vmid ?? 0) ?? false;
  const harm = runs
    ? holder.open > 0
      ? `${label} runs and the host holds this open: host and guest write one filesystem now`
      : `${label} runs: whatever on the host mounts or uses this writes under the guest's own filesystem`
    : `it holds ${label}'s disk open (migration, removal and resize fail: Device or resource busy); ` +
      `if ${label} starts, host and guest write one filesystem`;
  const guestVg = holder.vg !== null && !j.storageVgs.has(holder.vg) ? holder.vg : null;
  const zvol = volume.zvol ?? null;
  const command =
    guestVg !== null
      ? shellLine(guestVgOffArgv(guestVg, zvol !== null))
      : holder.vg !== null && holder.lv !== null
        ? shellLine(['lvchange', '-an', `${holder.vg}/${holder.lv}`])
        : dmRemoveText(holder.name);
  // Proxmox's own global_filter keeps LVM off zvols (pve-manager's postinst); guest LVs need a line of their own.
  const rejected = zvol !== null ? 'r|/dev/zd.*|' : 'r|/dev/mapper/.*-vm--[0-9]+--disk--.*|';
  const filter =
    guestVg === null
      ? ''
      : `; so that the host never activates a guest's VG, add the guest volumes to global_filter in ` +
        `/etc/lvm/lvm.conf (devices { global_filter = [ "${rejected}", ... ] })`;
  const on = `stacked on ${volume.shown}: ${harm}`;
  // Nothing touches the disk of a guest whose operation runs (a backup, a migration).
  const advice =
    volume.lock !== null
      ? `${on}; once ${label}'s operation has ended (lock: ${volume.lock}): ${command}${filter}`
      : holder.open > 0
        ? `${on}; it is open ${holder.open} time(s) on the host (mounted, or in use): unmount it first, then ` +
          `${command}${filter}`
        : `${on}; ${command} takes it away, ${label}'s data stays${filter}`;
  return {
    ...holder,
    status: REASONS['stacked-on-guest-volume'][0],
    reason: 'stacked-on-guest-volume',
    vmid: volume.vmid,
    guestType: volume.guestType,
    lock: volume.lock,
    relatedTo: volume.name,
    remedy: holder.open > 0 || volume.lock !== null ? null : command,
    advice,
    conflict: { guestVg, zvol },
  };
}

/** A stale table's details (LVM's table and the kernel's), or null for any other entry. */
const staleTables = (entry: Pick<Classified, 'conflict'>) =>
  entry.conflict !== undefined && 'expected' in entry.conflict ? entry.conflict : null;

/** A stacked device's details (the guest VG it belongs to, the zvol it sits on), or null. */
const stackedOn = (entry: Pick<Classified, 'conflict'>) =>
  entry.conflict !== undefined && 'guestVg' in entry.conflict ? entry.conflict : null;

/** lvchange(8) --refresh: the LV's table loaded again from LVM's metadata (the stale-table remedy). */
const refreshArgv = (vg: string, lv: string) => ['lvchange', '--refresh', `${vg}/${lv}`];

/**
 * A guest's own VG taken off the host, all its LVs and only its. On a guest's LV, LVM skips PVs on
 * LVs by default (lvm.conf scan_lvs) and would not find the VG without it (shown on a real kernel);
 * on a zvol, the host found the VG because nothing filters zvols out, so vgchange finds it too.
 */
const guestVgOffArgv = (vg: string, onZvol = false) =>
  onZvol ? ['vgchange', '-an', vg] : ['vgchange', '--config', 'devices { scan_lvs = 1 }', '-an', vg];

/** The `major:minor` devices a table maps (`linear 252:3 0`, `thin 252:2 7`, a multipath's paths...). */
const TABLE_DEVICE_RE = /(?<![\w:])(\d+):(\d+)(?![\w:])/g;

/**
 * Problem entries held open. When every open is a dm entry stacked on it (a kpartx partition)
 * and each of those has a remedy of its own, the remedy removes them first; otherwise no command
 * would work as printed, and the advice says what holds the entry.
 */
function settleHeldEntries(entries: Classified[], tables: readonly (string | null)[]): void {
  const isHeld = (entry: Classified) => isRemovable(entry) && entry.open > 0 && entry.remedy !== null;
  if (!entries.some(isHeld)) return;
  const indexOfDevice = new Map(entries.map((entry, index) => [`${entry.major}:${entry.minor}`, index]));
  const holders = new Map<number, number[]>();
  for (let holder = 0; holder < tables.length; holder++) {
    const table = tables[holder] ?? null;
    for (const [, major, minor] of table?.matchAll(TABLE_DEVICE_RE) ?? []) {
      const target = indexOfDevice.get(`${major}:${minor}`);
      if (target !== undefined && target !== holder && !holders.get(target)?.includes(holder))
        pushTo(holders, target, holder);
    }
  }
  for (let index = 0; index < entries.length; index++) {
    const entry = entries[index] as Classified;
    if (!isHeld(entry)) continue;
    const stacked = (holders.get(index) ?? []).map((holder) => entries[holder] as Classified);
    const freeing =
      stacked.length >= entry.open && stacked.every((h) => isRemovable(h) && h.remedy !== null && h.open === 0);
    const names = stacked.map((h) => h.name);
    entries[index] = freeing
      ? { ...entry, holders: names, remedy: [...stacked.map((h) => h.remedy), entry.remedy].join(' && ') }
      : { ...entry, holders: names, remedy: null, advice: heldAdvice(entry, stacked) };
  }
}

/** What holds an open entry, in words: the devices stacked on it, and the opens no device explains. */
function heldAdvice(entry: Classified, stacked: readonly Classified[]): string {
  const parts = stacked.map(
    (h) =>
      `${mangleDmName(h.name)} (${isRemovable(h) ? `${h.status}, remove it first` : `${h.status}: not a leftover`})`,
  );
  const others = entry.open - stacked.length;
  if (others > 0)
    parts.push(
      `${others} opener(s) that are no dm device ` +
        `(a process or a running guest: fuser -vm /dev/dm-${entry.minor} shows which)`,
    );
  return `open ${entry.open} time(s), held by ${parts.join(', ')}: no command takes it away while it is open`;
}

/** This node's guests, each with the worst status among its entries. */
function guestSummaries(j: Judging, entries: readonly Classified[], keptMembers: ReadonlySet<number>): GuestSummary[] {
  const health = new Map<number, GuestSummary['health']>();
  for (let index = 0; index < entries.length; index++) {
    const entry = entries[index] as Classified;
    if (entry.vmid === null) continue;
    // The worst wins: a conflict, then a duplicate, then a tombstone.
    const now = health.get(entry.vmid);
    if (entry.status === 'conflict') health.set(entry.vmid, 'conflict');
    else if ((entry.status === 'duplicate' || keptMembers.has(index)) && now !== 'conflict')
      health.set(entry.vmid, 'duplicate');
    else if (entry.status === 'tombstone' && now === undefined) health.set(entry.vmid, 'tombstone');
  }
  const running = j.state.running;
  return j.state.guests
    .filter(j.local)
    .sort((a, b) => a.vmid - b.vmid)
    .map((guest) => ({
      vmid: guest.vmid,
      type: guest.type,
      name: guest.name,
      lock: guest.lock,
      template: guest.template,
      readable: guest.readable,
      running: running === null ? null : running.has(guest.vmid),
      health: health.get(guest.vmid) ?? 'clean',
    }));
}

function missingGuestsOf(entries: readonly Classified[]): Classification['missingGuests'] {
  const missing = new Map<number, string[]>();
  for (const entry of entries) {
    if (entry.reason === 'guest-missing' && entry.vmid !== null) pushTo(missing, entry.vmid, entry.name);
  }
  return [...missing].sort(([a], [b]) => a - b).map(([vmid, names]) => ({ vmid, entries: names }));
}

type VolumeFacts = Pick<Classified, 'vg' | 'lv' | 'kind' | 'lvmKnown' | 'relatedTo' | 'otherNode'>;
const NO_FACTS: VolumeFacts = { vg: null, lv: null, kind: null, lvmKnown: null, relatedTo: null, otherNode: null };
/** The guest an entry belongs to, with its type and lock. */
type GuestFacts = Pick<Classified, 'vmid' | 'guestType' | 'lock'>;
const NO_GUEST: GuestFacts = { vmid: null, guestType: null, lock: null };
/** What to do about an entry: a remedy that works as printed, or advice instead (or neither). */
type Action = Pick<Classified, 'remedy' | 'advice'>;
const NO_ACTION: Action = { remedy: null, advice: null };
const adviceOnly = (advice: string | null): Action => ({ remedy: null, advice });
const NO_HOLDERS: readonly string[] = Object.freeze([]);

// An entry's verdict with every field set: what a rule does not decide keeps its "not known" default.
const judged = (
  entry: DmEntry,
  status: Status,
  reason: Reason,
  guest: GuestFacts,
  facts: VolumeFacts,
  action: Action = NO_ACTION,
): Classified => ({
  name: entry.name,
  realName: entry.realName,
  uuid: entry.uuid,
  major: entry.major,
  minor: entry.minor,
  open: entry.open,
  status,
  reason,
  remedy: action.remedy,
  advice: action.advice,
  vmid: guest.vmid,
  guestType: guest.guestType,
  vg: facts.vg,
  lv: facts.lv,
  kind: facts.kind,
  lvmKnown: facts.lvmKnown,
  relatedTo: facts.relatedTo,
  otherNode: facts.otherNode,
  lock: guest.lock,
  holders: NO_HOLDERS,
});

type DuplicateMember = { index: number; how: 'own' | 'name' | 'table' };
type VolumeGroup = { first: number; vg: string; lv: string; group: DuplicateMember[] };

/**
 * The members of each (vg, volume): its own entry, hand-made copies by name, and non-LVM entries
 * mapping exactly the same table as a guest volume's entry. A volume gets a list of members only
 * when a second one joins its first: tens of thousands of volumes have one. In the order the
 * volumes were met, as the report lists duplicate sets.
 */
function volumeGroups(identities: readonly Identity[], tables: readonly (string | null)[]): VolumeGroup[] {
  const guestVolumeAt = (index: number) => identities[index] as GuestVolumeIdentity;
  const firstOfVolume = new ByVolume<number>();
  const groups: VolumeGroup[] = [];
  const groupOf: (DuplicateMember[] | undefined)[] = [];
  const memberAt = (index: number): DuplicateMember => ({
    index,
    how: guestVolumeAt(index).copyOf === null ? 'own' : 'name',
  });
  /** The members of the volume whose first entry is `first`. */
  const groupFrom = (first: number): DuplicateMember[] => {
    const known = groupOf[first];
    if (known !== undefined) return known;
    const id = guestVolumeAt(first);
    const group = [memberAt(first)];
    groups.push({ first, vg: id.vg, lv: volumeLvOf(id), group });
    groupOf[first] = group;
    return group;
  };
  const volumeEntryByTable = new Map<string, number>();
  for (let index = 0; index < identities.length; index++) {
    const id = identities[index] as Identity;
    if (id.kind !== 'guest-volume') continue;
    const lv = volumeLvOf(id);
    const first = firstOfVolume.get(id.vg, lv);
    if (first === undefined) firstOfVolume.set(id.vg, lv, index);
    else (groupOf[index] = groupFrom(first)).push(memberAt(index));
    const table = tables[index] ?? null;
    if (id.copyOf === null && table !== null && isDataTable(table) && (id.lvmOwned || !volumeEntryByTable.has(table))) {
      volumeEntryByTable.set(table, index);
    }
  }
  for (let index = 0; index < identities.length; index++) {
    const id = identities[index] as Identity;
    if (!(id.kind === 'foreign' || (id.kind === 'guest-volume' && !id.lvmOwned))) continue;
    const table = tables[index] ?? null;
    const original = table === null ? undefined : volumeEntryByTable.get(table);
    if (original === undefined || original === index) continue;
    // The original is an entry of its own volume, never moved: alone there, it is that volume's first.
    const mirrored = groupFrom(original);
    const current = groupOf[index];
    if (current === mirrored) continue;
    // A hand-made copy may sit in its own volume's group: it moves to the one it mirrors.
    if (current !== undefined)
      current.splice(
        current.findIndex((m) => m.index === index),
        1,
      );
    mirrored.push({ index, how: 'table' });
    groupOf[index] = mirrored;
  }
  return groups.sort((a, b) => a.first - b.first);
}

interface DuplicateSets {
  duplicates: DuplicateSet[];
  /** For each extra member, by entry index: the member that stays, and how the extra was found. */
  extraOf: ({ kept: number; how: 'name' | 'table' } | undefined)[];
  keptMembers: Set<number>;
}

/** Of each volume with several members, the one that stays: referenced here, else LVM's own, else its own entry. */
function duplicateSets(
  j: Judging,
  identities: readonly Identity[],
  tables: readonly (string | null)[],
  dm: readonly DmEntry[],
): DuplicateSets {
  const isReferencedLocally = (index: number) => {
    const id = identities[index];
    return id?.kind === 'guest-volume' && id.copyOf === null && j.refsOf(id.vg, id.lv).some(j.fromHere);
  };
  const rank = (m: DuplicateMember) => {
    const id = identities[m.index];
    return (
      (isReferencedLocally(m.index) ? 4 : 0) +
      (id?.kind === 'guest-volume' && id.lvmOwned ? 2 : 0) +
      (m.how === 'own' ? 1 : 0)
    );
  };
  const sets: DuplicateSets = { duplicates: [], extraOf: [], keptMembers: new Set() };
  for (const { vg, lv, group } of volumeGroups(identities, tables)) {
    if (group.length < 2) continue;
    const kept = group.reduce((best, m) => (rank(m) > rank(best) ? m : best));
    const nameAt = (m: DuplicateMember) => (dm[m.index] as DmEntry).name;
    sets.duplicates.push({
      vg,
      lv,
      vmid: parseGuestVolumeName(lv)?.vmid ?? 0,
      kept: nameAt(kept),
      extras: group.filter((m) => m !== kept).map(nameAt),
    });
    sets.keptMembers.add(kept.index);
    for (const m of group)
      if (m !== kept) sets.extraOf[m.index] = { kept: kept.index, how: m.how === 'table' ? 'table' : 'name' };
  }
  return sets;
}

/** Locks that stay while no operation runs, and under which no volume is made or moved (qemu-server, pve-container). */
const SETTLED_LOCKS: ReadonlySet<string> = new Set(['suspended', 'mounted', 'fstrim']);

/** `VM 100` or `CT 200`, as Proxmox names its guests; `VMID 888` for one that has no config. */
export const guestLabel = (vmid: number, type: GuestType | null) =>
  `${type === 'lxc' ? 'CT' : type === 'qemu' ? 'VM' : 'VMID'} ${vmid}`;

/**
 * What to do about an entry of a locked guest, instead of a command: no command may touch a
 * volume while the operation that set the lock runs (qm(1) / pct(1), "Locks"; check_lock).
 */
export function lockAdvice(lock: string, vmid: number, type: GuestType | null): string {
  const label = guestLabel(vmid, type);
  const tool = type === 'lxc' ? 'pct' : 'qm';
  if (lock === 'suspended')
    return `${label} is hibernated (lock: suspended): resume or start it (qm resume ${vmid}) before touching it`;
  if (lock === 'mounted')
    return `${label}'s volumes are mounted on the host (lock: mounted): pct unmount ${vmid} once done, then look again`;
  return (
    `${label} is locked (${lock}): wait for that operation to end. If no task of it runs (pvesh get /cluster/tasks; ` +
    `a clone's task carries the source's VMID, a migration runs on the source node), the lock was left behind: ` +
    `${tool} unlock ${vmid} clears it, "only if you are sure the action which set the lock is no longer running" ` +
    `(${tool}(1), Locks)`
  );
}

// --- Orphan LVs: guest volumes LVM knows and no config references ----------------------

/** Every LV of a storage's VG named as a guest volume that no config references (none in flight). */
function orphanLvsOf(j: Judging): OrphanLv[] {
  const orphans: OrphanLv[] = [];
  for (const lv of j.state.lvs?.values() ?? []) {
    // LVM's own sub-LVs and thin pools are no guest volume, whatever their name.
    if (lv.hidden || lv.attr[0] === 't' || !j.storageVgs.has(lv.vg)) continue;
    const volume = parseGuestVolumeName(lv.lv);
    const orphan = volume === null ? null : judgeLv(j, lv, volume);
    if (orphan !== null) orphans.push(orphan);
  }
  return orphans;
}

/**
 * An LV read as an entry is (every section, linked clones, snapshots): an orphan, or null when it
 * is in use or cannot be judged.
 */
function judgeLv(j: Judging, lv: LogicalVolume, volume: GuestVolume): OrphanLv | null {
  const snapshotRefs = volume.kind === 'snapshot' ? snapshotRefsOf(j, lv.vg, volume) : NO_REFS;
  const refs = [...j.refsOf(lv.vg, lv.lv), ...snapshotRefs];
  // On a shared VG, a guest of any node uses the one LV; on a local VG, only this node's guests.
  const shared = j.sharedVgs.has(lv.vg);
  if (refs.some((ref) => shared || j.fromHere(ref))) return null;
  const { vmid } = volume;
  const configs = j.guestsById.get(vmid) ?? [];
  // Not judged: a config that cannot be read may reference it; a lock means work in flight.
  if (configs.some((g) => !g.readable || g.partial)) return null;
  const lock = j.locks.get(vmid);
  if (lock !== undefined && !SETTLED_LOCKS.has(lock)) return null;
  const elsewhere = refs.find((ref) => !j.local(ref.guest));
  const reason = elsewhere ? 'guest-on-other-node' : configs.length === 0 ? 'guest-missing' : 'volume-unreferenced';
  const label = guestLabel(vmid, typeOf(j, vmid));
  const storages = storagesOf(j, lv).map((storage) => storage.id);
  const on = storages.length > 0 ? storages.join(', ') : `VG ${lv.vg}`;
  const what = volume.kind === 'snapshot' ? `take snapshot ${volume.snapshot} of ${volume.origin}` : `create ${lv.lv}`;
  const active = lvActive(lv);
  const orphan = { vg: lv.vg, lv: lv.lv, vmid, reason, active, sizeBytes: lv.sizeBytes } as const;
  // A snapshot's LV is no volume pvesm frees: it goes by its LVM name.
  const storage = volume.kind === 'snapshot' ? null : (storages[0] ?? null);
  return {
    ...orphan,
    shared,
    otherNode: elsewhere?.guest.node ?? null,
    blocks: `${label} cannot ${what} on ${on}`,
    ...orphanAction(j, orphan, storage),
  };
}

/** The storages of this node an LV belongs to: lvmthin ones for a thin LV of their pool, lvm ones for the rest. */
const storagesOf = (j: Judging, lv: LogicalVolume) =>
  j.state.storages.filter((storage) => {
    const here = enabledHere(j, storage);
    const thin = lv.attr[0] === 'V';
    const kind = thin
      ? storage.type === 'lvmthin' && (lv.pool === null || lv.pool === storage.thinpool)
      : storage.type === 'lvm';
    return here && storage.vg === lv.vg && kind;
  });

/**
 * A rescan when the guest is here and would find it (it becomes an unusedN disk, the Proxmox way);
 * otherwise the steps by hand, never run by pve-dm: look at the data first, then free it.
 */
function orphanAction(
  j: Judging,
  orphan: Pick<OrphanLv, 'vg' | 'lv' | 'vmid' | 'reason' | 'active'>,
  storage: string | null,
): { remedy: string | null; advice: string } {
  const { vg, lv, vmid } = orphan;
  const facts: VolumeFacts = { vg, lv, kind: 'disk', lvmKnown: true, relatedTo: null, otherNode: null };
  const deactivate = orphan.active ? ' Deactivating it (lvchange -an) alone does not free the name.' : '';
  const rescan = orphan.reason === 'volume-unreferenced' ? rescanCommand(j, facts, vmid) : null;
  if (rescan !== null) {
    const label = guestLabel(vmid, typeOf(j, vmid));
    return {
      remedy: rescan,
      advice: `attaches it to ${label} as an unused disk, to keep or remove there.${deactivate}`,
    };
  }
  const free =
    storage === null ? shellLine(['lvremove', `${vg}/${lv}`]) : shellLine(['pvesm', 'free', `${storage}:${lv}`]);
  const elsewhere =
    orphan.reason === 'guest-on-other-node' ? ' Its guest lives on another node: this copy was left here.' : '';
  return {
    remedy: null,
    advice: `look at its data first (it may be the only copy); if nothing needs it: ${free}.${elsewhere}${deactivate}`,
  };
}

// --- Thin pools and volume groups: what stops every guest on them at once ---------------

export interface PoolThresholds {
  warning: number;
  critical: number;
}
/** Percent of a thin pool's data or metadata in use (settings PVE_DM_POOL_WARNING, PVE_DM_POOL_CRITICAL). */
export const DEFAULT_POOL_THRESHOLDS: PoolThresholds = { warning: 80, critical: 90 };

export type PoolState = 'ok' | 'out_of_data_space' | 'read_only' | 'needs_check' | 'fail' | 'error';
export type PoolProblemKind =
  | 'inactive'
  | 'failed'
  | 'needs-check'
  | 'read-only'
  | 'out-of-data-space'
  | 'metadata-use'
  | 'data-use';

export interface PoolProblem {
  kind: PoolProblemKind;
  severity: 'warning' | 'critical';
  message: string;
  /** One command that works as printed; pve-dm prints it and never runs it. null: none does. */
  remedy: string | null;
  /** What to do, with LVM's steps where one command is not enough. */
  advice: string;
}

/** A thin pool LVM knows, with what is wrong with it (nothing, mostly). */
export interface ThinPool {
  vg: string;
  lv: string;
  active: boolean;
  /** Percent in use, from the kernel's status (or lvs); null: not active, or not known. */
  dataPercent: number | null;
  metadataPercent: number | null;
  /** What the kernel says of it; null: not active, or not known (a capture without dmsetup-status.txt). */
  state: PoolState | null;
  severity: Severity;
  /** Its worst problem's message, or how it is. */
  message: string;
  /** VMIDs of this node's guests with volumes on it. */
  guests: number[];
  problems: PoolProblem[];
  /** Metadata a repair kept (`<pool>_meta0`, lvconvert --repair): space to free once the pool is checked. */
  leftovers: { lv: string; sizeBytes: number | null; advice: string }[];
  /** In a cluster report: the node it is on. */
  node?: string;
}

/** A volume group with a physical volume missing: LVM marks it partial (vg_attr `p`). */
export interface VolumeGroupProblem {
  vg: string;
  severity: 'warning' | 'critical';
  message: string;
  guests: number[];
  advice: string;
  /** In a cluster report: the node that sees it so. */
  node?: string;
}

/** What the pool rules read of one pool. */
interface PoolFacts {
  vg: string;
  lv: string;
  active: boolean;
  state: PoolState | null;
  dataPercent: number | null;
  metadataPercent: number | null;
  sizeBytes: number | null;
  metadataBytes: number | null;
  vgFreeBytes: number | null;
  vgPartial: boolean;
  guests: number[];
  /** `VM 100, CT 200`: made when a message names them. */
  guestsText: () => string;
  thresholds: PoolThresholds;
}

/** The pool rules in the order the README gives them; each one problem or none. */
const POOL_RULES: readonly ((pool: PoolFacts) => PoolProblem | null)[] = [
  inactivePool,
  failedPool,
  needsCheckPool,
  readOnlyPool,
  outOfDataPool,
  (pool) => poolUse(pool, 'metadata'),
  (pool) => poolUse(pool, 'data'),
];

/** Every thin pool, with its guests and its repair leftovers: one pass over the LVs. */
function thinPoolsOf(j: Judging): ThinPool[] {
  const pools: LogicalVolume[] = [];
  const guests = new Map<string, Set<number>>();
  const leftovers = new Map<string, LogicalVolume[]>();
  const poolOf = thinPoolOf(j);
  for (const lv of j.state.lvs?.values() ?? []) {
    if (lv.hidden) continue;
    if (lv.attr[0] === 't') pools.push(lv);
    else if (lv.attr[0] === 'V') {
      const pool = poolOf(lv);
      for (const ref of pool === null ? NO_REFS : j.refsOf(lv.vg, lv.lv))
        if (j.fromHere(ref)) pushToSet(guests, lvKey(lv.vg, pool as string), ref.guest.vmid);
    } else if (lv.attr[0] === '-') {
      // lvconvert --repair keeps the old metadata as a plain LV `<pool>_meta<N>`.
      const of = REPAIR_LEFTOVER_RE.exec(lv.lv)?.[1];
      if (of !== undefined) pushTo(leftovers, lvKey(lv.vg, of), lv);
    }
  }
  return pools.map((pool) => {
    const key = lvKey(pool.vg, pool.lv);
    const vmids = [...(guests.get(key) ?? [])].sort((a, b) => a - b);
    return judgePool(j, pool, vmids, repairLeftovers(pool, leftovers.get(key) ?? []));
  });
}

/**
 * A thin LV's pool: lvs's pool_lv, or for an lvs.txt without it (earlier captures) the one pool
 * its VG's lvmthin storages name.
 */
function thinPoolOf(j: Judging): (lv: LogicalVolume) => string | null {
  const thinpools = new Map<string, Set<string>>();
  for (const storage of j.state.storages)
    if (storage.type === 'lvmthin' && storage.vg !== null && storage.thinpool !== null)
      pushToSet(thinpools, storage.vg, storage.thinpool);
  return (lv) => {
    const only = thinpools.get(lv.vg);
    return lv.pool ?? (only?.size === 1 ? ([...only][0] ?? null) : null);
  };
}

function judgePool(j: Judging, lv: LogicalVolume, guests: number[], leftovers: ThinPool['leftovers']): ThinPool {
  const status = j.state.poolStatus?.get(lv.vg, lv.lv) ?? null;
  const active = lvActive(lv);
  const facts: PoolFacts = {
    vg: lv.vg,
    lv: lv.lv,
    active,
    state: active ? poolState(status, lv.attr) : null,
    dataPercent: active ? (status?.dataPercent ?? lv.dataPercent) : null,
    metadataPercent: active ? (status?.metadataPercent ?? lv.metadataPercent) : null,
    sizeBytes: lv.sizeBytes,
    metadataBytes: lv.metadataBytes,
    vgFreeBytes: lv.vgFreeBytes,
    vgPartial: lv.vgAttr?.[3] === 'p',
    guests,
    guestsText: () => guests.map((vmid) => guestLabel(vmid, typeOf(j, vmid))).join(', '),
    thresholds: j.state.poolThresholds ?? DEFAULT_POOL_THRESHOLDS,
  };
  const problems = POOL_RULES.flatMap((rule) => rule(facts) ?? []);
  const worst = problems.find((p) => p.severity === 'critical') ?? problems[0];
  const { vg, dataPercent, metadataPercent, state } = facts;
  return {
    vg,
    lv: lv.lv,
    active,
    dataPercent,
    metadataPercent,
    state,
    severity: worst?.severity ?? 'ok',
    message: worst?.message ?? poolHealthText(facts),
    guests,
    problems,
    leftovers,
  };
}

/**
 * The kernel's word first; without it, lv_attr's (state `c`: check needed; health `F` failed,
 * `D` out of data space, `M` metadata read-only).
 */
function poolState(status: PoolStatus | null, attr: string): PoolState | null {
  if (status === null) {
    if (attr[4] === 'c' || attr[4] === 'C') return 'needs_check';
    return ({ F: 'fail', D: 'out_of_data_space', M: 'read_only' } as const)[attr[8] ?? ''] ?? null;
  }
  if (status.mode === 'fail' || status.mode === 'error') return status.mode;
  if (status.needsCheck) return 'needs_check';
  return status.mode === 'ro' ? 'read_only' : status.mode === 'out_of_data_space' ? status.mode : 'ok';
}

const percentText = (percent: number) => `${percent.toFixed(1)}%`;

function poolHealthText(pool: PoolFacts): string {
  if (!pool.active) return 'not active; no guest of this node has a volume on it';
  const use = [
    pool.dataPercent === null ? null : `data ${percentText(pool.dataPercent)}`,
    pool.metadataPercent === null ? null : `metadata ${percentText(pool.metadataPercent)}`,
  ].filter((part) => part !== null);
  return use.length > 0 ? `active, ${use.join(', ')} used` : 'active';
}

const REPAIR_STEPS = (vg: string, pool: string) =>
  `repair its metadata while the pool is inactive (lvmthin(7), Metadata check and repair): stop the guests on it, ` +
  `${shellLine(['lvchange', '-an', `${vg}/${pool}`])}, ${shellLine(['lvconvert', '--repair', `${vg}/${pool}`])}, ` +
  `${shellLine(['lvchange', '-ay', `${vg}/${pool}`])}; keep ` +
  `${vg}/${pool}_meta0, the metadata before the repair, until the guests are checked`;

function inactivePool(pool: PoolFacts): PoolProblem | null {
  if (pool.active || pool.guests.length === 0) return null;
  const name = `${pool.vg}/${pool.lv}`;
  const message = `thin pool ${name} is not active: the disks of ${pool.guestsText()} on it cannot be used`;
  if (pool.vgPartial)
    return {
      kind: 'inactive',
      severity: 'critical',
      message,
      remedy: null,
      advice: `VG ${pool.vg} misses a disk: bring it back first`,
    };
  return {
    kind: 'inactive',
    severity: 'critical',
    message,
    remedy: shellLine(['lvchange', '-ay', name]),
    advice:
      `activates the pool. If it fails with "Check of pool ${name} failed (status:1). Manual repair required!", ` +
      REPAIR_STEPS(pool.vg, pool.lv),
  };
}

function failedPool(pool: PoolFacts): PoolProblem | null {
  if (pool.state !== 'fail' && pool.state !== 'error') return null;
  const name = `${pool.vg}/${pool.lv}`;
  const message =
    pool.state === 'fail'
      ? `the kernel failed thin pool ${name}: every read and write of the volumes on it fails`
      : `the kernel could not report the status of thin pool ${name} (Error)`;
  const advice = `read why in the kernel log (journalctl -k), then ${REPAIR_STEPS(pool.vg, pool.lv)}`;
  return { kind: 'failed', severity: 'critical', message, remedy: null, advice };
}

function needsCheckPool(pool: PoolFacts): PoolProblem | null {
  if (pool.state !== 'needs_check') return null;
  return {
    kind: 'needs-check',
    severity: 'critical',
    message:
      `the kernel flagged the metadata of thin pool ${pool.vg}/${pool.lv} as damaged (needs_check): ` +
      'it will not activate again unrepaired',
    remedy: null,
    advice: REPAIR_STEPS(pool.vg, pool.lv),
  };
}

function readOnlyPool(pool: PoolFacts): PoolProblem | null {
  if (pool.state !== 'read_only') return null;
  const full = (pool.metadataPercent ?? 0) >= 99;
  return {
    kind: 'read-only',
    severity: 'critical',
    message:
      `the metadata of thin pool ${pool.vg}/${pool.lv} is read-only${full ? ' (it is full)' : ''}: ` +
      'writes that need new blocks fail',
    remedy: null,
    advice: `${full ? 'grow its metadata (see the metadata finding), then ' : ''}${REPAIR_STEPS(pool.vg, pool.lv)}`,
  };
}

function outOfDataPool(pool: PoolFacts): PoolProblem | null {
  if (pool.state !== 'out_of_data_space') return null;
  return {
    kind: 'out-of-data-space',
    severity: 'critical',
    message:
      `thin pool ${pool.vg}/${pool.lv} is out of data space: ` +
      'writes to new blocks wait or fail, and its guests stop with I/O errors',
    ...poolGrowth(pool, 'data'),
  };
}

/** Data or metadata use over the thresholds. Metadata is the one that corrupts: when full, it damages the pool. */
function poolUse(pool: PoolFacts, part: 'data' | 'metadata'): PoolProblem | null {
  const percent = part === 'data' ? pool.dataPercent : pool.metadataPercent;
  if (percent === null) return null;
  const refusing = part === 'metadata' && pool.metadataBytes !== null && percent >= lvmCreateLimit(pool.metadataBytes);
  if (percent < pool.thresholds.warning && !refusing) return null;
  // Out of data space has its own finding, with the same remedy.
  if (part === 'data' && pool.state === 'out_of_data_space') return null;
  const severity = percent >= pool.thresholds.critical ? 'critical' : 'warning';
  const name = `${pool.vg}/${pool.lv}`;
  const what =
    part === 'metadata'
      ? 'when it runs out, the pool fails and its metadata can be damaged, with every volume on it ' +
        '(lvmthin(7), Metadata space exhaustion)'
      : 'when it is full, writes to new blocks wait or fail and its guests stop with I/O errors';
  const refused = refusing ? '; LVM already refuses new disks, snapshots and clones on it' : '';
  return {
    kind: part === 'data' ? 'data-use' : 'metadata-use',
    severity,
    message: `thin pool ${name}: ${part} ${percentText(percent)} used${refused}; ${what}`,
    ...poolGrowth(pool, part),
  };
}

/**
 * Metadata use from which LVM creates no thin volume on a pool ("Cannot create new thin volume,
 * free space in thin pool ... reached threshold"): it keeps 4 MiB or 25% of the metadata free,
 * whichever is less (lvm2 lib/metadata/thin_manip.c, pool_metadata_min_threshold).
 */
const lvmCreateLimit = (metadataBytes: number) => 100 - Math.min(25, (100 * 4 * 2 ** 20) / metadataBytes);

// The kernel's largest thin-pool metadata device (dm-thin-metadata.h: 255 index entries of 16 Ki 4 KiB blocks).
const MAX_POOL_METADATA_BYTES = 255 * 16384 * 4096;
const GIB = 2 ** 30;
const LVM_EXTENT_BYTES = 4 * 2 ** 20;

/** `+8G`, or `+516M` below 1 GiB (whole 4 MiB extents): at least `bytes`. */
function lvmGrowth(bytes: number): { text: string; bytes: number } {
  if (bytes >= GIB) {
    const gib = Math.ceil(bytes / GIB);
    return { text: `+${gib}G`, bytes: gib * GIB };
  }
  const rounded = Math.max(1, Math.ceil(bytes / LVM_EXTENT_BYTES)) * LVM_EXTENT_BYTES;
  return { text: `+${rounded / 2 ** 20}M`, bytes: rounded };
}

/**
 * The lvextend that brings use back under the warning threshold less 10 points, when the VG has
 * the space (for metadata twice: LVM grows its spare metadata LV along); otherwise what to do.
 */
function poolGrowth(pool: PoolFacts, part: 'data' | 'metadata'): { remedy: string | null; advice: string } {
  const name = `${pool.vg}/${pool.lv}`;
  const free =
    'or free blocks: discard inside the guests (fstrim, with discard=on on their disks), ' +
    'remove snapshots and volumes no one needs';
  const size = part === 'data' ? pool.sizeBytes : pool.metadataBytes;
  const percent =
    pool.state === 'out_of_data_space' && part === 'data'
      ? 100
      : part === 'data'
        ? pool.dataPercent
        : pool.metadataPercent;
  if (size === null || percent === null || pool.vgFreeBytes === null)
    return {
      remedy: null,
      advice: `grow it if VG ${pool.vg} has free space (${shellLine(['vgs', pool.vg])}: VFree), ${free}`,
    };
  const target = Math.max(10, pool.thresholds.warning - 10);
  const room = part === 'metadata' ? MAX_POOL_METADATA_BYTES - size : Infinity;
  if (room < LVM_EXTENT_BYTES)
    return { remedy: null, advice: `its metadata is at the largest size the kernel allows (about 16 GiB): ${free}` };
  const growth = lvmGrowth(Math.min((size * percent) / target - size, room));
  const needed = part === 'metadata' ? 2 * growth.bytes : growth.bytes;
  const flag = part === 'data' ? ['-L', growth.text] : ['--poolmetadatasize', growth.text];
  if (needed > pool.vgFreeBytes)
    return {
      remedy: null,
      advice:
        `VG ${pool.vg} has ${humanBytes(pool.vgFreeBytes)} free, ${humanBytes(needed)} are needed: add a disk ` +
        `(pvcreate /dev/DISK; ${shellLine(['vgextend', pool.vg])} /dev/DISK), ` +
        `then ${shellLine(['lvextend', ...flag, name])}; ${free}`,
    };
  return {
    remedy: shellLine(['lvextend', ...flag, name]),
    advice:
      `grows its ${part} by ${humanBytes(growth.bytes)} to bring its use under ${target}% ` +
      `(VG ${pool.vg} has ${humanBytes(pool.vgFreeBytes)} free)`,
  };
}

const REPAIR_LEFTOVER_RE = /^(.+)_meta\d+$/;

/** LVs a repair left beside the pool (`data_meta0`): lvconvert --repair keeps the old metadata under that name. */
function repairLeftovers(pool: LogicalVolume, lvs: readonly LogicalVolume[]): ThinPool['leftovers'] {
  return lvs.map((lv) => ({
    lv: lv.lv,
    sizeBytes: lv.sizeBytes,
    advice:
      `the metadata of ${pool.vg}/${pool.lv} before a repair: once the pool and its guests are checked, ` +
      shellLine(['lvremove', `${pool.vg}/${lv.lv}`]) +
      (lv.sizeBytes === null ? '' : ` frees ${humanBytes(lv.sizeBytes)}`),
  }));
}

/** VGs with a missing PV (vg_attr `p`): critical when this node's guests have volumes on them. */
function volumeGroupProblemsOf(j: Judging): VolumeGroupProblem[] {
  const partial = new Map<string, Set<number>>();
  for (const lv of j.state.lvs?.values() ?? []) {
    if (lv.vgAttr?.[3] !== 'p') continue;
    if (!partial.has(lv.vg)) partial.set(lv.vg, new Set());
    for (const ref of j.refsOf(lv.vg, lv.lv)) if (j.fromHere(ref)) pushToSet(partial, lv.vg, ref.guest.vmid);
  }
  return [...partial].map(([vg, vmids]) => {
    const guests = [...vmids].sort((a, b) => a - b);
    const whose = guests.map((vmid) => guestLabel(vmid, typeOf(j, vmid))).join(', ');
    return {
      vg,
      severity: guests.length > 0 ? 'critical' : 'warning',
      message:
        `VG ${vg} misses a physical volume (partial): LVs with extents on it cannot be activated` +
        (guests.length > 0 ? `, disks of ${whose} among them` : ''),
      guests,
      advice:
        'find the missing disk (pvs shows it as [unknown]), reconnect it (cable, iSCSI session, multipath), ' +
        'then pvscan --cache. ' +
        `Only when it is gone for good: ${shellLine(['vgreduce', '--removemissing', vg])} ` +
        'drops every LV with extents on it (vgreduce(8))',
    };
  });
}

/** The remedy that works for a problem entry now, or, when no command may touch it, what to do instead. */
function remedyOf(j: Judging, entry: DmEntry, reason: Reason, facts: VolumeFacts, vmid: number): Action {
  const lock = j.locks.get(vmid);
  if (lock !== undefined) return adviceOnly(lockAdvice(lock, vmid, typeOf(j, vmid)));
  const rescan = reason === 'volume-unreferenced' ? rescanCommand(j, facts, vmid) : null;
  return { remedy: rescan ?? removalText({ name: entry.name, reason, ...facts }), advice: null };
}

/** `qm disk rescan` / `pct rescan` when the guest is on this node and rescan finds the volume (as unusedN). */
function rescanCommand(j: Judging, facts: VolumeFacts, vmid: number): string | null {
  const guest = j.guestsById.get(vmid)?.find(j.local);
  if (guest === undefined || !rescanFinds(j, facts, guest)) return null;
  return shellLine(rescanArgv(guest.type, vmid));
}

/** The rescan of a guest's volumes, as an argument list: what the remedy prints and the interactive cleanup runs. */
export const rescanArgv = (type: GuestType, vmid: number): string[] =>
  type === 'qemu' ? ['qm', 'disk', 'rescan', '--vmid', String(vmid)] : ['pct', 'rescan', '--vmid', String(vmid)];

/** A storage this node uses: not disabled, and not limited to other nodes. */
const enabledHere = (j: Judging, storage: Storage) =>
  !storage.disabled && (storage.nodes === null || storage.nodes.includes(j.state.node));

/** lvm and lvmthin storages' content when storage.cfg gives none (LVMPlugin / LvmThinPlugin plugindata). */
const DEFAULT_CONTENT: Readonly<Record<string, readonly string[]>> = {
  lvm: ['images'],
  lvmthin: ['images', 'rootdir'],
};

/**
 * Whether `qm disk rescan` / `pct rescan` of the guest would attach the volume as unusedN: an LV
 * LVM lists, on a storage enabled on this node for the guest's content (vdisk_list), which that
 * storage lists as the guest's (LVMPlugin / LvmThinPlugin list_images). Rescan skips state volumes.
 */
function rescanFinds(j: Judging, facts: VolumeFacts, guest: GuestConfig): boolean {
  const { vg, lv: name, kind } = facts;
  if (
    facts.lvmKnown === false ||
    vg === null ||
    name === null ||
    !(kind === 'disk' || kind === 'base' || kind === 'other')
  )
    return false;
  const lv = j.state.lvs?.get(vg, name);
  const content = guest.type === 'qemu' ? 'images' : 'rootdir';
  const owner = /^(?:vm|base)-(\d+)-/.exec(name);
  if (owner === null || Number(owner[1]) !== guest.vmid) return false;
  return j.state.storages.some((storage) => {
    const enabled = storage.vg === vg && enabledHere(j, storage);
    if (!enabled || !(storage.content ?? DEFAULT_CONTENT[storage.type] ?? []).includes(content)) return false;
    if (storage.type === 'lvm') {
      const tagged = !storage.taggedOnly || lv === undefined || lv.tags.includes(`pve-vm-${guest.vmid}`);
      return name.startsWith('vm-') && tagged && (lv === undefined || /^[-mMrR]$/.test(lv.attr[0] ?? ''));
    }
    return (
      storage.type === 'lvmthin' &&
      (lv === undefined || (lv.attr[0] === 'V' && (lv.pool === null || lv.pool === storage.thinpool)))
    );
  });
}

/** Whether an entry goes with `lvchange -an` (LVM's own mapping of an LV it knows) rather than `dmsetup remove`. */
const deactivatesLv = (entry: Pick<Classified, 'lvmKnown' | 'vg' | 'lv' | 'reason'>) =>
  entry.lvmKnown !== false && entry.vg !== null && entry.lv !== null && entry.reason !== 'partition-of-problem';

/**
 * The command that takes an entry away without losing data: LVM's own mapping through LVM, which
 * keeps its view consistent; any other by the kernel's own name (`--manglename none`: dmsetup's
 * default mode would first mangle a name holding bytes outside its whitelist, and address another).
 */
export const removalCommand = (entry: Pick<Classified, 'name' | 'lvmKnown' | 'vg' | 'lv' | 'reason'>): string[] =>
  deactivatesLv(entry)
    ? ['lvchange', '-an', `${entry.vg}/${entry.lv}`]
    : ['dmsetup', '--manglename', 'none', 'remove', entry.name];

/**
 * `dmsetup remove NAME` to paste: plain when dmsetup's default mode addresses the name, else with
 * `--manglename none` and the `$'...'` word.
 */
const dmRemoveText = (name: string) =>
  dmsetupTakesAsIs(name)
    ? `dmsetup remove ${shellQuote(name)}`
    : `dmsetup --manglename none remove ${mangleDmName(name)}`;

/** removalCommand as a shell command an administrator pastes. */
export const removalText = (entry: Pick<Classified, 'name' | 'lvmKnown' | 'vg' | 'lv' | 'reason'>): string =>
  deactivatesLv(entry) ? `lvchange -an ${shellQuote(`${entry.vg}/${entry.lv}`)}` : dmRemoveText(entry.name);

const NO_DATA_SEGMENT_RE = /^\d+ \d+ (?:error|zero)\b/;
/** `error` and `zero` tables map no data: two of them are not two views of the same extents. */
const isDataTable = (table: string) =>
  !(table.includes('error') || table.includes('zero')) ||
  table.split('\n').every((segment) => !NO_DATA_SEGMENT_RE.test(segment));

const DEVICE_PATH_RE = /^\/dev\/([^/]+)\/([^/]+)$/;
/** The (vg, lv) pairs a config's volume string names: `storeid:volname` through storage.cfg, or a device path. */
export function volumesOfRef(volume: string, vgOfStorage: Map<string, string>): [string, string][] {
  if (volume.startsWith('/dev/mapper/')) {
    const split = splitLvmName(volume.slice('/dev/mapper/'.length));
    return split && split.layer === '' ? [[split.vg, split.lv]] : [];
  }
  const devicePath = volume.startsWith('/dev/') ? DEVICE_PATH_RE.exec(volume) : null;
  if (devicePath) return [[devicePath[1] ?? '', devicePath[2] ?? '']];
  const id = VOLUME_ID_RE.exec(volume);
  const vg = id ? vgOfStorage.get(id[1] ?? '') : undefined;
  if (!id || vg === undefined) return [];
  const volname = id[2] ?? '';
  // A linked clone on ZFS/RBD-style storages is `base-X-disk-N/vm-Y-disk-N`: it uses both.
  return volname.includes('/') ? volname.split('/').map((lv): [string, string] => [vg, lv]) : [[vg, volname]];
}

// ============================================================================================
// Stage 4: grade.
// ============================================================================================

export type GradeLetter = 'A+' | 'B' | 'C' | 'D' | 'F';

export interface Summary {
  entries: number;
  valid: number;
  /** Mappings that corrupt data silently (critical, as a duplicate is). */
  conflict: number;
  duplicate: number;
  tombstone: number;
  ignored: number;
  /** Entries pve-dm should judge and cannot (their guest's config cannot be read). */
  unjudged: number;
  /** Guest volumes LVM knows that no config references (not dm entries: see OrphanLv). */
  orphanLvs: number;
  /** Thin pools and VGs with a problem (warning or critical; see ThinPool, VolumeGroupProblem). */
  poolProblems: number;
}

export interface Graded {
  grade: GradeLetter;
  summary: Summary;
  /** 0 healthy; 1 tombstones or warnings; 2 duplicates or grade F. */
  exitCode: 0 | 1 | 2;
}

/** More tombstones than this grade F, as any duplicate does (critical); the monitoring levels use it too. */
export const MAX_TOMBSTONES_BEFORE_F = 50;

/**
 * The grade counts what blocks a guest's next disk: tombstones, and the orphan LVs that have no
 * tombstone of their own (an inactive LV has no dm entry). Orphan LVs block a name and hold space;
 * they endanger no running guest, so they weigh as tombstones do, and never make an F alone but by
 * their number. Any duplicate is an F, as is any critical pool or VG finding (its guests are down
 * or about to fail); a warning one (a pool filling up) makes a B at best. The exit code is 2 for
 * F; 1 for tombstones, orphan LVs, pool warnings, warnings, or entries that could not be judged
 * (such a node is never shown as healthy); 0 otherwise.
 */
export function grade(
  classification: Pick<Classification, 'entries' | 'warnings'> &
    Partial<Pick<Classification, 'orphanLvs' | 'pools' | 'volumeGroups'>>,
): Graded {
  const orphans = classification.orphanLvs ?? [];
  const poolFindings = [...(classification.pools ?? []), ...(classification.volumeGroups ?? [])];
  const summary: Summary = {
    entries: classification.entries.length,
    valid: 0,
    conflict: 0,
    duplicate: 0,
    tombstone: 0,
    ignored: 0,
    unjudged: 0,
    orphanLvs: orphans.length,
    poolProblems: poolFindings.filter((finding) => finding.severity !== 'ok').length,
  };
  for (const entry of classification.entries) summary[entry.status]++;
  const critical =
    summary.conflict > 0 || summary.duplicate > 0 || poolFindings.some((finding) => finding.severity === 'critical');
  const blocked = summary.tombstone + orphans.filter((orphan) => !orphan.active).length;
  const byCount: GradeLetter =
    blocked === 0 ? 'A+' : blocked <= 5 ? 'B' : blocked <= 20 ? 'C' : blocked <= MAX_TOMBSTONES_BEFORE_F ? 'D' : 'F';
  const letter: GradeLetter = critical ? 'F' : byCount === 'A+' && summary.poolProblems > 0 ? 'B' : byCount;
  const warned =
    blocked > 0 ||
    orphans.length > 0 ||
    summary.poolProblems > 0 ||
    summary.unjudged > 0 ||
    classification.warnings.length > 0;
  return { grade: letter, summary, exitCode: letter === 'F' ? 2 : warned ? 1 : 0 };
}

// ============================================================================================
// Stage 5: report — console, JSON and a self-contained HTML page validated before it is written;
// for monitoring, a Nagios plugin's output, a Checkmk local check and a Prometheus textfile.
// ============================================================================================

export interface Result extends Classification, Graded {
  generatedAt: string;
  /** `--vmid` narrowed the report to these guests. */
  vmids: number[] | null;
  /** What each notifier did; filled after the reports it sent were rendered. */
  notifications: Notification[];
  /** What cleanup did, when it ran (--yes, --dry-run). */
  cleanup: CleanupOutcome | null;
  /** A cluster run's own findings beside its nodes' results; null for one node. */
  cluster: ClusterView | null;
}

/**
 * Narrows a classification to the entries and guests of some VMIDs (`--vmid`). A VMID with no
 * config on any node (`configured`) and no entry here is usually a typo: a warning says so.
 */
export function narrowToGuests(
  classification: Classification,
  vmids: number[],
  configured: ReadonlySet<number> = new Set(),
): Classification {
  const wanted = new Set(vmids);
  const seen = new Set([...classification.entries, ...classification.orphanLvs].map((found) => found.vmid));
  const unknown = vmids.filter((vmid) => !configured.has(vmid) && !seen.has(vmid));
  const guestEntries = new Set(
    classification.entries.filter((entry) => entry.vmid !== null && wanted.has(entry.vmid)).map((entry) => entry.name),
  );
  // An ignored kpartx partition carries no VMID: it goes with its parent.
  const entries = classification.entries.filter(
    (entry) => guestEntries.has(entry.name) || (entry.relatedTo !== null && guestEntries.has(entry.relatedTo)),
  );
  const names = new Set(entries.map((entry) => entry.name));
  return {
    ...classification,
    entries,
    duplicates: classification.duplicates.filter(
      (set) => names.has(set.kept) || set.extras.some((name) => names.has(name)),
    ),
    orphanLvs: classification.orphanLvs.filter((orphan) => wanted.has(orphan.vmid)),
    // The pools and VGs these guests' disks are on.
    pools: classification.pools.filter((pool) => pool.guests.some((vmid) => wanted.has(vmid))),
    volumeGroups: classification.volumeGroups.filter((vg) => vg.guests.some((vmid) => wanted.has(vmid))),
    guests: classification.guests.filter((guest) => wanted.has(guest.vmid)),
    missingGuests: classification.missingGuests.filter((missing) => wanted.has(missing.vmid)),
    warnings: [
      ...classification.warnings,
      ...unknown.map((vmid) =>
        warn('--vmid', null, `VMID ${vmid} has no config on any node and no dm entry here (a typo?)`),
      ),
    ],
  };
}

export interface ReportOptions {
  json: boolean;
  console: boolean;
  html: boolean;
  color: boolean;
  nagios?: boolean;
  checkmk?: boolean;
  prometheus?: boolean;
}

export interface Reports {
  console?: string;
  json?: string;
  html?: string;
  nagios?: string;
  checkmk?: string;
  prometheus?: string;
}

export async function report(result: Result, options: ReportOptions): Promise<Reports> {
  const reports: Reports = {};
  // A cluster's JSON, console and Prometheus text have their own shape; HTML and monitoring read `cluster`.
  const cluster = isCluster(result) ? result : null;
  if (options.json) reports.json = `${terminalSafeJson(cluster ? clusterToJson(cluster) : toJson(result))}\n`;
  if (options.console)
    reports.console = cluster ? renderClusterConsole(cluster, options.color) : renderConsole(result, options.color);
  if (options.html) reports.html = await renderValidatedHtml(result);
  if (options.nagios) reports.nagios = renderNagios(result);
  if (options.checkmk) reports.checkmk = renderCheckmk(result);
  if (options.prometheus) reports.prometheus = cluster ? renderClusterPrometheus(cluster) : renderPrometheus(result);
  return reports;
}

export const isCluster = (result: Result): result is ClusterResult => result.cluster !== null;

const warningJson = (w: Warning) => ({
  ...(w.node === undefined ? {} : { node: w.node }),
  source: w.source,
  line: w.line,
  message: w.message,
  text: formatWarning(w),
});

export function toJson(result: Result) {
  return {
    version: 1,
    tool: { name: 'pve-dm', version: VERSION },
    node: result.node,
    generatedAt: result.generatedAt,
    capturedAt: result.meta?.capturedAt ?? null,
    vmids: result.vmids,
    grade: result.grade,
    summary: result.summary,
    entries: result.entries.map((entry) => {
      const json: Omit<Classified, 'realName' | 'uuid' | 'major' | 'minor'> & {
        uuid: string | null;
        realName?: string;
      } = {
        name: entry.name,
        ...(entry.node === undefined ? {} : { node: entry.node }),
        ...(entry.conflict === undefined ? {} : { conflict: entry.conflict }),
        status: entry.status,
        reason: entry.reason,
        remedy: entry.remedy,
        advice: entry.advice,
        vmid: entry.vmid,
        guestType: entry.guestType,
        vg: entry.vg,
        lv: entry.lv,
        open: entry.open,
        uuid: entry.uuid || null,
        kind: entry.kind,
        lvmKnown: entry.lvmKnown,
        relatedTo: entry.relatedTo,
        otherNode: entry.otherNode,
        lock: entry.lock,
        holders: entry.holders,
      };
      if (entry.realName !== entry.name) json.realName = entry.realName;
      return json;
    }),
    duplicates: result.duplicates,
    orphanLvs: result.orphanLvs,
    pools: result.pools,
    volumeGroups: result.volumeGroups,
    guests: result.guests.map(({ vmid, type, name, running, lock, health, template, readable }) => ({
      vmid,
      type,
      name,
      running,
      lock,
      health,
      template,
      configReadable: readable,
    })),
    missingGuests: result.missingGuests,
    system: result.system,
    warnings: result.warnings.map(warningJson),
    notes: result.notes.map(warningJson),
    notifications: result.notifications,
    cleanup: result.cleanup,
  };
}

export type Severity = 'ok' | 'warning' | 'critical';

/** critical: duplicates or grade F; warning: tombstones or warnings; ok otherwise. */
export const severityOf = (result: Pick<Result, 'exitCode'>): Severity =>
  result.exitCode >= 2 ? 'critical' : result.exitCode === 1 ? 'warning' : 'ok';

/** A cluster run's shared LVs active on several nodes while their guest runs (Proxmox bug 4997). */
const sharedActiveCount = (result: Pick<Result, 'cluster'>) =>
  result.cluster?.findings.filter((f) => f.kind === 'active-on-several-nodes' && f.severity === 'critical').length ?? 0;

/** A cluster's findings (with the remedy on each node) and its unreachable nodes, one line each; none for one node. */
function clusterLines(result: Pick<Result, 'cluster'>): string[] {
  if (result.cluster === null) return [];
  const remedies = (f: ClusterFinding) =>
    f.activeOn.flatMap((a) => (a.remedy === null ? [] : [`on ${a.node}: ${a.remedy}`])).join('; ');
  return [
    ...result.cluster.findings.map((f) => `${f.severity}: ${f.message}${remedies(f) ? `; ${remedies(f)}` : ''}`),
    ...result.cluster.unreachable.map(({ node, error }) => `warning: node ${node} not analysed: ${error}`),
  ];
}

/** How many entries could not be judged, and why, in words (null: every entry was judged). */
export function unjudgedSummary(result: Pick<Result, 'entries' | 'summary'>): string | null {
  const count = result.summary.unjudged;
  if (count === 0) return null;
  const guests = [
    ...new Set(
      result.entries
        .filter((e) => e.status === 'unjudged' && e.vmid !== null)
        .map((e) => guestLabel(e.vmid as number, e.guestType)),
    ),
  ];
  const whose =
    guests.length === 1 ? `the config of ${guests[0]} cannot` : `the configs of ${guests.join(', ')} cannot`;
  return `${count} ${count === 1 ? 'entry' : 'entries'} not judged: ${whose} be read`;
}

/** The subject the old script gave its e-mail (severity, node, counts, grade). */
export function notificationSubject(
  result: Pick<Result, 'node' | 'grade' | 'summary' | 'warnings' | 'entries'> &
    Partial<Pick<Result, 'pools' | 'volumeGroups' | 'cluster'>>,
): string {
  const { duplicate, tombstone } = result.summary;
  const headline = clusterHeadline({ cluster: result.cluster ?? null });
  const unjudged = unjudgedSummary(result);
  const pools = { pools: result.pools ?? [], volumeGroups: result.volumeGroups ?? [] };
  // Two nodes writing one LV destroy data: said first, by name.
  if (headline !== null) return `🚨 [${result.node}] ${headline}! Grade: ${result.grade}`;
  if (result.summary.conflict > 0)
    return `🚨 [${result.node}] CRITICAL: ${conflictWords(result.entries)}! Grade: ${result.grade}`;
  const critical = `🚨 [${result.node}] CRITICAL:`;
  if (duplicate > 0) return `${critical} ${duplicate} DUPLICATE DM entries causing VM failures! Grade: ${result.grade}`;
  if (poolsWith(pools, 'critical') > 0)
    return (
      `🚨 [${result.node}] CRITICAL: thin pools and VGs: ${poolCounts(pools)}; ` +
      `their guests are down or about to fail! Grade: ${result.grade}`
    );
  if (tombstone === 0 && unjudged !== null)
    return `⚠️ [${result.node}] Proxmox DM Health: INCOMPLETE - ${unjudged} - Grade ${result.grade}`;
  const orphans = result.summary.orphanLvs;
  if (tombstone === 0 && orphans > 0)
    return (
      `⚠️ [${result.node}] Proxmox DM Health: ${orphans} orphan LV(s) block guest volume names - ` +
      `Grade ${result.grade}`
    );
  if (tombstone === 0 && poolsWith(pools, 'warning') > 0)
    return `⚠️ [${result.node}] Proxmox DM Health: ${poolsWith(pools, 'warning')} thin pool(s) filling up - Grade ${
      result.grade
    }`;
  if (tombstone === 0) return `✅ [${result.node}] Proxmox DM Health: EXCELLENT - Grade ${result.grade} (No issues)`;
  if (tombstone <= 10)
    return `⚠️ [${result.node}] Proxmox DM Health: ${tombstone} tombstones detected - Grade ${result.grade}`;
  return (
    `🚨 [${result.node}] Proxmox DM WARNING: ${tombstone} tombstones blocking VM operations - ` +
    `Grade ${result.grade}`
  );
}

/** A problem's remedy, or why it has none now and what to do instead. */
const remedyLine = (entry: Classified) =>
  entry.remedy !== null ? `remedy: ${entry.remedy}` : `no command now: ${entry.advice ?? 'none'}`;
/** The remedy as the console shows it: the command kept whole on its line. */
const consoleRemedy = (entry: Classified) =>
  entry.remedy !== null ? `remedy: ${whole(terminalSafe(entry.remedy))}` : consoleAdvice(remedyLine(entry));

/** The commands advice names (classify's lockAdvice, heldAdvice, orphanAction...), kept whole on a console line. */
const ADVICE_COMMAND_RE = new RegExp(
  [
    String.raw`(?:qm|pct) unlock \d+`,
    String.raw`pct unmount \d+`,
    String.raw`(?:qm disk|pct) rescan --vmid \d+`,
    String.raw`(?:fuser -vm|pvesh get|pvesm free|lvremove|dmsetup remove) \S+`,
    String.raw`lvchange -a[ny](?: [^\s),;]+)?`,
    String.raw`(?:lvconvert --repair|vgreduce --removemissing|vgs) [^\s),;:]+`,
    String.raw`lvextend (?:-L|--poolmetadatasize) \+\w+ [^\s),;]+`,
    String.raw`(?:pvcreate|vgextend [^\s),;]+) /dev/DISK`,
    String.raw`(?:pvscan --cache|journalctl -k)`,
  ]
    .map((command) => `\\b${command}`)
    .join('|'),
  'g',
);

/** Advice as the console shows it: as text, its commands whole. */
const consoleAdvice = (advice: string) => terminalSafe(advice).replace(ADVICE_COMMAND_RE, whole);

/** A plain-text summary for notifications: the counts, then the problem entries (at most `limit`). */
export function notificationText(result: Result, limit = 20): string {
  const { entries, valid, duplicate, tombstone, ignored } = result.summary;
  const problems = result.entries.filter(isProblem);
  const unjudged = unjudgedSummary(result);
  const headline = clusterHeadline(result);
  const lines = [
    ...(headline === null ? [] : [headline]),
    `pve-dm report for ${result.node}: grade ${result.grade}, ${duplicate} duplicate and ${tombstone} tombstoned ` +
      `entries (${entries} dm entries: ${valid} valid, ${ignored} ignored).`,
    ...(unjudged === null ? [] : [`Incomplete: ${unjudged}.`]),
    ...clusterLines(result).map((line) => `- ${line}`),
    ...result.volumeGroups.map((vg) => `- VG ${vg.vg}: ${vg.severity}: ${vg.message}`),
    ...result.pools.flatMap((pool) =>
      pool.problems.map((p) => `- pool ${pool.vg}/${pool.lv}: ${p.severity}: ${p.message}; ${p.remedy ?? 'by hand'}`),
    ),
    ...problems
      .slice(0, limit)
      .map((entry) => `- ${shownName(entry.name, entry.node)}: ${entry.status}, ${entry.reason}; ${remedyLine(entry)}`),
    ...(problems.length > limit ? [`- ... and ${problems.length - limit} more`] : []),
    ...result.orphanLvs
      .slice(0, limit)
      .map((o) => `- orphan LV ${o.vg}/${o.lv}: ${o.reason}; ${o.blocks}; ${o.remedy === null ? 'by hand' : o.remedy}`),
    ...(result.orphanLvs.length > limit ? [`- ... and ${result.orphanLvs.length - limit} more orphan LVs`] : []),
    ...(result.warnings.length > 0
      ? [`${result.warnings.length} warning(s), first: ${formatWarning(result.warnings[0] as Warning)}`]
      : []),
  ];
  return lines.map(terminalSafe).join('\n');
}

/**
 * Untrusted text on a terminal: control characters (ESC, CR...) are shown, never obeyed; so are
 * the bidirectional overrides and marks, which would make a terminal show a name reordered.
 */
export const terminalSafe = (text: string) =>
  text.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]/g, (c) =>
    c < '\u0100' ? `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}` : `\\u${c.charCodeAt(0).toString(16)}`,
  );

/**
 * JSON.stringify, with what a terminal obeys and JSON.stringify leaves raw (DEL, C1 controls such
 * as the 8-bit CSI, bidirectional overrides) escaped as `\uXXXX` too: the same JSON value, safe
 * to print on a terminal (`--json`, `cat` of a cron job's output).
 */
const terminalSafeJson = (value: unknown) => {
  const json = JSON.stringify(value, null, 2);
  // ASCII (as many bytes as characters) holds none of them but DEL: two quick looks spare the
  // regex a run over megabytes at 5,000 guests.
  if (Buffer.byteLength(json, 'utf8') === json.length && !json.includes('\u007f')) return json;
  return json.replace(
    /[\u007f-\u009f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
};

// --- The console: 80 columns, colour only on a terminal -------------------------------------

const CONSOLE_WIDTH = 80;
const ANSI_RE = /\u001b\[[0-9;]*m/g;
const visibleLength = (text: string) => text.replace(ANSI_RE, '').length;
/** Joins a command's words so that wrapConsole never breaks a line inside it (wrapConsole parts them again). */
const WORD_GLUE = '\u0000';
const whole = (command: string) =>
  command
    .split(' && ')
    .map((part) => part.split(' ').join(WORD_GLUE))
    .join(' && ');

/** Text broken at spaces into lines of `width` columns (`first` for the first); a longer word stays whole. */
export function wrapWords(text: string, width: number, first = width): string[] {
  const lines: string[] = [];
  let line = '';
  // A word keeps the spaces after it but one: `name  reason` stays two columns apart on one line.
  for (const word of text.split(/ (?=[^ ])/)) {
    if (line !== '' && visibleLength(line) + 1 + visibleLength(word) > (lines.length === 0 ? first : width)) {
      lines.push(line.trimEnd());
      line = word;
    } else line = line === '' ? word : `${line} ${word}`;
  }
  return [...lines, line.trimEnd()];
}

/** Every line in 80 columns, continued four columns further in; dm names and commands (`whole`) stay whole. */
export function wrapConsole(text: string): string {
  const wrapped = text.split('\n').flatMap((line) => {
    if (visibleLength(line) <= CONSOLE_WIDTH) return [line];
    const lead = /^ */.exec(line)?.[0] ?? '';
    const indent = ' '.repeat(Math.min(lead.length + 4, 40));
    const [head = '', ...rest] = wrapWords(
      line.slice(lead.length),
      CONSOLE_WIDTH - indent.length,
      CONSOLE_WIDTH - lead.length,
    );
    return [`${lead}${head}`, ...rest.map((part) => `${indent}${part}`)];
  });
  return wrapped.join('\n').split(WORD_GLUE).join(' ');
}

const COLORS = { red: 31, green: 32, yellow: 33, blue: 34, dim: 2, bold: 1 } as const;
const painter = (color: boolean) => (style: keyof typeof COLORS, text: string) =>
  color ? `\u001b[${COLORS[style]}m${text}\u001b[0m` : text;

const humanBytes = (bytes: number) => {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
};

const humanDuration = (seconds: number) => {
  const days = Math.floor(seconds / 86400);
  const hours = Math.floor((seconds % 86400) / 3600);
  const minutes = Math.floor((seconds % 3600) / 60);
  return days > 0 ? `${days}d ${hours}h` : hours > 0 ? `${hours}h ${minutes}m` : `${minutes}m`;
};

/** The host facts as label/value pairs, shared by the console and HTML reports. */
export function systemRows(system: SystemFacts | null): [string, string][] {
  if (system === null) return [];
  const usage = (u: { totalBytes: number; usedBytes: number } | null) =>
    u === null || u.totalBytes <= 0
      ? 'not known'
      : `${humanBytes(u.usedBytes)} of ${humanBytes(u.totalBytes)} ` +
        `(${Math.round((u.usedBytes / u.totalBytes) * 100)}%)`;
  return [
    ['Proxmox VE', system.pveVersion ?? 'not known'],
    ['Kernel', system.kernel ?? 'not known'],
    ['Uptime', system.uptimeSeconds === null ? 'not known' : humanDuration(system.uptimeSeconds)],
    ['CPU', system.cpuPercent === null ? 'not known' : `${system.cpuPercent}%`],
    ['Memory', usage(system.memory)],
    ['Root filesystem', usage(system.rootfs)],
  ];
}

const describeEntry = (entry: Classified): string =>
  match(entry.reason)
    .with(
      'guest-on-other-node',
      () => `${guestLabel(entry.vmid ?? 0, entry.guestType)} lives on node ${entry.otherNode} and uses it there`,
    )
    .with('guest-missing', () => `${guestLabel(entry.vmid ?? 0, null)} has no config on any node`)
    .with('volume-unreferenced', () => `no config references ${entry.vg}/${entry.lv}`)
    .with('storage-unknown', () => `no storage in storage.cfg uses volume group ${entry.vg}`)
    .with('lv-missing', () => `LVM does not know ${entry.vg}/${entry.lv} any more`)
    .with(
      'lv-mismatch',
      () => `LVM knows ${entry.vg}/${entry.lv}, but this mapping is not its own (inactive, or another uuid)`,
    )
    .with('partition-of-problem', () => `partition of ${mangleDmName(entry.relatedTo ?? '')}`)
    .with('stale-table', () => {
      const tables = staleTables(entry);
      const shown = (table: string) => table.split('\n').join('; ');
      const both = tables === null ? '' : ` (kernel: ${shown(tables.actual)}; LVM: ${shown(tables.expected)})`;
      return `the kernel maps ${entry.vg}/${entry.lv} otherwise than LVM's metadata says${both}`;
    })
    .with(
      'stacked-on-guest-volume',
      () =>
        `stacked on ${guestLabel(entry.vmid ?? 0, entry.guestType)}'s ` +
        (entry.relatedTo !== null ? mangleDmName(entry.relatedTo) : `zvol ${stackedOn(entry)?.zvol ?? '?'}`),
    )
    .with(
      'duplicate-name',
      'duplicate-table',
      () => `second mapping of ${entry.vg}/${entry.lv} (kept: ${mangleDmName(entry.relatedTo ?? '')})`,
    )
    .otherwise((reason) => REASONS[reason][1]);

/** Guest volumes pve-dm does not judge: the guest's config is unreadable, work is in flight, a plugin may own them. */
const isNotJudged = (entry: Classified) =>
  entry.status === 'unjudged' || entry.reason === 'in-flight' || entry.reason === 'foreign-vg';

/** Problem entries, each with its reason, what stands in the way (open, locked) and its remedy. */
function consoleProblems(
  entries: readonly Classified[],
  style: 'red' | 'yellow',
  paint: ReturnType<typeof painter>,
): string[] {
  return entries.flatMap((entry) => {
    const cautions = [
      entry.open > 0 ? `open ${entry.open}: in use` : '',
      entry.lock ? `guest locked: ${entry.lock}` : '',
    ].filter(Boolean);
    return [
      `  ${paint(style, mangleDmName(entry.name))} ` +
        ` ${entry.reason}: ${terminalSafe(describeEntry(entry))}` +
        `${cautions.length ? paint('red', ` (${terminalSafe(cautions.join(', '))})`) : ''}`,
      `    ${consoleRemedy(entry)}`,
    ];
  });
}

export function renderConsole(result: Result, color: boolean): string {
  const paint = painter(color);
  const out: string[] = [];
  const heading = (text: string) => out.push('', paint('bold', text));
  out.push(`${paint('bold', `pve-dm ${VERSION}`)} · node ${terminalSafe(result.node)} · ${result.generatedAt}`);
  if (result.root !== null)
    out.push(
      paint(
        'dim',
        `capture ${terminalSafe(result.root)}` +
          `${result.meta?.capturedAt ? `, taken ${terminalSafe(result.meta.capturedAt)}` : ''}`,
      ),
    );
  if (result.vmids !== null) out.push(paint('dim', `narrowed to VMID ${result.vmids.join(', ')}`));
  heading('Summary');
  out.push(...consoleSummary(result, paint));
  // A pool or VG in trouble stops all its guests at once: before the entries.
  const pools = result.pools.filter((pool) => pool.problems.length > 0 || pool.leftovers.length > 0);
  if (pools.length > 0 || result.volumeGroups.length > 0) {
    heading(`Thin pools and volume groups: ${result.summary.poolProblems} with problems`);
    out.push(...consolePools(pools, result.volumeGroups, paint));
  }
  const conflicts = result.entries.filter((entry) => entry.status === 'conflict');
  if (conflicts.length > 0) {
    // What corrupts data silently comes first.
    heading(`Conflicts (critical): ${conflicts.length}`);
    out.push(...consoleProblems(conflicts, 'red', paint));
  }
  heading(`Duplicates (critical): ${result.duplicates.length}`);
  out.push(...consoleDuplicates(result, paint));
  const tombstones = result.entries.filter((entry) => entry.status === 'tombstone');
  heading(`Tombstones (warning): ${tombstones.length}`);
  out.push(...consoleProblems(tombstones, 'yellow', paint));
  const notJudged = result.entries.filter(isNotJudged);
  if (notJudged.length > 0) {
    heading(`Not judged: ${notJudged.length}`);
    for (const entry of notJudged)
      out.push(
        `  ${mangleDmName(entry.name)}  ${entry.reason}: ${consoleAdvice(entry.advice ?? describeEntry(entry))}`,
      );
  }
  if (result.orphanLvs.length > 0) {
    heading(`Orphan LVs (warning): ${result.orphanLvs.length}`);
    out.push(...consoleOrphans(result, paint));
  }
  heading(`Guests on ${terminalSafe(result.node)}: ${result.guests.length}`);
  out.push(...consoleGuests(result));
  if (result.missingGuests.length > 0) {
    heading(`VMIDs that exist nowhere: ${result.missingGuests.length}`);
    for (const missing of result.missingGuests)
      out.push(
        `  VMID ${missing.vmid}: ${missing.entries.length} ` +
          `tombstone(s): ${missing.entries.map(mangleDmName).join(', ')}`,
      );
  }
  const system = systemRows(result.system);
  if (system.length > 0) {
    heading('Host');
    out.push(...system.map(([label, value]) => `  ${label.padEnd(16)} ${terminalSafe(value)}`));
  }
  for (const [title, list, style] of [
    ['Warnings', result.warnings, 'yellow'],
    ['Notes', result.notes, 'dim'],
  ] as const) {
    if (list.length === 0) continue;
    heading(`${title}: ${list.length}`);
    out.push(...list.map((w) => `  ${paint(style, terminalSafe(formatWarning(w)))}`));
  }
  return wrapConsole(`${out.join('\n')}\n`);
}

/** The grade and the counts; a node with entries it could not judge is never shown as healthy. */
function consoleSummary(result: Result, paint: ReturnType<typeof painter>): string[] {
  const s = result.summary;
  const unjudged = unjudgedSummary(result);
  const gradeStyle = result.grade === 'F' ? 'red' : result.grade === 'A+' && unjudged === null ? 'green' : 'yellow';
  const counts = [
    `${s.valid} valid`,
    ...(s.conflict > 0 ? [paint('red', `${s.conflict} conflict`)] : []),
    paint(s.duplicate ? 'red' : 'green', `${s.duplicate} duplicate`),
    paint(s.tombstone ? 'yellow' : 'green', `${s.tombstone} tombstone`),
    `${s.ignored} ignored`,
    ...(s.unjudged > 0 ? [paint('yellow', `${s.unjudged} not judged`)] : []),
  ];
  return [
    `  Grade ${paint(gradeStyle, result.grade)}   ${s.entries} dm entries: ${counts.join(', ')}`,
    ...(s.poolProblems === 0 ? [] : [paint(poolStyle(result), `  Thin pools and VGs: ${poolCounts(result)} (below)`)]),
    ...(s.orphanLvs === 0 ? [] : [paint('yellow', `  Orphan LVs: ${s.orphanLvs} (LVM volumes no config uses: below)`)]),
    ...(unjudged === null ? [] : [paint('yellow', `  Incomplete: ${terminalSafe(unjudged)}`)]),
  ];
}

/** `1 critical, 1 warning`: the pools and VGs with problems. */
const poolCounts = (result: Pick<Result, 'pools' | 'volumeGroups'>) => {
  const findings = [...result.pools, ...result.volumeGroups];
  return (['critical', 'warning'] as const)
    .map((severity) => [severity, findings.filter((finding) => finding.severity === severity).length] as const)
    .filter(([, count]) => count > 0)
    .map(([severity, count]) => `${count} ${severity}`)
    .join(', ');
};
const poolStyle = (result: Pick<Result, 'pools' | 'volumeGroups'>) =>
  [...result.pools, ...result.volumeGroups].some((finding) => finding.severity === 'critical') ? 'red' : 'yellow';

/** Each pool with a problem or a leftover, each partial VG: what is wrong, and what to do. */
function consolePools(
  pools: readonly ThinPool[],
  volumeGroups: readonly VolumeGroupProblem[],
  paint: ReturnType<typeof painter>,
): string[] {
  const out: string[] = [];
  const style = (severity: Severity) => (severity === 'critical' ? 'red' : severity === 'warning' ? 'yellow' : 'dim');
  for (const vg of volumeGroups) {
    out.push(
      `  ${paint(style(vg.severity), `VG ${terminalSafe(vg.vg)}`)}  ${vg.severity}: ${terminalSafe(vg.message)}`,
    );
    out.push(`    by hand: ${consoleAdvice(vg.advice)}`);
  }
  for (const pool of pools) {
    const where = pool.node === undefined ? '' : ` on ${terminalSafe(pool.node)}`;
    const name = `${terminalSafe(pool.vg)}/${terminalSafe(pool.lv)}`;
    out.push(`  ${paint(style(pool.severity), name)}${where}  ${terminalSafe(poolFactsText(pool))}`);
    for (const problem of pool.problems) {
      out.push(`    ${paint(style(problem.severity), problem.severity)}: ${terminalSafe(problem.message)}`);
      out.push(
        problem.remedy === null
          ? `      by hand: ${consoleAdvice(problem.advice)}`
          : `      remedy: ${whole(terminalSafe(problem.remedy))}: ${consoleAdvice(problem.advice)}`,
      );
    }
    for (const leftover of pool.leftovers) out.push(`    note: ${consoleAdvice(leftover.advice)}`);
  }
  return out;
}

/** `active, data 41.3%, metadata 93.2%, guests VM 100, CT 200`. */
function poolFactsText(pool: ThinPool): string {
  return [
    pool.active ? 'active' : 'not active',
    ...(pool.state !== null && pool.state !== 'ok' ? [pool.state] : []),
    ...(pool.dataPercent === null ? [] : [`data ${percentText(pool.dataPercent)}`]),
    ...(pool.metadataPercent === null ? [] : [`metadata ${percentText(pool.metadataPercent)}`]),
    pool.guests.length === 0 ? 'no guest' : `VMIDs ${pool.guests.join(', ')}`,
  ].join(', ');
}

function consoleDuplicates(result: Result, paint: ReturnType<typeof painter>): string[] {
  const out: string[] = [];
  const byName = new Map(result.entries.map((entry) => [entry.name, entry]));
  for (const set of result.duplicates) {
    const kept = byName.get(set.kept);
    out.push(
      `  ${paint('red', `${terminalSafe(set.vg)}/${terminalSafe(set.lv)}`)} ` +
        `(${guestLabel(set.vmid, kept?.guestType ?? null)}) has ${set.extras.length + 1} entries`,
    );
    out.push(
      `    keep    ${mangleDmName(set.kept)}${kept ? `  ${kept.status}: ${kept.reason}, open ${kept.open}` : ''}`,
    );
    for (const name of set.extras) {
      const extra = byName.get(name);
      out.push(
        `    extra  ` +
          ` ${mangleDmName(name)}` +
          `${extra ? `  ${extra.reason}, open ${extra.open}\n            ${consoleRemedy(extra)}` : ''}`,
      );
    }
  }
  return out;
}

/** Each orphan LV: what it blocks, and the rescan or the steps by hand. */
function consoleOrphans(result: Result, paint: ReturnType<typeof painter>): string[] {
  return result.orphanLvs.flatMap((orphan) => {
    const facts = [
      orphan.active ? 'active' : 'inactive',
      ...(orphan.sizeBytes === null ? [] : [humanBytes(orphan.sizeBytes)]),
    ];
    const volume = `${terminalSafe(orphan.vg)}/${terminalSafe(orphan.lv)}`;
    return [
      `  ${paint('yellow', volume)}  ${orphan.reason} (${facts.join(', ')}): ${terminalSafe(orphan.blocks)}`,
      orphan.remedy === null
        ? `    by hand: ${consoleAdvice(orphan.advice)}`
        : `    remedy: ${whole(terminalSafe(orphan.remedy))}: ${consoleAdvice(orphan.advice)}`,
    ];
  });
}

function consoleGuests(result: Result): string[] {
  if (result.guests.length === 0) return [];
  const rows = result.guests.map((guest) => [
    String(guest.vmid),
    guest.type === 'qemu' ? 'VM' : 'CT',
    terminalSafe(guest.name ?? '-').slice(0, 32),
    guest.running === null ? '?' : guest.running ? 'running' : 'stopped',
    terminalSafe(guest.lock ?? '-'),
    guest.readable ? guest.health : 'unreadable',
  ]);
  return table(['VMID', 'TYPE', 'NAME', 'STATUS', 'LOCK', 'DM HEALTH'], rows).map((line) => `  ${line}`);
}

function table(header: string[], rows: string[][]): string[] {
  const widths = header.map((title, column) =>
    Math.max(title.length, ...rows.map((row) => (row[column] ?? '').length)),
  );
  const line = (cells: string[]) =>
    cells
      .map((cell, column) => cell.padEnd(widths[column] ?? 0))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)];
}

/** Whose an entry is, in words: a guest of this node, a guest of another node, or nobody's. */
function ownerOf(vmid: number | null, entry: Classified | undefined, result: Pick<Result, 'guests' | 'node'>): string {
  if (vmid === null) return 'no guest';
  const guest = result.guests.find((candidate) => candidate.vmid === vmid);
  if (guest)
    return `${guestLabel(vmid, guest.type)}${guest.name ? ` ${guest.name}` : ''} on ${guest.node ?? result.node}`;
  const label = guestLabel(vmid, entry?.guestType ?? null);
  return entry?.otherNode
    ? `${label} on ${entry.otherNode}`
    : entry?.guestType
      ? label
      : `${label} (no config on any node)`;
}

// --- Monitoring: Nagios/Icinga plugin output, Checkmk local check, Prometheus textfile ---------

/** The Checkmk service the local check creates. */
export const CHECKMK_SERVICE = 'PVE DM health';

/**
 * Untrusted text (dm names, guest names, warnings) on a monitoring line: control characters shown
 * as terminalSafe shows them; `|` (it starts Nagios perfdata) and a literal `\n` (Checkmk makes it
 * a line break) shown as `\x7c` and `\x5cn`.
 */
export const monitoringSafe = (text: string) => terminalSafe(text).replaceAll('|', '\\x7c').replaceAll('\\n', '\\x5cn');

interface Measure {
  label: string;
  value: number;
  /** The largest value still OK, and the largest not yet critical (null: no level). */
  warnAbove: number | null;
  critAbove: number | null;
}

/** The counts both monitoring formats graph, with the levels at which grade() changes the state. */
function measures(result: Result): Measure[] {
  // A cluster's own counts, then each node's under its name (`pve2_tombstones`).
  const perNode = (result.cluster?.nodes ?? []).flatMap((node) =>
    nodeMeasures(node)
      .filter((measure) => PER_NODE_MEASURES.has(measure.label))
      .map((measure) => ({ ...measure, label: `${node.node}_${measure.label}` })),
  );
  const cluster = result.cluster;
  const clusterMeasures: Measure[] =
    cluster === null
      ? []
      : [
          { label: 'cluster_critical', value: severityCount(cluster, 'critical'), warnAbove: null, critAbove: 0 },
          { label: 'cluster_warning', value: severityCount(cluster, 'warning'), warnAbove: 0, critAbove: null },
          { label: 'nodes_unreachable', value: cluster.unreachable.length, warnAbove: 0, critAbove: null },
        ];
  return [...nodeMeasures(result), ...clusterMeasures, ...perNode];
}

/** What each node of a cluster reports on its own: the counts that make a node's state. */
const PER_NODE_MEASURES = new Set(['entries', 'conflicts', 'duplicates', 'tombstones', 'unjudged', 'pools_critical']);

const severityCount = (cluster: ClusterView, severity: Severity) =>
  cluster.findings.filter((finding) => finding.severity === severity).length;

/** A node's counts with Nagios thresholds (warn or crit above the number given). */
function nodeMeasures(result: Result): Measure[] {
  const { entries, valid, duplicate, tombstone, ignored } = result.summary;
  return [
    { label: 'entries', value: entries, warnAbove: null, critAbove: null },
    { label: 'valid', value: valid, warnAbove: null, critAbove: null },
    { label: 'conflicts', value: result.summary.conflict, warnAbove: null, critAbove: 0 },
    { label: 'duplicates', value: duplicate, warnAbove: null, critAbove: 0 },
    { label: 'tombstones', value: tombstone, warnAbove: 0, critAbove: MAX_TOMBSTONES_BEFORE_F },
    { label: 'ignored', value: ignored, warnAbove: null, critAbove: null },
    { label: 'unjudged', value: result.summary.unjudged, warnAbove: 0, critAbove: null },
    { label: 'orphan_lvs', value: result.summary.orphanLvs, warnAbove: 0, critAbove: null },
    { label: 'pools_critical', value: poolsWith(result, 'critical'), warnAbove: null, critAbove: 0 },
    { label: 'pools_warning', value: poolsWith(result, 'warning'), warnAbove: 0, critAbove: null },
    { label: 'warnings', value: result.warnings.length, warnAbove: 0, critAbove: null },
  ];
}

/** Thin pools and VGs of a severity. */
const poolsWith = (result: Pick<Result, 'pools' | 'volumeGroups'>, severity: Severity) =>
  [...result.pools, ...result.volumeGroups].filter((finding) => finding.severity === severity).length;

/** One line for a monitoring system's overview: node, grade and counts (and what makes a cluster critical). */
function monitoringSummary(result: Result): string {
  const { entries, duplicate, tombstone } = result.summary;
  const sharedActive = sharedActiveCount(result);
  const shared =
    sharedActive > 0 ? `, ${sharedActive} shared LV(s) active on several nodes while their guest runs` : '';
  const unjudged = unjudgedSummary(result);
  const incomplete = unjudged === null ? '' : `; ${unjudged}`;
  const unreachable = result.cluster?.unreachable.length ?? 0;
  const notAnalysed = unreachable > 0 ? `, ${unreachable} node(s) not analysed` : '';
  const warnings = result.warnings.length > 0 ? `, ${result.warnings.length} warning(s)` : '';
  const orphans = result.orphanLvs.length > 0 ? `, ${result.orphanLvs.length} orphan LV(s)` : '';
  const pools = result.summary.poolProblems > 0 ? `, thin pools and VGs: ${poolCounts(result)}` : '';
  // What can corrupt data first (after the state, which says CRITICAL): a monitoring system shows this line alone.
  const headline = worstFinding(result);
  const conflicts = result.summary.conflict > 0 ? `${result.summary.conflict} conflict, ` : '';
  return monitoringSafe(
    `${headline === null ? '' : `${headline}; `}` +
      `${result.node}: grade ${result.grade}, ${conflicts}${duplicate} duplicate and ${tombstone} tombstoned ` +
      `of ${entries} dm entries` +
      `${shared}${pools}${orphans}${incomplete}${notAnalysed}${warnings}`,
  );
}

/** The long output: each problem or unjudged entry (name, status, reason, guest, remedy), then the warnings. */
function monitoringDetails(result: Result, limit: number): string[] {
  // Conflicts first: what corrupts data silently.
  const problems = result.entries
    .filter((entry) => isProblem(entry) || entry.status === 'unjudged')
    .sort((a, b) => Number(b.status === 'conflict') - Number(a.status === 'conflict'));
  const more = (count: number, what: string) => (count > limit ? [`... and ${count - limit} more ${what}`] : []);
  const poolLines = [
    ...result.volumeGroups.map((vg) => `VG ${vg.vg} ${vg.severity}: ${vg.message}; by hand: ${vg.advice}`),
    ...result.pools.flatMap((pool) =>
      pool.problems.map(
        (p) =>
          `pool ${pool.vg}/${pool.lv} ${p.severity}: ${p.message}; ` +
          (p.remedy === null ? `by hand: ${p.advice}` : `remedy: ${p.remedy}`),
      ),
    ),
  ];
  // What corrupts a disk shared by nodes, then what stops every guest of a pool at once, come first.
  const cluster = clusterLines(result);
  return [
    ...cluster.slice(0, limit),
    ...more(cluster.length, 'cluster findings'),
    ...poolLines.slice(0, limit),
    ...more(poolLines.length, 'pool problems'),
    ...problems
      .slice(0, limit)
      .map(
        (entry) =>
          `${entry.status} ${shownName(entry.name, entry.node)}: ${entry.reason}, ` +
          `${ownerOf(entry.vmid, entry, result)}; ${remedyLine(entry)}`,
      ),
    ...more(problems.length, 'problem entries'),
    ...result.orphanLvs
      .slice(0, limit)
      .map(
        (o) =>
          `orphan LV ${o.vg}/${o.lv}: ${o.reason}, ${o.blocks}; ` +
          `${o.remedy === null ? `by hand: ${o.advice}` : `remedy: ${o.remedy}`}`,
      ),
    ...more(result.orphanLvs.length, 'orphan LVs'),
    ...result.warnings.slice(0, limit).map((w) => `warning: ${formatWarning(w)}`),
    ...more(result.warnings.length, 'warnings'),
  ].map(monitoringSafe);
}

/**
 * A Nagios/Icinga plugin's output (monitoring-plugins.org development guidelines): `STATE - summary
 * | perfdata`, then the long output. Perfdata is `label=value;warn;crit;min`, where a threshold N is
 * the range 0..N: an alert above N. The state is severityOf's, and the exit code is the state.
 */
export function renderNagios(result: Result, limit = 20): string {
  const perfdata = measures(result).map(
    ({ label, value, warnAbove, critAbove }) => `${label}=${value};${warnAbove ?? ''};${critAbove ?? ''};0`,
  );
  return [
    `${severityOf(result).toUpperCase()} - ${monitoringSummary(result)} | ${perfdata.join(' ')}`,
    ...monitoringDetails(result, limit),
  ]
    .map((line) => `${line}\n`)
    .join('');
}

/** `pve-dm` could not analyse: Nagios's UNKNOWN (exit 3). */
export const renderNagiosUnknown = (message: string) => `UNKNOWN - ${monitoringSafe(message)}\n`;

/**
 * A Checkmk local check (docs.checkmk.com/latest/en/localchecks.html): `state "service" metrics
 * text` on one line. Metrics are `name=value;warn;crit;min` joined by `|`, with Checkmk's levels
 * (WARN/CRIT from value >= level: one above Nagios's). The state is pve-dm's exit code; Checkmk
 * (2.0 and later) turns each literal `\n` in the text into a line break: the first line is the
 * summary, the rest the details.
 */
export function renderCheckmk(result: Result, limit = 20): string {
  const level = (above: number | null) => (above === null ? '' : String(above + 1));
  const metrics = measures(result).map(
    ({ label, value, warnAbove, critAbove }) => `${label}=${value};${level(warnAbove)};${level(critAbove)};0`,
  );
  return (
    `${result.exitCode} ` +
    `"${CHECKMK_SERVICE}" ${metrics.join('|')} ` +
    `${[monitoringSummary(result), ...monitoringDetails(result, limit)].join('\\n')}\n`
  );
}

/** `pve-dm` could not analyse: the service goes UNKNOWN rather than vanishing. */
export const renderCheckmkUnknown = (message: string) => `3 "${CHECKMK_SERVICE}" - ${monitoringSafe(message)}\n`;

/** A label value in the Prometheus text exposition format 0.0.4: `\\`, `"` and line feed escaped. */
export const prometheusLabel = (value: string) => value.replace(/[\\"\n]/g, (c) => (c === '\n' ? '\\n' : `\\${c}`));

const STATUSES: readonly Status[] = ['valid', 'conflict', 'duplicate', 'tombstone', 'ignored', 'unjudged'];

const prometheusFamily = (name: string, help: string, samples: string[]) => [
  `# HELP ${name} ${help}`,
  `# TYPE ${name} gauge`,
  ...samples.map((sample) => `${name}${sample}`),
];

/** The families every run writes, with a series per node analysed (`node` label). */
function prometheusNodeFamilies(results: readonly Result[]): string[] {
  const node = (result: Result) => `node="${prometheusLabel(result.node)}"`;
  const each = (sample: (result: Result) => string[]) => results.flatMap(sample);
  const problem = (result: Result, entry: Classified) =>
    `{${node(result)},name="${prometheusLabel(mangleDmName(entry.name))}",vmid="${entry.vmid ?? ''}",status="` +
    `${entry.status}",reason="${entry.reason}"} 1`;
  return [
    ...prometheusFamily(
      'pve_dm_entries',
      'Device-mapper entries on the node, by pve-dm status.',
      each((r) => STATUSES.map((status) => `{${node(r)},status="${status}"} ${r.summary[status]}`)),
    ),
    ...prometheusFamily(
      'pve_dm_grade_info',
      'The grade of the node, A+ (healthy) to F; always 1.',
      each((r) => [`{${node(r)},grade="${r.grade}"} 1`]),
    ),
    ...prometheusFamily(
      'pve_dm_problem_info',
      'A duplicate or tombstoned dm entry: its name, VMID, status and reason; always 1.',
      each((r) => r.entries.filter(isProblem).map((entry) => problem(r, entry))),
    ),
    ...prometheusFamily(
      'pve_dm_orphan_lvs',
      'Guest volumes LVM knows (active or not) that no config references: each blocks its name.',
      each((r) => [`{${node(r)}} ${r.summary.orphanLvs}`]),
    ),
    ...prometheusFamily(
      'pve_dm_orphan_lv_info',
      'A guest volume LVM knows that no config references: its VG, LV, VMID, reason and state; always 1.',
      each((r) =>
        r.orphanLvs.map(
          (o) =>
            `{${node(r)},vg="${prometheusLabel(o.vg)}",lv="${prometheusLabel(o.lv)}",` +
            `vmid="${o.vmid}",reason="${o.reason}",active="${o.active}"} 1`,
        ),
      ),
    ),
    ...prometheusPoolFamilies(results, node),
    ...prometheusFamily(
      'pve_dm_warnings',
      'Input lines or commands pve-dm could not read in the run.',
      each((r) => [`{${node(r)}} ${r.warnings.length}`]),
    ),
    ...prometheusFamily(
      'pve_dm_last_run_timestamp_seconds',
      'When pve-dm last analysed the node, in seconds since the epoch.',
      each((r) => [`{${node(r)}} ${Date.parse(r.generatedAt) / 1000}`]),
    ),
  ];
}

/** Each thin pool's state and use, its problems, and the VGs with a PV missing. */
function prometheusPoolFamilies(results: readonly Result[], node: (result: Result) => string): string[] {
  const pools = results.flatMap((r) =>
    r.pools.map((pool) => ({
      pool,
      labels: `${node(r)},vg="${prometheusLabel(pool.vg)}",pool="${prometheusLabel(pool.lv)}"`,
    })),
  );
  const percent = (value: number | null, labels: string) => (value === null ? [] : [`{${labels}} ${value}`]);
  return [
    ...prometheusFamily(
      'pve_dm_thin_pool_active',
      'A thin pool LVM knows: 1 active, 0 not.',
      pools.map(({ pool, labels }) => `{${labels}} ${pool.active ? 1 : 0}`),
    ),
    ...prometheusFamily(
      'pve_dm_thin_pool_data_percent',
      "Percent of an active thin pool's data space in use.",
      pools.flatMap(({ pool, labels }) => percent(pool.dataPercent, labels)),
    ),
    ...prometheusFamily(
      'pve_dm_thin_pool_metadata_percent',
      "Percent of an active thin pool's metadata space in use (full metadata damages the pool).",
      pools.flatMap(({ pool, labels }) => percent(pool.metadataPercent, labels)),
    ),
    ...prometheusFamily(
      'pve_dm_thin_pool_problem_info',
      'A problem of a thin pool: its kind and severity; always 1.',
      pools.flatMap(({ pool, labels }) =>
        pool.problems.map((p) => `{${labels},kind="${p.kind}",severity="${p.severity}"} 1`),
      ),
    ),
    ...prometheusFamily(
      'pve_dm_volume_group_partial_info',
      'A volume group with a physical volume missing, and the severity of that; always 1.',
      results.flatMap((r) =>
        r.volumeGroups.map((vg) => `{${node(r)},vg="${prometheusLabel(vg.vg)}",severity="${vg.severity}"} 1`),
      ),
    ),
  ];
}

/**
 * A node_exporter textfile-collector file (exposition format 0.0.4, every metric a gauge). Each
 * series carries `node`, so that the files of several nodes can be told apart; no sample has a
 * timestamp (the collector refuses them): pve_dm_last_run_timestamp_seconds says when.
 */
export const renderPrometheus = (result: Result): string => `${prometheusNodeFamilies([result]).join('\n')}\n`;

/**
 * A cluster run: each node's series under its own `node` label (as each node's own timer would
 * write them), then what only the cluster shows: its grade, its findings, the nodes not analysed.
 */
export function renderClusterPrometheus(result: ClusterResult): string {
  const { cluster } = result;
  const finding = (f: ClusterFinding) =>
    `{kind="${f.kind}",severity="${f.severity}",vg="${prometheusLabel(f.vg)}",lv="` +
    `${prometheusLabel(f.lv)}",vmid="${f.vmid}",active_on="` +
    `${prometheusLabel(f.activeOn.map((a) => a.node).join(','))}"} 1`;
  return `${[
    ...prometheusNodeFamilies(cluster.nodes),
    ...prometheusFamily(
      'pve_dm_cluster_grade_info',
      'The grade of the cluster: the worst of its nodes, F for a shared LV active on several nodes while its ' +
        'guest runs; always 1.',
      [`{grade="${result.grade}"} 1`],
    ),
    ...prometheusFamily(
      'pve_dm_cluster_finding_info',
      "A shared LV active on several nodes, or a disk active off its guest's node: kind, severity, VG, LV, VMID, " +
        'nodes; always 1.',
      cluster.findings.map(finding),
    ),
    ...prometheusFamily(
      'pve_dm_cluster_node_unreachable',
      'A member of the cluster that could not be analysed in the run; always 1.',
      cluster.unreachable.map((u) => `{node="${prometheusLabel(u.node)}"} 1`),
    ),
  ].join('\n')}\n`;
}

export const escapeHtml = (text: string) =>
  text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] ?? c);

const STATUS_COLORS: Record<Status, string> = {
  valid: '#1e7e34',
  conflict: '#862e9c',
  duplicate: '#c82333',
  tombstone: '#8a6100',
  ignored: '#6c757d',
  unjudged: '#8a4baf',
};
/** The grade badge's background: white text on each meets WCAG AA (at least 4.5:1). */
const GRADE_COLORS: Record<GradeLetter, string> = {
  'A+': '#1e7e34',
  B: '#117a8b',
  C: '#8a6100',
  D: '#b45309',
  F: '#c82333',
};

/** A status in words with a symbol: colour is never the only sign. */
const STATUS_WORDS: Record<Status, string> = {
  valid: '✔ valid',
  // In WGL4, so in the fonts every desktop has (an emoji would be a box on a server's browser).
  conflict: '‼ conflict',
  duplicate: '✖ duplicate',
  tombstone: '⚠ tombstone',
  ignored: '· ignored',
  unjudged: '? not judged',
};

/** Sections every HTML report holds exactly once, in this order. */
export const HTML_SECTIONS = [
  'summary',
  'pools',
  'problems',
  'unjudged',
  'orphans',
  'guests',
  'missing',
  'system',
  'warnings',
] as const;

/** A guest's dm health in the HTML report, in its status's colour. */
const HEALTH_COLORS = {
  clean: STATUS_COLORS.valid,
  conflict: STATUS_COLORS.conflict,
  duplicate: STATUS_COLORS.duplicate,
  tombstone: STATUS_COLORS.tombstone,
};
const HEALTH_WORDS = {
  clean: '✔ clean',
  conflict: STATUS_WORDS.conflict,
  duplicate: STATUS_WORDS.duplicate,
  tombstone: STATUS_WORDS.tombstone,
};

const ORPHAN_COLUMNS = ['LV', 'Reason', 'State', 'Size', 'What to do'];

/** An orphan LV's row of the HTML report: the LV, why, what it blocks, its state and size, what to do. */
function orphanHtmlRow(
  o: OrphanLv,
  td: (content: string) => string,
  e: (value: string | number | null) => string,
): string {
  const facts = `${e(o.reason)}<br><span style="color:#6c757d">${e(o.blocks)}</span>`;
  const action =
    o.remedy === null ? `by hand: ${e(o.advice)}` : `<code data-remedy>${e(o.remedy)}</code>: ${e(o.advice)}`;
  const size = o.sizeBytes === null ? '—' : humanBytes(o.sizeBytes);
  const cells = [`<code>${e(`${o.vg}/${o.lv}`)}</code>`, facts, o.active ? 'active' : 'inactive', size, action];
  return `<tr data-orphan>${cells.map((cell) => td(cell)).join('')}</tr>`;
}

const CLUSTER_COLUMNS = ['Severity', 'Volume', 'Guest', 'Active on', 'Finding and what to do'];

/** A cluster's findings and its unreachable nodes as rows (the page's first section in a cluster run). */
function clusterHtmlRows(cluster: ClusterView, td: Td, e: Escape): string[] {
  const finding = (f: ClusterFinding) => {
    const guest =
      `${e(guestLabel(f.vmid, f.guestType))}` +
      `${f.home === null ? ', no config' : ` of ${e(f.home)}`}` +
      `${f.running === null ? '' : f.running ? ', running' : ', stopped'}` +
      `${f.lock === null ? '' : `, lock ${e(f.lock)}`}`;
    const remedies = f.activeOn.flatMap((a) =>
      a.remedy === null ? [] : [`<br>on ${e(a.node)}: <code data-remedy>${e(a.remedy)}</code>`],
    );
    const cells = [
      td(`${e(f.severity.toUpperCase())}<br>${e(f.kind)}`, SEVERITY_COLORS[f.severity]),
      td(`<code>${e(`${f.vg}/${f.lv}`)}</code>`),
      td(guest),
      td(e(f.activeOn.map((a) => `${a.node}${a.staleTable ? ' (stale table)' : ''}`).join(', '))),
      td(`${e(f.message)}${remedies.join('')}`),
    ];
    return `<tr data-finding>${cells.join('')}</tr>`;
  };
  return cluster.findings.map(finding);
}

const POOL_COLUMNS = ['Pool or VG', 'State', 'Data', 'Metadata', 'Guests', 'Problems and what to do'];
const SEVERITY_COLORS: Record<Severity, string> = { ok: '#495057', warning: '#8a6100', critical: '#b02a37' };

/** A thin pool's or a partial VG's row: its state and use, its guests, each problem with its remedy or steps. */
function poolHtmlRow(
  finding: ThinPool | VolumeGroupProblem,
  td: (content: string, colour?: string) => string,
  e: (value: string | number | null) => string,
): string {
  const where = finding.node === undefined ? '' : ` on ${e(finding.node)}`;
  const guests = e(finding.guests.join(', ') || 'none');
  const severity = (level: Severity, message: string) =>
    `<strong style="color:${SEVERITY_COLORS[level]}">${level}</strong>: ${e(message)}`;
  const action = (remedy: string | null, advice: string) =>
    remedy === null ? `by hand: ${e(advice)}` : `<code data-remedy>${e(remedy)}</code>: ${e(advice)}`;
  if (!('lv' in finding)) {
    const problem = `${severity(finding.severity, finding.message)}<br>${action(null, finding.advice)}`;
    const cells = [
      td(`<code>VG ${e(finding.vg)}</code>${where}`),
      td('partial'),
      td('—'),
      td('—'),
      td(guests),
      td(problem),
    ];
    return `<tr data-vg>${cells.join('')}</tr>`;
  }
  const percent = (value: number | null) => (value === null ? '—' : percentText(value));
  const problems = [
    ...finding.problems.map((p) => `${severity(p.severity, p.message)}<br>${action(p.remedy, p.advice)}`),
    ...finding.leftovers.map((leftover) => `note: ${e(leftover.advice)}`),
  ];
  const trouble = finding.state !== null && finding.state !== 'ok' ? `, ${finding.state}` : '';
  const state = `${finding.active ? 'active' : 'not active'}${trouble}`;
  const cells = [
    td(`<code>${e(`${finding.vg}/${finding.lv}`)}</code>${where}`),
    td(e(state), SEVERITY_COLORS[finding.severity]),
    td(percent(finding.dataPercent)),
    td(percent(finding.metadataPercent)),
    td(guests),
    td(problems.length === 0 ? 'none' : problems.join('<br>')),
  ];
  return `<tr data-pool>${cells.join('')}</tr>`;
}

/** What the conflicts are, in words: `2 stale tables (guests write other blocks than LVM gave them)`. */
function conflictWords(entries: readonly Classified[]): string {
  const count = (reason: Reason) => entries.filter((e) => e.status === 'conflict' && e.reason === reason).length;
  const [stale, stacked] = [count('stale-table'), count('stacked-on-guest-volume')];
  const s = (n: number) => (n === 1 ? '' : 's');
  const words = [
    stale > 0 ? `${stale} stale table${s(stale)} (guests write other blocks than LVM gave them)` : '',
    stacked > 0
      ? `${stacked} mapping${s(stacked)} stacked on guest disks (host and guest can write one filesystem)`
      : '',
  ].filter(Boolean);
  const others = entries.filter((e) => e.status === 'conflict').length;
  return words.length > 0 ? words.join(' and ') : `${others} conflicting mapping${s(others)}`;
}

/** The page's first line: the worst of what was found, named. */
function htmlHeadline(result: Result, unjudged: string | null): string {
  const s = result.summary;
  const plural = (count: number, word: string) => `${count} ${word}${count === 1 ? '' : 's'}`;
  const poolProblems = [...result.volumeGroups, ...result.pools.flatMap((pool) => pool.problems)];
  const criticalPool = poolProblems.find((finding) => finding.severity === 'critical');
  const cluster = clusterHeadline(result);
  if (cluster !== null) return cluster;
  if (s.conflict > 0) return conflictWords(result.entries);
  if (s.duplicate > 0) return `${s.duplicate} duplicate device-mapper entr${s.duplicate === 1 ? 'y' : 'ies'}: act now`;
  if (criticalPool !== undefined) return criticalPool.message;
  if (s.tombstone > 0) return `${plural(s.tombstone, 'tombstone')} will block disk creation`;
  if (s.orphanLvs > 0) return `${plural(s.orphanLvs, 'orphan LV')} will block disk creation`;
  if (s.poolProblems > 0) return `${plural(s.poolProblems, 'thin pool or VG')} need attention`;
  return unjudged !== null ? `Incomplete: ${unjudged}` : 'No problems found';
}

/** Inline styles: e-mail clients drop a page's <style>, so each element carries its own. */
const HTML_STYLES = {
  cell: 'padding:4px 8px;border-bottom:1px solid #dee2e6;text-align:left;vertical-align:top',
  header: 'style="padding:4px 8px;border-bottom:2px solid #adb5bd;text-align:left;background:#f1f3f5"',
  table: 'style="border-collapse:collapse;width:100%;font-size:13px"',
  body: 'style="margin:0;padding:16px;background:#f8f9fa;font-family:Arial,Helvetica,sans-serif;color:#212529"',
  page: 'style="max-width:960px;margin:0 auto;background:#ffffff;border:1px solid #dee2e6;padding:16px"',
  grade: 'display:inline-block;padding:4px 12px;font-size:20px;font-weight:bold;color:#ffffff',
  footer: 'style="font-size:12px;color:#6c757d;border-top:1px solid #dee2e6;padding-top:8px"',
  // A dm name or a command is selected whole; it breaks only at its spaces (htmlEscape keeps its words whole).
  code: 'style="user-select:all;font-size:12px"',
  metric: 'style="flex:1 1 72px;padding:8px;text-align:center;border:1px solid #dee2e6"',
} as const;

/**
 * On a narrow screen (a phone, a narrow mail pane) each table row becomes a block of labelled
 * lines, so that no column (the remedy least of all) is off the screen. Mail clients that drop
 * a <style> keep the inline styles: the wide layout.
 */
const NARROW_CSS =
  '@media (max-width:640px){[data-table],[data-table] tbody,[data-table] tr,[data-table] td' +
  '{display:block;width:auto}[data-table] tr:first-child{display:none}' +
  '[data-table] tr{border-bottom:2px solid #adb5bd;padding:4px 0}' +
  '[data-table] td{border:0 !important;padding:2px 8px !important}' +
  '[data-table] td[data-label]::before{content:attr(data-label) ": ";font-weight:bold;color:#495057}}';

type Td = (content: string, colour?: string, attributes?: string) => string;
type Escape = (value: string | number | null) => string;

const htmlTd: Td = (content, colour, attributes = '') =>
  `<td${attributes} style="${HTML_STYLES.cell}${colour ? `;color:${colour}` : ''}">${content}</td>`;
/**
 * Text for the page: escaped, and each word that holds a hyphen or a slash (a dm name, a VG/LV, a
 * path, an option) kept whole on its line, since `--` means something in a dm name: lines break at spaces.
 */
const htmlEscape: Escape = (value) =>
  escapeHtml(value === null ? '—' : String(value)).replace(
    /[^\s]*[-/][^\s]*/g,
    (word) => `<span ${NOWRAP}>${word}</span>`,
  );
const NOWRAP = 'style="white-space:nowrap"';

const htmlSection = (id: (typeof HTML_SECTIONS)[number] | 'nodes' | 'cluster', title: string, body: string) =>
  `<div data-section="${id}" style="margin:16px 0">` +
  `<h2 style="font-size:17px;margin:0 0 8px;color:#212529">${escapeHtml(title)}</h2>${body}</div>`;

const htmlTable = (id: string, header: readonly string[], rows: readonly string[]) =>
  rows.length === 0
    ? `<p style="color:#6c757d;margin:0">None.</p>`
    : `<table data-table="${id}" ${HTML_STYLES.table}>` +
      `<tr>${header.map((h) => `<th ${HTML_STYLES.header}>${escapeHtml(h)}</th>`).join('')}</tr>` +
      `${rows.map((row) => labelCells(row, header)).join('')}</table>`;

/** Each cell of a row labelled with its column (the narrow layout shows it): cells hold escaped text, never `<td`. */
function labelCells(row: string, header: readonly string[]): string {
  let column = 0;
  return row.replace(/<td(?=[ >])/g, () => `<td data-label="${escapeHtml(header[column++] ?? '')}"`);
}

/** The counts at the top of the page, each in its status's colour. */
function htmlSummary(s: Summary): string {
  // Colour only where there is something to see: a count of 0 is plain.
  const metric = (label: string, value: number, colour: string) =>
    `<div data-metric ${HTML_STYLES.metric}>` +
    `<div style="font-size:22px;font-weight:bold;color:${value > 0 ? colour : '#495057'}">${value}</div>` +
    `<div style="font-size:12px;color:#495057">${label}</div></div>`;
  const metrics = [
    metric('entries', s.entries, '#212529'),
    metric('valid', s.valid, STATUS_COLORS.valid),
    metric('duplicate', s.duplicate, STATUS_COLORS.duplicate),
    metric('tombstone', s.tombstone, STATUS_COLORS.tombstone),
    metric('ignored', s.ignored, STATUS_COLORS.ignored),
    s.unjudged > 0 ? metric('not judged', s.unjudged, STATUS_COLORS.unjudged) : '',
    s.orphanLvs > 0 ? metric('orphan LVs', s.orphanLvs, STATUS_COLORS.tombstone) : '',
  ];
  return `<div style="display:flex;flex-wrap:wrap;gap:4px">${metrics.join('')}</div>`;
}

/** The table rows of the page, one list per section; a cluster's rows start with their node. */
function htmlRows(result: Result, td: Td, e: Escape) {
  const node = (of?: string) => (result.cluster === null ? '' : td(e(of ?? '')));
  const name = (entry: Classified) => td(`<code>${e(mangleDmName(entry.name))}</code>`);
  const status = (entry: Classified) => td(e(STATUS_WORDS[entry.status]), STATUS_COLORS[entry.status]);
  const problem = (entry: Classified) => {
    const reason = `${e(entry.reason)}<br><span style="color:#6c757d">${e(describeEntry(entry))}</span>`;
    const remedy =
      entry.remedy === null ? `no command now: ${e(entry.advice)}` : `<code data-remedy>${e(entry.remedy)}</code>`;
    const cells = [node(entry.node), name(entry), status(entry), td(reason), td(e(entry.vmid)), td(e(entry.open))];
    return `<tr data-entry>${cells.join('')}${td(remedy)}</tr>`;
  };
  const notJudged = (entry: Classified) =>
    `<tr data-unjudged>${[
      node(entry.node),
      name(entry),
      td(e(entry.reason), STATUS_COLORS[entry.status]),
      td(e(entry.vmid)),
      td(e(entry.advice ?? describeEntry(entry))),
    ].join('')}</tr>`;
  const guest = (g: GuestSummary) =>
    `<tr data-guest="${g.vmid}">${[
      node(g.node),
      td(String(g.vmid)),
      td(g.type === 'qemu' ? 'VM' : 'CT'),
      td(e(g.name), undefined, ' data-field="name"'),
      td(g.running === null ? 'not known' : g.running ? 'running' : 'stopped'),
      td(e(g.lock)),
      td(g.readable ? e(HEALTH_WORDS[g.health]) : '? unreadable', HEALTH_COLORS[g.health]),
    ].join('')}</tr>`;
  const missing = (m: Classification['missingGuests'][number]) =>
    `<tr data-missing>${node(m.node)}${td(String(m.vmid))}` +
    `${td(m.entries.map((entry) => `<code>${e(mangleDmName(entry))}</code>`).join('<br>'))}</tr>`;
  const warning = (kind: 'warning' | 'note') => (w: Warning) =>
    `<tr data-${kind}>${node(w.node)}${td(`<code>${e(warningPlace({ ...w, node: undefined }))}</code>`)}` +
    `${td(`${kind === 'note' ? 'note: ' : ''}${e(w.message)}`)}</tr>`;
  // A cluster's warnings by node, in the order the nodes were analysed.
  const nodes = result.cluster?.nodes.map((n) => n.node) ?? [];
  const byNode = [...result.warnings].sort((a, b) => nodes.indexOf(a.node ?? '') - nodes.indexOf(b.node ?? ''));
  return {
    problems: result.entries.filter(isProblem).map(problem),
    notJudged: result.entries.filter(isNotJudged).map(notJudged),
    pools: [...result.volumeGroups, ...result.pools].map((finding) => poolHtmlRow(finding, td, e)),
    orphans: result.orphanLvs.map((orphan) => orphanHtmlRow(orphan, td, e)),
    guests: result.guests.map(guest),
    missing: result.missingGuests.map(missing),
    system: (result.cluster?.nodes ?? [result]).flatMap((n) =>
      systemRows(n.system).map(
        ([label, value]) => `<tr data-system>${node(n.node)}${td(e(label))}${td(e(value))}</tr>`,
      ),
    ),
    warnings: [...byNode.map(warning('warning')), ...result.notes.map(warning('note'))],
  };
}

/** The page's head: node, when, what it was narrowed to, the grade and the headline. */
function htmlHeader(result: Result, e: Escape, gradeColour: string): string[] {
  // Times break nowhere that misleads: plain escaped text.
  const captured = result.meta?.capturedAt ? ` from a capture taken ${escapeHtml(result.meta.capturedAt)}` : '';
  const narrowed = result.vmids ? ` · narrowed to VMID ${e(result.vmids.join(', '))}` : '';
  const grade =
    `<span data-field="grade" ` + `style="${HTML_STYLES.grade};background:${gradeColour}">${e(result.grade)}</span>`;
  return [
    `<div data-header style="border-bottom:4px solid ${gradeColour};padding-bottom:8px">`,
    `<h1 style="font-size:21px;margin:0">pve-dm report for ${result.cluster === null ? 'node' : 'the cluster of'} ` +
      `<span data-field="node">${e(result.node)}</span></h1>`,
    `<p style="margin:4px 0;font-size:13px;color:#495057">` +
      `Generated ${escapeHtml(result.generatedAt)}${captured}${narrowed}</p>`,
    `<p style="margin:8px 0 0">${grade} ` +
      `<strong>${escapeHtml(htmlHeadline(result, unjudgedSummary(result)))}</strong></p>`,
    '</div>',
  ];
}

export function renderHtml(result: Result): string {
  const unjudged = unjudgedSummary(result);
  const gradeColour = unjudged !== null && result.grade === 'A+' ? GRADE_COLORS.C : GRADE_COLORS[result.grade];
  const title = `pve-dm report: ${escapeHtml(result.node)} grade ${escapeHtml(result.grade)}`;
  const page = [
    '<!DOCTYPE html>',
    '<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">' +
      `<title>${title}</title><style>${NARROW_CSS}</style></head>`,
    `<body ${HTML_STYLES.body}>`,
    `<main ${HTML_STYLES.page}>`,
    ...htmlHeader(result, htmlEscape, gradeColour),
    ...htmlSections(result),
    `<p ${HTML_STYLES.footer}>pve-dm ${VERSION}. Remedies are commands to review, not to paste blindly: ` +
      "pve-dm's own cleanup re-checks every entry before it acts.</p>",
    '</main></body></html>',
    '',
  ].join('\n');
  // Inline, on every one: e-mail clients drop a page's <style>.
  return page.replace(/<code(?=[ >])/g, `<code ${HTML_STYLES.code}`);
}

/** The page's sections in order: a cluster's nodes and findings first, then what every report has. */
function htmlSections(result: Result): string[] {
  const [td, e] = [htmlTd, htmlEscape];
  const s = result.summary;
  const rows = htmlRows(result, td, e);
  const notes = result.notes.length > 0 ? ` and notes (${result.notes.length})` : '';
  const cluster = result.cluster;
  // A cluster's tables start with the node of each row.
  const columns = (names: string[]) => (cluster === null ? names : ['Node', ...names]);
  const section = (id: (typeof HTML_SECTIONS)[number], title: string, header: string[], list: string[]) =>
    htmlSection(id, title, htmlTable(id, header, list));
  return [
    ...(cluster === null ? [] : htmlClusterSections(cluster, td, e)),
    htmlSection('summary', 'Device-mapper entries', htmlSummary(s)),
    section('pools', `Thin pools and volume groups (${s.poolProblems} with problems)`, POOL_COLUMNS, rows.pools),
    section(
      'problems',
      `Problem entries (${rows.problems.length})`,
      columns(['Entry', 'Status', 'Reason', 'VMID', 'Open', 'Remedy']),
      rows.problems,
    ),
    section(
      'unjudged',
      `Not judged (${rows.notJudged.length})`,
      columns(['Entry', 'Reason', 'VMID', 'Why']),
      rows.notJudged,
    ),
    section('orphans', `Orphan LVs (${result.orphanLvs.length})`, ORPHAN_COLUMNS, rows.orphans),
    section(
      'guests',
      `Guests on ${result.node} (${result.guests.length})`,
      columns(['VMID', 'Type', 'Name', 'Status', 'Lock', 'DM health']),
      rows.guests,
    ),
    section(
      'missing',
      `VMIDs that exist nowhere (${result.missingGuests.length})`,
      columns(['VMID', 'Entries']),
      rows.missing,
    ),
    section('system', cluster === null ? 'Host' : 'Hosts', columns(['Fact', 'Value']), rows.system),
    section('warnings', `Warnings (${result.warnings.length})${notes}`, columns(['Where', 'Message']), rows.warnings),
  ];
}

/** A cluster's own sections: a row per node (grade, counts, or why it was not analysed), then its findings. */
function htmlClusterSections(cluster: ClusterView, td: Td, e: Escape): string[] {
  const nodeRows = clusterNodeRows(cluster).map(
    ([node, grade, ...rest]) =>
      `<tr data-node>${td(e(node ?? ''))}${td(e(grade ?? ''))}${rest.map((cell) => td(e(cell))).join('')}</tr>`,
  );
  return [
    htmlSection(
      'nodes',
      `Nodes (${cluster.nodes.length} analysed, ${cluster.unreachable.length} not)`,
      htmlTable('nodes', ['Node', 'Grade', 'Entries', 'Duplicates', 'Tombstones', 'State'], nodeRows),
    ),
    htmlSection(
      'cluster',
      `Cluster findings (${cluster.findings.length})`,
      htmlTable('cluster', CLUSTER_COLUMNS, clusterHtmlRows(cluster, td, e)),
    ),
  ];
}

const HTML_TAGS = new Set([
  'html',
  'head',
  'meta',
  'title',
  'body',
  'div',
  'h1',
  'h2',
  'p',
  'span',
  'strong',
  'table',
  'tr',
  'th',
  'td',
  'code',
  'br',
  'style',
  'main',
]);
const HTML_ATTRIBUTES = /^(?:style|lang|charset|name|content|colspan|data-[a-z-]+)$/;

/** Checks a rendered report against its data with cheerio; returns the problems found. */
export async function validateHtml(html: string, result: Result): Promise<string[]> {
  const { load } = await import('cheerio/slim');
  const $ = load(html);
  const problems: string[] = [];
  for (const id of HTML_SECTIONS) {
    const count = $(`[data-section="${id}"]`).length;
    if (count !== 1) problems.push(`section ${id} appears ${count} times`);
  }
  if ($('style').length !== 1 || $('style').text() !== NARROW_CSS) problems.push('a <style> other than its own');
  $('*').each((_, element) => {
    if (!('attribs' in element)) return;
    if (!HTML_TAGS.has(element.tagName)) problems.push(`unexpected element <${element.tagName}>`);
    for (const attribute of Object.keys(element.attribs))
      if (!HTML_ATTRIBUTES.test(attribute)) problems.push(`unexpected attribute ${attribute} on <${element.tagName}>`);
  });
  const expectRows = (selector: string, expected: number, what: string) => {
    const count = $(selector).length;
    if (count !== expected) problems.push(`${what}: ${count} rows for ${expected} items`);
  };
  expectRows('tr[data-entry]', result.entries.filter(isProblem).length, 'problem entries');
  expectRows('tr[data-unjudged]', result.entries.filter(isNotJudged).length, 'entries not judged');
  expectRows('tr[data-note]', result.notes.length, 'notes');
  expectRows('tr[data-guest]', result.guests.length, 'guests');
  expectRows('tr[data-orphan]', result.orphanLvs.length, 'orphan LVs');
  expectRows('tr[data-missing]', result.missingGuests.length, 'missing guests');
  expectRows('tr[data-warning]', result.warnings.length, 'warnings');
  expectRows('tr[data-finding]', result.cluster?.findings.length ?? 0, 'cluster findings');
  expectRows('tr[data-node]', (result.cluster?.nodes.length ?? 0) + (result.cluster?.unreachable.length ?? 0), 'nodes');
  const shownNames = new Map(
    $('tr[data-guest]')
      .toArray()
      .map((row) => [$(row).attr('data-guest'), $(row).find('[data-field="name"]').text()]),
  );
  for (const guest of result.guests) {
    const shown = shownNames.get(String(guest.vmid));
    if (shown !== (guest.name ?? '—'))
      problems.push(`${guestLabel(guest.vmid, guest.type)}: name shown as ${JSON.stringify(shown)}`);
  }
  if ($('[data-field="node"]').text() !== result.node) problems.push('node name altered');
  if ($('[data-field="grade"]').text() !== result.grade) problems.push('grade altered');
  return problems;
}

async function renderValidatedHtml(result: Result): Promise<string> {
  const html = renderHtml(result);
  const problems = await validateHtml(html, result);
  if (problems.length > 0) throw new Error(`HTML report failed its own validation: ${problems.slice(0, 5).join('; ')}`);
  return html;
}

// ============================================================================================
// Stage 6: cleanup. The stage plans; `executeCleanup` carries a plan out through the one runner,
// under Proxmox's own guest locks, re-checking each entry right before it acts, journalling
// each action first. Removing means deactivating: no LV is ever removed. A conflict gets its own
// remedy: a stale table is refreshed from LVM's metadata, a device stacked on a guest disk goes.
// ============================================================================================

export type ProblemStatus = 'duplicate' | 'tombstone';
/** What cleanup acts on: a problem it removes, or a conflict it fixes with the conflict's remedy. */
export type CleanupStatus = 'conflict' | ProblemStatus;

export interface CleanupSelection {
  only: 'conflicts' | 'duplicates' | 'tombstones' | null;
  vmids: number[];
  names: string[];
}

export const SELECT_ALL: CleanupSelection = { only: null, vmids: [], names: [] };

export interface PlannedAction {
  name: string;
  uuid: string;
  status: CleanupStatus;
  reason: Reason;
  vmid: number | null;
  open: number;
  /** cleanupCommand: a conflict's remedy, else `lvchange -an VG/LV` for an LV LVM knows, else `dmsetup remove NAME`. */
  command: string[];
  /** Why the entry must not be touched now; null when it may. */
  blockedBy: string | null;
}

export interface CleanupPlan {
  actions: PlannedAction[];
}

/**
 * Why an entry must be left alone: held open (but by devices planned to go before it), its guest
 * locked (on any node) or running here.
 */
function blockerOf(entry: Classified, guests: ReadonlyMap<number, GuestSummary>, goingFirst = 0): string | null {
  const guest = entry.vmid === null ? undefined : guests.get(entry.vmid);
  if (entry.open > goingFirst) return `open ${entry.open} time(s)`;
  if (entry.lock) return `${guestLabel(entry.vmid ?? 0, entry.guestType)} is locked (${entry.lock})`;
  if (guest?.running && (entry.status === 'tombstone' || entry.reason === 'stale-table'))
    return `${guestLabel(guest.vmid, guest.type)} is running`;
  // A conflict no command may touch now (its advice says why and what to do).
  if (entry.status === 'conflict' && entry.remedy === null) return 'no command is safe now: see its advice';
  return null;
}

/** An entry a report lists as a problem: a conflict, a duplicate or a tombstone. */
const isProblem = (entry: Classified): entry is Classified & { status: 'conflict' | ProblemStatus } =>
  entry.status === 'conflict' || isRemovable(entry);

/** A problem cleanup removes: a duplicate or a tombstone (a conflict has remedies of its own). */
const isRemovable = (entry: Classified): entry is Classified & { status: ProblemStatus } =>
  entry.status === 'duplicate' || entry.status === 'tombstone';

/**
 * What cleanup runs for an entry: a conflict's remedy as its verdict printed it (the stale table
 * refreshed; the guest's VG taken off the host as a whole), else the removal.
 */
export function cleanupCommand(entry: Classified): string[] {
  const stays = entry.reason === 'stale-table' && entry.otherNode === null;
  if (stays && entry.vg !== null && entry.lv !== null) return refreshArgv(entry.vg, entry.lv);
  const stacked = stackedOn(entry);
  return stacked?.guestVg == null ? removalCommand(entry) : guestVgOffArgv(stacked.guestVg, stacked.zvol !== null);
}

/** A command that takes several entries away at once (a guest's VG): cleanup journals each first. */
const takesSeveral = (command: readonly string[]) => command[0] === 'vgchange';

/** Where a problem goes in a plan: conflicts, then duplicates, then tombstones. */
const CLEANUP_RANK: Record<CleanupStatus, number> = { conflict: 0, duplicate: 1, tombstone: 2 };

/**
 * Conflicts first (the devices stacked on guest disks before the stale tables), then duplicates,
 * then tombstones; a partition before its parent. Never a valid, ignored or unjudged entry.
 */
export function planCleanup(result: Result, selection: CleanupSelection = SELECT_ALL): CleanupPlan {
  const guests = new Map(result.guests.map((guest) => [guest.vmid, guest]));
  const byName = new Map(result.entries.map((entry) => [entry.name, entry]));
  // A partition goes with its parent, just before it: duplicates and theirs first, then tombstones.
  const parentOf = (entry: Classified) =>
    entry.reason === 'partition-of-problem' && entry.relatedTo !== null
      ? (byName.get(entry.relatedTo) ?? entry)
      : entry;
  const rank = (entry: Classified) => CLEANUP_RANK[parentOf(entry).status as CleanupStatus] ?? CLEANUP_RANK.tombstone;
  const order = (entry: Classified) =>
    rank(entry) * 4 + (entry.reason === 'stale-table' ? 2 : 0) + (entry.reason === 'partition-of-problem' ? 0 : 1);
  // By the kernel's name or as pve-dm shows it.
  const named = (entry: Classified) =>
    selection.names.includes(entry.name) || selection.names.includes(mangleDmName(entry.name));
  const selected = (entry: Classified & { status: CleanupStatus }) =>
    (selection.only === null || selection.only === `${parentOf(entry).status}s`) &&
    (selection.vmids.length === 0 || (entry.vmid !== null && selection.vmids.includes(entry.vmid))) &&
    (selection.names.length === 0 || named(entry));
  const chosen = result.entries
    .filter(isProblem)
    .filter(selected)
    .sort((a, b) => order(a) - order(b));
  const planned = new Set(chosen.map((entry) => entry.name));
  const actions = chosen.map((entry) => {
    const command = cleanupCommand(entry);
    return {
      name: entry.name,
      uuid: entry.uuid,
      status: entry.status,
      reason: entry.reason,
      vmid: entry.vmid,
      open: entry.open,
      command,
      blockedBy:
        blockerOf(entry, guests, entry.holders.filter((holder) => planned.has(holder)).length) ??
        leftOut(command, result.entries, planned),
    };
  });
  return { actions };
}

/** A command that takes entries away the selection left out (`--name` of one LV of a guest's VG) must not run. */
function leftOut(command: readonly string[], entries: readonly Classified[], planned: ReadonlySet<string>) {
  if (!takesSeveral(command)) return null;
  const line = shellLine(command);
  const others = entries.filter(
    (entry) => !planned.has(entry.name) && entry.remedy !== null && shellLine(cleanupCommand(entry)) === line,
  );
  return others.length === 0
    ? null
    : `it takes ${others.map((entry) => mangleDmName(entry.name)).join(', ')} away too: select them as well`;
}

export function renderPlan(
  plan: CleanupPlan,
  heading = 'Cleanup plan (nothing was changed; run with --yes to carry it out):',
): string {
  if (plan.actions.length === 0) return '';
  const lines = ['', heading];
  for (const action of plan.actions) {
    const command = shellLine(action.command);
    lines.push(
      action.blockedBy === null
        ? `  would run: ${whole(terminalSafe(command))}`
        : `  would skip ${mangleDmName(action.name)}: ${terminalSafe(action.blockedBy)}`,
    );
  }
  return wrapConsole(`${lines.join('\n')}\n`);
}

/**
 * Who holds the open entries, so the administrator knows what to stop: the devices stacked on
 * them (/sys/block/dm-N/holders) and the processes with them open (one pass over /proc).
 */
export async function withHolders(plan: CleanupPlan, result: Result, liveRoot: string): Promise<CleanupPlan> {
  const minors = new Map(result.entries.filter((entry) => entry.open > 0).map((entry) => [entry.minor, entry.name]));
  const held = plan.actions.filter((action) => action.open > 0 && action.blockedBy !== null);
  if (held.length === 0) return plan;
  const holders = new Map<string, string[]>();
  const add = (name: string, holder: string) => holders.set(name, [...(holders.get(name) ?? []), holder]);
  const read = (file: string) => readFileSync(path.join(liveRoot, file), 'utf8').trim();
  for (const [minor, name] of minors) {
    for (const holder of readdirSafe(path.join(liveRoot, `sys/block/dm-${minor}/holders`))) {
      let holderName = holder;
      try {
        holderName = `${holder} (${read(`sys/block/${holder}/dm/name`)})`;
      } catch {
        // not a dm device: its kernel name says enough
      }
      add(name, holderName);
    }
  }
  const targets = new Map(
    [...minors].flatMap(([minor, name]) => [
      [`/dev/dm-${minor}`, name],
      [`/dev/mapper/${name}`, name],
    ]),
  );
  for (const pid of readdirSafe(path.join(liveRoot, 'proc')).filter((entry) => /^\d+$/.test(entry))) {
    for (const fd of readdirSafe(path.join(liveRoot, `proc/${pid}/fd`))) {
      let target: string;
      try {
        target = readlinkSync(path.join(liveRoot, `proc/${pid}/fd/${fd}`));
      } catch {
        continue;
      }
      const name = targets.get(target);
      if (name === undefined) continue;
      let command = '?';
      try {
        command = read(`proc/${pid}/comm`);
      } catch {
        // gone meanwhile
      }
      add(name, `process ${pid} (${command})`);
      break;
    }
  }
  return {
    actions: plan.actions.map((action) => {
      const found = [...new Set(holders.get(action.name) ?? [])];
      return found.length > 0 && action.blockedBy !== null && action.open > 0
        ? { ...action, blockedBy: `${action.blockedBy}, held by ${found.join(', ')}` }
        : action;
    }),
  };
}

function readdirSafe(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

// --- Locks: Proxmox's own, taken as Proxmox takes them (flock, 10 s) -------------------------

/** Releases a lock. */
export type Release = () => Promise<void>;
export type Locker = (file: string, waitSeconds: number) => Promise<Release | null>;

/** The lock file Proxmox takes for a guest's config (QemuConfig / LXC::Config config_file_lock). */
export const guestLockFile = (vmid: number, type: GuestType) =>
  type === 'lxc' ? `/run/lock/lxc/pve-config-${vmid}.lock` : `/var/lock/qemu-server/lock-${vmid}.conf`;
export const PVE_DM_LOCK = '/run/lock/pve-dm.lock';

/**
 * flock(1) holds the lock for as long as its child runs; the child, a node that reads its stdin,
 * says when it has the lock and ends when we close its stdin. Null: not had within the wait.
 */
/** A dry run's locker: every lock is free, nothing is created. */
const noLock: Locker = async () => async () => undefined;

export const flockLocker: Locker = async (file, waitSeconds) => {
  await mkdir(path.dirname(file), { recursive: true });
  const holder = "process.stdout.write('locked\\n');process.stdin.resume();process.stdin.on('end',()=>process.exit(0))";
  const child = spawn('flock', ['-w', String(waitSeconds), file, process.execPath, '-e', holder], {
    stdio: ['pipe', 'pipe', 'ignore'],
  });
  const got = await new Promise<boolean>((resolve) => {
    child.stdout.on('data', (chunk: Buffer) => chunk.toString().includes('locked') && resolve(true));
    child.on('error', () => resolve(false));
    child.on('exit', () => resolve(false));
  });
  if (!got) {
    child.kill();
    return null;
  }
  return () =>
    new Promise<void>((resolve) => {
      child.on('exit', () => resolve());
      child.stdin.end();
    });
};

// --- The journal: one fsynced line per removal, written before the removal ------------------

export interface JournalRecord {
  id: string;
  run: string;
  at: string;
  node: string;
  name: string;
  uuid: string;
  open: number;
  /** `dmsetup table` of the entry right before the action: what restoring a mapping or a table needs. */
  table: string;
  status: CleanupStatus;
  reason: Reason;
  /**
   * `vgchange -an`: a guest's VG taken off the host, a line for each of its LVs; `lvchange --refresh`:
   * a stale table loaded again.
   */
  action: 'lvchange -an' | 'dmsetup remove' | 'vgchange -an' | 'lvchange --refresh';
  vg: string | null;
  lv: string | null;
  /** The guest whose Proxmox lock was held (and is held again to restore). */
  vmid: number | null;
  guestType: GuestType | null;
  /** What the action did, from its outcome line (absent: no outcome line, as in journals of earlier pve-dm). */
  outcome?: JournalOutcome['outcome'];
  detail?: string | null;
  /** What the last restore of it did (begun: its line before the command, and none after); absent: none. */
  restore?: 'begun' | 'restored' | 'failed';
}

/**
 * The line appended once an action ran and the entry was looked at again: removed, refreshed (its
 * table is now LVM's), or failed (it is still there, or its table is not LVM's).
 */
export interface JournalOutcome {
  id: string;
  run: string;
  at: string;
  name: string;
  outcome: 'removed' | 'refreshed' | 'failed';
  detail: string | null;
}

/**
 * A rescan the interactive cleanup ran (`qm disk rescan`): journalled, never restored (it removed
 * nothing; an unusedN disk it added is detached from the guest's page), with its outcome line.
 */
export interface RescanRecord {
  kind: 'rescan';
  id: string;
  run: string;
  at: string;
  node: string;
  vmid: number;
  command: string[];
  /** The orphan LVs (`vg/lv`) it was run for. */
  volumes: string[];
  outcome?: 'rescanned' | 'failed';
  detail?: string | null;
}

export const DEFAULT_JOURNAL = '/var/lib/pve-dm/journal.jsonl';
export const DEFAULT_STATE = '/var/lib/pve-dm/notify-state.json';

/** The line a restore writes before its command brings back the journal entry `id`. */
export interface RestoreRecord {
  kind: 'restore';
  id: string;
  /** The restore's own run. */
  run: string;
  at: string;
  name: string;
  /** The line before: the command about to bring it back. */
  command?: string[];
  /** The line after: what it did (failed: with the command's message). */
  outcome?: 'restored' | 'failed';
  detail?: string | null;
}

/** Any line of the journal. */
export type JournalLine = JournalRecord | JournalOutcome | RescanRecord | RunRecord | RestoreRecord;

/** The line a cleanup run writes first: proof that the journal takes lines, before anything changes. */
export interface RunRecord {
  kind: 'run';
  run: string;
  at: string;
  node: string;
}

/** A journal line that could not be written: nothing more may change, since nothing could record it. */
export class JournalError extends UserError {}

// Never through a link planted at its name; a FIFO there fails at once (ENXIO) instead of waiting for a reader.
const JOURNAL_FLAGS =
  constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW | constants.O_NONBLOCK;

/**
 * Appends one line and fsyncs it; a JournalError naming the file and why when it cannot. A line the
 * filesystem took only part of (full) is cut off again: the journal never ends in half a line.
 */
export function appendJournal(file: string, record: JournalLine): void {
  try {
    mkdirSync(path.dirname(file), { recursive: true });
    const fd = openSync(file, JOURNAL_FLAGS, 0o600);
    try {
      const stat = fstatSync(fd);
      if (!stat.isFile()) throw Object.assign(new Error('not a regular file'), { code: 'ENOTREG' });
      const line = Buffer.from(`${JSON.stringify(record)}\n`);
      try {
        for (let at = 0; at < line.length; ) at += writeSync(fd, line, at);
        fsyncSync(fd);
      } catch (error) {
        ftruncateSync(fd, stat.size);
        throw error;
      }
    } finally {
      closeSync(fd);
    }
  } catch (error) {
    throw new JournalError(
      `cannot write the journal ${file}: ${JOURNAL_ERRORS[errnoOf(error) ?? ''] ?? errorText(error)}`,
    );
  }
}

const JOURNAL_ERRORS: Record<string, string> = {
  ENOSPC: 'its filesystem is full',
  EDQUOT: 'its filesystem is full (quota)',
  EROFS: 'its filesystem is read-only',
  ELOOP: 'it is a symbolic link',
  ENXIO: 'it is not a regular file (a FIFO?)',
  ENOTREG: 'it is not a regular file',
  EISDIR: 'it is a folder',
  EACCES: 'permission denied',
};

/** The journal's actions, each with its outcome line's verdict merged in. */
export function readJournal(file: string): JournalRecord[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    if (errnoOf(error) === 'ENOENT') return [];
    throw new UserError(`cannot read the journal ${file}: ${errorText(error)}`);
  }
  const records: JournalRecord[] = [];
  const byId = new Map<string, JournalRecord>();
  const all = lines(text);
  for (let index = 0; index < all.length; index++) {
    const line = all[index] as string;
    if (line.trim() === '') continue;
    let value: Partial<JournalRecord & JournalOutcome> | null = null;
    try {
      value = JSON.parse(line) as Partial<JournalRecord & JournalOutcome>;
    } catch {
      // reported below
    }
    // A rescan removed nothing, a run line only says one began: nothing to list or restore.
    const kind = value === null ? undefined : (value as { kind?: unknown }).kind;
    if (kind === 'run' && typeof value?.run === 'string') continue;
    if (kind === 'rescan' && typeof value?.id === 'string' && typeof value.run === 'string') continue;
    if (kind === 'restore' && typeof value?.id === 'string') {
      const restored = byId.get(value.id);
      const done = (value as Partial<RestoreRecord>).outcome;
      if (restored !== undefined) restored.restore = done === 'restored' || done === 'failed' ? done : 'begun';
      continue;
    }
    if (
      value === null ||
      typeof value.id !== 'string' ||
      typeof value.name !== 'string' ||
      typeof value.run !== 'string'
    ) {
      throw new UserError(`${file}:${index + 1}: not a journal line`);
    }
    const action = byId.get(value.id);
    if (value.outcome === 'removed' || value.outcome === 'refreshed' || value.outcome === 'failed') {
      if (action !== undefined) Object.assign(action, { outcome: value.outcome, detail: value.detail ?? null });
      continue;
    }
    records.push(value as JournalRecord);
    byId.set(value.id, value as JournalRecord);
  }
  return records;
}

// --- Carrying a plan out --------------------------------------------------------------------

export interface CleanupContext {
  /** The one runner; it refuses changes under --report-only, and does not run them under --dry-run. */
  runner: Runner;
  /** --dry-run: the runner answers for each change without running it; no lock is taken. */
  dryRun?: boolean;
  /** The capture the plan came from; re-checks re-read what can change under it. */
  capture: Capture;
  liveRoot: string;
  journal: string;
  run: string;
  lock?: Locker;
  /** How long to wait for a guest's lock (Proxmox waits 10 s). */
  lockWaitSeconds?: number;
  now?: () => Date;
  /** Ctrl-C: the entry in hand is finished, nothing more is done. */
  signal?: AbortSignal;
}

export interface CleanupOutcome {
  /** Why nothing at all was done (the journal could not be written); absent when the cleanup ran. */
  refused?: string;
  removed: { name: string; command: string[]; journal: string }[];
  /** Stale tables loaded again from LVM's metadata (absent: none). */
  refreshed?: { name: string; command: string[]; journal: string }[];
  /** A dry run: what it would have removed or refreshed, and with which command. */
  wouldRemove?: { name: string; command: string[] }[];
  skipped: { name: string; why: string }[];
  failed: { name: string; error: string }[];
  /** The rescans the interactive cleanup ran (absent: none was offered or picked). */
  rescans?: RescanOutcome;
}

/** Rescans by guest: run, not run (and why), or failed (and LVM's or Proxmox's message). */
export interface RescanOutcome {
  rescanned: { vmid: number; command: string[] }[];
  skipped: { vmid: number; why: string }[];
  failed: { vmid: number; error: string }[];
}

/** pmxcfs keeps a file's mtime in whole seconds: a file changed in the second the analysis began is read again. */
const PMXCFS_MTIME_SLACK_MS = 2_000;

/** The analysis's text of a config when its file was last changed before `since` (ms), else null: read it again. */
function unchangedText(before: ConfigFile | undefined, file: string, since: number): string | null {
  if (before?.text == null || !Number.isFinite(since)) return null;
  const stat = lstatSync(file, { throwIfNoEntry: false });
  return stat !== undefined && stat.isFile() && stat.mtimeMs < since ? before.text : null;
}

/**
 * The entry as it is now, judged again from what can have changed: its dm line, its guest's
 * configs and whether that guest runs, and every other config changed since the analysis began (a
 * new reference, a lock). The rest is the analysis's; null when the entry is gone.
 */
async function recheck(
  { name, vmid: owner }: Pick<PlannedAction, 'name' | 'vmid'>,
  context: CleanupContext,
): Promise<Rechecked | null> {
  const fresh = await deviceNamed(name, context.runner);
  if (fresh === undefined) return null;
  const table = await tableNamed(name, context.runner);
  const { capture } = context;
  const id = identify(fresh);
  const guests = new Set([owner, id.kind === 'guest-volume' ? id.volume.vmid : null].filter((v) => v !== null));
  // The analysis's text of a config not changed since it began; the entry's own guests' are read anew.
  const before = new Map(capture.configs.map((config) => [config.path, config]));
  const since = Date.parse(capture.meta?.capturedAt ?? '') - PMXCFS_MTIME_SLACK_MS;
  const configs = readConfigs(context.liveRoot, (config) =>
    guests.has(config.vmid) ? null : unchangedText(before.get(config.path), config.regular, since),
  );
  // Whether a guest runs decides only for its own entries: the others keep the analysis's word.
  const running = new Set(capture.running === null ? [] : lines(capture.running).map(Number));
  for (const vmid of guests) running.delete(vmid);
  for (const vmid of await liveRunningGuests(context.liveRoot, guests)) running.add(vmid);
  const state = parse({ ...capture, configs, running: [...running].map((id) => `${id}\n`).join('') });
  state.entries = state.entries.map((entry) => (entry.name === name ? fresh : entry));
  // A stale table is judged on the kernel's table as it is now.
  if (table !== null) state.tables?.set(name, table);
  const classification = classify(state);
  const entry = classification.entries.find((candidate) => candidate.name === name);
  return entry === undefined
    ? null
    : { entry, guests: new Map(classification.guests.map((guest) => [guest.vmid, guest])), table: table ?? '' };
}

/** An entry judged again right before cleanup acts on it, with its table as the kernel has it then. */
interface Rechecked {
  entry: Classified;
  guests: Map<number, GuestSummary>;
  table: string;
}

/** Every planned action that may go, in order; one failure never stops the rest. */
export async function executeCleanup(
  plan: CleanupPlan,
  context: CleanupContext,
  onStep: (text: string) => void = () => undefined,
): Promise<CleanupOutcome> {
  // A dry run takes no lock: it waits for no one and keeps no one waiting.
  const lock = context.dryRun ? noLock : (context.lock ?? flockLocker);
  const root = (file: string) => path.join(context.liveRoot, file);
  const outcome: CleanupOutcome = {
    removed: [],
    skipped: [],
    failed: [],
    ...(context.dryRun ? { wouldRemove: [] } : {}),
  };
  const releaseRun = await lock(root(PVE_DM_LOCK), 0);
  if (releaseRun === null) throw new UserError(`another pve-dm cleanup holds ${PVE_DM_LOCK}`);
  try {
    // Nothing changes unless the journal takes a line first (a run line: full, read-only or no file?),
    // and the outcomes an interrupted run never wrote.
    const refused = context.dryRun ? null : await beginRun(context);
    if (refused !== null) {
      outcome.refused = refused;
      for (const action of plan.actions) outcome.skipped.push({ name: action.name, why: 'nothing was changed' });
      return outcome;
    }
    const typeOf = new Map(context.capture.configs.map((config) => [config.vmid, config.type]));
    const handled = new Set<string>();
    let stopped: string | null = null;
    for (const action of plan.actions) {
      if (handled.has(action.name)) continue;
      if (stopped !== null) {
        outcome.skipped.push({ name: action.name, why: `not done: ${stopped}` });
        continue;
      }
      // The entries one command takes away together (a guest's VG): checked, journalled and counted each.
      const line = shellLine(action.command);
      const group = takesSeveral(action.command)
        ? plan.actions.filter((other) => shellLine(other.command) === line)
        : [action];
      for (const member of group) handled.add(member.name);
      const blocked = group.find((member) => member.blockedBy !== null);
      if (context.signal?.aborted || blocked !== undefined) {
        skipAll(group, blocked ?? action, blocked?.blockedBy ?? 'cancelled', outcome);
        continue;
      }
      // A guest nobody has yet (a VMID that exists nowhere) is locked as a VM: `qm create` takes that lock.
      const guestLock =
        action.vmid === null ? null : root(guestLockFile(action.vmid, typeOf.get(action.vmid) ?? 'qemu'));
      const releaseGuest =
        guestLock === null ? async () => undefined : await lock(guestLock, context.lockWaitSeconds ?? 10);
      if (releaseGuest === null) {
        const label = guestLabel(action.vmid ?? 0, typeOf.get(action.vmid ?? 0) ?? null);
        skipAll(group, action, `${label}'s lock is held by someone else (${guestLock})`, outcome);
        continue;
      }
      try {
        stopped = await actOn(group, context, outcome, onStep);
      } catch (error) {
        if (!(error instanceof JournalError)) throw error;
        // The journal broke: what ran is reported, the rest of the plan does not run.
        stopped = error.message;
        const reported = new Set(
          [...outcome.removed, ...(outcome.refreshed ?? []), ...outcome.failed].map((o) => o.name),
        );
        for (const member of group)
          if (!reported.has(member.name))
            outcome.failed.push({ name: member.name, error: `${error.message}; not run` });
      } finally {
        await releaseGuest();
      }
    }
  } finally {
    await releaseRun();
  }
  return outcome;
}

/**
 * Action lines of earlier runs without an outcome (a run killed between its line and its outcome,
 * or its journal full by then): what became of each is looked at now and written down, so that
 * `journal` and `restore` know. Never restored over a live device: one still there did not go.
 */
async function settleInterrupted(context: CleanupContext): Promise<void> {
  const open = readJournal(context.journal).filter(
    (record) => record.outcome === undefined && record.node === context.capture.hostname,
  );
  for (const record of open) {
    const same = (await deviceNamed(record.name, context.runner))?.uuid === record.uuid;
    let done = !same;
    if (record.action === 'lvchange --refresh') {
      const table = same ? await tableNamed(record.name, context.runner) : null;
      done = table !== null && !sameTable(table, record.table);
    }
    const found = done ? 'done' : same ? 'not done' : 'gone';
    appendJournal(context.journal, interruptedOutcome(record, `run ${context.run}`, found, context));
  }
}

/**
 * The outcome line an interrupted run never wrote for its action line, once `finder` (a later run,
 * a restore) has looked at the entry: done, not done (as it was), or gone (a refreshed one).
 */
function interruptedOutcome(
  record: JournalRecord,
  finder: string,
  found: 'done' | 'not done' | 'gone',
  context: Pick<CleanupContext, 'now'>,
): JournalOutcome {
  const outcome = found !== 'done' ? 'failed' : record.action === 'lvchange --refresh' ? 'refreshed' : 'removed';
  const what = { done: 'it done', 'not done': 'it not done (the entry as it was)', gone: 'the device gone' }[found];
  const detail = `run ${record.run} was interrupted; ${finder} found ${what}`;
  return { id: record.id, run: record.run, at: stampOf(context), name: record.name, outcome, detail };
}

/** When, for a journal line: the context's clock (tests fix it), else now. */
const stampOf = (context: Pick<CleanupContext, 'now'>) => (context.now?.() ?? new Date()).toISOString();

/**
 * A run's first journal lines: its own, then the outcomes an interrupted run never wrote. Returns why
 * the journal cannot take them (the cleanup is refused), or null once it has.
 */
async function beginRun(context: CleanupContext): Promise<string | null> {
  const at = stampOf(context);
  try {
    appendJournal(context.journal, { kind: 'run', run: context.run, at, node: context.capture.hostname });
    await settleInterrupted(context);
    return null;
  } catch (error) {
    if (!(error instanceof JournalError)) throw error;
    return `${error.message}: nothing was changed`;
  }
}

/** One member cannot be acted on: its command does not run for any of the group. */
function skipAll(group: readonly PlannedAction[], cause: PlannedAction, why: string, outcome: CleanupOutcome): void {
  for (const member of group)
    outcome.skipped.push({
      name: member.name,
      why: member === cause ? why : `goes with ${mangleDmName(cause.name)}, which cannot: ${why}`,
    });
}

/**
 * Checks each entry of the group again, journals each (its table first), runs the command once,
 * then looks at each entry again: a removal is done when the entry is gone, a refresh when the
 * kernel's table is LVM's. Returns why nothing more may run (a command that hung), else null.
 */
async function actOn(
  group: readonly PlannedAction[],
  context: CleanupContext,
  outcome: CleanupOutcome,
  onStep: (text: string) => void,
): Promise<string | null> {
  const command = (group[0] as PlannedAction).command;
  const checked: Rechecked[] = [];
  for (const action of group) {
    onStep(`checking ${mangleDmName(action.name)}`);
    const now = await recheck(action, context);
    const why = now === null ? 'gone already' : whyNot(action, now, outcome);
    if (why !== null) {
      skipAll(group, action, why, outcome);
      return null;
    }
    checked.push(now as Rechecked);
  }
  const others = takesSeveral(command) ? await othersOfVg(checked, context) : null;
  if (others !== null) {
    skipAll(group, group[0] as PlannedAction, others, outcome);
    return null;
  }
  const done = outcome.removed.length + outcome.failed.length + (outcome.refreshed?.length ?? 0);
  const records = checked.map((now, index) => journalRecord(now, group[index] as PlannedAction, context, done + index));
  onStep(shellLine(command));
  const result = await context.runner(command[0] as string, command.slice(1), {
    mutates: true,
    journal: { file: context.journal, records },
  });
  if (result.dryRun) {
    for (const now of checked) (outcome.wouldRemove ??= []).push({ name: now.entry.name, command });
    return null;
  }
  let unrecorded: JournalError | null = null;
  for (let index = 0; index < checked.length; index++) {
    const now = checked[index] as Rechecked;
    const record = records[index] as JournalRecord;
    const error = await afterwards(command, now, result, context.runner);
    const isRefresh = record.action === 'lvchange --refresh';
    const verdict = error !== null ? 'failed' : isRefresh ? 'refreshed' : 'removed';
    const stamp = stampOf(context);
    const { id, run, name } = record;
    try {
      appendJournal(context.journal, { id, run, at: stamp, name, outcome: verdict, detail: error });
    } catch (failure) {
      // Its action line is there: the next run finds out what became of it (settleInterrupted).
      if (!(failure instanceof JournalError)) throw failure;
      unrecorded ??= failure;
    }
    const line = { name, command, journal: id };
    if (error !== null) outcome.failed.push({ name, error: terminalSafe(error) });
    else if (isRefresh) (outcome.refreshed ??= []).push(line);
    else outcome.removed.push(line);
  }
  if (unrecorded !== null) throw unrecorded;
  // A command that hung says the node is not answering (LVM's lock, udev): nothing more is tried.
  return result.timedOut ? `${shellLine(command)} did not finish in time (${failureLine(result)})` : null;
}

/** Why an entry judged again must be left alone now, or null. */
function whyNot(action: PlannedAction, { entry, guests }: Rechecked, outcome: CleanupOutcome): string | null {
  const same =
    action.status === 'conflict' ? entry.status === 'conflict' && entry.reason === action.reason : isRemovable(entry);
  if (!same) return `now ${entry.status} (${entry.reason})`;
  if (entry.uuid !== action.uuid) return 'it is not the same device any more (its uuid changed)';
  // In a dry run the leftovers stacked on it that it would have removed first are still there.
  const wouldBeGone = new Set((outcome.wouldRemove ?? []).map((would) => would.name));
  const blocker = blockerOf(entry, guests, entry.holders.filter((holder) => wouldBeGone.has(holder)).length);
  if (blocker !== null) return blocker;
  const command = shellLine(cleanupCommand(entry));
  return command === shellLine(action.command) ? null : `what it needs is another command now: ${command}`;
}

/**
 * A VG taken off the host takes every LV of it: each must be in the group, checked. One the
 * analysis did not see (activated since) would go unjournalled: then nothing runs.
 */
async function othersOfVg(checked: readonly Rechecked[], context: CleanupContext): Promise<string | null> {
  const listed = await context.runner('dmsetup', DM_INFO_ARGS);
  if (listed.exitCode !== 0) return "the kernel's devices could not be listed to check the VG's other LVs";
  // An LV's dm uuid is `LVM-` + its VG's uuid (32 characters) + its own.
  const vgOf = (uuid: string) => uuid.slice(0, 36);
  const vgs = new Set(checked.map(({ entry }) => vgOf(entry.uuid)));
  const names = new Set(checked.map(({ entry }) => entry.name));
  const unseen = parseDmsetupInfo(listed.stdout).entries.filter(
    (entry) => vgs.has(vgOf(entry.uuid)) && !names.has(entry.name),
  );
  return unseen.length === 0
    ? null
    : `it would take ${unseen.map((entry) => mangleDmName(entry.name)).join(', ')} away too, unchecked`;
}

function journalRecord(now: Rechecked, action: PlannedAction, context: CleanupContext, done: number): JournalRecord {
  const { entry, table } = now;
  return {
    id: `${context.run}-${done + 1}`,
    run: context.run,
    at: stampOf(context),
    node: context.capture.hostname,
    name: entry.name,
    uuid: entry.uuid,
    open: entry.open,
    table,
    status: entry.status as CleanupStatus,
    reason: entry.reason,
    action: journalAction(action.command),
    vg: entry.vg,
    lv: entry.lv,
    vmid: action.vmid,
    guestType: context.capture.configs.find((config) => config.vmid === action.vmid)?.type ?? null,
  };
}

/** The journal's word for a cleanup command. */
const journalAction = (command: readonly string[]): JournalRecord['action'] =>
  takesSeveral(command)
    ? 'vgchange -an'
    : refreshes(command)
      ? 'lvchange --refresh'
      : command[0] === 'lvchange'
        ? 'lvchange -an'
        : 'dmsetup remove';

/**
 * What the command did to the entry, looked at again (a command can succeed and change nothing:
 * lvchange -an of an LV that is not this mapping): null when done, else why not.
 */
async function afterwards(
  command: readonly string[],
  { entry }: Rechecked,
  result: CommandResult,
  runner: Runner,
): Promise<string | null> {
  const said = failureLine(result);
  if (refreshes(command)) {
    if (result.exitCode !== 0) return said;
    const expected = staleTables(entry)?.expected ?? null;
    const table = await tableNamed(entry.name, runner);
    return expected !== null && table !== null && sameTable(expected, table)
      ? null
      : `${shellLine(command)} succeeded, but the kernel's table is still not LVM's: ${clip(table ?? '(none)')}`;
  }
  if ((await deviceNamed(entry.name, runner)) === undefined) return null;
  return result.exitCode !== 0 ? said : `${shellLine(command)} succeeded, but the entry is still there`;
}

/** The kernel's device of that name now (`dmsetup info NAME`), or undefined: there is none. */
async function deviceNamed(name: string, runner: Runner): Promise<DmEntry | undefined> {
  const info = await runner('dmsetup', [...DM_INFO_ARGS, name]);
  return info.exitCode === 0 ? parseDmsetupInfo(info.stdout).entries.find((entry) => entry.name === name) : undefined;
}

/** Its table now (`dmsetup table NAME`, the lines without the name), or null: no such device. */
async function tableNamed(name: string, runner: Runner): Promise<string | null> {
  const shown = await runner('dmsetup', [...DM_TABLE_ARGS, name]);
  return shown.exitCode === 0 ? tableText(shown.stdout) : null;
}

/** Why a command failed, in a line: the first of its stderr, else its exit code. */
const failureLine = (result: CommandResult) => result.stderr.trim().split('\n')[0] || `exit ${result.exitCode}`;

/** The table lines of `dmsetup table NAME`, without the name (what `dmsetup create` reads back). */
const tableText = (stdout: string) =>
  lines(stdout)
    .map((line) => line.replace(/^.+?: (?=\d+ \d+ )/, '').trimEnd())
    .join('\n');

export interface RestoreOutcome {
  restored: string[];
  /** `restore --dry-run`: what it would bring back, and with which command. */
  wouldRestore?: { name: string; command: string[] }[];
  /** Already as journalled (a restore cut short and run again, a command that never ran): nothing done. */
  already: { name: string; why: string }[];
  refused: { name: string; why: string }[];
  failed: { name: string; error: string }[];
}

/** Brings journalled entries back: the LV activated again, or the mapping created again with its uuid and table. */
export async function restoreEntries(records: JournalRecord[], context: RestoreContext): Promise<RestoreOutcome> {
  const lock = context.lock ?? flockLocker;
  const outcome: RestoreOutcome = { restored: [], already: [], refused: [], failed: [] };
  const releaseRun = await lock(path.join(context.liveRoot, PVE_DM_LOCK), 0);
  if (releaseRun === null) throw new UserError(`another pve-dm cleanup holds ${PVE_DM_LOCK}`);
  try {
    // Parents before their partitions: the reverse of the order they went in.
    for (const record of [...records].reverse()) {
      const guestLock =
        record.vmid === null || record.vmid === undefined
          ? null
          : path.join(context.liveRoot, guestLockFile(record.vmid, record.guestType ?? 'qemu'));
      const releaseGuest =
        guestLock === null ? async () => undefined : await lock(guestLock, context.lockWaitSeconds ?? 10);
      if (releaseGuest === null) {
        outcome.refused.push({
          name: record.name,
          why:
            `${guestLabel(record.vmid ?? 0, record.guestType ?? null)}'s lock is held by someone else ` +
            `(${guestLock})`,
        });
        continue;
      }
      let stop: string | null = null;
      try {
        stop = await restoreOne(record, context, outcome);
      } catch (error) {
        if (!(error instanceof JournalError)) throw error;
        // Nothing may change that the journal could not record: this one and the rest stay as they are.
        stop = error.message;
      } finally {
        await releaseGuest();
      }
      if (stop !== null) {
        // As in a cleanup: a journal that broke or a command that hung, and nothing more is tried.
        const reported = new Set([...outcome.restored, ...outcome.failed.map((failure) => failure.name)]);
        const rest = [record, ...records.slice(0, records.indexOf(record)).reverse()];
        for (const one of rest.filter((r) => !reported.has(r.name)))
          outcome.refused.push({ name: one.name, why: `not done: ${stop}` });
        break;
      }
    }
  } finally {
    await releaseRun();
  }
  return outcome;
}

/** What a restore needs: the runner, the node, and its journal, where it writes what it brings back. */
export type RestoreContext = Pick<
  CleanupContext,
  'runner' | 'liveRoot' | 'lockWaitSeconds' | 'journal' | 'run' | 'now' | 'dryRun'
> & { lock?: Locker };

/** An interrupted run's action line settled by this restore (done: gone, or on another table); null: it has one. */
const settledBy = (record: JournalRecord, context: RestoreContext, done: boolean): JournalOutcome | null =>
  record.outcome !== undefined
    ? null
    : interruptedOutcome(record, `restore run ${context.run}`, done ? 'done' : 'not done', context);

/** Nothing to bring back: said, and an interrupted run's action line settled as never done. */
function already(record: JournalRecord, context: RestoreContext, outcome: RestoreOutcome): null {
  const { id, name } = record;
  const settled = settledBy(record, context, false);
  if (settled !== null && !context.dryRun) appendJournal(context.journal, settled);
  // A restore cut short after its command: this one finds it done, and says so.
  if (record.restore === 'begun' && !context.dryRun) {
    const at = stampOf(context);
    const detail = 'found back already';
    appendJournal(context.journal, { kind: 'restore', id, run: context.run, at, name, outcome: 'restored', detail });
  }
  outcome.already.push({ name, why: alreadyWhy(record) });
  return null;
}

/** Brings one entry back (or says why not); returns why nothing more may run (a command that hung), else null. */
async function restoreOne(
  record: JournalRecord,
  context: RestoreContext,
  outcome: RestoreOutcome,
): Promise<string | null> {
  const { runner } = context;
  if (record.action === 'lvchange --refresh') return restoreTable(record, context, outcome);
  const there = await deviceNamed(record.name, runner);
  if (there !== undefined) {
    // The very device, table and all (a restore cut short, a run killed before its command): nothing to do.
    if (asJournalled(record, there, await tableNamed(record.name, runner))) return already(record, context, outcome);
    // A line without an outcome: its run was cut short, maybe before its command ran.
    const why = record.outcome === undefined ? ' (its run was interrupted: it may never have gone)' : '';
    outcome.refused.push({ name: record.name, why: `a device of that name exists${why}` });
    return null;
  }
  // A guest's VG taken off the host comes back as it was, LV by LV, without LVM scanning guest disks;
  // a stale mapping too (LVM would activate the LV from its metadata: not what was there).
  const [command, args, input]: [string, string[], string | undefined] =
    record.action === 'lvchange -an' && record.reason !== 'stale-table'
      ? ['lvchange', ['-ay', `${record.vg}/${record.lv}`], undefined]
      : [
          'dmsetup',
          ['--manglename', 'none', 'create', record.name, ...(record.uuid ? ['--uuid', record.uuid] : [])],
          `${record.table}\n`,
        ];
  return restoreWith([[command, args, input]], record, context, outcome);
}

/** Whether the device there now is the journalled one, table and all: nothing to bring back. */
const asJournalled = (record: JournalRecord, now: DmEntry | undefined, table: string | null) =>
  now?.uuid === record.uuid && table !== null && sameTable(table, record.table);

/** Why a journalled entry needs nothing: its command never ran, or it is back already. */
const alreadyWhy = (record: JournalRecord) =>
  record.outcome === undefined
    ? 'there as journalled (same uuid and table): its run was interrupted before its command changed it'
    : 'back already as journalled (same uuid and table)';

/**
 * A refreshed table put back as it was: `dmsetup load` then `resume` (what LVM itself does), only
 * on the same device, held by no one (a guest that runs holds it), and still on LVM's table.
 */
async function restoreTable(
  record: JournalRecord,
  context: RestoreContext,
  outcome: RestoreOutcome,
): Promise<string | null> {
  const now = await deviceNamed(record.name, context.runner);
  const table = await tableNamed(record.name, context.runner);
  if (asJournalled(record, now, table)) return already(record, context, outcome);
  const why =
    now === undefined
      ? 'the device is gone'
      : now.uuid !== record.uuid
        ? 'it is another device now (its uuid changed)'
        : now.open > 0
          ? `it is open ${now.open} time(s): stop what holds it (its guest) first`
          : null;
  if (why !== null) {
    outcome.refused.push({ name: record.name, why });
    return null;
  }
  const steps: [string, string[], string | undefined][] = [
    ['dmsetup', ['--manglename', 'none', 'load', record.name], `${record.table}\n`],
    ['dmsetup', ['--manglename', 'none', 'resume', record.name], undefined],
  ];
  return restoreWith(steps, record, context, outcome);
}

/**
 * Runs a restore's commands in order through the one runner, the first after its journal lines (an
 * interrupted run's action settled as done, then the restore's own); the first that fails stops it.
 * Returns why nothing more may run (a command that hung), else null.
 */
async function restoreWith(
  steps: readonly [string, string[], string | undefined][],
  record: JournalRecord,
  context: RestoreContext,
  outcome: RestoreOutcome,
): Promise<string | null> {
  const { id, name } = record;
  const line = (more: Partial<RestoreRecord>): RestoreRecord => ({
    kind: 'restore',
    id,
    run: context.run,
    at: stampOf(context),
    name,
    ...more,
  });
  const [program, firstArgs] = steps[0] ?? ['', []];
  const before = [settledBy(record, context, true), line({ command: [program, ...firstArgs] })];
  let dryRun = false;
  let failure: string | null = null;
  let hung: string | null = null;
  for (const [index, [command, args, input]] of steps.entries()) {
    let result: CommandResult;
    const journal = index === 0 ? { file: context.journal, records: before.filter((l) => l !== null) } : undefined;
    try {
      result = await context.runner(command, args, { mutates: true, input, journal });
    } catch (error) {
      if (error instanceof JournalError) throw error;
      outcome.refused.push({ name, why: (error as Error).message });
      return null;
    }
    dryRun ||= result.dryRun === true;
    if (result.dryRun) (outcome.wouldRestore ??= []).push({ name, command: [command, ...args] });
    else if (result.exitCode !== 0) {
      failure = terminalSafe(failureLine(result));
      if (result.timedOut) hung = `${shellLine([command, ...args])} did not finish in time (${failure})`;
      break;
    }
  }
  if (dryRun) return null;
  if (failure === null) outcome.restored.push(name);
  else outcome.failed.push({ name, error: failure });
  appendJournal(context.journal, line({ outcome: failure === null ? 'restored' : 'failed', detail: failure }));
  return hung;
}

// ============================================================================================
// Plugins: a file in plugins/ whose default export is a `Plugin` (`export default {...} satisfies
// Plugin`, importing only types from pve-dm.ts). It may replace or wrap any stage, and be told the
// finished result (notifiers), with what it needs in its context. pve-dm's own notifiers use this API.
// ============================================================================================

export type StageName = keyof Stages;

/** A stage override: replace the stage (ignore `next`) or wrap it (call `next` with the input). */
export type StageHook<K extends StageName> = (
  ...args: [...Parameters<Stages[K]>, next: Stages[K]]
) => ReturnType<Stages[K]>;

/** What a notifier sends: the reports as rendered, and the subject and text every channel shares. */
export interface NotifyReports {
  json: string;
  html: string;
  subject: string;
  text: string;
}

/** What pve-dm lends every notifier: its settings, HTTP and the one command runner. */
export interface NotifyServices {
  /** A setting from the environment or pve-dm.conf (the environment wins). */
  setting(key: string): string | undefined;
  /** An HTTP request with a time limit and bounded retries (undici, loaded on first use). */
  http: (request: HttpRequest) => Promise<HttpResponse>;
  /** The one command runner (no shell, a time limit); a notifier never changes the system. */
  runner: Runner;
}

/**
 * A notifier's third argument: the services, and the checks every notifier needs, so that a plugin
 * imports only types from pve-dm.ts (as rollup hands its plugins their context).
 */
export interface NotifyContext extends NotifyServices {
  /** The result's severity (ok, warning, critical), from its exit code. */
  severity: Severity;
  /** What must be said first, when data is at risk (a cluster's critical finding, named); else null. */
  headline: string | null;
  /** A URL setting (trimmed, else `fallback`), checked to be http or https; else one line naming the key. */
  urlSetting(key: string, example: string, fallback?: string): URL;
  /** A setting that travels in an HTTP header, checked to be printable ASCII; undefined when not set. */
  headerSetting(key: string): string | undefined;
  /** The text with every secret setting, and these values, blotted out. */
  redact(text: string, secrets?: readonly string[]): string;
  /** The service's own words from an error body: its JSON message field, else the start of the text. */
  serviceMessage(body: string): string;
  /** RFC 2047 encoded-words for a mail or HTTP header, at most `maxBytes` (default 39) of UTF-8 each. */
  encodedWords(text: string, maxBytes?: number): string[];
  /** The text with terminal control characters shown, not obeyed. */
  terminalSafe(text: string): string;
  /** A dm name as dmsetup takes it back (mangled if a shell or dmsetup would change it), after its node. */
  dmName(name: string, node?: string): string;
  /** `VM 100`, `CT 200`, or `VMID 888` for a guest without a config. */
  guestLabel(vmid: number, type: GuestType | null): string;
  /** What a classification reason means, in a sentence (REASONS). */
  meaning(reason: string): string;
}

export interface Notification {
  plugin: string;
  ok: boolean;
  detail: string;
}

export interface Plugin {
  name: string;
  /** Stage overrides, applied in plugin file-name order (a later plugin wraps an earlier one). */
  stages?: { [K in StageName]?: StageHook<K> };
  /** The PVE_DM_* settings it reads: any other PVE_DM_* key set is warned about (a typo). */
  settings?: readonly string[];
  /** Whether the notifier has its settings; a notifier that is not configured is not called. */
  configured?: (setting: (key: string) => string | undefined) => boolean;
  /** Told the finished result and its reports; its answer ends up in the JSON's `notifications`. */
  notify?: (result: Result, reports: NotifyReports, context: NotifyContext) => Promise<string | void>;
}

/** An error a plugin's hook raised, attributed to the plugin and the hook. */
export class PluginError extends UserError {
  constructor(
    readonly plugin: string,
    readonly hook: string,
    cause: unknown,
  ) {
    super(`plugin ${plugin}, hook ${hook}: ${cause instanceof Error ? cause.message : String(cause)}`, 3);
  }
}

export interface LoadedPlugin {
  plugin: Plugin;
  file: string;
}

const PLUGIN_FILE_RE = /\.(?:ts|mts|js|mjs)$/;

/**
 * Running as root, a plugin runs as root: its file and folder must be root's and writable by
 * nobody else, or anyone who can write there could run code as root.
 */
function checkPluginOwnership(target: string, kind: 'file' | 'folder'): void {
  const stat = statSync(target);
  if (stat.uid !== 0)
    throw new UserError(
      `refusing plugin ${kind} ${target}: it is not owned by root (uid ${stat.uid}), and pve-dm runs as root`,
    );
  if ((stat.mode & 0o022) !== 0) {
    throw new UserError(
      `refusing plugin ${kind} ${target}: it is writable by group or others ` +
        `(mode ${(stat.mode & 0o777).toString(8)}); chmod go-w it`,
    );
  }
}

/** Plugins loaded, and the files that were not: a warning each (a broken stage override stops the run). */
export interface PluginsLoaded {
  loaded: LoadedPlugin[];
  warnings: Warning[];
}

/** A plugin file that cannot be used: why (`message` names the file too), and the line when it is known. */
class PluginProblem extends Error {
  constructor(
    message: string,
    readonly why: string,
    readonly line: number | null = null,
  ) {
    super(message);
  }
}

/**
 * Every plugin of a folder, in file-name order. A file that does not load is a warning, and the run
 * goes on without it (a notifier with a typo must not silence the report); but one that overrides a
 * stage stops the run (exit 3): without it, the analysis would not be the one the administrator set up.
 */
export async function loadPlugins(
  dir: string,
  { asRoot = process.getuid?.() === 0, required = false } = {},
): Promise<PluginsLoaded> {
  let files: string[];
  try {
    files = readdirSync(dir)
      .filter((file) => PLUGIN_FILE_RE.test(file) && !/\.d\.m?ts$/.test(file))
      .sort();
  } catch (error) {
    if (errnoOf(error) === 'ENOENT' && !required) return { loaded: [], warnings: [] };
    throw new UserError(`cannot read the plugin folder ${dir}: ${errorText(error)}`);
  }
  // Every file is checked before any is run.
  if (asRoot && files.length > 0) {
    checkPluginOwnership(dir, 'folder');
    for (const file of files) checkPluginOwnership(path.join(dir, file), 'file');
  }
  const result: PluginsLoaded = { loaded: [], warnings: [] };
  for (const full of files.map((file) => path.join(dir, file))) {
    let plugin: Plugin;
    try {
      plugin = await loadPluginFile(full);
    } catch (error) {
      if (!(error instanceof PluginProblem)) throw error;
      if (overridesStages(full)) throw new UserError(error.message);
      result.warnings.push(warn(full, error.line, `${error.why}; not loaded, the run goes on without it`));
      continue;
    }
    const duplicate = result.loaded.find((other) => other.plugin.name === plugin.name);
    if (duplicate) throw new UserError(`plugin ${full}: the name "${plugin.name}" is taken by ${duplicate.file}`);
    result.loaded.push({ plugin, file: full });
  }
  return result;
}

/** The plugins of several folders; a later folder's plugin replaces an earlier one of its name (the admin's copy). */
export async function loadPluginFolders(dirs: readonly string[], { required = false } = {}): Promise<PluginsLoaded> {
  const all: PluginsLoaded = { loaded: [], warnings: [] };
  for (const dir of dirs) {
    const { loaded, warnings } = await loadPlugins(dir, { required });
    const replaced = new Set(loaded.map(({ plugin }) => plugin.name));
    all.loaded = [...all.loaded.filter(({ plugin }) => !replaced.has(plugin.name)), ...loaded];
    all.warnings.push(...warnings);
  }
  return all;
}

/** Whether a plugin file (that may not even parse) overrides a stage: its text names `stages`. */
function overridesStages(file: string): boolean {
  try {
    return /\bstages\b/.test(readFileSync(file, 'utf8'));
  } catch {
    return true;
  }
}

/** One plugin file imported and checked; a PluginProblem names the file (and the line when known). */
async function loadPluginFile(full: string): Promise<Plugin> {
  if (BUNDLED && /\.m?ts$/.test(full)) {
    const why =
      'a TypeScript plugin needs tsx (npx tsx pve-dm.ts); the bundle loads .js and .mjs plugins, like those `npm ' +
      'run build` writes to dist/plugins/';
    throw new PluginProblem(`cannot load plugin ${full}: ${why}`, why);
  }
  let module: { default?: unknown };
  try {
    module = await import(pathToFileURL(full).href);
  } catch (error) {
    // esbuild's first line only says that it failed; the next one says where and why.
    const text = (error as Error).message
      .split('\n')
      .filter((line) => line.trim() !== '')
      .slice(0, 2)
      .join(' ');
    const where =
      errorLine(error as Error, full) ?? (error instanceof SyntaxError ? await syntaxErrorLine(full) : null);
    const named = where === null || text.includes(`:${where}`) ? full : `${full}:${where}`;
    throw new PluginProblem(`cannot load plugin ${named}: ${text}`, text.replace(`${full}:`, 'line '), where);
  }
  const plugin = module.default as Plugin | undefined;
  if (typeof plugin !== 'object' || plugin === null || typeof plugin.name !== 'string' || plugin.name === '') {
    const why = 'its default export is not a plugin ({ name, ... } satisfies Plugin)';
    throw new PluginProblem(`plugin ${full}: ${why}`, why);
  }
  const problem = pluginShapeProblem(plugin);
  if (problem !== null)
    throw new PluginProblem(`plugin ${full}: ${problem.message}`, problem.message, lineOf(full, problem.word));
  return plugin;
}

/** The line of a file an import error points at: esbuild's `file:5:73: ERROR`, or V8's `file:///...:5`. */
function errorLine(error: Error, file: string): number | null {
  const text = `${error.message}\n${error.stack ?? ''}`;
  for (const name of [file, pathToFileURL(file).href]) {
    const at = text.indexOf(`${name}:`);
    const line = at < 0 ? null : /^:(\d+)/.exec(text.slice(at + name.length))?.[1];
    if (line) return Number(line);
  }
  return null;
}

/** The line of a JavaScript syntax error, which V8 does not put in the error: `node --check` prints it first. */
async function syntaxErrorLine(file: string): Promise<number | null> {
  const checked = await execProcess(process.execPath, ['--check', file], { timeoutMs: 10_000 });
  const line = checked.stderr.startsWith(`${file}:`)
    ? /^:(\d+)/.exec(checked.stderr.slice(file.length))?.[1]
    : undefined;
  return line === undefined ? null : Number(line);
}

/** The first line of a file that holds a word (a misspelt hook), or null. */
function lineOf(file: string, word: string | null): number | null {
  if (word === null) return null;
  const at = readFileSync(file, 'utf8')
    .split('\n')
    .findIndex((line) => line.includes(word));
  return at < 0 ? null : at + 1;
}

const STAGE_NAMES: readonly StageName[] = ['discover', 'parse', 'classify', 'grade', 'report', 'cleanup'];
const ASYNC_STAGES: ReadonlySet<StageName> = new Set(['discover', 'report']);
const PLUGIN_KEYS: readonly string[] = ['name', 'stages', 'settings', 'configured', 'notify'];

/** What a .js plugin (which no type checker saw) got wrong, and the word to find it by; or null. */
function pluginShapeProblem(plugin: Plugin): { message: string; word: string | null } | null {
  const unknown = Object.keys(plugin).filter((key) => !PLUGIN_KEYS.includes(key));
  if (unknown.length > 0) {
    const message =
      `unknown key${unknown.length > 1 ? 's' : ''} ${unknown.join(', ')} (a plugin ` + `has ${PLUGIN_KEYS.join(', ')})`;
    return { message, word: unknown[0] ?? null };
  }
  for (const [name, hook] of Object.entries(plugin.stages ?? {})) {
    if (!STAGE_NAMES.includes(name as StageName))
      return { message: `unknown stage "${name}" (stages: ${STAGE_NAMES.join(', ')})`, word: name };
    if (typeof hook !== 'function') return { message: `stage ${name} is not a function`, word: name };
  }
  for (const hook of ['notify', 'configured'] as const) {
    if (plugin[hook] !== undefined && typeof plugin[hook] !== 'function')
      return { message: `${hook} is not a function`, word: hook };
  }
  if (
    plugin.settings !== undefined &&
    !(Array.isArray(plugin.settings) && plugin.settings.every((key) => typeof key === 'string'))
  ) {
    return { message: 'settings is not a list of setting names', word: 'settings' };
  }
  return null;
}

export function composeStages(base: Stages, plugins: readonly Plugin[]): Stages {
  const stages: Record<string, (...args: never[]) => unknown> = { ...base };
  for (const plugin of plugins) {
    for (const [name, hook] of Object.entries(plugin.stages ?? {}) as [StageName, (...args: unknown[]) => unknown][]) {
      if (typeof hook !== 'function') continue;
      const inner = stages[name] as (...args: unknown[]) => unknown;
      // An error that comes out of `next` is the inner stage's, not this plugin's.
      const fromNext = new WeakSet<object>();
      const passUp = (error: unknown): never => {
        if (typeof error === 'object' && error !== null) fromNext.add(error);
        throw error;
      };
      const next = (...args: unknown[]) => {
        try {
          const output = inner(...args);
          return output instanceof Promise ? output.catch(passUp) : output;
        } catch (error) {
          return passUp(error);
        }
      };
      const attribute = (error: unknown): never => {
        throw error instanceof PluginError || (typeof error === 'object' && error !== null && fromNext.has(error))
          ? error
          : new PluginError(plugin.name, name, error);
      };
      stages[name] = (...args: unknown[]) => {
        try {
          const output = hook(...args, next);
          if (!(output instanceof Promise)) return output;
          if (!ASYNC_STAGES.has(name)) throw new Error(`returned a Promise, but the ${name} stage is synchronous`);
          return output.catch(attribute);
        } catch (error) {
          return attribute(error);
        }
      };
    }
  }
  return stages as unknown as Stages;
}

// --- Settings: the environment, then pve-dm.conf ---------------------------------------------

/** A setting by name; `secrets` holds the values of every setting whose name says it is one. */
export interface Settings {
  (key: string): string | undefined;
  readonly secrets: readonly string[];
  /** Where each key was set: the settings file and its line, or the environment (line null). */
  readonly origins?: ReadonlyMap<string, { source: string; line: number | null }>;
}

/** The settings pve-dm itself reads; plugins list theirs in `settings`. */
const CORE_SETTINGS: readonly string[] = [
  'PVE_DM_DEBUG',
  'PVE_DM_HTTP_TIMEOUT_MS',
  'PVE_DM_POOL_WARNING',
  'PVE_DM_POOL_CRITICAL',
];

/**
 * The thin-pool thresholds (percent of data or metadata in use) of PVE_DM_POOL_WARNING and
 * PVE_DM_POOL_CRITICAL; a value that is not a whole percent, or a warning above the critical
 * level, is a warning naming where it was set, and the defaults stand.
 */
export function poolThresholdsFrom(settings: Settings): { thresholds: PoolThresholds; warnings: Warning[] } {
  const warnings: Warning[] = [];
  const read = (key: string, fallback: number) => {
    const value = settings(key);
    if (value === undefined) return fallback;
    if (/^\d{1,3}$/.test(value.trim()) && Number(value) >= 1 && Number(value) <= 100) return Number(value);
    const origin = settings.origins?.get(key) ?? { source: 'environment', line: null };
    warnings.push(
      warn(origin.source, origin.line, `${key}=${clip(value)}: not a percent from 1 to 100; ${fallback} used`),
    );
    return fallback;
  };
  const warning = read('PVE_DM_POOL_WARNING', DEFAULT_POOL_THRESHOLDS.warning);
  const critical = read('PVE_DM_POOL_CRITICAL', DEFAULT_POOL_THRESHOLDS.critical);
  if (warning <= critical) return { thresholds: { warning, critical }, warnings };
  const origin = settings.origins?.get('PVE_DM_POOL_WARNING') ?? { source: 'environment', line: null };
  warnings.push(
    warn(
      origin.source,
      origin.line,
      `PVE_DM_POOL_WARNING=${warning} is above PVE_DM_POOL_CRITICAL=${critical}; the defaults used`,
    ),
  );
  return { thresholds: DEFAULT_POOL_THRESHOLDS, warnings };
}

/** A PVE_DM_* key nothing loaded reads: a warning naming the closest known key (a typo must not mute a notifier). */
export function unknownSettings(settings: Settings, plugins: readonly Plugin[]): Warning[] {
  const known = [...CORE_SETTINGS, ...plugins.flatMap((plugin) => plugin.settings ?? [])];
  return [...(settings.origins ?? [])]
    .filter(([key]) => key.startsWith('PVE_DM_') && !known.includes(key))
    .map(([key, { source, line }]) =>
      warn(source, line, `${key}: no loaded plugin reads this setting${didYouMean(key, known)}`),
    );
}

/** Settings from sources in order of precedence (the first that has a non-empty value wins). */
export function settingsFrom(...sources: ReadonlyMap<string, string>[]): Settings {
  const lookup = (key: string) =>
    sources.map((source) => source.get(key)).find((value) => value !== undefined && value !== '');
  const secrets = [
    ...new Set(
      sources.flatMap((source) =>
        [...source].filter(([key, value]) => SECRET_KEY_RE.test(key) && value.length >= 4).map(([, value]) => value),
      ),
    ),
  ];
  return Object.assign(lookup, { secrets });
}

const SECRET_KEY_RE = /KEY|SECRET|TOKEN|PASSWORD|WEBHOOK/;

/**
 * `KEY=value` lines (`#` comments, optional quotes). A file holding a secret must be mode 0600:
 * anything else is refused, so a secret is never left readable by others.
 */
export function parseSettingsFile(
  text: string,
  file: string,
  mode: number,
  lineOfKey = new Map<string, number>(),
): Map<string, string> {
  const settings = new Map<string, string>();
  const all = lines(text);
  for (let index = 0; index < all.length; index++) {
    const line = all[index] as string;
    if (line.trim() === '' || line.trimStart().startsWith('#')) continue;
    const m = /^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$/.exec(line);
    if (m === null) throw new UserError(`${file}:${index + 1}: not a KEY=value line`);
    const [, key = '', raw = ''] = m;
    settings.set(key, /^(["']).*\1$/.test(raw) ? raw.slice(1, -1) : raw);
    lineOfKey.set(key, index + 1);
  }
  const secrets = [...settings.keys()].filter((key) => SECRET_KEY_RE.test(key));
  if (secrets.length > 0 && (mode & 0o077) !== 0) {
    throw new UserError(
      `${file} holds secrets (${secrets.join(', ')}) but is mode ${(mode & 0o777).toString(8)}: chmod 600 ${file}`,
    );
  }
  return settings;
}

export function loadSettings(file: string, env: NodeJS.ProcessEnv, { required = false } = {}): Settings {
  let fromFile = new Map<string, string>();
  const lineOfKey = new Map<string, number>();
  try {
    fromFile = parseSettingsFile(readFileSync(file, 'utf8'), file, statSync(file).mode, lineOfKey);
  } catch (error) {
    if (error instanceof UserError) throw error;
    if (errnoOf(error) !== 'ENOENT' || required) {
      throw new UserError(`cannot read the settings file ${file}: ${errorText(error)}`);
    }
  }
  const fromEnv = new Map(Object.entries(env).filter((entry): entry is [string, string] => entry[1] !== undefined));
  const origins = new Map<string, { source: string; line: number | null }>();
  for (const key of fromFile.keys()) origins.set(key, { source: file, line: lineOfKey.get(key) ?? null });
  for (const key of fromEnv.keys()) origins.set(key, { source: 'environment', line: null });
  return Object.assign(settingsFrom(fromEnv, fromFile), { origins });
}

/** A text with every secret value blotted out: what a service echoes back never reaches a log. */
export function redactSecrets(text: string, secrets: readonly string[]): string {
  return [...secrets]
    .sort((a, b) => b.length - a.length)
    .reduce((clean, secret) => clean.split(secret).join('[secret]'), text);
}

// --- HTTP for notifiers ----------------------------------------------------------------------

export interface HttpRequest {
  url: string;
  method?: 'POST' | 'PUT' | 'GET';
  headers?: Record<string, string>;
  body?: string;
  /** Per attempt; default 10 s (the setting PVE_DM_HTTP_TIMEOUT_MS). */
  timeoutMs?: number;
  /** Attempts on 429 and 5xx; default 3. */
  attempts?: number;
}

export interface HttpResponse {
  status: number;
  body: string;
}

/** A URL setting, checked: a notifier fails with a clear word instead of an odd HTTP error. */
export function settingUrl(key: string, value: string, example: string): URL {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new Error(`${key} is not a URL (expected e.g. ${example})`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:')
    throw new Error(`${key} must be http or https, not ${url.protocol}`);
  return url;
}

/** A secret that travels in an HTTP header: printable ASCII only, so it can neither break nor add a header. */
export function headerSecret(key: string, value: string): string {
  if (!/^[\x21-\x7e]+$/.test(value))
    throw new Error(`${key} holds characters an HTTP header cannot carry (spaces, line breaks or non-ASCII)`);
  return value;
}

/** The service's own words from an error body: its JSON message field, else the start of the text. */
export function serviceMessage(body: string): string {
  try {
    const data = JSON.parse(body) as Record<string, unknown>;
    const nested = (data.Messages as { Errors?: { ErrorMessage?: string }[] }[] | undefined)?.[0]?.Errors?.[0]
      ?.ErrorMessage;
    const found =
      nested ??
      [data.ErrorMessage, data.error_description, data.errorDescription, data.message, data.error].find(
        (v) => typeof v === 'string' && v !== '',
      );
    if (typeof found === 'string') return clipLine(found);
  } catch {
    // not JSON: the text itself
  }
  return clipLine(body.trim() || 'no body');
}

/**
 * Text for a mail or HTTP header as RFC 2047 encoded-words (`=?UTF-8?B?...?=`): whole characters
 * per word, at most `maxBytes` of UTF-8 each (39 keeps a word within 75 characters). Nothing in
 * the text, a line break included, can start a header of its own.
 */
export function mimeEncodedWords(text: string, maxBytes = 39): string[] {
  const chunks: string[] = [];
  let chunk = '';
  for (const character of text) {
    if (chunk !== '' && Buffer.byteLength(chunk + character) > maxBytes) {
      chunks.push(chunk);
      chunk = '';
    }
    chunk += character;
  }
  chunks.push(chunk);
  return chunks.map((word) => `=?UTF-8?B?${Buffer.from(word, 'utf8').toString('base64')}?=`);
}

const clipLine = (text: string) => terminalSafe(text.replace(/\s+/g, ' ').slice(0, 200));

/** undici 7 expects Node 20's global File; Node 18 (Debian 12, PVE 8) has it only in node:buffer. */
async function loadUndici(): Promise<typeof import('undici')> {
  if (globalThis.File === undefined) Object.assign(globalThis, { File: (await import('node:buffer')).File });
  return import('undici');
}

/** One HTTP request with a time limit; 429 and 5xx are retried with backoff (Retry-After honoured, at most 30 s). */
export async function httpSend(request: HttpRequest): Promise<HttpResponse> {
  const { request: send } = await loadUndici();
  const timeoutMs = request.timeoutMs ?? 10_000;
  const attempts = request.attempts ?? 3;
  for (let attempt = 1; ; attempt++) {
    let status: number;
    let body: string;
    let retryAfter: string | string[] | undefined;
    const deadline = AbortSignal.timeout(timeoutMs);
    try {
      const response = await send(request.url, {
        method: request.method ?? 'POST',
        headers: request.headers,
        body: request.body,
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs,
        signal: deadline,
      });
      status = response.statusCode;
      body = await response.body.text();
      retryAfter = response.headers['retry-after'];
    } catch (error) {
      const code = String(errnoOf(error) ?? (error as Error).name);
      const timedOut = deadline.aborted || code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT';
      const why = timedOut ? `no answer within ${timeoutMs} ms` : `${code}: ${(error as Error).message}`;
      throw new Error(`${new URL(request.url).host}: ${terminalSafe(why)}`);
    }
    if (status < 400) return { status, body };
    if ((status === 429 || status >= 500) && attempt < attempts) {
      const seconds = Number(Array.isArray(retryAfter) ? retryAfter[0] : retryAfter);
      const delay =
        Number.isFinite(seconds) && seconds >= 0 ? Math.min(seconds * 1000, 30_000) : 500 * 2 ** (attempt - 1);
      await new Promise((resolve) => setTimeout(resolve, delay));
      continue;
    }
    throw new Error(`HTTP ${status}${attempt > 1 ? ` after ${attempt} attempts` : ''}: ${serviceMessage(body)}`);
  }
}

// --- Deciding to notify, and notifying ------------------------------------------------------

export type NotifyMode = 'always' | 'problems' | 'change';

/** What a notification is about: the grade, the problem entries and the warnings. */
export function resultFingerprint(result: Result): string {
  const where = (entry: Classified) => (entry.node === undefined ? entry.name : `${entry.node}:${entry.name}`);
  const problems = result.entries.filter(isProblem).map((entry) => `${where(entry)} ${entry.status} ${entry.reason}`);
  return createHash('sha256')
    .update(
      JSON.stringify([
        result.node,
        result.grade,
        problems.sort(),
        result.warnings.map(formatWarning).sort(),
        ...(result.cluster === null ? [] : [clusterLines(result)]),
      ]),
    )
    .digest('hex');
}

/** Whether to notify, and the state to keep if the notifications go out (for `change`). */
export function shouldNotify(
  mode: NotifyMode,
  result: Result,
  stateFile: string,
): { send: boolean; fingerprint: string } {
  const fingerprint = resultFingerprint(result);
  if (mode === 'always') return { send: true, fingerprint };
  if (mode === 'problems') return { send: severityOf(result) !== 'ok', fingerprint };
  let last: string | null = null;
  try {
    last = (JSON.parse(readFileSync(stateFile, 'utf8')) as { fingerprint?: string }).fingerprint ?? null;
  } catch {
    // no state yet (or unreadable): this run is a change
  }
  return { send: last !== fingerprint, fingerprint };
}

export async function saveNotifyState(stateFile: string, fingerprint: string, at: string): Promise<void> {
  await mkdir(path.dirname(stateFile), { recursive: true });
  await writeAtomically(stateFile, `${JSON.stringify({ fingerprint, at })}\n`);
}

/** A notifier with its settings; one whose `configured` throws counts as configured, so its error is reported. */
export function isActiveNotifier(plugin: Plugin, setting: (key: string) => string | undefined): boolean {
  if (!plugin.notify) return false;
  try {
    return plugin.configured?.(setting) ?? true;
  } catch {
    return true;
  }
}

/** A notifier's context for this result: the services and the checks, over the settings' secrets. */
export function notifyContext(services: NotifyServices, result: Pick<Result, 'exitCode' | 'cluster'>): NotifyContext {
  const { setting } = services;
  const secrets = (setting as Partial<Settings>).secrets ?? [];
  return {
    ...services,
    severity: severityOf(result),
    headline: clusterHeadline(result),
    urlSetting: (key, example, fallback) => {
      const value = setting(key)?.trim() || fallback;
      if (value === undefined) throw new Error(`${key} is not set (expected e.g. ${example})`);
      return settingUrl(key, value, example);
    },
    headerSetting: (key) => {
      const value = setting(key);
      return value === undefined ? undefined : headerSecret(key, value);
    },
    redact: (text, more = []) => redactSecrets(text, [...secrets, ...more]),
    serviceMessage,
    encodedWords: mimeEncodedWords,
    terminalSafe,
    dmName: shownName,
    guestLabel,
    meaning: (reason) => (REASONS as Record<string, readonly [string, string]>)[reason]?.[1] ?? '',
  };
}

/** Every configured notifier, each with a time limit; one failing never stops the others. */
export async function notifyAll(
  plugins: readonly Plugin[],
  result: Result,
  reports: NotifyReports,
  services: NotifyServices,
  limitMs = 120_000,
): Promise<Notification[]> {
  const context = notifyContext(services, result);
  const secrets = (context.setting as Partial<Settings>).secrets ?? [];
  return Promise.all(
    plugins
      .filter((plugin) => isActiveNotifier(plugin, context.setting))
      .map(async (plugin): Promise<Notification> => {
        let timer: NodeJS.Timeout | undefined;
        try {
          plugin.configured?.(context.setting);
        } catch (error) {
          return {
            plugin: plugin.name,
            ok: false,
            detail: redactSecrets(new PluginError(plugin.name, 'configured', error).message, secrets),
          };
        }
        try {
          const detail = await Promise.race([
            (plugin.notify as NonNullable<Plugin['notify']>)(result, reports, context),
            new Promise<never>((_, reject) => {
              timer = setTimeout(() => reject(new Error(`no result within ${limitMs / 1000} s`)), limitMs);
            }),
          ]);
          return { plugin: plugin.name, ok: true, detail: redactSecrets(detail || 'sent', secrets) };
        } catch (error) {
          return {
            plugin: plugin.name,
            ok: false,
            detail: redactSecrets(new PluginError(plugin.name, 'notify', error).message, secrets),
          };
        } finally {
          clearTimeout(timer);
        }
      }),
  );
}

// ============================================================================================
// The one command runner: argument arrays, never a shell; a time limit on every command;
// commands that change the system are refused unless the run allows changes.
// ============================================================================================

export interface CommandResult {
  exitCode: number;
  stdout: string;
  stderr: string;
  /** A dry run's answer: the command was not run. */
  dryRun?: true;
  /** Stopped at its time limit: what it did is not known until the system is looked at again. */
  timedOut?: true;
}

export interface CommandOptions {
  /** The command changes the system (removes a mapping, deactivates an LV...). */
  mutates?: boolean;
  timeoutMs?: number;
  /** Written to the command's standard input (how secrets and messages travel: never as arguments). */
  input?: string;
  /** For a cleanup action or a rescan: the journal lines appended (and fsynced) before the command runs. */
  journal?: { file: string; records: readonly JournalLine[] };
}

export type Runner = (command: string, args: readonly string[], options?: CommandOptions) => Promise<CommandResult>;

/** Runs one process: what the runner delegates to (tests give a fake node's commands). */
export type Exec = (
  command: string,
  args: readonly string[],
  options: { timeoutMs: number; input?: string; graceMs?: number },
) => Promise<CommandResult>;

/** How long a command stopped at its time limit (SIGTERM) has to go before SIGKILL, and then before it is left. */
export const KILL_GRACE_MS = 5_000;

export const execProcess: Exec = (command, args, { timeoutMs, input, graceMs = KILL_GRACE_MS }) =>
  new Promise((resolve) => {
    let stopped: string | null = null;
    let done = false;
    const child = execFile(
      command,
      args,
      { maxBuffer: LIMITS.commandOutputBytes, encoding: 'utf8', env: { ...process.env, LC_ALL: 'C' } },
      (error, stdout, stderr) => finish(error, stdout, stderr),
    );
    // Its output ends where it does, even when a process it left behind keeps the pipes open.
    const letGo = () => [child.stdout, child.stderr].forEach((stream) => stream?.destroy());
    // At its time limit SIGTERM (LVM finishes what it must first), then SIGKILL; one that outlives
    // even that (a process stuck in the kernel) is left running and said so: the caller goes on.
    const stop = (signal: NodeJS.Signals, why: string) => {
      stopped = `${stopped ?? ''}${why}`;
      child.kill(signal);
    };
    const timers = [
      setTimeout(() => stop('SIGTERM', `timed out after ${timeoutMs} ms`), timeoutMs),
      setTimeout(() => stop('SIGKILL', ', then killed'), timeoutMs + graceMs),
      setTimeout(
        () => {
          stopped = `${stopped ?? ''}; still running as pid ${child.pid} after SIGKILL`;
          child.unref();
          finish(null, '', '');
          letGo();
        },
        timeoutMs + 2 * graceMs,
      ),
    ];
    child.on('exit', () => {
      timers.forEach(clearTimeout);
      timers.push(setTimeout(letGo, graceMs));
    });
    const finish = (error: Error | null, stdout: string, stderr: string) => {
      if (done) return;
      done = true;
      timers.forEach(clearTimeout);
      resolve(commandResult(error, stdout, stderr, stopped));
    };
    child.stdin?.on('error', () => undefined);
    child.stdin?.end(input);
  });

/** What execFile's callback says, as a shell would report it; `stopped`: why it was stopped at its time limit. */
function commandResult(error: Error | null, stdout: string, stderr: string, stopped: string | null): CommandResult {
  const failure = error as (NodeJS.ErrnoException & { code?: unknown; signal?: NodeJS.Signals | null }) | null;
  // 128 + the signal for a process killed (at its time limit), 127 for one that could not start.
  const signalled = failure?.signal ? 128 + (os.constants.signals[failure.signal] ?? 0) : null;
  const exitCode = failure === null ? 0 : typeof failure.code === 'number' ? failure.code : (signalled ?? 127);
  const why =
    stopped ??
    (failure?.code === 'ERR_CHILD_PROCESS_STDIO_MAXBUFFER'
      ? `printed more than ${humanBytes(LIMITS.commandOutputBytes)}, more than any node's; stopped`
      : typeof failure?.code === 'string'
        ? failure.message
        : '');
  const result = { exitCode, stdout, stderr: why ? `${stderr}${why}` : stderr };
  return stopped === null ? result : { ...result, exitCode: exitCode || 124, timedOut: true };
}

/**
 * The runner of a run: under `dryRun` a command that changes the system is not run, not journalled,
 * and answers `dryRun: true`; without `allowChanges` (--report-only) it is refused.
 */
export function createRunner({
  allowChanges,
  dryRun = false,
  exec = execProcess,
}: {
  allowChanges: boolean;
  dryRun?: boolean;
  exec?: Exec;
}): Runner {
  return async (command, args, { mutates = false, timeoutMs = 30_000, input, journal } = {}) => {
    if (mutates && dryRun) return { exitCode: 0, stdout: '', stderr: '', dryRun: true };
    if (mutates && !allowChanges)
      throw new UserError(`refused to run "${shellLine([command, ...args])}": this run may not change the system`);
    if (journal !== undefined) for (const record of journal.records) appendJournal(journal.file, record);
    return exec(command, args, { timeoutMs, input });
  };
}

// ============================================================================================
// Cluster: the nodes' results side by side, and what only the cluster shows — a shared LV active
// on several nodes at once (the Proxmox bug 4997 pattern), a guest's disk active off its node.
// ============================================================================================

export interface NodeRun {
  capture: Capture;
  result: Result;
}

export type ClusterFindingKind = 'active-on-several-nodes' | 'active-off-home-node';

export interface ClusterFinding {
  kind: ClusterFindingKind;
  severity: 'critical' | 'warning';
  vg: string;
  lv: string;
  vmid: number;
  guestType: GuestType | null;
  /** The node whose config holds the guest; null when no config does. */
  home: string | null;
  /** The guest runs on its node (null: that node was not analysed). */
  running: boolean | null;
  lock: string | null;
  /**
   * Each node's activation; `staleTable`: its kernel table is not what LVM's metadata says (a
   * stale-table conflict there), false: it is, null: that node's capture could not tell.
   */
  activeOn: { node: string; name: string; remedy: string | null; staleTable: boolean | null }[];
  /** What is wrong, in a line: `san01/vm-300-disk-0 is active on pve1 and pve2 while VM 300 runs on pve2`. */
  summary: string;
  /** The summary, then what to do. */
  message: string;
}

export interface ClusterView {
  /** Each node's own result; its entries, duplicate sets and warnings carry their `node`. */
  nodes: Result[];
  /** What only the cluster shows: a volume active where it must not be. */
  findings: ClusterFinding[];
  /** Nodes that could not be analysed, and why. */
  unreachable: { node: string; error: string }[];
}

/** A cluster run's result: every node's entries, guests and warnings in one Result, and the cluster's view. */
export type ClusterResult = Result & { cluster: ClusterView };

// --- A node's capture over ssh: `pve-dm capture -` prints it as one JSON document ---------------

const CAPTURE_FORMAT = 1;

export const captureToJson = (capture: Capture) =>
  `${JSON.stringify({ pveDmCapture: CAPTURE_FORMAT, ...capture, root: null })}\n`;

/** A capture another node sent, checked field by field: what arrives is data, never trusted. */
export function captureFromJson(text: string, source: string): Capture {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new UserError(`${source}: not a pve-dm capture (not JSON; it began ${clip(text.slice(0, 60))})`);
  }
  if (!isRecord(value) || value.pveDmCapture !== CAPTURE_FORMAT)
    throw new UserError(
      `${source}: not a pve-dm capture of format ${CAPTURE_FORMAT} (an older or newer pve-dm there?)`,
    );
  const wrong: string[] = [];
  const record = value;
  const requiredText = (key: string) => {
    if (isText(record[key])) return record[key];
    wrong.push(key);
    return '';
  };
  const textOrNull = (key: string) => (record[key] === null ? null : requiredText(key));
  if (!Array.isArray(value.configs)) wrong.push('configs');
  const configs = Array.isArray(value.configs)
    ? value.configs.flatMap((config, index): ConfigFile[] => {
        const fine =
          isRecord(config) &&
          typeof config.node === 'string' &&
          NODE_NAME_RE.test(config.node) &&
          (config.type === 'qemu' || config.type === 'lxc') &&
          typeof config.vmid === 'number' &&
          CONFIG_FILE_RE.test(`${config.vmid}.conf`) &&
          (config.text === null || isText(config.text)) &&
          config.path === `${CAPTURE_FILES.nodes}/${config.node}/${GUEST_DIRS[config.type]}/${config.vmid}.conf`;
        if (!fine) wrong.push(`configs[${index}]`);
        return fine
          ? [
              {
                path: config.path as string,
                node: config.node as string,
                type: config.type as GuestType,
                vmid: config.vmid as number,
                text: config.text as string | null,
                ...(isText(config.readError) ? { readError: config.readError } : {}),
              },
            ]
          : [];
      })
    : [];
  const warnings = Array.isArray(value.warnings)
    ? value.warnings.filter(
        (w): w is Warning =>
          isRecord(w) && isText(w.source) && isText(w.message) && (w.line === null || isCount(w.line)),
      )
    : [];
  const capture: Capture = {
    hostname: requiredText('hostname'),
    dmsetupInfo: requiredText('dmsetupInfo'),
    dmsetupTable: textOrNull('dmsetupTable'),
    lvs: textOrNull('lvs'),
    // A node running an older pve-dm sends none: not known.
    poolStatus: record.poolStatus === undefined ? null : textOrNull('poolStatus'),
    lvsSegments: record.lvsSegments === undefined ? null : textOrNull('lvsSegments'),
    pvs: record.pvs === undefined ? null : textOrNull('pvs'),
    zvols: record.zvols === undefined ? null : textOrNull('zvols'),
    running: textOrNull('running'),
    system: value.system === null ? null : systemFactsFrom(value.system, wrong),
    meta: value.meta === null ? null : captureMetaFrom(value.meta, wrong),
    storageCfg: requiredText('storageCfg'),
    configs,
    root: null,
    warnings,
  };
  if (capture.hostname !== '' && !NODE_NAME_RE.test(capture.hostname)) wrong.push('hostname');
  if (wrong.length > 0)
    throw new UserError(`${source}: not a usable pve-dm capture (wrong or missing: ${wrong.slice(0, 5).join(', ')})`);
  return capture;
}

export interface ClusterMember {
  name: string;
  ip: string | null;
  /** As pmxcfs last saw it; null when not known. */
  online: boolean | null;
}

/**
 * The cluster's nodes: `/etc/pve/.members` (pmxcfs: `{"nodename", "nodelist": {name: {id, online, ip}}}`),
 * else the folders of `/etc/pve/nodes`.
 */
export async function clusterMembers(liveRoot: string): Promise<ClusterMember[]> {
  const text = await readOptional(path.join(liveRoot, 'etc/pve/.members')).catch(() => null);
  let list: unknown = null;
  try {
    list = text === null ? null : (JSON.parse(text) as { nodelist?: unknown }).nodelist;
  } catch {
    list = null;
  }
  if (isRecord(list)) {
    return Object.entries(list)
      .filter(([name]) => NODE_NAME_RE.test(name))
      .map(([name, node]) => ({
        name,
        ip: isRecord(node) && typeof node.ip === 'string' && /^[0-9a-fA-F.:]+$/.test(node.ip) ? node.ip : null,
        online: isRecord(node) && typeof node.online === 'number' ? node.online === 1 : null,
      }))
      .sort((a, b) => a.name.localeCompare(b.name));
  }
  return readdirSafe(path.join(liveRoot, CAPTURE_FILES.nodes))
    .filter((name) => NODE_NAME_RE.test(name))
    .sort()
    .map((name) => ({ name, ip: null, online: null }));
}

/**
 * The shell command (ssh runs one on the other side) that starts this same pve-dm there, as this
 * process was started: the same node binary, its flags (`--import tsx`) and script, from the
 * script's folder. Every word is quoted.
 */
export function remoteCaptureCommand(
  script = process.argv[1] ?? '',
  execArgv = process.execArgv,
  nodeBinary = process.execPath,
): string {
  return (
    `cd ${shellQuote(path.dirname(script))} && ` +
    `exec ${shellLine([nodeBinary, ...execArgv, script, 'capture', '-'])}`
  );
}

export const SSH_CONNECT_TIMEOUT_S = 10;

/**
 * Another node's capture, over the ssh trust Proxmox sets up between its nodes
 * (as PVE::SSHInfo connects: by IP, the node name as host key alias).
 */
export async function fetchRemoteCapture(
  runner: Runner,
  member: ClusterMember,
  command: string,
  timeoutMs: number,
): Promise<Capture> {
  const target = `root@${member.ip ?? member.name}`;
  const result = await runner(
    'ssh',
    [
      '-e',
      'none',
      '-o',
      'BatchMode=yes',
      '-o',
      `ConnectTimeout=${SSH_CONNECT_TIMEOUT_S}`,
      '-o',
      `HostKeyAlias=${member.name}`,
      target,
      command,
    ],
    { timeoutMs },
  );
  if (result.exitCode !== 0)
    throw new UserError(
      `ssh ${target} failed ` +
        `(exit ${result.exitCode}): ${result.stderr.trim().split('\n').slice(-1)[0] || 'no message'}`,
    );
  const capture = captureFromJson(result.stdout, `node ${member.name}`);
  if (capture.hostname !== member.name)
    throw new UserError(`node ${member.name}: answered as ${clip(capture.hostname)}`);
  return capture;
}

const GRADE_ORDER: readonly GradeLetter[] = ['A+', 'B', 'C', 'D', 'F'];

/** A guest volume's activations across the cluster (local VGs: one node's). */
interface Activation {
  vg: string;
  lv: string;
  vmid: number;
  type: GuestType | null;
  lock: string | null;
  on: ClusterFinding['activeOn'];
}

/** What a volume's activations show, if anything; while its guest holds a lock, nothing of it is to be touched. */
function clusterFinding(volume: Activation, home: string | null, running: boolean | null): ClusterFinding | null {
  const { vg, lv, vmid, type, lock, on } = volume;
  const label = guestLabel(vmid, type);
  const nodes = on.map((a) => a.node);
  const where = `${vg}/${lv} is active on ${nodes.join(' and ')}`;
  const then = (act: string) => (lock === null ? act : `once ${label}'s operation has ended (lock: ${lock}), ${act}`);
  const found = (kind: ClusterFindingKind, severity: Severity, summary: string, advice: string | null) => ({
    kind,
    severity: severity as ClusterFinding['severity'],
    ...{ vg, lv, vmid, guestType: type, home, running, lock, activeOn: on },
    summary,
    message: advice === null ? summary : `${summary}: ${advice}`,
  });
  const several = 'active-on-several-nodes';
  // Different tables on the nodes: the guest reads and writes other blocks wherever it runs on a stale one.
  const stale = on.filter((a) => a.staleTable === true).map((a) => a.node);
  if (on.length > 1 && stale.length > 0) {
    const which = stale.length === 1 ? `${stale[0]}'s table is` : `the tables of ${stale.join(' and ')} are`;
    const act = then('deactivate it where the guest does not run, refresh it where it must stay');
    const harm = `if ${label} runs there it writes other blocks than LVM's metadata says; ${act}`;
    return found(several, 'critical', `${where} with different tables: ${which} not LVM's`, harm);
  }
  if (on.length > 1 && lock === 'migrate') {
    const advice = 'expected during a migration; look again once it has ended';
    return found(several, 'warning', `${where} while ${label} migrates (lock: migrate)`, advice);
  }
  if (on.length > 1 && running === true) {
    const act = then('deactivate it where the guest does not run');
    const harm = `two nodes writing one LV corrupt it (Proxmox bug 4997); ${act}`;
    return found(several, 'critical', `${where} while ${label} runs on ${home}`, harm);
  }
  if (on.length > 1) {
    const guest = home === null ? `${label} has no config on any node` : `${label} lives on ${home} and is not running`;
    return found(several, 'warning', `${where}; ${guest}`, then('deactivate it where the guest does not live'));
  }
  if (home === null || nodes.includes(home)) return null;
  const summary =
    `${vg}/${lv} of ${label} (it lives on ${home}) is active on ${nodes.join(', ')}, ` +
    `where the guest does not live`;
  return found('active-off-home-node', 'warning', summary, null);
}

/**
 * What a cluster's outputs say first: its worst finding that can corrupt data, named, and how many
 * more there are (`CRITICAL: san01/vm-300-disk-0 is active on pve1 and pve2 while VM 300 runs on
 * pve2`); null when no finding is critical.
 */
export function clusterHeadline(result: Pick<Result, 'cluster'>): string | null {
  const worst = worstFinding(result);
  return worst === null ? null : `CRITICAL: ${worst}`;
}

/** The first critical cluster finding's summary, and how many more there are; null when none is critical. */
function worstFinding(result: Pick<Result, 'cluster'>): string | null {
  const critical = (result.cluster?.findings ?? []).filter((finding) => finding.severity === 'critical');
  const [worst] = critical;
  if (worst === undefined) return null;
  return `${worst.summary}${critical.length > 1 ? ` (and ${critical.length - 1} more)` : ''}`;
}

export function analyseCluster(
  runs: readonly NodeRun[],
  unreachable: ClusterView['unreachable'],
  generatedAt: string,
): ClusterResult {
  const findings = clusterFindings(runs);
  const nodes = runs.map(({ result }) => onNode(result));
  const critical = findings.some((finding) => finding.severity === 'critical');
  const worst = nodes.reduce(
    (letter, result) => (GRADE_ORDER.indexOf(result.grade) > GRADE_ORDER.indexOf(letter) ? result.grade : letter),
    'A+' as GradeLetter,
  );
  const exitCode = Math.max(
    ...nodes.map((result) => result.exitCode),
    critical ? 2 : findings.length > 0 || unreachable.length > 0 ? 1 : 0,
  ) as Graded['exitCode'];
  const graded = { grade: critical ? 'F' : worst, summary: clusterSummary(nodes), exitCode } as Graded;
  return { ...clusterAsResult(nodes, graded, generatedAt), cluster: { nodes, findings, unreachable } };
}

/** What the nodes' activations of guest volumes show together, the critical first. */
function clusterFindings(runs: readonly NodeRun[]): ClusterFinding[] {
  // /etc/pve is the cluster's: any capture's storage.cfg and configs say where guests live.
  const sharedVgs = new Set(
    runs.flatMap(({ capture }) =>
      parseStorageCfg(capture.storageCfg)
        .storages.filter((s) => s.type === 'lvm' && s.shared && s.vg !== null)
        .map((s) => s.vg as string),
    ),
  );
  const homeOf = new Map<number, string>();
  for (const { capture } of runs)
    for (const config of capture.configs) if (!homeOf.has(config.vmid)) homeOf.set(config.vmid, config.node);
  const guestOn = new Map(
    runs.flatMap(({ result }) => result.guests.map((guest) => [`${result.node}/${guest.vmid}`, guest] as const)),
  );

  // Every activation of a guest's LV (not hand-made copies), by volume; local VGs are per node.
  const activations = new Map<string, Activation>();
  for (const { result, capture } of runs) {
    const checked = capture.lvsSegments != null && capture.pvs != null && capture.dmsetupTable !== null;
    for (const entry of result.entries) {
      // A guest volume's own activation: judged, or not judged while its guest's operation runs.
      const activation = entry.status !== 'duplicate' && (entry.status !== 'ignored' || entry.reason === 'in-flight');
      if (
        entry.vg === null ||
        entry.lv === null ||
        entry.vmid === null ||
        entry.kind === null ||
        !entry.uuid.startsWith('LVM-') ||
        !activation
      )
        continue;
      const key = sharedVgs.has(entry.vg) ? lvKey(entry.vg, entry.lv) : `${result.node}:${lvKey(entry.vg, entry.lv)}`;
      const volume = activations.get(key) ?? {
        vg: entry.vg,
        lv: entry.lv,
        vmid: entry.vmid,
        type: entry.guestType,
        lock: entry.lock,
        on: [],
      };
      const staleTable = entry.reason === 'stale-table' ? true : checked ? false : null;
      volume.on.push({ node: result.node, name: entry.name, remedy: entry.remedy, staleTable });
      activations.set(key, volume);
    }
  }
  const findings: ClusterFinding[] = [];
  for (const volume of activations.values()) {
    const home = homeOf.get(volume.vmid) ?? null;
    const running = home === null ? null : (guestOn.get(`${home}/${volume.vmid}`)?.running ?? null);
    const finding = clusterFinding(volume, home, running);
    if (finding !== null) findings.push(finding);
  }
  return findings.sort((a, b) =>
    a.severity === b.severity ? lvKey(a.vg, a.lv).localeCompare(lvKey(b.vg, b.lv)) : a.severity === 'critical' ? -1 : 1,
  );
}

/** A node's result with its node on every entry, duplicate set, missing guest, guest and warning. */
function onNode(result: Result): Result {
  const node = result.node;
  return {
    ...result,
    entries: result.entries.map((entry) => ({ ...entry, node })),
    duplicates: result.duplicates.map((set) => ({ ...set, node })),
    missingGuests: result.missingGuests.map((missing) => ({ ...missing, node })),
    guests: result.guests.map((guest) => ({ ...guest, node })),
    warnings: result.warnings.map((w) => ({ ...w, node })),
  };
}

/** The nodes' counts added up; an orphan LV of a shared VG is one LV, however many nodes see it. */
function clusterSummary(results: readonly Result[]): Summary {
  const summary: Summary = {
    entries: 0,
    valid: 0,
    conflict: 0,
    duplicate: 0,
    tombstone: 0,
    ignored: 0,
    unjudged: 0,
    orphanLvs: 0,
    poolProblems: 0,
  };
  for (const result of results)
    for (const key of Object.keys(summary) as (keyof Summary)[]) summary[key] += result.summary[key];
  return { ...summary, orphanLvs: clusterOrphans(results).length };
}

// --- Reporting a cluster -----------------------------------------------------------------------

export function clusterToJson(result: ClusterResult) {
  const { nodes, findings, unreachable } = result.cluster;
  return {
    version: 1,
    tool: { name: 'pve-dm', version: VERSION },
    generatedAt: result.generatedAt,
    cluster: {
      // What can corrupt data, named (null when nothing can): what every other output says first.
      headline: clusterHeadline(result),
      nodes: nodes.map((node) => node.node),
      grade: result.grade,
      exitCode: result.exitCode,
      summary: result.summary,
      findings,
      unreachable,
    },
    nodes: nodes.map(toJson),
    notifications: result.notifications,
  };
}

/** Every node's orphan LVs: one of a shared VG once (every node sees it), one of a node's own VG with its node. */
function clusterOrphans(nodes: readonly Result[]): OrphanLv[] {
  const seen = new Set<string>();
  return nodes.flatMap((result) =>
    result.orphanLvs.flatMap((orphan) => {
      if (!orphan.shared) return [{ ...orphan, blocks: `on ${result.node}: ${orphan.blocks}` }];
      const key = lvKey(orphan.vg, orphan.lv);
      if (seen.has(key)) return [];
      seen.add(key);
      return [orphan];
    }),
  );
}

/**
 * The nodes as one Result: every node's entries, guests and warnings (each with its node), its
 * thin pools and VGs, its orphan LVs (a shared VG's once), the cluster's grade. The HTML page, the
 * notifiers and the monitoring formats take it as they take a node's, and read `cluster` for what
 * only the cluster shows.
 */
function clusterAsResult(nodes: Result[], graded: Graded, generatedAt: string): Result {
  return {
    node: nodes.map((result) => result.node).join(', ') || 'cluster',
    entries: nodes.flatMap((result) => result.entries),
    orphanLvs: clusterOrphans(nodes),
    // A thin pool is a node's own; a partial VG is what one node sees.
    pools: nodes.flatMap((result) =>
      result.pools.map((pool) => ({ ...pool, node: result.node, message: `on ${result.node}: ${pool.message}` })),
    ),
    volumeGroups: nodes.flatMap((result) =>
      result.volumeGroups.map((vg) => ({ ...vg, node: result.node, message: `on ${result.node}: ${vg.message}` })),
    ),
    duplicates: nodes.flatMap((result) => result.duplicates),
    guests: nodes.flatMap((result) => result.guests),
    missingGuests: nodes.flatMap((result) => result.missingGuests),
    system: null,
    meta: null,
    root: null,
    warnings: nodes.flatMap((result) => result.warnings),
    // /etc/pve is the cluster's: every node notes the same storage plugins.
    notes: nodes[0]?.notes ?? [],
    ...graded,
    generatedAt,
    vmids: nodes[0]?.vmids ?? null,
    notifications: [],
    cleanup: null,
    cluster: null,
  };
}

/**
 * A cluster on the console: what can corrupt data first, then a line per node, the cluster's
 * findings with the remedy on each node, and each node's own report.
 */
export function renderClusterConsole(result: ClusterResult, color: boolean): string {
  const { cluster } = result;
  const paint = painter(color);
  const headline = clusterHeadline(result);
  const out: string[] = headline === null ? [] : [paint('red', terminalSafe(headline)), ''];
  out.push(
    paint('bold', `Cluster of ${cluster.nodes.length + cluster.unreachable.length} nodes: grade ${result.grade}`),
  );
  const s = result.summary;
  const unjudged = s.unjudged > 0 ? `, ${s.unjudged} not judged` : '';
  out.push(
    `  ${s.entries} dm entries on ${cluster.nodes.map((node) => terminalSafe(node.node)).join(', ')}: ` +
      `${s.valid} valid, ${s.duplicate} duplicate, ${s.tombstone} tombstone, ${s.ignored} ignored${unjudged}`,
  );
  const pools = {
    pools: cluster.nodes.flatMap((node) => node.pools),
    volumeGroups: cluster.nodes.flatMap((node) => node.volumeGroups),
  };
  if (s.poolProblems > 0) {
    const where = cluster.nodes.filter((node) => node.summary.poolProblems > 0).map((node) => node.node);
    out.push(
      paint(poolStyle(pools), `  Thin pools and VGs: ${poolCounts(pools)} (on ${terminalSafe(where.join(', '))})`),
    );
  }
  const rows = table(['NODE', 'GRADE', 'ENTRIES', 'DUPLICATES', 'TOMBSTONES', 'STATE'], clusterNodeRows(cluster));
  out.push('', ...rows.map((row) => `  ${row}`));
  out.push(
    '',
    paint('bold', `Cluster findings: ${cluster.findings.length}`),
    ...consoleClusterFindings(cluster, paint),
  );
  // Each node's report is wrapped already: wrapping it again would break a command it kept whole.
  const nodes = cluster.nodes.map((node) => `\n${renderConsole(node, color)}`).join('');
  return `${wrapConsole(`${out.join('\n')}\n`)}${nodes}`;
}

/** A row per node for a cluster's table: its grade and counts, or why it was not analysed. */
function clusterNodeRows(cluster: ClusterView): string[][] {
  const analysed = cluster.nodes.map((node) => {
    const s = node.summary;
    const state = node.exitCode === 0 ? 'ok' : node.exitCode === 1 ? 'warning' : 'critical';
    return [node.node, node.grade, String(s.entries), String(s.duplicate), String(s.tombstone), state];
  });
  const missing = cluster.unreachable.map(({ node, error }) => [node, '-', '-', '-', '-', `not analysed: ${error}`]);
  return [...analysed, ...missing].map((row) => row.map(terminalSafe));
}

/** A cluster's findings on the console, each with the remedy on each node that has one. */
function consoleClusterFindings(cluster: ClusterView, paint: ReturnType<typeof painter>): string[] {
  if (cluster.findings.length === 0) return ['  No volume is active where it should not be.'];
  return cluster.findings.flatMap((finding) => [
    `  ${paint(finding.severity === 'critical' ? 'red' : 'yellow', finding.severity.toUpperCase())} ` +
      ` ${terminalSafe(finding.message)}`,
    ...finding.activeOn.flatMap((activation) =>
      activation.remedy === null
        ? []
        : [`           on ${terminalSafe(activation.node)}: ${whole(terminalSafe(activation.remedy))}`],
    ),
  ]);
}

// ============================================================================================
// The command line: one table for parsing, --help, and the package's man page and completion;
// main's steps (setup, analyse, act, render), one function each.
// ============================================================================================

/** A command-line option. parseCli, `--help` and the Debian package's man page and bash completion read this table. */
export interface CliOption {
  name: string;
  short?: string;
  /** The value's name in the usage (DIR, FILE, N...); a flag has none. */
  arg?: string;
  multiple?: boolean;
  help: string;
  /** The values it takes (completion). */
  values?: readonly string[];
  complete?: 'file' | 'dir';
  /** Accepted, not listed: a second spelling. */
  hidden?: boolean;
  /** Options it does not go with, each with the line that says why (checked for every pair, in table order). */
  excludes?: Readonly<Record<string, string>>;
  /** The one command it goes with (an option of that command alone). */
  command?: string;
}

const NOT_ON_A_CAPTURE = 'cleanup acts on this node; --root analyses a capture (leave out --yes and --dry-run)';
const NOT_ON_A_CLUSTER = 'cleanup acts on one node: run it there (leave out --yes and --dry-run with --cluster)';

export const CLI_COMMANDS: readonly { name: string; usage: string; help: string }[] = [
  {
    name: 'capture',
    usage: 'capture DIR',
    help: "write this node's state to DIR (-: as JSON on stdout), for a bug report or an analysis elsewhere",
  },
  {
    name: 'plugins',
    usage: 'plugins',
    help: 'list the plugins loaded, their hooks and whether each notifier is configured',
  },
  { name: 'journal', usage: 'journal', help: 'list what cleanup removed' },
  {
    name: 'restore',
    usage: 'restore --last | ID...',
    help: 'bring back what the last cleanup run (or those journal entries) removed',
  },
  {
    name: 'guard',
    usage: 'guard VMID PHASE',
    help: "a guest's hookscript: at pre-start, refuse the start while its disks have a conflict or a duplicate",
  },
];

const NOTIFY_MODES: readonly NotifyMode[] = ['always', 'problems', 'change'];
/** What goes to stdout: the console report, the JSON, or a monitoring check's output (nagios, checkmk). */
export type OutputFormat = 'console' | 'json' | 'nagios' | 'checkmk';
const OUTPUT_FORMATS: readonly OutputFormat[] = ['console', 'json', 'nagios', 'checkmk'];
const DEFAULT_KEEP_REPORTS = 30;
const ONLY_KINDS: readonly string[] = ['conflicts', 'duplicates', 'tombstones'];

export const CLI_OPTIONS: readonly CliOption[] = [
  {
    name: 'root',
    arg: 'DIR',
    multiple: true,
    complete: 'dir',
    help: 'analyse the capture in DIR instead of the live node; several: one cluster',
  },
  {
    name: 'cluster',
    help: 'analyse every node of this cluster: this one live, the others over ssh',
    excludes: { root: '--cluster analyses the live cluster, --root captures: give one or the other' },
  },
  { name: 'node-timeout', arg: 'S', help: 'with --cluster: give up on a node after S seconds (default 120)' },
  { name: 'report-only', help: 'never prompt, never change anything (cron, timers)' },
  {
    name: 'format',
    arg: 'FORMAT',
    values: OUTPUT_FORMATS,
    help:
      'what stdout carries: console (default), json, nagios (a Nagios or Icinga plugin: the exit code is its ' +
      'state) or checkmk (a Checkmk local check)',
  },
  { name: 'json', help: 'the same as --format json' },
  {
    name: 'prometheus',
    arg: 'FILE',
    complete: 'file',
    help: "also write the metrics for node_exporter's textfile collector to FILE",
  },
  {
    name: 'html',
    arg: 'FILE',
    complete: 'file',
    help: 'write the HTML report to FILE; console runs otherwise write one to the reports folder',
  },
  {
    name: 'keep-reports',
    arg: 'N',
    help: `console runs keep the newest N reports in the reports folder (default ${DEFAULT_KEEP_REPORTS})`,
  },
  { name: 'vmid', arg: 'N', multiple: true, help: 'narrow the report and the cleanup to guest N (repeatable)' },
  { name: 'no-color', help: 'no colour (NO_COLOR is honoured too)' },
  {
    name: 'yes',
    short: 'y',
    help: 'carry the cleanup out without asking: every problem that passes the safety checks',
    excludes: {
      root: NOT_ON_A_CAPTURE,
      cluster: NOT_ON_A_CLUSTER,
      'report-only': '--report-only changes nothing: it does not go with --yes or restore',
    },
  },
  {
    name: 'dry-run',
    help: 'go through the cleanup, changing nothing: show what it would run',
    excludes: { root: NOT_ON_A_CAPTURE, cluster: NOT_ON_A_CLUSTER },
  },
  { name: 'only', arg: 'KIND', values: ONLY_KINDS, help: 'cleanup: conflicts, duplicates or tombstones only' },
  {
    name: 'name',
    arg: 'DMNAME',
    multiple: true,
    help: 'cleanup: this entry only, by its kernel name or as pve-dm shows it (repeatable)',
  },
  {
    name: 'journal',
    arg: 'FILE',
    complete: 'file',
    help: 'the cleanup journal (default /var/lib/pve-dm/journal.jsonl)',
  },
  { name: 'last', help: 'with restore: every entry the last cleanup run removed' },
  {
    name: 'notify',
    arg: 'MODE',
    values: NOTIFY_MODES,
    help:
      'always, problems (default) or change: when configured notifiers send (monitoring formats send only ' +
      'with --notify)',
  },
  {
    name: 'state',
    arg: 'FILE',
    complete: 'file',
    help: 'where --notify change keeps the last result (default /var/lib/pve-dm/notify-state.json)',
  },
  { name: 'config', arg: 'FILE', complete: 'file', help: 'the settings file (default {config})' },
  {
    name: 'plugins',
    arg: 'DIR',
    complete: 'dir',
    help: 'load plugins from DIR instead of {plugins}',
    excludes: { 'no-plugins': '--plugins and --no-plugins exclude each other' },
  },
  { name: 'no-plugins', help: 'load no plugin' },
  { name: 'anonymise', command: 'capture', help: 'with capture: replace names, addresses, keys and descriptions' },
  { name: 'anonymize', command: 'capture', hidden: true, help: 'the same as --anonymise' },
  { name: 'help', short: 'h', help: 'this text' },
  { name: 'version', short: 'V', help: 'the version' },
];

const EXIT_CODES =
  'Exit codes: 0 healthy (grade A+, no warnings); 1 tombstones or warnings; 2 duplicates or grade F; ' +
  '3 could not analyse. A failed notification is reported and does not change the exit code.';

/** An option's help with this installation's folders filled in. */
export function optionHelp(option: CliOption, paths: Paths = PATHS): string {
  return option.help.replace('{config}', paths.config).replace('{plugins}', paths.plugins.join(' and '));
}

/** An option as the usage shows it: `-y, --yes`, `--root DIR`. */
export const optionLabel = (option: CliOption) =>
  `${option.short ? `-${option.short}, ` : ''}--${option.name}${option.arg ? ` ${option.arg}` : ''}`;

/** `--help`: commands and options in two columns, wrapped to 80 columns, naming pve-dm as it was run. */
export function usageText(program: string = PROGRAM, paths: Paths = PATHS): string {
  const column = (rows: [string, string][], width: number) =>
    rows.flatMap(([label, help]) => {
      const text = wrapWords(help, CONSOLE_WIDTH - width - 4);
      const first = label.length <= width ? `  ${label.padEnd(width)}  ${text[0]}` : `  ${label}`;
      const rest = label.length <= width ? text.slice(1) : text;
      return [first, ...rest.map((line) => `${' '.repeat(width + 4)}${line}`)];
    });
  const options = CLI_OPTIONS.filter((option) => !option.hidden);
  return [
    `Usage: ${program} [OPTION...]`,
    `       ${program} COMMAND [OPTION...]`,
    '',
    ...wrapWords(
      'Analyses this node (or the captures given with --root), reports, and cleans up only when asked.',
      CONSOLE_WIDTH,
    ),
    '',
    'Commands:',
    ...column(
      CLI_COMMANDS.map((command) => [command.usage, command.help]),
      22,
    ),
    '',
    'Options:',
    ...column(
      options.map((option) => [optionLabel(option), optionHelp(option, paths)]),
      17,
    ),
    '',
    ...wrapWords(EXIT_CODES, CONSOLE_WIDTH),
  ].join('\n');
}

interface CliOptions {
  command: 'analyse' | 'capture' | 'plugins' | 'journal' | 'restore' | 'guard' | 'help' | 'version';
  captureDir: string | null;
  root: string | undefined;
  /** Every --root; more than one is a cluster of captures. */
  roots: string[];
  cluster: boolean;
  nodeTimeoutMs: number;
  reportOnly: boolean;
  format: OutputFormat;
  prometheusFile: string | null;
  htmlFile: string | null;
  vmids: number[];
  color: boolean;
  anonymise: boolean;
  /** null: no notifications (a monitoring check without --notify: it runs every few minutes). */
  notify: NotifyMode | null;
  stateFile: string;
  configFile: string | null;
  /** The plugin folders, in load order; none with --no-plugins. */
  pluginDirs: string[];
  pluginsDirGiven: boolean;
  keepReports: number;
  yes: boolean;
  dryRun: boolean;
  selection: CleanupSelection;
  journal: string;
  restoreIds: string[];
  /** `guard VMID PHASE`: as Proxmox calls a hookscript. */
  guardArgs: string[];
  restoreLast: boolean;
}

const isMonitoringFormat = (format: OutputFormat) => format === 'nagios' || format === 'checkmk';

/** The format asked for, read before parseCli so that its own errors are printed in that format too. */
function formatAsked(argv: readonly string[]): OutputFormat {
  let asked = argv.includes('--json') ? 'json' : 'console';
  for (const [i, arg] of argv.entries()) {
    if (arg === '--format') asked = argv[i + 1] ?? asked;
    else if (arg.startsWith('--format=')) asked = arg.slice('--format='.length);
  }
  return OUTPUT_FORMATS.find((format) => format === asked) ?? 'console';
}

type CliValues = Record<string, string | boolean | (string | boolean)[] | undefined>;

/** The closest of `known` to a mistyped word, if any is close: "did you mean". */
function didYouMean(word: string, known: readonly string[]): string {
  const best = closest(word, [...known]);
  return distance(word, best) <= Math.max(2, Math.floor(word.length / 3)) ? `; did you mean ${best}?` : '';
}

/** parseArgs over CLI_OPTIONS; its errors as one line, with "did you mean" for a mistyped option. */
function parseArgv(argv: readonly string[]): { values: CliValues; positionals: string[] } {
  const takesValue = new Set(CLI_OPTIONS.filter((option) => option.arg).map((option) => `--${option.name}`));
  // `--vmid -5`: a negative number is the option's value (refused as such), not an unknown option.
  const args: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    const next = argv[i + 1];
    if (takesValue.has(arg) && next !== undefined && /^-\d/.test(next)) {
      args.push(`${arg}=${next}`);
      i++;
    } else args.push(arg);
  }
  const options = Object.fromEntries(
    CLI_OPTIONS.map(({ name, arg, short, multiple }) => {
      const type = arg ? ('string' as const) : ('boolean' as const);
      return [name, { type, ...(short ? { short } : {}), ...(multiple ? { multiple } : {}) }];
    }),
  );
  try {
    return util.parseArgs({ args, allowPositionals: true, options });
  } catch (error) {
    const message = (error as Error).message;
    const unknown = /^Unknown option '([^']+)'/.exec(message)?.[1];
    if (unknown === undefined) throw new UserError(`${message.split('\n')[0]} (see --help)`);
    const known = CLI_OPTIONS.map((option) => `--${option.name}`);
    throw new UserError(`unknown option ${unknown}${didYouMean(unknown.replace(/=.*/, ''), known)} (see --help)`);
  }
}

export function parseCli(argv: string[], env: NodeJS.ProcessEnv = process.env, isTty = false): CliOptions {
  const { values, positionals } = parseArgv(argv);
  const text = (name: string) => values[name] as string | undefined;
  const list = (name: string) => (values[name] as string[] | undefined) ?? [];
  const flag = (name: string) => values[name] === true;
  const vmids = list('vmid').map((vmid) => {
    if (!/^[1-9][0-9]{2,8}$/.test(vmid)) throw new UserError(`--vmid ${vmid}: not a VMID (100 to 999999999)`);
    return Number(vmid);
  });
  const notify = (text('notify') ?? 'problems') as NotifyMode;
  if (!NOTIFY_MODES.includes(notify)) throw new UserError(`--notify ${notify}: use always, problems or change`);
  const format = (text('format') ?? (flag('json') ? 'json' : 'console')) as OutputFormat;
  if (!OUTPUT_FORMATS.includes(format)) throw new UserError(`--format ${format}: use ${OUTPUT_FORMATS.join(', ')}`);
  if (flag('json') && format !== 'json')
    throw new UserError(`--json is --format json: it does not go with --format ${format}`);
  const [command, ...rest] = positionals;
  const commands = CLI_COMMANDS.map((known) => known.name);
  if (command !== undefined && !commands.includes(command))
    throw new UserError(`unknown command "${command}"${didYouMean(command, commands)} (see --help)`);
  checkCombinations(values, command, rest, format);
  const nodeTimeout = Number(text('node-timeout') ?? '120');
  if (!(nodeTimeout > 0 && nodeTimeout <= 3600))
    throw new UserError(`--node-timeout ${text('node-timeout')}: seconds, 1 to 3600`);
  const keepReports = text('keep-reports') ?? String(DEFAULT_KEEP_REPORTS);
  if (!/^(?:0|[1-9][0-9]{0,5})$/.test(keepReports))
    throw new UserError(`--keep-reports ${keepReports}: a number of reports, 0 to 999999`);
  const only = text('only');
  if (only !== undefined && !ONLY_KINDS.includes(only))
    throw new UserError(`--only ${only}: use conflicts, duplicates or tombstones`);
  const roots = list('root');
  return {
    command: flag('help')
      ? 'help'
      : flag('version')
        ? 'version'
        : ((command as CliOptions['command'] | undefined) ?? 'analyse'),
    captureDir: command === 'capture' ? (rest[0] ?? null) : null,
    root: roots.length === 1 ? roots[0] : undefined,
    roots,
    cluster: flag('cluster'),
    nodeTimeoutMs: nodeTimeout * 1000,
    reportOnly: flag('report-only'),
    format,
    prometheusFile: text('prometheus') ?? null,
    htmlFile: text('html') ?? null,
    keepReports: Number(keepReports),
    vmids,
    color: isTty && !flag('no-color') && !env.NO_COLOR,
    anonymise: flag('anonymise') || flag('anonymize'),
    notify: text('notify') === undefined && isMonitoringFormat(format) ? null : notify,
    stateFile: text('state') ?? DEFAULT_STATE,
    configFile: text('config') ?? null,
    pluginDirs: flag('no-plugins') ? [] : text('plugins') !== undefined ? [text('plugins') as string] : PATHS.plugins,
    pluginsDirGiven: text('plugins') !== undefined,
    yes: flag('yes'),
    dryRun: flag('dry-run'),
    selection: { only: (only as CleanupSelection['only']) ?? null, vmids, names: list('name') },
    journal: text('journal') ?? DEFAULT_JOURNAL,
    restoreIds: command === 'restore' ? rest : [],
    guardArgs: command === 'guard' ? rest : [],
    restoreLast: flag('last'),
  };
}

/** Options that do not go together, or with that command. */
function checkCombinations(values: CliValues, command: string | undefined, rest: string[], format: OutputFormat): void {
  // parseArgv gives no defaults: an option not given is undefined, whatever its type.
  const has = (name: string) => values[name] !== undefined;
  const cleanup = has('yes') || has('dry-run');
  if (command !== undefined && (isMonitoringFormat(format) || has('prometheus'))) {
    throw new UserError(
      `${has('prometheus') ? '--prometheus' : `--format ${format}`} goes with an analysis, not with ` +
        `the ${command} command`,
    );
  }
  if (command === 'capture' && rest.length !== 1)
    throw new UserError(`capture needs exactly one directory (or - for stdout): ${PROGRAM} capture DIR`);
  if (command === 'restore' && rest.length > 0 === has('last'))
    throw new UserError(`restore needs --last or journal entry IDs (see ${PROGRAM} journal), not both`);
  // Proxmox calls a hookscript with the VMID and the phase, nothing else.
  if (command === 'guard' && rest.length !== 2)
    throw new UserError(`guard needs a VMID and a phase: ${PROGRAM} guard VMID PHASE`);
  if (command !== 'capture' && command !== 'restore' && command !== 'guard' && rest.length > 0)
    throw new UserError(`unexpected argument "${rest[0]}" (see --help)`);
  // The option table's own word: the pairs that exclude each other, the options of one command.
  for (const option of CLI_OPTIONS.filter((o) => has(o.name))) {
    const clash = Object.entries(option.excludes ?? {}).find(([other]) => has(other));
    if (clash !== undefined) throw new UserError(clash[1]);
    if (option.command !== undefined && command !== option.command)
      throw new UserError(`--${option.name} only goes with the ${option.command} command`);
  }
  if (has('report-only') && command === 'restore')
    throw new UserError('--report-only changes nothing: it does not go with --yes or restore');
  if (isMonitoringFormat(format) && cleanup)
    throw new UserError(`--format ${format} is a monitoring check: it does not go with --yes or --dry-run`);
}

/** `pve-dm.ts plugins`: each plugin, its file and what it hooks. */
export function renderPluginList(loaded: readonly LoadedPlugin[], dirs: readonly string[], settings: Settings): string {
  if (dirs.length === 0) return 'No plugins (--no-plugins).\n';
  const where = dirs.join(' and ');
  if (loaded.length === 0) return `No plugins in ${where}.\n`;
  const rows = loaded.map(({ plugin, file }) => {
    const state = isActiveNotifier(plugin, settings) ? 'configured' : 'not configured';
    const hooks = [
      ...Object.keys(plugin.stages ?? {}).map((stage) => `stage ${stage}`),
      ...(plugin.notify ? [`notify (${state})`] : []),
    ];
    const shown = dirs.length > 1 ? file : path.basename(file);
    return [plugin.name, shown, hooks.join(', ') || '(nothing)'].map(terminalSafe);
  });
  const listed = table(['PLUGIN', 'FILE', 'HOOKS'], rows).map((line) => `  ${line}`);
  return wrapConsole(`Plugins in ${where}, in the order they load:\n${listed.join('\n')}\n`);
}

/** A report pve-dm wrote into the reports folder: `pve-dm-<node>-<yyyymmdd>-<hhmmss>Z.html`. */
const REPORT_FILE_RE = /^pve-dm-[A-Za-z0-9._-]+-(\d{8}-\d{6}Z)\.html$/;
const reportFileName = (node: string, at: Date) =>
  `pve-dm-${node.replace(/[^A-Za-z0-9.-]/g, '_')}-${at
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d+Z$/, 'Z')
    .replace('T', '-')}.html`;

/**
 * Writes a file whole or not at all: a temporary file in the same folder, fsynced, then renamed
 * over the file. The temporary file must be new (a link planted there is not followed, nor is one
 * at the file's name: rename replaces it); it is removed when anything fails. `mode` is set
 * whatever the umask (a node_exporter textfile must be readable by its collector).
 */
export async function writeAtomically(file: string, text: string, mode?: number): Promise<void> {
  const temporary = `${file}.${process.pid}.tmp`;
  const handle = await open(temporary, 'wx', mode);
  try {
    try {
      await handle.writeFile(text);
      if (mode !== undefined) await handle.chmod(mode);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temporary, file);
  } catch (error) {
    await unlink(temporary).catch(() => undefined);
    throw error;
  }
}

/** What an administrator needs to decide on an entry: where it is, whose it is, why it is here. */
function describeCandidate(action: PlannedAction, result: Result): string {
  const entry = result.entries.find((candidate) => candidate.name === action.name);
  const owner = ownerOf(action.vmid, entry, result);
  const volume = entry?.vg && entry.lv ? `${entry.vg}/${entry.lv}` : 'no LVM volume';
  return terminalSafe(
    `${owner} · ${volume} · ${action.reason} · ` +
      `open ${action.open}${action.blockedBy ? ` · cannot: ${action.blockedBy}` : ''}`,
  );
}

/** How the interactive cleanup names each kind of problem: a conflict loudest. */
const CLEANUP_LABELS: Record<CleanupStatus, string> = {
  conflict: 'CONFLICT',
  duplicate: 'DUPLICATE',
  tombstone: 'tombstone',
};

/**
 * The interactive cleanup (@clack/prompts, loaded only here): pick from the problems (conflicts,
 * then duplicates; open or locked ones cannot be picked), confirm exactly what will run, watch it run.
 * Ctrl-C or Escape at any point stops: nothing more is done, and what was done is reported.
 */
export async function interactiveCleanup(
  plan: CleanupPlan,
  result: Result,
  context: CleanupContext,
): Promise<CleanupOutcome | null> {
  const clack = await import('@clack/prompts');
  clack.intro('pve-dm cleanup');
  const rescanned = await offerRescans(rescanOffers(result), context, clack);
  const rescans = rescanned === null ? null : { removed: [], skipped: [], failed: [], rescans: rescanned };
  if (plan.actions.length === 0) return rescans;
  const picked = await clack.multiselect({
    message:
      'Entries to fix or remove (space toggles, enter goes on; conflicts first, then duplicates, then tombstones)',
    options: plan.actions.map((action) => ({
      value: action.name,
      label: `${CLEANUP_LABELS[action.status]}  ${mangleDmName(action.name)}`,
      hint: describeCandidate(action, result),
      disabled: action.blockedBy !== null,
    })),
    initialValues: plan.actions.filter((action) => action.blockedBy === null).map((action) => action.name),
    required: false,
  });
  const unchanged = rescans === null ? 'nothing was changed' : 'no entry was removed';
  if (clack.isCancel(picked) || picked.length === 0) {
    clack.cancel(clack.isCancel(picked) ? `Cancelled: ${unchanged}.` : `Nothing picked: ${unchanged}.`);
    return rescans;
  }
  const chosen = plan.actions.filter((action) => picked.includes(action.name));
  // A command that takes a guest's VG away runs once for all its LVs.
  const summary = [...new Set(chosen.map((action) => `  ${shellLine(action.command)}`))].map(terminalSafe);
  const go = await clack.confirm({
    message: `Run these ${summary.length} command(s)? Each entry is checked again right before.\n${summary.join('\n')}`,
    initialValue: false,
  });
  if (clack.isCancel(go) || !go) {
    clack.cancel(`Cancelled: ${unchanged}.`);
    return rescans;
  }
  const stop = new AbortController();
  const spin = clack.spinner({ onCancel: () => stop.abort(), cancelMessage: 'Stopping after the entry in hand' });
  spin.start('Working');
  const outcome = await executeCleanup({ actions: chosen }, { ...context, signal: stop.signal }, (step) =>
    spin.message(terminalSafe(step)),
  );
  spin.stop(stop.signal.aborted ? 'Stopped' : 'Done');
  const refreshed = outcome.refreshed?.length ?? 0;
  clack.outro(
    `${outcome.removed.length} removed, ${refreshed > 0 ? `${refreshed} refreshed, ` : ''}` +
      `${outcome.skipped.length} skipped, ${outcome.failed.length} failed`,
  );
  return rescanned === null ? outcome : { ...outcome, rescans: rescanned };
}

/** A guest of this node whose orphan LVs its rescan would attach (the orphans' remedy). */
export interface RescanOffer {
  vmid: number;
  command: string[];
  volumes: string[];
}

/** An orphan LV with a remedy is one its guest's rescan lists: the offer is built from the guest, not from text. */
export function rescanOffers(result: Pick<Result, 'orphanLvs' | 'guests'>): RescanOffer[] {
  const typeOf = new Map(result.guests.map((guest) => [guest.vmid, guest.type]));
  const offers = new Map<number, RescanOffer>();
  for (const orphan of result.orphanLvs) {
    const type = typeOf.get(orphan.vmid);
    if (orphan.remedy === null || type === undefined) continue;
    const offer = offers.get(orphan.vmid) ?? { vmid: orphan.vmid, command: rescanArgv(type, orphan.vmid), volumes: [] };
    offer.volumes.push(`${orphan.vg}/${orphan.lv}`);
    offers.set(orphan.vmid, offer);
  }
  return [...offers.values()];
}

/** The rescans picked (none by default): they add unusedN disks and remove nothing; no removal is offered here. */
async function offerRescans(
  offers: readonly RescanOffer[],
  context: CleanupContext,
  clack: typeof import('@clack/prompts'),
): Promise<RescanOutcome | null> {
  if (offers.length === 0) return null;
  const picked = await clack.multiselect({
    message: 'Orphan LVs to attach to their guests as unused disks (rescan; nothing is removed)',
    options: offers.map((offer) => ({
      value: offer.vmid,
      label: terminalSafe(shellLine(offer.command)),
      hint: terminalSafe(offer.volumes.join(', ')),
    })),
    initialValues: [],
    required: false,
  });
  if (clack.isCancel(picked) || picked.length === 0) return null;
  return runRescans(
    offers.filter((offer) => picked.includes(offer.vmid)),
    context,
  );
}

/**
 * Each rescan through the one runner, journalled first, after checking again that its LVs are
 * still there and that its guest's config, read again, still references none of them and holds no lock.
 */
export async function runRescans(offers: readonly RescanOffer[], context: CleanupContext): Promise<RescanOutcome> {
  const outcome: RescanOutcome = { rescanned: [], skipped: [], failed: [] };
  for (const offer of offers) {
    const why = await rescanBlocker(offer, context);
    if (why !== null) {
      outcome.skipped.push({ vmid: offer.vmid, why });
      continue;
    }
    const at = stampOf(context);
    const record: RescanRecord = {
      kind: 'rescan',
      id: `${context.run}-rescan-${offer.vmid}`,
      run: context.run,
      at,
      node: context.capture.hostname,
      vmid: offer.vmid,
      command: offer.command,
      volumes: offer.volumes,
    };
    const [command = '', ...args] = offer.command;
    let ran: CommandResult;
    try {
      ran = await context.runner(command, args, {
        mutates: true,
        timeoutMs: 120_000,
        journal: { file: context.journal, records: [record] },
      });
    } catch (error) {
      // The journal cannot take its line: it did not run, and no other rescan may.
      if (!(error instanceof JournalError)) throw error;
      outcome.failed.push({ vmid: offer.vmid, error: `${error.message}; not run` });
      break;
    }
    if (ran.dryRun) {
      outcome.skipped.push({ vmid: offer.vmid, why: `a dry run: ${shellLine(offer.command)} not run` });
      continue;
    }
    const detail = ran.exitCode === 0 ? null : failureLine(ran);
    appendJournal(context.journal, { ...record, outcome: ran.exitCode === 0 ? 'rescanned' : 'failed', detail });
    if (ran.exitCode === 0) outcome.rescanned.push({ vmid: offer.vmid, command: offer.command });
    else outcome.failed.push({ vmid: offer.vmid, error: detail ?? '' });
  }
  return outcome;
}

/** Why a rescan must not run now, or null: read again right before it. */
async function rescanBlocker(offer: RescanOffer, context: CleanupContext): Promise<string | null> {
  const config = context.capture.configs.find((c) => c.vmid === offer.vmid && c.node === context.capture.hostname);
  if (config === undefined) return 'its config is not on this node';
  let text: string;
  try {
    text = readFileSync(path.join(context.liveRoot, config.path), 'utf8');
  } catch {
    return `its config ${config.path} cannot be read now`;
  }
  const now = parseGuestConfig({ ...config, text }).config;
  if (now.lock !== null) return `${guestLabel(offer.vmid, config.type)} is locked (${now.lock})`;
  const referenced = now.refs.map((ref) => ref.volume.replace(/^[^:]*:/, ''));
  const taken = offer.volumes.find((volume) => referenced.includes(volume.split('/')[1] ?? ''));
  if (taken !== undefined) return `${taken} is referenced by its config now`;
  const lvs = await context.runner('lvs', ['--noheadings', '-o', 'lv_name', ...offer.volumes]);
  if (lvs.exitCode !== 0) return `LVM no longer lists ${offer.volumes.join(', ')}`;
  return null;
}

/** A dry run's count: `6 would be removed`, and the refreshes apart. */
function wouldDo(would: readonly { command: readonly string[] }[]): string {
  const refreshing = would.filter((one) => refreshes(one.command)).length;
  return `${would.length - refreshing} would be removed${refreshing > 0 ? `, ${refreshing} refreshed` : ''}`;
}

/** A stale table's remedy: the entry stays, its table is loaded again. */
const refreshes = (command: readonly string[]) => command[0] === 'lvchange' && command[1] === '--refresh';

export function renderCleanup(outcome: CleanupOutcome, dryRun: boolean): string {
  const lines = ['', dryRun ? 'Cleanup, dry run (nothing was changed):' : 'Cleanup:'];
  if (outcome.refused !== undefined) lines.push(`  REFUSED: ${terminalSafe(outcome.refused)}`);
  for (const would of outcome.wouldRemove ?? [])
    lines.push(
      `  would ${refreshes(would.command) ? 'refresh' : 'remove'}  ${mangleDmName(would.name)}  ` +
        `(${whole(terminalSafe(shellLine(would.command)))})`,
    );
  for (const [verb, done] of [
    ['removed', outcome.removed],
    ['refreshed', outcome.refreshed ?? []],
  ] as const)
    for (const one of done)
      lines.push(
        `  ${verb}  ${mangleDmName(one.name)}  (${whole(terminalSafe(shellLine(one.command)))}; ` +
          `journal ${one.journal})`,
      );
  for (const skipped of outcome.skipped)
    lines.push(`  skipped  ${mangleDmName(skipped.name)}: ${terminalSafe(skipped.why)}`);
  for (const failed of outcome.failed)
    lines.push(`  FAILED   ${mangleDmName(failed.name)}: ${terminalSafe(failed.error)}`);
  const rescans = outcome.rescans ?? { rescanned: [], skipped: [], failed: [] };
  for (const done of rescans.rescanned)
    lines.push(`  rescanned  VMID ${done.vmid}  (${whole(shellLine(done.command))})`);
  for (const skipped of rescans.skipped)
    lines.push(`  rescan skipped  VMID ${skipped.vmid}: ${terminalSafe(skipped.why)}`);
  for (const failed of rescans.failed)
    lines.push(`  rescan FAILED  VMID ${failed.vmid}: ${terminalSafe(failed.error)}`);
  const refreshed = outcome.refreshed?.length ?? 0;
  const done =
    outcome.wouldRemove === undefined
      ? `${outcome.removed.length} removed${refreshed > 0 ? `, ${refreshed} refreshed` : ''}`
      : wouldDo(outcome.wouldRemove);
  const undo = outcome.removed.length + refreshed > 0 ? `; undo with: ${whole(`${PROGRAM} restore --last`)}` : '';
  lines.push(`  ${done}, ${outcome.skipped.length} skipped, ${outcome.failed.length} failed${undo}`);
  return wrapConsole(`${lines.join('\n')}\n`);
}

/** An entry's outcome, then what its last restore did (`begun`: cut short before its end). */
const outcomeCell = ({ outcome, restore }: JournalRecord) => {
  const restoreWord = { begun: ', restore interrupted', restored: ', restored', failed: ', restore failed' };
  return `${outcome ?? 'interrupted'}${restore === undefined ? '' : restoreWord[restore]}`;
};

export function renderJournal(records: JournalRecord[], json: boolean): string {
  if (json) return `${terminalSafeJson(records)}\n`;
  if (records.length === 0) return 'The journal is empty: nothing was removed.\n';
  // The journal is a file on disk: every field is shown as text, whatever it holds. Each entry's
  // name goes on a line of its own (80 columns); the times are in `journal --json`.
  const rows = records.map((r) => [r.id, outcomeCell(r), r.action, r.reason].map((cell) => terminalSafe(String(cell))));
  const [header = '', ...lines] = table(['ID', 'OUTCOME', 'ACTION', 'REASON'], rows);
  const named = lines.flatMap((line, i) => [line, `  ${mangleDmName(String(records[i]?.name))}`]);
  return wrapConsole(`${[`${header}\n  NAME`, ...named].join('\n')}\n`);
}

/** What restoring a stale table means, said beside it: the conflict is back, on purpose. */
const STALE_AGAIN =
  ": its stale table again, which maps other blocks than LVM's metadata says (read what was written " +
  'through it, then refresh it or let pve-dm do it; never start its guest on it)';

async function restoreCommand(
  options: CliOptions,
  runner: Runner,
  liveRoot: string,
  io: { stdout: { write(text: string): unknown }; stderr: { write(text: string): unknown } },
): Promise<number> {
  const journal = readJournal(options.journal);
  const lastRun = journal.at(-1)?.run;
  const records = options.restoreLast
    ? journal.filter((record) => record.run === lastRun)
    : options.restoreIds.map((id) => journal.find((record) => record.id === id) ?? id);
  const unknown = records.filter((record): record is string => typeof record === 'string');
  if (unknown.length > 0)
    throw new UserError(`no journal entry ${unknown.join(', ')} in ${options.journal} (see ${PROGRAM} journal)`);
  if (records.length === 0) throw new UserError(`the journal ${options.journal} is empty: nothing to restore`);
  // A removal that failed left its entry where it was: there is nothing to bring back. A refresh
  // that failed may have loaded some table all the same: the journalled one can go back.
  const undone = (record: JournalRecord) => record.outcome === 'failed' && record.action !== 'lvchange --refresh';
  const removed = (records as JournalRecord[]).filter((record) => !undone(record));
  const notRemoved = (records as JournalRecord[]).filter(undone);
  const run = runId(new Date());
  const context = { runner, liveRoot, journal: options.journal, run, dryRun: options.dryRun };
  const outcome = await restoreEntries(removed, { ...context, ...(options.dryRun ? { lock: noLock } : {}) });
  const staleAgain = new Set(removed.filter((record) => record.reason === 'stale-table').map((record) => record.name));
  const lines = [
    ...(outcome.wouldRestore ?? []).map(
      ({ name, command }) => `would restore ${mangleDmName(name)}  (${whole(terminalSafe(shellLine(command)))})`,
    ),
    ...outcome.restored.map((name) => `restored ${mangleDmName(name)}${staleAgain.has(name) ? STALE_AGAIN : ''}`),
    ...notRemoved.map((record) => `kept     ${mangleDmName(record.name)}: its removal failed, it was never removed`),
    ...outcome.already.map(({ name, why }) => `already  ${mangleDmName(name)}: ${terminalSafe(why)}`),
    ...outcome.refused.map(({ name, why }) => `refused  ${mangleDmName(name)}: ${terminalSafe(why)}`),
    ...outcome.failed.map(({ name, error }) => `FAILED   ${mangleDmName(name)}: ${error}`),
  ];
  io.stdout.write(options.format === 'json' ? `${terminalSafeJson(outcome)}\n` : wrapConsole(`${lines.join('\n')}\n`));
  return outcome.failed.length > 0 || outcome.refused.length > 0 ? 1 : 0;
}

/** The live node as main sees it; tests replace the runner and the file tree. */
export interface LiveNode {
  exec?: Exec;
  liveRoot?: string;
  hostname?: string;
}

interface Io {
  stdout: { write(text: string): unknown };
  stderr: { write(text: string): unknown };
  isTty: boolean;
}

/** What a run is given beside its options: where to write, how to run commands, and on which node. */
interface RunContext {
  io: Io;
  runner: Runner;
  live: LiveNode;
  liveRoot: string;
  interactive: boolean;
}

/** Settings and plugins, and what was wrong with them (warnings the report carries). */
interface Setup {
  settings: Settings;
  poolThresholds: PoolThresholds;
  loaded: LoadedPlugin[];
  plugins: Plugin[];
  warnings: Warning[];
}

/** A run that could not be done: one line on stderr, and the format's own error on stdout. */
function failed(error: unknown, asked: OutputFormat, io: Io): number {
  const internal = !(error instanceof UserError);
  // A bug, not the user's mistake: one line, and the stack only when asked for.
  const detail = process.env.PVE_DM_DEBUG ? `\n${(error as Error).stack}` : ' (PVE_DM_DEBUG=1 shows where)';
  const raw = internal ? `internal error: ${(error as Error).message ?? String(error)}${detail}` : error.message;
  const message = terminalSafe(raw.replace(/\s*\n\s*/g, ' '));
  io.stderr.write(`pve-dm: ${message}\n`);
  if (asked === 'json') io.stdout.write(`${JSON.stringify({ version: 1, error: message })}\n`);
  if (asked === 'nagios') io.stdout.write(renderNagiosUnknown(message));
  if (asked === 'checkmk') io.stdout.write(renderCheckmkUnknown(message));
  return internal ? 3 : error.exitCode;
}

/**
 * `guard VMID PHASE`, as Proxmox runs a guest's hookscript (qm/pct: `<script> <vmid> <phase>`, a
 * non-zero exit at pre-start refuses the start): at pre-start, 1 while the guest's disks have a
 * conflict (a stale table, a mapping stacked on them) or a duplicate; every other phase, and a
 * guest with none, 0. It changes nothing, loads no plugin, and an error of its own lets the guest
 * start (and says so): a check must never hold a production guest hostage.
 */
async function guardCommand(options: CliOptions, { io, runner, live }: RunContext): Promise<number> {
  const [vmidText = '', phase = ''] = options.guardArgs;
  if (phase !== 'pre-start') return 0;
  if (!/^[1-9][0-9]{2,8}$/.test(vmidText)) {
    io.stderr.write(`pve-dm guard: "${terminalSafe(vmidText)}" is not a VMID: not checked, the guest may start\n`);
    return 0;
  }
  const vmid = Number(vmidText);
  try {
    const only = { json: false, console: false, html: false, color: false, vmids: [vmid], runner };
    const { result } = await runPipeline(defaultStages, {
      ...only,
      root: options.root,
      liveRoot: live.liveRoot,
      hostname: live.hostname,
    });
    const blocking = result.entries.filter(
      (e) => e.vmid === vmid && (e.status === 'conflict' || e.status === 'duplicate'),
    );
    const [first] = blocking;
    if (first === undefined) return 0;
    const label = guestLabel(vmid, first.guestType);
    const found = blocking.map((e) => `${mangleDmName(e.name)} (${e.reason})`).join(', ');
    const todo = first.remedy ?? first.advice ?? '';
    io.stderr.write(
      terminalSafe(`pve-dm guard: ${label} must not start: ${found}; ${todo} (pve-dm --vmid ${vmid} shows all)`) + '\n',
    );
    return 1;
  } catch (error) {
    io.stderr.write(`pve-dm guard: could not check VMID ${vmid} (${terminalSafe(errorText(error))}); it may start\n`);
    return 0;
  }
}

/** `capture DIR`, or `capture -`: what --cluster asks of the other nodes, the capture alone on stdout. */
async function captureCommand(options: CliOptions, { runner, live, io }: RunContext): Promise<number> {
  const discovered = await discover({ runner, liveRoot: live.liveRoot, hostname: live.hostname });
  const capture = options.anonymise ? anonymiseCapture(discovered) : discovered;
  if (options.captureDir === '-') {
    io.stdout.write(captureToJson(capture));
    return 0;
  }
  await writeCapture(options.captureDir as string, capture);
  for (const w of capture.warnings) io.stderr.write(`pve-dm: warning: ${terminalSafe(formatWarning(w))}\n`);
  const anonymised = options.anonymise ? ' (anonymised)' : '';
  io.stderr.write(`pve-dm: capture of ${capture.hostname} written to ${options.captureDir}${anonymised}\n`);
  return 0;
}

async function loadSetup(options: CliOptions): Promise<Setup> {
  const settings = loadSettings(options.configFile ?? PATHS.config, process.env, {
    required: options.configFile !== null,
  });
  const { loaded, warnings } = await loadPluginFolders(options.pluginDirs, { required: options.pluginsDirGiven });
  const plugins = loaded.map(({ plugin }) => plugin);
  const pools = poolThresholdsFrom(settings);
  return {
    settings,
    poolThresholds: pools.thresholds,
    loaded,
    plugins,
    warnings: [...warnings, ...unknownSettings(settings, plugins), ...pools.warnings],
  };
}

/** A file pve-dm is told to write goes into a folder that exists: a mistyped folder is loud, never created. */
function checkOutputFolder(option: string, file: string | null): void {
  if (file === null) return;
  const folder = path.dirname(path.resolve(file));
  let isFolder = false;
  try {
    isFolder = statSync(folder).isDirectory();
  } catch {
    // isFolder stays false: missing, or not reachable.
  }
  if (!isFolder)
    throw new UserError(`--${option} ${file}: the folder ${folder} does not exist (pve-dm does not create it)`);
}

/** Analyse, act (notify, clean up), then render the final result once: the analysis commands. */
async function analyse(options: CliOptions, setup: Setup, context: RunContext): Promise<number> {
  const { io } = context;
  checkOutputFolder('html', options.htmlFile);
  checkOutputFolder('prometheus', options.prometheusFile);
  const stages = composeStages(defaultStages, setup.plugins);
  const notifying = options.notify !== null && setup.plugins.some((plugin) => isActiveNotifier(plugin, setup.settings));
  const now = new Date();
  const run = await analysisRun(stages, options, setup, context, { notifying, now });
  if (options.prometheusFile !== null) await writePrometheus(options.prometheusFile, run.reports.prometheus ?? '');
  const notifications = notifying ? await sendNotifications(options, setup, run, context) : [];
  if (options.format === 'console') io.stdout.write(run.reports.console ?? '');
  const htmlFailed = await writeHtml(options, run, now, io);
  if (options.format === 'console' && notifications.length > 0) {
    const told = notifications.map((n) => `${terminalSafe(n.plugin)} ${n.ok ? terminalSafe(n.detail) : 'FAILED'}`);
    io.stdout.write(wrapConsole(`\nNotifications: ${told.join('; ')}\n`));
  }
  if (options.format !== 'console') {
    for (const w of run.result.warnings) io.stderr.write(`pve-dm: warning: ${terminalSafe(formatWarning(w))}\n`);
    for (const note of run.result.notes) io.stderr.write(`pve-dm: note: ${terminalSafe(formatWarning(note))}\n`);
  }
  const cleanup = await cleanupStep(options, run, context, now);
  const cleanupFailed =
    cleanup !== null &&
    (cleanup.refused !== undefined || cleanup.failed.length > 0 || (cleanup.rescans?.failed.length ?? 0) > 0);
  const exitCode = Math.max(run.result.exitCode, htmlFailed, cleanupFailed ? 1 : 0) as Result['exitCode'];
  await renderFinal(stages, options, { ...run.result, notifications, cleanup, exitCode }, io);
  return exitCode;
}

/**
 * JSON and the monitoring formats show the final result: its notifications, its cleanup, and the
 * exit code (raised when the HTML report or a removal failed), which a monitoring state must match.
 */
async function renderFinal(stages: Stages, options: CliOptions, final: Result, io: Io): Promise<void> {
  const format = options.format;
  if (format !== 'json' && !isMonitoringFormat(format)) return;
  const only = { json: false, console: false, html: false, color: false };
  const reports = await stages.report(final, { ...only, [format]: true });
  io.stdout.write(reports[format as 'json' | 'nagios' | 'checkmk'] ?? '');
}

/** The pipeline's run: what must exist before acting (the console, HTML and notifiers' reports, the plan). */
async function analysisRun(
  stages: Stages,
  options: CliOptions,
  setup: Setup,
  { runner, live, liveRoot, io }: RunContext,
  { notifying, now }: { notifying: boolean; now: Date },
): Promise<RunOutput> {
  const consoleRun = options.format === 'console';
  const runOptions: RunOptions = {
    root: options.root,
    liveRoot: live.liveRoot,
    hostname: live.hostname,
    vmids: options.vmids,
    runner,
    now,
    color: options.color,
    selection: options.selection,
    warnings: setup.warnings,
    poolThresholds: setup.poolThresholds,
    // The notifiers send the JSON of the analysis; the JSON printed is the final result's (renderFinal).
    json: notifying,
    console: consoleRun,
    html: options.htmlFile !== null || consoleRun || notifying,
    prometheus: options.prometheusFile !== null,
  };
  if (options.cluster || options.roots.length > 1) {
    const clusterOptions = { ...runOptions, roots: options.roots, live: options.cluster };
    const spinner = showsClusterProgress(options, io.isTty && Boolean(process.stderr.isTTY))
      ? await clusterSpinner()
      : null;
    try {
      return await runCluster(stages, {
        ...clusterOptions,
        nodeTimeoutMs: options.nodeTimeoutMs,
        progress: spinner?.tell,
      });
    } finally {
      spinner?.stop();
    }
  }
  const run = await runPipeline(stages, runOptions);
  // Holders are looked up only for a plan that may be carried out, on the live node.
  const plan =
    options.root === undefined && !options.reportOnly ? await withHolders(run.plan, run.result, liveRoot) : run.plan;
  return { ...run, plan };
}

/** A live --cluster run on a terminal shows its progress on stderr; JSON, monitoring and pipes never do. */
export const showsClusterProgress = (options: Pick<CliOptions, 'cluster' | 'format'>, terminal: boolean) =>
  options.cluster && options.format === 'console' && terminal;

/** @clack/prompts' spinner on stderr: how many nodes have answered, and which one is slow. */
async function clusterSpinner(): Promise<{ tell: (state: ClusterProgress) => void; stop: () => void }> {
  const { spinner } = await import('@clack/prompts');
  const shown = spinner({ output: process.stderr });
  shown.start('Asking the other nodes of the cluster');
  let last = '';
  return {
    tell: ({ done, total, slowest }) => {
      const slow =
        slowest !== null && slowest.seconds >= 5 ? `; waiting for ${slowest.node} (${slowest.seconds} s)` : '';
      last = `${done} of ${total} nodes answered${slow}`;
      shown.message(terminalSafe(last));
    },
    stop: () => shown.stop(terminalSafe(last || 'No other node to ask')),
  };
}

/** Before anything is printed: a Prometheus file that cannot be written is a run that failed (exit 3). */
async function writePrometheus(file: string, text: string): Promise<void> {
  await writeAtomically(file, text, 0o644).catch((error: unknown) => {
    throw new UserError(`cannot write the Prometheus file ${file}: ${errorText(error)}`);
  });
}

async function sendNotifications(
  options: CliOptions,
  setup: Setup,
  run: RunOutput,
  { io, runner }: RunContext,
): Promise<Notification[]> {
  const mode = options.notify as NotifyMode;
  const { result, reports } = run;
  const decision = shouldNotify(mode, result, options.stateFile);
  if (!decision.send) return [];
  const sent = {
    json: reports.json ?? '',
    html: reports.html ?? '',
    subject: notificationSubject(result),
    text: notificationText(result),
  };
  const timeoutMs = Number(setup.settings('PVE_DM_HTTP_TIMEOUT_MS')) || undefined;
  const http = (request: HttpRequest) => httpSend({ timeoutMs, ...request });
  const notifications = await notifyAll(setup.plugins, result, sent, { setting: setup.settings, http, runner });
  for (const failedOne of notifications.filter((n) => !n.ok))
    io.stderr.write(`pve-dm: notification failed: ${terminalSafe(failedOne.detail)}\n`);
  // A change nobody was told about is still a change next time.
  if (mode === 'change' && notifications.some((n) => n.ok)) {
    await saveNotifyState(options.stateFile, decision.fingerprint, result.generatedAt).catch((error: unknown) => {
      const why = errorText(error);
      io.stderr.write(
        `pve-dm: cannot save the notification state to ${options.stateFile}: ${why}; the next run will notify again\n`,
      );
    });
  }
  return notifications;
}

/** The HTML report: to --html FILE, or a console run's into the reports folder (the newest N kept). 1: failed. */
async function writeHtml(options: CliOptions, run: RunOutput, now: Date, io: Io): Promise<number> {
  const consoleRun = options.format === 'console';
  if (run.reports.html === undefined || (options.htmlFile === null && !consoleRun)) return 0;
  const file = options.htmlFile ?? path.join(PATHS.reports, reportFileName(run.result.node, now));
  try {
    if (options.htmlFile === null) await mkdir(PATHS.reports, { recursive: true });
    await writeAtomically(file, run.reports.html);
    if (options.htmlFile === null) pruneReports(PATHS.reports, options.keepReports);
    if (consoleRun) io.stdout.write(`\nHTML report: ${file}\n`);
    return 0;
  } catch (error) {
    const why = errorText(error);
    io.stderr.write(`pve-dm: cannot write the HTML report to ${file}: ${why}\n`);
    return 1;
  }
}

/** The reports folder keeps the newest `keep` reports pve-dm wrote there: a daily run must not fill the disk. */
export function pruneReports(dir: string, keep: number): void {
  const reports = readdirSync(dir).flatMap((name) => {
    const time = REPORT_FILE_RE.exec(name)?.[1];
    return time === undefined ? [] : [{ name, time }];
  });
  // By the UTC time in the name, then by name: the newest come last.
  const byAge = reports.sort((a, b) => a.time.localeCompare(b.time) || a.name.localeCompare(b.name));
  for (const { name } of byAge.slice(0, Math.max(0, byAge.length - keep))) unlinkSync(path.join(dir, name));
}

/**
 * A run's name in the journal: when it began, to the second, and 4 random hex digits, so that two
 * runs in one second (cron and an administrator) never share their lines' ids (20261206T172542Z-9f3c).
 */
const runId = (now: Date) =>
  `${now
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d+Z$/, 'Z')}-${randomBytes(2).toString('hex')}`;

/** The cleanup a run asked for: interactive, --yes or --dry-run; or its plan, shown. Null when nothing ran. */
async function cleanupStep(
  options: CliOptions,
  run: RunOutput,
  context: RunContext,
  now: Date,
): Promise<CleanupOutcome | null> {
  const { io, runner, liveRoot, interactive } = context;
  const { plan, result, capture } = run;
  const consoleRun = options.format === 'console';
  const cleanupContext: CleanupContext = {
    runner,
    capture,
    liveRoot,
    journal: options.journal,
    run: runId(now),
    dryRun: options.dryRun,
  };
  const offersRescan = interactive && rescanOffers(result).length > 0;
  if (options.reportOnly || (plan.actions.length === 0 && !offersRescan)) return null;
  if (interactive && options.root !== undefined) {
    io.stdout.write(renderPlan(plan, 'Cleanup plan (a capture: cleanup acts only on the live node):'));
    return null;
  }
  if (interactive) {
    const cleanup = await interactiveCleanup(plan, result, cleanupContext);
    if (cleanup !== null) io.stdout.write(renderCleanup(cleanup, false));
    return cleanup;
  }
  if (!options.yes && !options.dryRun) {
    if (consoleRun) io.stdout.write(renderPlan(plan));
    return null;
  }
  const dryRun = options.dryRun ? 'dry run, ' : '';
  const cleanup = await executeCleanup(plan, cleanupContext, (step) =>
    io.stderr.write(`pve-dm: ${dryRun}${terminalSafe(step)}\n`),
  );
  if (consoleRun) io.stdout.write(renderCleanup(cleanup, options.dryRun));
  if (cleanup.refused !== undefined) io.stderr.write(`pve-dm: cleanup refused: ${terminalSafe(cleanup.refused)}\n`);
  for (const failedOne of cleanup.failed)
    io.stderr.write(`pve-dm: could not remove ${mangleDmName(failedOne.name)}: ${failedOne.error}\n`);
  return cleanup;
}

// --- helpers -------------------------------------------------------------------------------

/** Lines of a text file, with CRLF and a final newline tolerated. */
function lines(text: string): string[] {
  const all = text.split('\n');
  if (text.includes('\r'))
    for (let i = 0; i < all.length; i++) if (all[i]?.endsWith('\r')) all[i] = (all[i] as string).slice(0, -1);
  if (all.length > 0 && all[all.length - 1] === '') all.pop();
  return all;
}

function pushToSet<K, V>(map: Map<K, Set<V>>, key: K, value: V): void {
  const set = map.get(key);
  if (set === undefined) map.set(key, new Set([value]));
  else set.add(value);
}

function pushTo<K, V>(map: Map<K, V[]>, key: K, value: V): void {
  const list = map.get(key);
  if (list === undefined) map.set(key, [value]);
  else list.push(value);
}

const clip = (text: string) => JSON.stringify(text.length > 80 ? `${text.slice(0, 80)}…` : text);

// The command line runs when this file is the program, as the ES module Node loaded. A plugin
// outside a `"type": "module"` package that imports a value from it gets a CommonJS copy from tsx
// (where `module` exists): that copy must not run a second pve-dm.
const invokedDirectly =
  process.argv[1] !== undefined &&
  realpathSync(process.argv[1]) === realpathSync(fileURLToPath(import.meta.url)) &&
  typeof module === 'undefined';
if (invokedDirectly) {
  // `pve-dm.ts | head` closes the pipe early: the rest of the output is dropped, and a cleanup in
  // hand still finishes (it must never be cut between its journal line and its command).
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (error: NodeJS.ErrnoException) => {
      if (error.code !== 'EPIPE') throw error;
    });
  }
  main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
