// Loaded with `node --import`: appends every module URL the process resolves to the file named by
// TEST_TRACE_IMPORTS, so a test can prove which modules a run loaded.
import { register } from 'node:module';

const hooks = `
import { appendFileSync } from 'node:fs';
let file;
export function initialize(data) { file = data.file; }
export async function resolve(specifier, context, next) {
  const result = await next(specifier, context);
  appendFileSync(file, result.url + '\\n');
  return result;
}`;
register(`data:text/javascript,${encodeURIComponent(hooks)}`, { data: { file: process.env.TEST_TRACE_IMPORTS } });
