// The console's logical lines, for tests that read pve-dm's console output (test/harness.ts, and
// the real-kernel tier, which runs under plain node): pve-dm wraps lines at 80 columns, a
// continuation four columns further in than the line it continues (pve-dm.ts wrapConsole).
/** @param {string} text */
export function unwrapConsole(text) {
  /** @type {string[]} */
  const out = [];
  let lead = -1;
  for (const line of text.split('\n')) {
    const indent = /^ */.exec(line)?.[0].length ?? 0;
    if (out.length > 0 && line.trim() !== '' && lead >= 0 && indent === Math.min(lead + 4, 40)) {
      out[out.length - 1] += ` ${line.trimStart()}`;
      continue;
    }
    out.push(line);
    lead = line.trim() === '' ? -1 : indent;
  }
  return out.join('\n');
}
