// The shape a newcomer can hold in their head (README, "Design notes"): pve-dm.ts opens with its
// pipeline, no function runs past a screen (80 lines) and no line past 120 columns, in pve-dm.ts
// and in the shipped plugins.
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import ts from 'typescript';
import * as assert from 'uvu/assert';
import { PROJECT, test } from './harness.ts';

const FILES = ['pve-dm.ts', ...readdirSync(path.join(PROJECT, 'plugins')).map((name) => `plugins/${name}`)];
const text = (file: string) => readFileSync(path.join(PROJECT, file), 'utf8');

/** Every function, method and arrow function of a file longer than `max` lines, as `file:line name (n lines)`. */
function longFunctions(file: string, max: number): string[] {
  const source = ts.createSourceFile(file, text(file), ts.ScriptTarget.Latest, true);
  const long: string[] = [];
  const visit = (node: ts.Node) => {
    if (ts.isFunctionLike(node) && 'body' in node && node.body !== undefined) {
      const start = source.getLineAndCharacterOfPosition(node.getStart()).line + 1;
      const end = source.getLineAndCharacterOfPosition(node.getEnd()).line + 1;
      const name = node.name?.getText(source) ?? '(anonymous)';
      if (end - start + 1 > max) long.push(`${file}:${start} ${name} (${end - start + 1} lines)`);
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
  return long;
}

test('no function longer than 80 lines in pve-dm.ts and plugins/', () => {
  assert.equal(FILES.flatMap((file) => longFunctions(file, 80)), []);
});

test('no line longer than 120 characters in pve-dm.ts and plugins/', () => {
  const long = FILES.flatMap((file) =>
    text(file)
      .split('\n')
      .flatMap((line, index) => ([...line].length > 120 ? [`${file}:${index + 1} (${[...line].length})`] : [])),
  );
  assert.equal(long, []);
});

test('pve-dm.ts opens with its pipeline: the table of contents, then Stages, runPipeline and main before any stage', () => {
  const source = text('pve-dm.ts');
  const at = (marker: string) => source.indexOf(marker);
  assert.ok(at(' * Sections, in this order:') > 0 && at(' * Sections, in this order:') < at('import '), 'a table of contents first');
  const order = ['export interface Stages', 'export async function runPipeline', 'export async function main', '// Stage 1: discover', '// Stage 2: parse', '// Stage 3: classify', '// Stage 4: grade', '// Stage 5: report', '// Stage 6: cleanup'];
  const positions = order.map(at);
  assert.ok(positions.every((p) => p > 0), `every marker present: ${order.filter((_, i) => (positions[i] ?? -1) < 0).join(', ')}`);
  assert.equal(positions, [...positions].sort((a, b) => a - b), 'in this order');
});

test.run();
