// No catastrophic backtracking. Every regex pve-dm applies to input text, on the slowest lines
// for it (long runs of the characters its quantifiers overlap on: a quadratic regex takes seconds
// on 100 KB, a linear one a millisecond), and on generated ones.
import fc from 'fast-check';
import * as assert from 'uvu/assert';
import {
  anonymiseCapture, escapeHtml, identify, mangleDmName, parse, parseDmsetupInfo, parseDmsetupTable, parseGuestConfig, parseGuestVolumeName, parseLvs,
  parseStorageCfg, shellQuote, splitLvmName, stripCopySuffix, terminalSafe, unmangleDmName, volumesOfPropertyString, volumesOfRef,
} from '../pve-dm.ts';
import { capture, config, test } from './harness.ts';
import { property } from './support/fuzz.ts';

/** Milliseconds `work` takes, the better of two tries: one pause of a busy machine is not a slow regex. */
function fastest(work: () => unknown): number {
  let best = Infinity;
  for (let i = 0; i < 2 && best > 50; i++) {
    const started = performance.now();
    work();
    best = Math.min(best, performance.now() - started);
  }
  return best;
}

/** Every entry point whose regexes see input text, given one line of it. */
const ENTRY_POINTS: [string, (line: string) => unknown][] = [
  ['parseDmsetupInfo', (line) => parseDmsetupInfo(line)],
  ['parseDmsetupTable', (line) => parseDmsetupTable(line)],
  ['parseLvs', (line) => parseLvs(line)],
  ['parseStorageCfg', (line) => parseStorageCfg(line)],
  ['parseGuestConfig qemu', (line) => parseGuestConfig(config(100, line))],
  ['parseGuestConfig lxc', (line) => parseGuestConfig(config(100, line, { type: 'lxc' }))],
  ['parse (running.txt, volume ids)', (line) => parse(capture({ running: line, configs: [config(100, `scsi0: ${line}\nvmstate: ${line}\n`)] }))],
  ['identify (name)', (line) => identify({ realName: line, uuid: '' })],
  ['identify (uuid)', (line) => identify({ realName: 'pve-vm--100--disk--0', uuid: line })],
  ['splitLvmName', (line) => splitLvmName(line)],
  ['parseGuestVolumeName', (line) => parseGuestVolumeName(line)],
  ['stripCopySuffix', (line) => stripCopySuffix(line)],
  ['volumesOfPropertyString', (line) => volumesOfPropertyString(line)],
  ['volumesOfRef', (line) => volumesOfRef(line, new Map([['local-lvm', 'pve']]))],
  ['mangleDmName / unmangleDmName', (line) => unmangleDmName(mangleDmName(line))],
  ['anonymiseCapture', (line) => anonymiseCapture(capture({ storageCfg: `lvm: x\n${line}\n`, configs: [config(100, line)] }))],
  ['terminalSafe, escapeHtml, shellQuote', (line) => shellQuote(escapeHtml(terminalSafe(line)))],
];

const N = 100_000;
const repeat = (unit: string, length = N) => unit.repeat(Math.ceil(length / unit.length));
/** The slowest lines for each regex: its quantifiers' overlapping characters, many times, then a character that makes it fail late. */
const WORST_LINES: [string, string][] = [
  ['config key, a line terminator inside the value', `k:${repeat(' ')}a\u2028b`],
  ['config key, spaces and words', `name: ${repeat('a ')}\u2028x`],
  ['config key, a long key', `${repeat('a_')}1`],
  ['raw lxc key', `lxc.a${repeat(' ')}x`],
  ['section header', `[${repeat('a')}`],
  ['storage.cfg section header, many colons', `${repeat('a:')}b c`],
  ['storage.cfg section header, colons only', `${repeat(':')} b c`],
  ['storage.cfg property, a line terminator inside the value', `\tk${repeat(' ')}a\u2028x`],
  ['storage.cfg property, trailing spaces (fuzz-found: "\\tvgname " and 30,000 spaces)', `\tvgname ${repeat(' ')}`],
  ['trailing spaces after a config key', `name: a${repeat(' ')}`],
  ['trailing spaces after a section header', `lvm: x${repeat(' ')}`],
  ['trailing tabs and line terminators', `\tk v${repeat('\t\u2028 ')}`],
  ['storage.cfg nodes (anonymise)', `\tnodes${repeat(' ')}a\u2028b`],
  ['storage.cfg server (anonymise)', `\tserver${repeat(' ')}a\u2028b`],
  ['storage.cfg username (anonymise)', `\tusername${repeat(' ')}a\u2028b`],
  ['dmsetup table line, many "name: 0 0 x" and a line terminator', `${repeat('x: 0 0 a')}\u2028`],
  ['dmsetup table line, many colons', `${repeat('a: ')}:`],
  ['dmsetup info, columns everywhere', `${repeat('1|')}L--w`],
  ['dmsetup info, bars only', repeat('|')],
  ['lvs line', `  ${repeat('|')}`],
  ['running.txt', `${repeat(' ')}x`],
  ['volume id', `${repeat('a-')}\u2028`],
  ['volume id, many colons', `${repeat('a:')}\u2028`],
  ['device path', `/dev/${repeat('a/')}`],
  ['property string', repeat('file=,')],
  ['guest volume (other)', `vm-1-${repeat('a')}\u2028`],
  ['thin snapshot name', `snap_vm-1-${repeat('a_')}!`],
  ['copy suffix', `vm-1-disk-${repeat('1', N / 2)}-${repeat('x', N / 2)}\u2028`],
  ['LVM sub-LV marker', `_rimage_${repeat('1')}x`],
  ['LVM name, doubled dashes', `${repeat('a--')}-`],
  ['uuid, partition', `part1-${repeat('x-')}\u2028`],
  ['uuid, LVM layer', `LVM-${'a'.repeat(64)}-${repeat('x')}\u2028`],
  ['mangled name', repeat('\\x4')],
  ['addresses (anonymise)', `${repeat(' :')}${repeat('1.', N / 4)}${repeat('aa:', N / 4)}`],
];

for (const [what, line] of WORST_LINES) {
  test(`no catastrophic backtracking: ${what} (${Math.round(line.length / 1000)} KB line)`, () => {
    for (const [name, entry] of ENTRY_POINTS) {
      const ms = fastest(() => entry(line));
      assert.ok(ms < 1000, `${name} took ${ms.toFixed(0)} ms on a ${line.length}-character line`);
    }
  });
}

const OVERLAPPING = [' ', '\t', ':', '|', '-', '_', '.', ',', '=', '/', '[', ']', '#', 'a', 'Z', '0', '1', '\\', 'x', '\u2028', '\r', '\u00a0'];
const PREFIXES = ['', 'k: ', 'name: ', 'lxc.', '\tvgname ', '\tnodes ', 'lvm: ', 'vm-1-', 'snap_vm-1-', 'pve-vm--1--', 'x: 0 0 ', 'part1-', 'scsi0: ', '_rimage_', 'file='];
const SUFFIXES = ['', '\u2028', 'x', ' b c', '!', ':', '|L--w|'];

property('no catastrophic backtracking: any line of a repeated pattern of overlapping characters (30 KB) takes each parser under 250 ms', 30,
  fc.property(fc.constantFrom(...PREFIXES), fc.string({ unit: fc.constantFrom(...OVERLAPPING), minLength: 1, maxLength: 6 }), fc.constantFrom(...SUFFIXES), (prefix, unit, suffix) => {
    const line = prefix + repeat(unit, 30_000) + suffix;
    for (const [name, entry] of ENTRY_POINTS) {
      const ms = fastest(() => entry(line));
      assert.ok(ms < 250, `${name} took ${ms.toFixed(0)} ms on ${JSON.stringify(prefix + unit.repeat(3))}...`);
    }
  }));

test.run();
