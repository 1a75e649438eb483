// The pipeline as a whole: stages a plugin can replace or wrap, heavy modules loaded only when
// used, and the README's reason table in step with the code.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import * as assert from 'uvu/assert';
import { createRunner, defaultStages, REASONS, runPipeline, type Stages } from '../pve-dm.ts';
import { PROJECT, runCli, SAMPLES, tempDir, test } from './harness.ts';

const runner = createRunner({ allowChanges: false });

test('a stage can be replaced (grade) or wrapped (classify), and the pipeline uses it', async () => {
  const seen: number[] = [];
  const stages: Stages = {
    ...defaultStages,
    classify: (state) => {
      const result = defaultStages.classify(state);
      seen.push(result.entries.length);
      return result;
    },
    grade: (classification) => ({ ...defaultStages.grade(classification), grade: 'C' }),
  };
  const { result } = await runPipeline(stages, { root: path.join(SAMPLES, 'default-install'), vmids: [], json: true, console: false, html: false, color: false, runner });
  assert.equal(seen, [13]);
  assert.is(result.grade, 'C');
  assert.is(JSON.parse((await defaultStages.report(result, { json: true, console: false, html: false, color: false })).json ?? '{}').grade, 'C');
});

test('a JSON run loads neither cheerio, undici, @clack/prompts nor p-limit; an HTML run loads cheerio', async () => {
  const trace = path.join(tempDir(), 'imports.txt');
  const traced = (args: string[]) => runCli(args, { NODE_OPTIONS: `--import ${path.join(PROJECT, 'test/support/trace-imports.mjs')}`, TEST_TRACE_IMPORTS: trace });
  const json = await traced(['--root', path.join(SAMPLES, 'multi-pool'), '--report-only', '--json']);
  assert.is(json.code, 2, json.stderr);
  const loaded = readFileSync(trace, 'utf8');
  assert.match(loaded, /ts-pattern/, 'the trace works');
  for (const heavy of ['/cheerio/', '/undici/', '/@clack/', '/p-limit/']) assert.not.ok(loaded.includes(heavy), `${heavy} loaded by a JSON run`);
  const html = await traced(['--root', path.join(SAMPLES, 'multi-pool'), '--report-only', '--json', '--html', path.join(path.dirname(trace), 'r.html')]);
  assert.is(html.code, 2, html.stderr);
  assert.match(readFileSync(trace, 'utf8'), /\/cheerio\//);
});

test('the README lists every reason code with its status, and no other', () => {
  const readme = readFileSync(path.join(PROJECT, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('### Reason codes'), readme.indexOf('### Remedies'));
  const documented = new Map([...section.matchAll(/^\| `([a-z-]+)` \| ([a-z ]+?) \|/gm)].map(([, code, status]) => [code, status]));
  assert.equal([...documented.keys()].sort(), Object.keys(REASONS).sort());
  for (const [code, [status]] of Object.entries(REASONS)) {
    assert.ok(documented.get(code)?.includes(status), `README gives ${code} status ${documented.get(code)}, the code says ${status}`);
  }
});

test.run();
