// One cold run of the pipeline on a capture, each stage timed inside the process; prints JSON.
// The benchmark starts it afresh for every sample, as cron starts pve-dm.
import { createRunner, defaultStages, runPipeline, type Stages } from '../../pve-dm.ts';

const root = process.argv[2];
if (root === undefined) throw new Error('usage: stage-times.ts CAPTURE');
const ms: Record<string, number> = {};
const timed = (name: string, stage: (...args: never[]) => unknown) => (...args: never[]) => {
  const started = performance.now();
  const output = stage(...args);
  const stop = <T>(value: T) => ((ms[name] = (ms[name] ?? 0) + performance.now() - started), value);
  return output instanceof Promise ? output.then(stop) : stop(output);
};
const stages = Object.fromEntries(Object.entries(defaultStages).map(([name, stage]) => [name, timed(name, stage)])) as unknown as Stages;
const { result } = await runPipeline(stages, { root, vmids: [], json: true, console: false, html: false, color: false, runner: createRunner({ allowChanges: false }) });
const report = ms.report;
await stages.report(result, { json: false, console: false, html: true, color: false });
process.stdout.write(`${JSON.stringify({ ...ms, report, html: (ms.report ?? 0) - (report ?? 0) })}\n`);
