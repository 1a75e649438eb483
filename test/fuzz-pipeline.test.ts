// The whole pipeline (parse → classify → grade → plan → reports) on generated nodes
// (test/tools/gen-capture.ts, any seed) and on the samples cut, duplicated, reordered, truncated,
// given NUL bytes, invalid UTF-8, CRLF line ends and enormous lines. Whatever the input: no
// throw, every entry exactly one status, nothing referenced here called a tombstone, nothing but
// guest volumes planned for removal, counts that add up, valid JSON and HTML, and every skipped
// line named by file and line.
import path from 'node:path';
import fc from 'fast-check';
import * as assert from 'uvu/assert';
import {
  classify, identify, lvKey, parse, planCleanup, readCapture, REASONS, renderConsole, renderHtml, toJson, validateHtml, volumesOfRef,
  type Capture, type ParsedState, type Result,
} from '../pve-dm.ts';
import { resultOf, SAMPLES, test } from './harness.ts';
import { property } from './support/fuzz.ts';
import { generateCapture } from './tools/gen-capture.ts';

interface Analysis {
  state: ParsedState;
  result: Result;
}

function analyse(c: Capture): Analysis {
  const state = parse(c);
  return { state, result: resultOf(classify(state)) };
}

/** What must hold of any analysis, whatever its input. */
async function invariants({ state, result }: Analysis, { html = true } = {}): Promise<void> {
  // Every dm entry exactly one status, with a reason of that status.
  assert.equal(result.entries.map((e) => e.name), state.entries.map((e) => e.name), 'one classified entry per dm entry, in order');
  for (const entry of result.entries) {
    const [status] = REASONS[entry.reason];
    assert.is(entry.status, status, `${entry.name}: ${entry.status} for ${entry.reason}`);
  }
  // A volume a guest of this node references is never a tombstone.
  const vgOf = new Map(state.storages.filter((s) => s.vg !== null).map((s) => [s.id, s.vg as string]));
  const referencedHere = new Set(state.guests.filter((g) => g.node === state.node).flatMap((g) => g.refs.flatMap((ref) => volumesOfRef(ref.volume, vgOf).map(([vg, lv]) => lvKey(vg, lv)))));
  for (const entry of result.entries) {
    if (entry.status === 'tombstone') assert.not.ok(referencedHere.has(lvKey(entry.vg ?? '', entry.lv ?? '')), `${entry.name} is referenced here, yet a tombstone (${entry.reason})`);
  }
  // Nothing but a guest volume (its own entry, a copy of one, or a partition of a problem) is ever planned for removal;
  // a conflict only for its remedy: a guest volume's stale table refreshed, a device stacked on a guest volume removed.
  const byName = new Map(result.entries.map((e) => [e.name, e]));
  const plan = planCleanup(result);
  for (const action of plan.actions) {
    const entry = byName.get(action.name);
    assert.ok(entry !== undefined && ['conflict', 'duplicate', 'tombstone'].includes(entry.status), `${action.name} planned`);
    const kind = identify(entry).kind;
    if (entry.status === 'conflict') {
      const stale = entry.reason === 'stale-table' && kind === 'guest-volume' && action.command.join(' ') === `lvchange --refresh ${entry.vg}/${entry.lv}`;
      const stacked = entry.reason === 'stacked-on-guest-volume' && entry.relatedTo !== null && byName.get(entry.relatedTo)?.status !== 'conflict';
      assert.ok(stale || stacked, `${action.name} (${kind}, ${entry.reason}): ${action.command.join(' ')}`);
      continue;
    }
    const guestVolume = kind === 'guest-volume' || (kind === 'foreign' && entry.reason === 'duplicate-table') || (kind === 'partition' && entry.reason === 'partition-of-problem');
    assert.ok(guestVolume, `${action.name} (${kind}, ${entry.reason}) planned for removal`);
  }
  // A remedy only for a problem, and only one that can work now: never for an open entry (but by
  // removing what is stacked on it first), never for a locked guest's; a problem without one says why.
  for (const entry of result.entries) {
    const problem = entry.status === 'conflict' || entry.status === 'duplicate' || entry.status === 'tombstone';
    if (!problem) assert.is(entry.remedy, null, `${entry.name}: a remedy for a ${entry.status} entry`);
    if (problem && entry.remedy === null) assert.type(entry.advice, 'string', `${entry.name}: no remedy and no advice`);
    if (entry.remedy !== null && entry.open > 0) assert.ok(entry.holders.length >= entry.open && entry.remedy.includes(' && '), `${entry.name}: open ${entry.open}, yet ${entry.remedy}`);
    if (entry.remedy !== null) assert.is(entry.lock, null, `${entry.name}: its guest is locked, yet ${entry.remedy}`);
  }
  // The summary counts the entries.
  const count = (status: string) => result.entries.filter((e) => e.status === status).length;
  assert.equal(result.summary, {
    entries: result.entries.length, valid: count('valid'), conflict: count('conflict'), duplicate: count('duplicate'), tombstone: count('tombstone'), ignored: count('ignored'), unjudged: count('unjudged'),
    orphanLvs: result.orphanLvs.length,
    poolProblems: [...result.pools, ...result.volumeGroups].filter((p) => p.severity !== 'ok').length,
  });
  // A pool is as bad as its worst problem; any critical one is an F; every problem says what to do.
  for (const pool of result.pools) {
    const worst = pool.problems.some((p) => p.severity === 'critical') ? 'critical' : pool.problems.length > 0 ? 'warning' : 'ok';
    assert.is(pool.severity, worst, `${pool.vg}/${pool.lv}`);
    for (const problem of pool.problems) assert.ok(problem.advice.length > 0 && (problem.remedy === null || problem.remedy.startsWith('lv')));
  }
  if ([...result.pools, ...result.volumeGroups].some((p) => p.severity === 'critical')) assert.is(result.grade, 'F');
  // An orphan LV is a guest volume no config references: its own entry (a duplicate names the volume it copies) is never valid.
  for (const orphan of result.orphanLvs) {
    const own = result.entries.find((e) => e.vg === orphan.vg && e.lv === orphan.lv && e.status !== 'duplicate');
    assert.is.not(own?.status, 'valid', `${orphan.vg}/${orphan.lv}: an orphan whose entry is in use (${own?.reason})`);
  }
  // Valid JSON holding the result; the console report; a valid HTML page.
  assert.equal(JSON.parse(JSON.stringify(toJson(result))).summary, result.summary);
  assert.type(renderConsole(result, false), 'string');
  if (html) assert.equal(await validateHtml(renderHtml(result), result), []);
}

property('generated nodes (any seed, 1 to 20 guests): every entry has the status the generator gave it, and the invariants hold', 60,
  fc.asyncProperty(fc.integer({ min: 1, max: 20 }), fc.integer(), async (guests, seed) => {
    const generated = generateCapture({ guests, seed });
    const analysis = analyse(generated.capture);
    assert.equal(analysis.result.summary, generated.expected);
    assert.equal(analysis.result.warnings, []);
    await invariants(analysis);
  }));

// ── Mutations ───────────────────────────────────────────────────────────────────────────────

const SAMPLE_CAPTURES = await Promise.all(['broken-input', 'cluster-migrated', 'default-install', 'foreign', 'multi-pool', 'pve9-qcow2', 'snapshots'].map((name) => readCapture(path.join(SAMPLES, name))));
const BASES: Capture[] = [...SAMPLE_CAPTURES.map((c) => ({ ...c, root: null })), generateCapture({ guests: 12, seed: 5 }).capture];

/** The text fields of a capture a mutation can change: its files, and each guest config. */
type Target = 'dmsetupInfo' | 'dmsetupTable' | 'lvs' | 'running' | 'storageCfg' | number;
const textOf = (c: Capture, target: Target) => (typeof target === 'number' ? (c.configs[target]?.text ?? null) : c[target]);
const withText = (c: Capture, target: Target, text: string): Capture =>
  typeof target === 'number' ? { ...c, configs: c.configs.map((config, i) => (i === target ? { ...config, text } : config)) } : { ...c, [target]: text };

/** Bytes as a file holds them, decoded as pve-dm reads files: invalid UTF-8 becomes U+FFFD. */
const withBytes = (text: string, at: number, bytes: readonly number[]) => Buffer.concat([Buffer.from(text.slice(0, at)), Buffer.from(bytes), Buffer.from(text.slice(at))]).toString('utf8');

type Mutation =
  | { op: 'cut' | 'duplicate' | 'truncate' | 'nul' | 'utf8' | 'enormous'; line: number; at: number; bytes: readonly number[] }
  | { op: 'swap'; line: number; other: number }
  | { op: 'crlf' | 'reverse' | 'cut-end' };

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ op: fc.constantFrom('cut', 'duplicate', 'truncate', 'nul', 'utf8', 'enormous'), line: fc.nat(400), at: fc.nat(200), bytes: fc.constantFrom([0xff], [0xc3], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0x80, 0x80]) }, { noNullPrototype: true }),
  fc.record({ op: fc.constant('swap'), line: fc.nat(400), other: fc.nat(400) }, { noNullPrototype: true }),
  fc.record({ op: fc.constantFrom('crlf', 'reverse', 'cut-end') }, { noNullPrototype: true }),
);

/** The mutated text, and the line (1-based) a NUL or invalid UTF-8 went into. */
function mutate(text: string, m: Mutation): { text: string; binaryLine: number | null } {
  const lines = text.split('\n');
  const i = 'line' in m ? m.line % lines.length : 0;
  const line = lines[i] ?? '';
  switch (m.op) {
    case 'cut': lines.splice(i, 1); break;
    case 'duplicate': lines.splice(i, 0, line); break;
    case 'truncate': lines[i] = line.slice(0, m.at % (line.length + 1)); break;
    case 'swap': [lines[i], lines[m.other % lines.length]] = [lines[m.other % lines.length] ?? '', line]; break;
    case 'enormous': lines.splice(i, 0, (line || 'x').repeat(Math.ceil(200_000 / (line.length || 1)))); break;
    case 'crlf': return { text: lines.join('\r\n'), binaryLine: null };
    case 'reverse': lines.reverse(); break;
    case 'cut-end': return { text: text.slice(0, Math.floor(text.length / 2)), binaryLine: null };
    case 'nul':
    case 'utf8': {
      const at = m.at % (line.length + 1);
      lines[i] = m.op === 'nul' ? `${line.slice(0, at)}\u0000${line.slice(at)}` : withBytes(line, at, m.bytes);
      return { text: lines.join('\n'), binaryLine: i + 1 };
    }
  }
  return { text: lines.join('\n'), binaryLine: null };
}

const sourceOf = (c: Capture, target: Target) =>
  typeof target === 'number' ? (c.configs[target]?.path as string) : { dmsetupInfo: 'dmsetup.txt', dmsetupTable: 'dmsetup-table.txt', lvs: 'lvs.txt', running: 'running.txt', storageCfg: 'etc/pve/storage.cfg' }[target];

property('mutated samples: no throw, the invariants hold, and every warning names its file and a line of it (a binary config line, that line)', 150,
  fc.asyncProperty(
    fc.nat(BASES.length - 1).chain((b) => {
      const base = BASES[b] as Capture;
      const targets: Target[] = ['dmsetupInfo', 'dmsetupTable', 'lvs', 'running', 'storageCfg', ...base.configs.map((_, i) => i)];
      return fc.tuple(fc.constant(base), fc.constantFrom(...targets.filter((t) => textOf(base, t) !== null)), fc.array(mutation, { minLength: 1, maxLength: 3 }));
    }),
    fc.boolean(),
    async ([base, target, mutations], html) => {
      let text = textOf(base, target) as string;
      let binaryLine: number | null = null;
      for (const m of mutations) ({ text, binaryLine } = mutate(text, m));
      const c = withText(base, target, text);
      const analysis = analyse(c);
      await invariants(analysis, { html });
      const source = sourceOf(c, target);
      const fileLines = text.split('\n').length;
      for (const w of analysis.result.warnings) {
        if (w.source === source && w.line !== null) assert.ok(w.line >= 1 && w.line <= fileLines, `${w.source}:${w.line} of ${fileLines} lines`);
      }
      // A NUL or an invalid byte in a config line (not a comment) skips that line, and says so.
      const changed = binaryLine === null ? '' : (text.split('\n')[binaryLine - 1] ?? '').replace(/\r$/, '');
      if (typeof target === 'number' && binaryLine !== null && !changed.startsWith('#') && changed.trim() !== '') {
        assert.ok(analysis.result.warnings.some((w) => w.source === source && w.line === binaryLine), `no warning for ${source}:${binaryLine} ${JSON.stringify(changed)}`);
      }
    },
  ));

test.run();
