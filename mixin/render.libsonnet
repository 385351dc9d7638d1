// The rendered files for a configuration, by path under the output directory: `json`
// for `jsonnet -m OUT` (jsonnet's own JSON writer), `text` for `jsonnet -S -m OUT`.
//   jsonnet -J mixin -m OUT -e "(import 'render.libsonnet')(CONFIG).json"
// CONFIG holds only the _config keys to change; ksmSeverities merges key by key. Used by
// `make mixin` (the committed defaults) and the `render` script beside it.
local yaml = import 'lib/yaml.libsonnet';
local base = import 'mixin.libsonnet';
local defaults = (import 'config.libsonnet')._config;

function(config={})
  local unknown = [k for k in std.objectFields(config) if !std.objectHas(defaults, k)];
  assert std.isObject(config) : 'ksm-exporter mixin: the configuration is not an object';
  assert unknown == [] : 'ksm-exporter mixin: unknown configuration keys: ' + std.join(', ', unknown);
  local mixin = base { _config+:: std.mergePatch(defaults, config) };
  local header = |||
    # Rendered from ksm-exporter's monitoring mixin (mixin/render): change the mixin or its
    # configuration and render again rather than edit this file. docs/dashboard-and-alerts.md
  |||;
  local groups = mixin.prometheusRules.groups + mixin.prometheusAlerts.groups;
  {
    json: {
      'grafana/ksm-exporter.json': mixin.grafanaDashboards['ksm-exporter.json'],
    },
    text: {
      'rules/ksm-exporter.rules.yml': header + yaml.manifest({ groups: groups }),
      // For Prometheus Operator: the same groups as a PrometheusRule in the namespace of
      // deploy/kubernetes/; a Prometheus whose ruleSelector matches its labels loads it.
      'deploy/kubernetes/prometheusrule.yaml': header + yaml.manifest({
        apiVersion: 'monitoring.coreos.com/v1',
        kind: 'PrometheusRule',
        metadata: {
          name: 'ksm-exporter',
          namespace: 'monitoring',
          labels: {
            'app.kubernetes.io/name': 'ksm-exporter',
            'app.kubernetes.io/component': 'exporter',
          },
        },
        spec: { groups: groups },
      }),
    },
  }
