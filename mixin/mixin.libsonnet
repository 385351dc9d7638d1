// ksm-exporter's monitoring mixin: Prometheus recording rules (prometheusRules), alerts
// (prometheusAlerts) and the Grafana dashboard (grafanaDashboards), all from _config
// (config.libsonnet). Override any key:
//   (import 'ksm-exporter/mixin.libsonnet') + { _config+:: { ksmSelector: 'job="kvm"' } }
// Rendering and overriding: docs/dashboard-and-alerts.md.
(import 'config.libsonnet')
+ (import 'rules/rules.libsonnet')
+ (import 'alerts/alerts.libsonnet')
+ (import 'dashboards/ksm-exporter.libsonnet')
+ (import 'lib/checks.libsonnet')
