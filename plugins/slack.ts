// Slack incoming webhook (PVE_DM_SLACK_WEBHOOK): Block Kit blocks with the grade, the counts and the
// first problem entries, and the subject as the plain `text` fallback.
//
// Everything that comes from the node (its name, entry names, guest names, remedies) is untrusted:
// `&`, `<` and `>` are escaped as Slack requires, so `<!channel>` cannot ping and `<url|text>`
// cannot make a link; mrkdwn texts are `verbatim` (no auto-linked URLs or channel names) and
// link previews are off. Every text is clipped to Slack's limits after escaping, never in the
// middle of an entity. The webhook URL is a secret: it never appears in a detail or error.
import type { Classified, NotifyContext, Plugin, Result } from '../pve-dm.ts';

/** Slack's limits (https://api.slack.com/reference/block-kit/blocks). */
const SLACK_LIMITS = { headerText: 150, sectionText: 3000, contextText: 3000, blocks: 50, fallbackText: 3000 } as const;
/** Problem entries shown one by one; the rest are counted in the closing context line. */
const SLACK_MAX_ENTRIES = 10;

const ENTITIES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;' };

/** Slack's text helpers over pve-dm's context: control characters are shown, not obeyed. */
function slackText({ terminalSafe }: Pick<NotifyContext, 'terminalSafe'>) {
  /** Escaped, and at most `limit` characters, cut between characters (never inside an entity) with `…`. */
  const fit = (text: string, limit: number) => fitSlack(terminalSafe(text), limit);
  /** Inline code: escaped and clipped; a backtick would close the span, so it is shown as `ˋ`. */
  const code = (text: string, limit: number) => `\`${fit(text.replaceAll('`', 'ˋ'), limit)}\``;
  return { fit, code };
}

/** `safe` (control characters already shown) escaped as Slack requires, cut at `limit` outside entities. */
function fitSlack(safe: string, limit: number): string {
  const escaped = safe.replace(/[&<>]/g, (c) => ENTITIES[c] ?? c);
  if (escaped.length <= limit) return escaped;
  let out = '';
  for (const char of safe) {
    const piece = ENTITIES[char] ?? char;
    if (out.length + piece.length > limit - 1) break;
    out += piece;
  }
  return `${out}…`;
}

const mrkdwn = (text: string) => ({ type: 'mrkdwn', text, verbatim: true });

const SEVERITY_EMOJI = { critical: '🚨', warning: '⚠️', ok: '✅' } as const;

function entryText(entry: Classified, result: Result, context: NotifyContext): string {
  const { fit, code } = slackText(context);
  const guest = entry.vmid === null ? undefined : result.guests.find((g) => g.vmid === entry.vmid);
  const who =
    entry.vmid === null
      ? ''
      : ` · ${context.guestLabel(entry.vmid, entry.guestType)}${guest?.name ? ` ${code(guest.name, 200)}` : ''}`;
  const reason = `${fit(entry.reason, 100)}: ${fit(context.meaning(entry.reason), 300)}`;
  const remedy =
    entry.remedy === null
      ? `no command now: ${fit(entry.advice ?? 'see the report', 1500)}`
      : `remedy ${code(entry.remedy, 1500)}`;
  // Each part is clipped, so the whole stays under 2,700 characters: within the section limit (3,000).
  return `${code(context.dmName(entry.name, entry.node), 600)} *${entry.status}*${who}\n${reason}\n${remedy}`;
}

/** The Slack message for a result: header, counts, the first problem entries, and how many more. */
function slackMessage(result: Result, subject: string, context: NotifyContext) {
  const { fit } = slackText(context);
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
        text: fit(
          `${SEVERITY_EMOJI[context.severity]} ${context.headline ?? `Grade ${result.grade} on ${result.node}`}`,
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
    ...shown.map((entry) => ({ type: 'section', text: mrkdwn(entryText(entry, result, context)) })),
    { type: 'context', elements: [mrkdwn(fit(closing.join(' '), SLACK_LIMITS.contextText))] },
  ];
  return {
    text: fit(subject, SLACK_LIMITS.fallbackText),
    blocks: blocks.slice(0, SLACK_LIMITS.blocks),
    unfurl_links: false,
    unfurl_media: false,
  };
}

export default {
  name: 'slack',
  settings: ['PVE_DM_SLACK_WEBHOOK'],
  configured: (setting) => Boolean(setting('PVE_DM_SLACK_WEBHOOK')?.trim()),
  async notify(result, reports, context) {
    const url = context.urlSetting('PVE_DM_SLACK_WEBHOOK', 'https://hooks.slack.com/services/T000/B000/XXXX');
    let response;
    try {
      response = await context.http({
        url: url.href,
        headers: { 'content-type': 'application/json', 'user-agent': 'pve-dm' },
        body: JSON.stringify(slackMessage(result, reports.subject, context)),
      });
    } catch (error) {
      // The webhook URL is the credential: keep its path out of every message too.
      const message = error instanceof Error ? error.message : String(error);
      throw new Error(
        context.redact(
          message,
          [url.href, url.pathname].filter((part) => part.length > 1),
        ),
      );
    }
    if (response.status < 200 || response.status > 299)
      throw new Error(`HTTP ${response.status}: not delivered (Slack answers 200 ok)`);
    return `HTTP ${response.status}: ${context.serviceMessage(response.body)}`;
  },
} satisfies Plugin;
