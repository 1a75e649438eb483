// Generic webhook: POSTs the JSON report to PVE_DM_WEBHOOK_URL.
import type { Plugin } from '../pve-dm.ts';

export default {
  name: 'webhook',
  settings: ['PVE_DM_WEBHOOK_URL'],
  configured: (setting) => Boolean(setting('PVE_DM_WEBHOOK_URL')),
  async notify(_result, reports, { http, severity, urlSetting }) {
    const url = urlSetting('PVE_DM_WEBHOOK_URL', 'https://monitoring.example/pve-dm');
    const response = await http({
      url: url.href,
      headers: { 'content-type': 'application/json', 'user-agent': 'pve-dm', 'x-pve-dm-severity': severity },
      body: reports.json,
    });
    return `HTTP ${response.status}`;
  },
} satisfies Plugin;
