// What the browser tier measures in a report, as functions that run inside the page: page.evaluate
// sends their source there, so each may use only the DOM and its own argument, nothing of this
// module's scope. Types only cross back (plain JSON).

/** A box edge at 400.4 px on a 400 px viewport is sub-pixel layout rounding, not an overflow. */
export const SUBPIXEL = 0.5;

/** The headline (the header's <strong>) and the grade, as renderHtml marks them. */
export const HEADLINE = '[data-header] strong';
export const GRADE = '[data-field="grade"]';
/**
 * Every remedy: each element marked data-remedy, and, for a remedy left unmarked, the <code> in the
 * last cell of a row that carries one (problem entries, orphan LVs, thin pools, cluster findings),
 * where renderHtml has put remedies. The test counts them against the --json data, both ways.
 */
export const REMEDIES = ['tr[data-entry]', 'tr[data-orphan]', 'tr[data-pool]', 'tr[data-finding]']
  .map((row) => `${row} > td:last-child code`)
  .concat('[data-remedy]')
  .join(', ');

/** An element past the right edge: its tag, its data attributes, the nearest ancestor's that has some. */
export interface Overflow {
  tag: string;
  data: string;
  within: string;
  text: string;
  right: number;
}
export interface Layout {
  clientWidth: number;
  scrollWidth: number;
  /** How many elements end past the right edge. */
  count: number;
  /** The outermost of them (their parent ends within the edge): where a fix starts. */
  outermost: Overflow[];
}

/** The document's width against the viewport's, and the elements whose box ends past its right edge. */
export function measureLayout(slack: number): Layout {
  const root = document.documentElement;
  const data = (node: Element) =>
    [...node.attributes]
      .filter((attribute) => attribute.name.startsWith('data-'))
      .map((attribute) => (attribute.value === '' ? attribute.name : `${attribute.name}="${attribute.value}"`))
      .join(' ');
  const past = [...document.body.querySelectorAll('*')].filter(
    (element) => element.getBoundingClientRect().right > root.clientWidth + slack,
  );
  const pastSet = new Set<Element>(past);
  const outermost = past.filter((element) => element.parentElement === null || !pastSet.has(element.parentElement));
  const describe = (element: Element): Overflow => {
    let holder = element.parentElement;
    while (holder !== null && data(holder) === '') holder = holder.parentElement;
    return {
      tag: element.tagName.toLowerCase(),
      data: data(element),
      within: holder === null ? '' : `${holder.tagName.toLowerCase()} ${data(holder)}`,
      text: (element.textContent ?? '').trim().replace(/\s+/g, ' ').slice(0, 60),
      right: Math.round(element.getBoundingClientRect().right),
    };
  };
  return {
    clientWidth: root.clientWidth,
    scrollWidth: root.scrollWidth,
    count: past.length,
    outermost: outermost.map(describe),
  };
}

/** An element and what keeps it from being read whole at this width (nothing: it is visible). */
export interface Shown {
  text: string;
  problems: string[];
}

/**
 * Each element `selector` matches, checked as a reader sees it: a size, not hidden (display,
 * visibility, opacity), horizontally within the viewport, not cut off by an ancestor that clips
 * (overflow other than visible) nor by its own overflow; with `firstScreen`, wholly on the first
 * screen, unscrolled. A remedy may be further down the page, but must be readable whole.
 */
export function visibility({
  selector,
  slack,
  firstScreen,
}: {
  selector: string;
  slack: number;
  firstScreen: boolean;
}): Shown[] {
  const viewport = document.documentElement.clientWidth;
  return [...document.querySelectorAll(selector)].map((element) => {
    const box = element.getBoundingClientRect();
    const problems: string[] = [];
    if (box.width === 0 || box.height === 0) problems.push(`no size (${box.width}×${box.height})`);
    if (!element.checkVisibility({ opacityProperty: true, visibilityProperty: true }))
      problems.push('hidden (display, visibility or opacity)');
    if (box.left < -slack || box.right > viewport + slack)
      problems.push(`spans ${Math.round(box.left)} to ${Math.round(box.right)} px of a ${viewport} px viewport`);
    if (firstScreen && box.bottom + window.scrollY > window.innerHeight + slack)
      problems.push(
        `ends ${Math.round(box.bottom + window.scrollY)} px down, past the first screen (${window.innerHeight} px)`,
      );
    for (let up = element.parentElement; up !== null; up = up.parentElement) {
      const clip = getComputedStyle(up).overflowX;
      const frame = up.getBoundingClientRect();
      if (clip === 'visible' || (box.left >= frame.left - slack && box.right <= frame.right + slack)) continue;
      problems.push(`cut off by <${up.tagName.toLowerCase()}> (overflow-x: ${clip})`);
      break;
    }
    if (getComputedStyle(element).overflowX !== 'visible' && element.scrollWidth > element.clientWidth)
      problems.push(`its own text cut off (${element.scrollWidth} px in ${element.clientWidth})`);
    return { text: (element.textContent ?? '').trim().replace(/\s+/g, ' ').slice(0, 80), problems };
  });
}

/** Text a reader copies or matches whole: dm names, LV names and remedies (<code>), the node's name. */
export const NAMES = 'code, [data-field="node"]';

/** A line break inside a name: the element's text, and where (`ssd-|-ha01`). */
export interface Break {
  text: string;
  at: string;
}

/**
 * Where the text of each element `selector` matches wraps other than at a space: a browser may
 * break after a hyphen, and `ssd--ha01-` at a line's end reads as a whole name. Found by the
 * position of each character: a character on a lower line than the one before it starts a line.
 */
export function breaksInNames(selector: string): Break[] {
  const found: Break[] = [];
  const range = document.createRange();
  for (const element of document.querySelectorAll(selector)) {
    const walker = document.createTreeWalker(element, NodeFilter.SHOW_TEXT);
    let before = '';
    let lineTop: number | null = null;
    for (let node = walker.nextNode(); node !== null; node = walker.nextNode()) {
      const value = node.nodeValue ?? '';
      for (let i = 0; i < value.length; i++) {
        range.setStart(node, i);
        range.setEnd(node, i + 1);
        const box = range.getBoundingClientRect();
        if (box.width > 0 && !/\s/.test(value[i] ?? '')) {
          const newLine = lineTop !== null && box.top > lineTop + box.height / 2;
          if (newLine && !/\s$/.test(before))
            found.push({
              text: (element.textContent ?? '').trim().slice(0, 80),
              at: `${before.slice(-12)}|${value.slice(i, i + 12)}`,
            });
          lineTop = box.top;
        }
        before += value[i];
      }
    }
  }
  return found;
}

/** One axe-core rule broken: where the first offender is, and how many there are. */
export interface Violation {
  id: string;
  impact: string | null;
  help: string;
  nodes: number;
  target: string;
  html: string;
  /** axe-core's why for the first offender (a contrast names its colours and ratio). */
  why: string;
}

/** axe-core (injected as window.axe) on the whole document; its violations, whatever their impact. */
export async function runAxe(): Promise<Violation[]> {
  const { axe } = window as unknown as { axe: typeof import('axe-core') };
  const results = await axe.run(document, { resultTypes: ['violations'] });
  return results.violations.map((violation) => ({
    id: violation.id,
    impact: violation.impact ?? null,
    help: violation.help,
    nodes: violation.nodes.length,
    target: violation.nodes[0]?.target.join(' ') ?? '',
    html: (violation.nodes[0]?.html ?? '').slice(0, 120),
    why: (violation.nodes[0]?.failureSummary ?? '').replace(/\s+/g, ' ').slice(0, 240),
  }));
}
