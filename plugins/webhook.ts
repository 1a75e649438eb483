// Generic webhook: POSTs the JSON report to PVE_DM_WEBHOOK_URL.
import { definePlugin, settingUrl, severityOf } from '../pve-dm.ts';

export default definePlugin({
  name: 'webhook',
  settings: ['PVE_DM_WEBHOOK_URL'],
  configured: (setting) => Boolean(setting('PVE_DM_WEBHOOK_URL')),
  async notify(result, reports, { setting, http }) {
    // Checked as the other notifiers check theirs: a URL, http or https.
    const url = settingUrl(
      'PVE_DM_WEBHOOK_URL',
      setting('PVE_DM_WEBHOOK_URL') as string,
      'https://monitoring.example/pve-dm',
    );
    const response = await http({
      url: url.href,
      headers: { 'content-type': 'application/json', 'user-agent': 'pve-dm', 'x-pve-dm-severity': severityOf(result) },
      body: reports.json,
    });
    return `HTTP ${response.status}`;
  },
});
