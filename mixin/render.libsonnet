// The rendered files, by path under the output directory, for `jsonnet -S -m`:
//   jsonnet -S -m OUT -e "(import 'render.libsonnet')(CONFIG)"
// CONFIG holds only the _config keys to change; ksmSeverities merges key by key. Used by
// `make mixin` (the committed defaults) and by the `render` script beside it.
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
    'rules/ksm-exporter.rules.yml': header + std.manifestYamlDoc({ groups: groups }, true, false) + '\n',
    'grafana/ksm-exporter.json': std.manifestJsonEx(mixin.grafanaDashboards['ksm-exporter.json'], '  ') + '\n',
    // For Prometheus Operator: the same groups as a PrometheusRule in the namespace of
    // deploy/kubernetes/; a Prometheus whose ruleSelector matches its labels loads it.
    'deploy/kubernetes/prometheusrule.yaml': header + std.manifestYamlDoc({
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
    }, true, false) + '\n',
  }
