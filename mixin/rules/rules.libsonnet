// Recording rules: what the dashboard's panels read instead of computing it per query.
// Add a rule here and read it in mixin/dashboards/ through promql.records.
local promql = import '../lib/promql.libsonnet';

{
  prometheusRules+:: {
    local c = $._config,
    local e = promql.new(c),
    groups+: [
      {
        name: 'ksm-exporter.rules',
        rules: [
          { record: promql.records.flapping, expr: e.flapping() },
          // The same by cause (ksmtuned, other, unknown; one series per node where the
          // exporter does not say): which controller flapped.
          { record: promql.records.flappingCause, expr: e.transitionsIncrease('state') },
          { record: promql.records.pressure, expr: e.availableRatio() },
          {
            record: promql.records.saved,
            expr: 'sum by (job, %s) (%s)\n' % [
              c.ksmClusterLabel,
              promql.selector('ksm_saved_bytes', [c.ksmSelector]),
            ],
          },
        ],
      },
    ],
  },
}
