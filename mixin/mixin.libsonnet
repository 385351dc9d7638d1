// ksm-exporter's monitoring mixin: Prometheus recording rules, alerts and the Grafana
// dashboard. Its files are what mixin/generate.py wrote for the configuration in
// config.libsonnet, which is also the rules/ and grafana/ files' configuration: to
// change a threshold, write a JSON file with the keys to change and run
//   python3 mixin/generate.py --config my-ksm.json --output-dir out/
// (overriding _config here would change nothing: the generator is the one source).
{
  _config:: import 'config.libsonnet',
  prometheusRules: import 'prometheus_rules.json',
  prometheusAlerts: import 'prometheus_alerts.json',
  grafanaDashboards: {
    'ksm-exporter.json': import '../grafana/ksm-exporter.json',
  },
}
