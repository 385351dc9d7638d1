// Recording rules: what the dashboard's fleet rows and the alerts read instead of
// computing it per query, so that their cost does not grow with the fleet (docs/
// performance.md, the fleet benchmark). Add a rule here and read it in mixin/dashboards/
// or mixin/alerts/ through promql.records. Groups by what they read, so that none holds
// all the work of a 5,000-node fleet (Prometheus evaluates groups side by side, the rules of a group
// in order): a node's latest samples, its VMs' count (the largest set), long windows.
// The flapping counts and the VMs below the profit threshold, read by KsmFlapping and
// KsmVmNegativeProfit at their own evaluation, are recorded in their groups (mixin/alerts/).
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
          // Per job and cluster, from the raw series.
          fleet('sum', r.saved, sel('ksm_saved_bytes')),
          fleet('sum', r.total, sel('ksm_memory_total_bytes')),
          fleet('sum', r.generalProfit, sel('ksm_general_profit_bytes')),
          fleet('sum', r.running, sel('ksm_run_state', promql.running)),
          fleet('count', r.nodes, sel('ksm_up')),
          fleet('sum', r.withSysfs, sel('ksm_up')),
          fleet('count', r.targets, sel('up')),
          fleet('sum', r.targetsUp, sel('up')),
          fleet('sum', r.ksmdCores, e.ksmdCores(c.ksmdCpuWindow)),
          fleet('sum', r.dropped, sel('ksm_process_series_dropped')),
          {
            record: r.collectors,
            expr: 'min by (%s, collector) (%s)\n' % [by, sel('ksm_scrape_collector_success')],
          },
        ],
      },
      {
        // The VMs per node, from one per-VM gauge (20 series a node of 20 VMs, 100,000 at
        // 5,000 such nodes), then the fleet count from that record. The VMs below the
        // profit threshold read another per-VM gauge, in KsmVmNegativeProfit's group
        // (mixin/alerts/): one read of 100,000 series per group is what keeps each under
        // a second at 5,000 nodes (docs/performance.md).
        name: 'ksm-exporter.vms',
        rules: [
          { record: r.vms, expr: e.vms() + '\n' },
          fleet('sum', r.fleetVms, sel(r.vms)),
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
