// Recording rules: what the dashboard's fleet rows and the alerts read instead of
// computing it per query, so that their cost does not grow with the fleet (docs/
// performance.md, the fleet benchmark). Add a rule here and read it in mixin/dashboards/
// or mixin/alerts/ through promql.records. The records an alert reads at its own
// evaluation (flapping counts, VMs below the profit threshold) are in the alerts' group,
// before the alerts: Prometheus evaluates the rules of a group in order, while two groups
// run in no fixed order to each other.
local promql = import '../lib/promql.libsonnet';

{
  prometheusRules+:: {
    local c = $._config,
    local e = promql.new(c),
    local r = promql.records,
    local sel(metric, m='') = promql.selector(metric, [c.ksmSelector, m]),
    local by = e.fleetBy,
    local fleet(op, record, expr) = { record: record, expr: '%s by (%s) (%s)\n' % [op, by, expr] },
    groups+: [
      {
        name: 'ksm-exporter.rules',
        rules: [
          { record: r.pressure, expr: e.availableRatio() },
          { record: r.savedRatio, expr: '%s\n/\n%s\n' % [sel('ksm_saved_bytes'), sel('ksm_memory_total_bytes')] },
          { record: r.vms, expr: e.vms() + '\n' },
          // Per job and cluster, from the raw series, but for the VMs: those are counted
          // from the per-node count just recorded (rules of a group run in order), so that
          // one rule a group reads the per-VM series, the largest set (docs/performance.md).
          fleet('sum', r.saved, sel('ksm_saved_bytes')),
          fleet('sum', r.total, sel('ksm_memory_total_bytes')),
          fleet('sum', r.generalProfit, sel('ksm_general_profit_bytes')),
          fleet('sum', r.running, sel('ksm_run_state', promql.running)),
          fleet('count', r.nodes, sel('ksm_up')),
          fleet('sum', r.withSysfs, sel('ksm_up')),
          fleet('count', r.targets, sel('up')),
          fleet('sum', r.targetsUp, sel('up')),
          fleet('sum', r.ksmdCores, e.ksmdCores(c.ksmdCpuWindow)),
          fleet('sum', r.fleetVms, sel(r.vms)),
          fleet('sum', r.dropped, sel('ksm_process_series_dropped')),
          {
            record: r.collectors,
            expr: 'min by (%s, collector) (%s)\n' % [by, sel('ksm_scrape_collector_success')],
          },
        ],
      },
      {
        // Long windows, evaluated less often: each evaluation reads
        // ksmPressureRanWithin / ksmWindowsInterval samples per node of the step series
        // and ksmFullScanWindow of the scrapes of one counter per node.
        name: 'ksm-exporter.windows',
        interval: c.ksmWindowsInterval,
        rules: [
          {
            record: r.ranStep,
            expr: 'max_over_time(%s[%s])\n' % [sel('ksm_run_state', promql.running), c.ksmWindowsInterval],
          },
          { record: r.ranWithin, expr: 'max_over_time(%s[%s])\n' % [sel(r.ranStep), c.ksmPressureRanWithin] },
          { record: r.fullScans, expr: 'rate(%s[%s])\n' % [sel('ksm_full_scans_total'), c.ksmFullScanWindow] },
        ],
      },
    ],
  },
}
