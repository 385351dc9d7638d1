// The alerts. What grows with a window or with the VMs of a node they read from
// recorded series, so that an evaluation reads a few samples per node: the flapping
// counts and the VMs below the profit threshold per node are recorded first in
// KsmFlapping's and KsmVmNegativeProfit's groups (rules of a group run in order, so the
// alert reads this evaluation's count; the dashboard reads them too); KSM's run state
// over a day comes from ksm-exporter.windows (mixin/rules/), at most one evaluation of
// its old, which matters only a day after the fact. The rest are instant comparisons of
// a node's series, in a group of their own.
local promql = import '../lib/promql.libsonnet';

{
  prometheusAlerts+:: {
    local c = $._config,
    local e = promql.new(c),
    local sel(metric, m=[]) = promql.selector(metric, [c.ksmSelector] + m),
    local num = promql.num,
    local pct = promql.pct,
    // A duration of zero: no `for` / `keep_firing_for` at all.
    local zero(d) = std.length([ch for ch in std.stringChars(d) if std.member('123456789', ch)]) == 0,
    local alert(name, expr, duration, summary, description, keepFiringFor='0s') =
      { alert: name, expr: expr }
      + (if zero(duration) then {} else { 'for': duration })
      + (if zero(keepFiringFor) then {} else { keep_firing_for: keepFiringFor })
      + {
        labels: { severity: c.ksmSeverities[name] },
        annotations: {
          summary: summary,
          description: description,
          runbook_url: c.ksmRunbookURLPattern % std.asciiLower(name),
        },
      },

    // A query in a description runs at every evaluation for every pending or firing alert
    // of the rule: these pick the node by its instance alone, not also by ksmSelector,
    // whose job matcher matches every series of the fleet and made each query cost four
    // times as much (1.2 ms against 0.27 ms at 5,000 nodes: docs/performance.md).
    // Names the cause of most of the node's changes in the window (the label `cause` of
    // ksm_run_transitions_total); exporters without it say so. The window's increase per
    // cause is taken here, for the flapping nodes only, rather than recorded for every
    // node at every evaluation (15,000 series over the hour at 5,000 nodes, the dearest
    // rule of its group: docs/performance.md).
    local topCause =
      local query = 'topk(1, round(increase(%s{instance=%%q}[%s])))' % [
        promql.records.transitionsCause,
        c.ksmFlappingWindow,
      ];
      '{{ with query (printf `%s` $labels.instance) }}' % query
      + '{{ with index . 0 }}{{ or .Labels.cause "not reported by this exporter" }}{{ end }}{{ end }}',

    // The node's VM that loses most now, its pid and profit.
    local worstVm =
      local query = 'bottomk(1, ksm_process_profit_bytes{instance=%q})';
      '{{ with query (printf `%s` $labels.instance) }}{{ with index . 0 }}' % query
      + '{{ .Labels.vm }} (pid {{ .Labels.pid }}) at {{ .Value | humanize1024 }}B{{ end }}{{ end }}',

    groups+: [
      {
        // Each node's changes of KSM's run state within ksmFlappingWindow: its transition
        // counters (nine series a node) summed per cause, those summed, every evaluation,
        // then the window's increase of the node's sum: one series a node over the window.
        name: 'ksm-exporter.flapping',
        rules: [
          // By cause (ksmtuned, other, unknown; one series per node where the exporter
          // does not say): which controller flapped.
          { record: promql.records.transitionsCause, expr: e.transitionsSum('state') },
          // The node's total from those three rather than from its nine counters again
          // (the same sum): at 5,000 nodes, 15,000 series read instead of 45,000.
          {
            record: promql.records.transitions,
            expr: 'sum without (cause) (%s)\n' % sel(promql.records.transitionsCause),
          },
          { record: promql.records.flapping, expr: e.transitionsIncrease(promql.records.transitions) },
          alert(
            'KsmFlapping',
            '%s > %s\n' % [sel(promql.records.flapping), num(c.ksmFlappingThreshold)],
            c.ksmFlappingFor,
            'KSM keeps starting and stopping.',
            'KSM on {{ $labels.instance }} changed state {{ $value }} times in %s (alert above %s). Cause of most changes: %s.'
            % [c.ksmFlappingWindow, num(c.ksmFlappingThreshold), topCause],
            c.ksmFlappingKeepFiringFor,
          ),
        ],
      },
      {
        // The VMs below the profit threshold per node, from the second per-VM gauge
        // (ksm-exporter.vms reads the first), then the alert on that count.
        name: 'ksm-exporter.vm-profit',
        rules: [
          { record: promql.records.vmsLosing, expr: e.vmsLosing() + '\n' },
          // One alert per node with the count of its VMs below the threshold, not one per
          // VM: a node with a bad configuration is one page, not hundreds. The VMs, held
          // for an hour by the node (any of them, not each), are in the dashboard's VMs
          // table; the description names the one that loses most now.
          alert(
            'KsmVmNegativeProfit',
            '%s > 0\n' % sel(promql.records.vmsLosing),
            c.ksmVmNegativeProfitFor,
            'KSM costs VMs more memory than it saves.',
            "KSM's profit on {{ $value }} VM(s) of {{ $labels.instance }} is below -%s MiB; lowest: %s."
            % [num(c.ksmVmNegativeProfitBytes / 1048576), worstVm],
          ),
        ],
      },
      {
        name: 'ksm-exporter.alerts',
        rules: [
          alert(
            'KsmStoppedUnderMemoryPressure',
            e.stoppedUnderPressure(),
            c.ksmPressureFor,
            'KSM is not running although memory is short.',
            'KSM on {{ $labels.instance }} is {{ $labels.state }} while {{ $value | humanizePercentage }} of memory is available (alert below %s).'
            % pct(c.ksmPressureAvailableRatio),
          ),
          alert(
            'KsmSavingsCollapsing',
            e.savingsCollapsing(),
            c.ksmCollapseFor,
            "KSM's savings are collapsing while memory is short.",
            "KSM on {{ $labels.instance }} saves {{ $value | humanizePercentage }} of the node's memory less than it did within %s (alert above %s), while less than %s of memory is available."
            % [c.ksmCollapseWindow, pct(c.ksmCollapseMemoryRatio), pct(c.ksmPressureAvailableRatio)],
          ),
          alert(
            'KsmSysfsMissing',
            '%s == 0\n' % sel('ksm_up'),
            c.ksmSysfsMissingFor,
            'The kernel offers no KSM to the exporter.',
            "ksm-exporter on {{ $labels.instance }} cannot read /sys/kernel/mm/ksm (ksm_up is {{ $value }}): a kernel without CONFIG_KSM, or --path.sysfs not pointing at the host's /sys.",
          ),
          alert(
            'KsmExporterDown',
            '%s == 0\n' % sel('up'),
            c.ksmExporterDownFor,
            'ksm-exporter cannot be scraped.',
            'Prometheus cannot scrape ksm-exporter on {{ $labels.instance }} (up is {{ $value }}): KSM on this node is not watched and no other KSM alert can fire for it.',
          ),
          alert(
            'KsmWastingEffort',
            |||
              %(unshared)s * %(page)s
              > %(min)s * %(total)s
              and %(unshared)s > %(ratio)s * %(sharing)s
              and %(settled)s == 1
            ||| % {
              unshared: sel('ksm_pages_unshared'),
              page: sel('ksm_page_size_bytes'),
              min: num(c.ksmWastingMinMemoryRatio),
              total: sel('ksm_memory_total_bytes'),
              ratio: num(c.ksmWastingRatio),
              sharing: sel('ksm_pages_sharing'),
              settled: sel('ksm_settled'),
            },
            c.ksmWastingFor,
            'KSM keeps scanning pages that do not merge.',
            "Settled KSM on {{ $labels.instance }} keeps checking {{ $value | humanize1024 }}B of unique pages, more than %s times what it shares and more than %s of the node's memory."
            % [num(c.ksmWastingRatio), pct(c.ksmWastingMinMemoryRatio)],
          ),
          alert(
            'KsmNegativeGeneralProfit',
            |||
              %s
              < -%s * %s
              and %s == 1
            ||| % [
              sel('ksm_general_profit_bytes'),
              num(c.ksmNegativeProfitMemoryRatio),
              sel('ksm_memory_total_bytes'),
              sel('ksm_settled'),
            ],
            c.ksmNegativeProfitFor,
            'KSM costs more memory than it saves.',
            "Settled KSM on {{ $labels.instance }} has a general profit of {{ $value | humanize1024 }}B (alert below -%s of the node's memory): its rmap_items take more memory than merging saves."
            % pct(c.ksmNegativeProfitMemoryRatio),
          ),
          alert(
            'KsmdCpuOverBudget',
            '%s > %s\n' % [e.ksmdCores(c.ksmdCpuWindow), num(c.ksmdCpuBudgetCores)],
            c.ksmdCpuFor,
            'ksmd uses more CPU than its budget.',
            'ksmd on {{ $labels.instance }} uses {{ $value | printf "%%.2f" }} cores over %s (budget %s).'
            % [c.ksmdCpuWindow, num(c.ksmdCpuBudgetCores)],
          ),
        ],
      },
    ],
  },
}
