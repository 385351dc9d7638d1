// Recording rules: what the dashboard's fleet rows and the alerts read instead of
// computing it per query, so that their cost does not grow with the fleet (docs/
// performance.md, the fleet benchmark). Add a rule here and read it in mixin/dashboards/
// or mixin/alerts/ through promql.records. Groups by what they read, so that none holds
// all the work of a 5,000-node fleet (Prometheus evaluates groups side by side, the rules of a group
// in order): a node's latest samples, its VMs' series (the largest set), long windows.
// The flapping counts, read by KsmFlapping at its own evaluation, are recorded in its
// group (mixin/alerts/).
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
        // What reads the per-VM series (20 a node of 20 VMs, 100,000 at 5,000 such
        // nodes): two rules, each once; the fleet count sums the per-node one just
        // recorded. KsmVmNegativeProfit (ksm-exporter.alerts) reads the VMs below its
        // threshold from here, at most one evaluation old, which its hour of `for` hides.
        name: 'ksm-exporter.vms',
        rules: [
          { record: r.vms, expr: e.vms() + '\n' },
          fleet('sum', r.fleetVms, sel(r.vms)),
          { record: r.vmsLosing, expr: e.vmsLosing() + '\n' },
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
