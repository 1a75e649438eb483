// Slack incoming webhook (PVE_DM_SLACK_WEBHOOK): Block Kit blocks with the grade, the counts and the
// first problem entries, and the subject as the plain `text` fallback.
//
// Everything that comes from the node (its name, entry names, guest names, remedies) is untrusted:
// `&`, `<` and `>` are escaped as Slack requires, so `<!channel>` cannot ping and `<url|text>`
// cannot make a link; mrkdwn texts are `verbatim` (no auto-linked URLs or channel names) and
// link previews are off. Every text is clipped to Slack's limits after escaping, never in the
// middle of an entity. The webhook URL is a secret: it never appears in a detail or error.
import {
  definePlugin,
  guestLabel,
  mangleDmName,
  REASONS,
  redactSecrets,
  serviceMessage,
  settingUrl,
  severityOf,
  terminalSafe,
  type Classified,
  type Result,
} from '../pve-dm.ts';

/** Slack's limits (https://api.slack.com/reference/block-kit/blocks). */
const SLACK_LIMITS = { headerText: 150, sectionText: 3000, contextText: 3000, blocks: 50, fallbackText: 3000 } as const;
/** Problem entries shown one by one; the rest are counted in the closing context line. */
const SLACK_MAX_ENTRIES = 10;

const ENTITIES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;' };

/** Slack's escaping, with control characters shown rather than obeyed (a newline cannot forge a line). */
const escapeSlack = (text: string) => terminalSafe(text).replace(/[&<>]/g, (c) => ENTITIES[c] ?? c);

/** Escaped, and at most `limit` characters, cut between characters (never inside an entity) with `…`. */
function fitSlack(text: string, limit: number): string {
  const escaped = escapeSlack(text);
  if (escaped.length <= limit) return escaped;
  let out = '';
  for (const char of terminalSafe(text)) {
    const piece = ENTITIES[char] ?? char;
    if (out.length + piece.length > limit - 1) break;
    out += piece;
  }
  return `${out}…`;
}

/** Inline code: escaped and clipped; a backtick would close the span, so it is shown as `ˋ`. */
const code = (text: string, limit: number) => `\`${fitSlack(text.replaceAll('`', 'ˋ'), limit)}\``;

const mrkdwn = (text: string) => ({ type: 'mrkdwn', text, verbatim: true });

const SEVERITY_EMOJI = { critical: '🚨', warning: '⚠️', ok: '✅' } as const;

function entryText(entry: Classified, result: Result): string {
  const guest = entry.vmid === null ? undefined : result.guests.find((g) => g.vmid === entry.vmid);
  const who =
    entry.vmid === null
      ? ''
      : ` · ${guestLabel(entry.vmid, entry.guestType)}${guest?.name ? ` ${code(guest.name, 200)}` : ''}`;
  const reason = `${fitSlack(entry.reason, 100)}: ${fitSlack(REASONS[entry.reason]?.[1] ?? '', 300)}`;
  const remedy =
    entry.remedy === null
      ? `no command now: ${fitSlack(entry.advice ?? 'see the report', 1500)}`
      : `remedy ${code(entry.remedy, 1500)}`;
  // Each part is clipped, so the whole stays under 2,700 characters: within the section limit (3,000).
  return `${code(mangleDmName(entry.name), 600)} *${entry.status}*${who}\n${reason}\n${remedy}`;
}

/** The Slack message for a result: header, counts, the first problem entries, and how many more. */
function slackMessage(result: Result, subject: string) {
  const { entries, valid, duplicate, tombstone, ignored, unjudged } = result.summary;
  const problems = [
    ...result.entries.filter((e) => e.status === 'duplicate'),
    ...result.entries.filter((e) => e.status === 'tombstone'),
  ];
  const shown = problems.slice(0, SLACK_MAX_ENTRIES);
  const more = problems.length - shown.length;
  const closing = [
    more > 0
      ? `…and ${more} more problem ${more === 1 ? 'entry' : 'entries'} (${problems.length} in all): see the full ` +
        `report on the node.`
      : null,
    problems.length === 0 ? 'No duplicate or tombstoned entries.' : null,
    problems.length > 0 && more === 0
      ? `All ${problems.length} problem ${problems.length === 1 ? 'entry' : 'entries'} shown.`
      : null,
    result.warnings.length > 0 ? `${result.warnings.length} warning(s) while reading the node.` : null,
  ].filter((line): line is string => line !== null);
  const blocks: object[] = [
    {
      type: 'header',
      text: {
        type: 'plain_text',
        text: fitSlack(
          `${SEVERITY_EMOJI[severityOf(result)]} Grade ${result.grade} on ${result.node}`,
          SLACK_LIMITS.headerText,
        ),
        emoji: true,
      },
    },
    {
      type: 'section',
      text: mrkdwn(
        `*${entries}* dm entries: *${valid}* valid, *${duplicate}* duplicate, *${tombstone}* tombstone, *` +
          `${ignored}* ignored${unjudged > 0 ? `, *${unjudged}* not judged` : ''}`,
      ),
    },
    ...shown.map((entry) => ({ type: 'section', text: mrkdwn(entryText(entry, result)) })),
    { type: 'context', elements: [mrkdwn(fitSlack(closing.join(' '), SLACK_LIMITS.contextText))] },
  ];
  return {
    text: fitSlack(subject, SLACK_LIMITS.fallbackText),
    blocks: blocks.slice(0, SLACK_LIMITS.blocks),
    unfurl_links: false,
    unfurl_media: false,
  };
}

export default definePlugin({
  name: 'slack',
  settings: ['PVE_DM_SLACK_WEBHOOK'],
  configured: (setting) => Boolean(setting('PVE_DM_SLACK_WEBHOOK')?.trim()),
  async notify(result, reports, { setting, http }) {
    const url = settingUrl(
      'PVE_DM_SLACK_WEBHOOK',
      (setting('PVE_DM_SLACK_WEBHOOK') ?? '').trim(),
      'https://hooks.slack.com/services/T000/B000/XXXX',
    );
    let response;
    try {
      response = await http({
        url: url.href,
        headers: { 'content-type': 'application/json', 'user-agent': 'pve-dm' },
        body: JSON.stringify(slackMessage(result, reports.subject)),
      });
    } catch (error) {
      // The webhook URL is the credential: keep its path out of every message too.
      throw new Error(
        redactSecrets(
          error instanceof Error ? error.message : String(error),
          [url.href, url.pathname].filter((part) => part.length > 1),
        ),
      );
    }
    if (response.status < 200 || response.status > 299)
      throw new Error(`HTTP ${response.status}: not delivered (Slack answers 200 ok)`);
    return `HTTP ${response.status}: ${serviceMessage(response.body)}`;
  },
});
