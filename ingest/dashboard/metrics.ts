/**
 * The dashboard's Prometheus metrics (default registry, served by GET /metrics): the quality
 * rates and alerts it shows, so Grafana and the page show the same numbers, and its own
 * connections. Set once per tick by the hub.
 */
import { Counter, Gauge, register, type Metric } from 'prom-client';

function once<T extends Metric>(name: string, make: () => T): T {
  return (register.getSingleMetric(name) as T | undefined) ?? make();
}

export const dashboardMetrics = {
  alert: once('sluice_alert_firing', () => new Gauge({ name: 'sluice_alert_firing', help: '1 while a dashboard alert fires (invalid_rate, late_rate, duplicate_rate, too_late_rate, anomaly), else 0.', labelNames: ['alert'] })),
  alertsFired: once('sluice_alerts_fired_total', () => new Counter({ name: 'sluice_alerts_fired_total', help: 'Times a dashboard alert started firing, by alert.', labelNames: ['alert'] })),
  qualityRate: once(
    'sluice_quality_rate',
    () => new Gauge({ name: 'sluice_quality_rate', help: 'Share of events over the trailing rate window, by kind (invalid, late, duplicate, too_late); NaN with too few events.', labelNames: ['kind'] }),
  ),
  late: once('sluice_ingest_late_events_total', () => new Counter({ name: 'sluice_ingest_late_events_total', help: 'Acknowledged events received more than dashboard.lateAfterMs after their event time.' })),
  committed: once('sluice_engine_events_committed_total', () => new Counter({ name: 'sluice_engine_events_committed_total', help: 'Processed events covered by a successful checkpoint (their files are in the lake).' })),
  checkpointAge: once('sluice_engine_checkpoint_age_seconds', () => new Gauge({ name: 'sluice_engine_checkpoint_age_seconds', help: 'Seconds since the last successful checkpoint (as /v1/live lastCheckpointAgeSeconds; NaN before the first).' })),
  /** The dashboard's hour / today figures (window: hour | today; metric: events, active_users, sessions, installs, screen_views, notification_ctr). */
  window: once(
    'sluice_live_window',
    () => new Gauge({ name: 'sluice_live_window', help: 'The live dashboard\'s current UTC hour and day (by event time): events, active_users, sessions, installs, screen_views, notification_ctr.', labelNames: ['window', 'metric'] }),
  ),
  clients: once('sluice_dashboard_clients', () => new Gauge({ name: 'sluice_dashboard_clients', help: 'Open dashboard stream connections.' })),
  disconnects: once(
    'sluice_dashboard_disconnects_total',
    () => new Counter({ name: 'sluice_dashboard_disconnects_total', help: 'Dashboard stream connections closed by the server, by reason (backpressure: it stopped reading).', labelNames: ['reason'] }),
  ),
};
