// ntfy (https://ntfy.sh or a self-hosted server): POSTs the text summary to the topic.
//
// Settings:
//   PVE_DM_NTFY_URL    the server and topic, e.g. https://ntfy.example/pve
//   PVE_DM_NTFY_TOKEN  optional access token, sent as `Authorization: Bearer <token>`
//
// The title is the notification subject, which holds emoji: an HTTP header carries only ASCII
// reliably, so it travels as RFC 2047 encoded-words (`=?UTF-8?B?...?=`), which ntfy decodes
// (ntfy 2.4.0 and later). Priority and tags follow the severity. ntfy turns a message over
// 4096 bytes into an attachment, so a longer summary is cut (at a line) to fit.
import type { HttpRequest, NotifyContext, Plugin, Severity } from '../pve-dm.ts';

/** ntfy's default message limit; a longer body becomes an `attachment.txt`. */
const NTFY_MESSAGE_LIMIT = 4096;

const PRIORITY: Record<Severity, string> = { critical: '5', warning: '4', ok: '2' };
const TAGS: Record<Severity, string> = { critical: 'rotating_light', warning: 'warning', ok: 'white_check_mark' };

/** The text cut at a line so that it fits in `limit` bytes, saying that it was cut. */
function fitMessage(text: string, limit = NTFY_MESSAGE_LIMIT): string {
  if (Buffer.byteLength(text) <= limit) return text;
  const marker = '... (cut to fit ntfy; the full report is in the JSON and HTML reports)';
  const kept: string[] = [];
  let size = Buffer.byteLength(marker);
  for (const line of text.split('\n')) {
    const cost = Buffer.byteLength(line) + 1;
    if (size + cost > limit) break;
    kept.push(line);
    size += cost;
  }
  if (kept.length === 0) {
    // One line longer than the limit: cut it at a character.
    let line = '';
    for (const character of text) {
      if (Buffer.byteLength(line + character) + 1 + Buffer.byteLength(marker) > limit) break;
      line += character;
    }
    kept.push(line);
  }
  return [...kept, marker].join('\n');
}

/** The topic URL, checked: http(s), and a topic after the server. */
function topicUrl({ urlSetting }: NotifyContext): string {
  const url = urlSetting('PVE_DM_NTFY_URL', 'https://ntfy.sh/mytopic');
  const topicPath = url.pathname.replace(/\/+$/, '');
  if (topicPath === '')
    throw new Error('PVE_DM_NTFY_URL names no topic (expected the server and topic, e.g. https://ntfy.sh/mytopic)');
  url.pathname = topicPath;
  return url.href;
}

export default {
  name: 'ntfy',
  settings: ['PVE_DM_NTFY_URL', 'PVE_DM_NTFY_TOKEN'],
  configured: (setting) => Boolean(setting('PVE_DM_NTFY_URL')),
  async notify(_result, reports, context) {
    const url = topicUrl(context);
    const token = context.headerSetting('PVE_DM_NTFY_TOKEN');
    const { severity } = context;
    const request: HttpRequest = {
      url,
      method: 'POST',
      headers: {
        'content-type': 'text/plain; charset=utf-8',
        'user-agent': 'pve-dm',
        title: context.encodedWords(reports.subject).join(' '),
        priority: PRIORITY[severity],
        tags: TAGS[severity],
        ...(token ? { authorization: `Bearer ${token}` } : {}),
      },
      body: fitMessage(reports.text),
    };
    const response = await context.http(request);
    return `HTTP ${response.status}`;
  },
} satisfies Plugin;
