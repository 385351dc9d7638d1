// PromQL text helpers and the expressions that alerts, recording rules and dashboard
// share, so that a panel draws exactly what an alert judges. Local, no dependencies.
{
  // metric{m1, m2}: the non-empty matchers joined, or the bare metric name.
  selector(metric, matchers=[])::
    local inside = std.join(', ', [m for m in matchers if m != '']);
    if inside == '' then metric else '%s{%s}' % [metric, inside],

  // Every line of text indented by n spaces.
  indent(text, n)::
    std.join('', [std.repeat(' ', n) + line + '\n' for line in std.split(std.rstripChars(text, '\n'), '\n')]),

  // A number as Python's %g writes it: 0.2, 10, 0.001.
  num(x):: if x == 0 then '0' else std.format('%g', x),  // jsonnet's %g overflows on 0
  // A ratio as a percentage for people: 0.2 -> 20%.
  pct(x):: $.num(x * 100) + '%',

  running: 'state="running"',
  unmerging: 'state="unmerging"',
  notRunning: 'state!="running"',

  // The labels the per-VM series add to a target's (collectors/per_vm.py LABELS):
  // `count without` them counts VMs per node and keeps every target label.
  perVmLabels: 'namespace, pid, uuid, vm, vmid',

  // Recording rule names, read by the dashboard and the alerts (mixin/rules/ writes
  // them). level:metric:operations; `instance` keeps every target label, `job` is one
  // series per job and cluster (ksmClusterLabel) and the selector's labels.
  records: {
    // Per node, every evaluation interval (groups ksm-exporter.rules and .vms; the
    // transitions in .flapping, the VMs below the profit threshold in .vm-profit).
    transitions: 'instance:ksm_run_transitions:sum',
    transitionsCause: 'instance_cause:ksm_run_transitions:sum',
    flapping: 'instance:ksm_run_transitions:increase_flapping_window',
    pressure: 'instance:ksm_memory_available:ratio',
    savedRatio: 'instance:ksm_saved_bytes:ratio',
    vms: 'instance:ksm_process:count',
    vmsLosing: 'instance:ksm_process_profit_bytes:count_below_threshold',
    // Per job and cluster: what the fleet rows draw, a few series whatever the fleet's size.
    saved: 'job:ksm_saved_bytes:sum',
    total: 'job:ksm_memory_total_bytes:sum',
    generalProfit: 'job:ksm_general_profit_bytes:sum',
    running: 'job:ksm_run_state_running:sum',
    nodes: 'job:ksm_up:count',
    withSysfs: 'job:ksm_up:sum',
    targets: 'job:up:count',
    targetsUp: 'job:up:sum',
    ksmdCores: 'job:ksm_ksmd_cpu_seconds:sum_rate_cpu_window',
    fleetVms: 'job:ksm_process:count',
    dropped: 'job:ksm_process_series_dropped:sum',
    collectors: 'job_collector:ksm_scrape_collector_success:min',
    // Long windows, every ksmWindowsInterval (group ksm-exporter.windows): KSM running at
    // any time within the last step, then within ksmPressureRanWithin read from those
    // steps (a day is 720 samples of 2m rather than 2,880 of a 30 s scrape); full scans
    // per second over ksmFullScanWindow.
    ranStep: 'instance:ksm_run_state_running:max_over_time_step',
    ranWithin: 'instance:ksm_run_state_running:max_over_time_ran_within',
    fullScans: 'instance:ksm_full_scans:rate_full_scan_window',
  },

  // The expressions, for the configuration c and extra matchers (the dashboard's
  // variables) after c.ksmSelector.
  new(c):: {
    local p = $,
    local e = self,
    local s(m) = std.join(', ', [x for x in [c.ksmSelector, m] if x != '']),

    // MemAvailable over MemTotal now; MemFree on kernels before 3.14, which have no
    // MemAvailable (the `or` keeps the left side wherever it exists).
    availableRatio(m=''):: |||
      (
          %s
        or
          %s
      )
      /
        %s
    ||| % [
      p.selector('ksm_memory_available_bytes', [s(m)]),
      p.selector('ksm_memory_free_bytes', [s(m)]),
      p.selector('ksm_memory_total_bytes', [s(m)]),
    ],

    // A node's transition counters summed (`without` keeps every target label: cell,
    // rack, file_sd's; and works whether or not the exporter adds `cause`), recorded
    // each evaluation: the hour's increase then reads one series a node (or one per
    // cause) rather than its nine counters.
    transitionsSum(without, m=''):: 'sum without (%s) (%s)\n' % [
      without,
      p.selector('ksm_run_transitions_total', [c.ksmSelector, m]),
    ],
    // Rounded because increase() extrapolates to the window's edges and a count of 4
    // must not read as 4.07 against a threshold of 4.
    transitionsIncrease(record, m=''):: 'round(increase(%s[%s]))\n' % [
      p.selector(record, [c.ksmSelector, m]),
      c.ksmFlappingWindow,
    ],

    // KSM not running while less than the pressure ratio of memory is available, on a
    // node where KSM is meant to run: it ran within ksmPressureRanWithin (recorded in
    // ksm-exporter.windows: a day of raw samples per node per evaluation is what made
    // this expensive on large fleets), or ksmtuned
    // runs or is configured (ksmtuned_threshold_bytes exists). The value is the
    // available ratio; the labels are the target's, plus the state KSM is in.
    stoppedUnderPressure(m=''):: |||
      (
        (
      %s  )
        < %s
      )
      * on (job, instance) group_left (state)
        (%s == 1)
      and on (job, instance)
        (
            %s == 1
          or
            %s == 1
          or
            %s
        )
    ||| % [
      p.indent(e.availableRatio(m), 4),
      p.num(c.ksmPressureAvailableRatio),
      p.selector('ksm_run_state', [s(m), p.notRunning]),
      p.selector(p.records.ranWithin, [s(m)]),
      p.selector('ksmtuned_running', [s(m)]),
      p.selector('ksmtuned_threshold_bytes', [s(m)]),
    ],

    // The share of MemTotal that KSM's savings lost against their maximum within the
    // collapse window, where more than ksmCollapseMemoryRatio was lost while available
    // memory is below the pressure ratio.
    savingsCollapsing(m=''):: |||
      (
        max_over_time(%(saved)s[%(window)s])
        -
        %(saved)s
      )
      /
        %(total)s
      > %(ratio)s
      and
      (
      %(available)s)
      < %(pressure)s
    ||| % {
      saved: p.selector('ksm_saved_bytes', [s(m)]),
      window: c.ksmCollapseWindow,
      total: p.selector('ksm_memory_total_bytes', [s(m)]),
      ratio: p.num(c.ksmCollapseMemoryRatio),
      available: p.indent(e.availableRatio(m), 2),
      pressure: p.num(c.ksmPressureAvailableRatio),
    },

    ksmdCores(window, m=''):: 'rate(%s[%s])' % [p.selector('ksm_ksmd_cpu_seconds_total', [s(m)]), window],

    // The labels of the per-job (fleet) aggregations: job, the cluster label, and the
    // labels ksmSelector matches on, so that the selector still picks the recorded series.
    fleetBy::
      local named = [
        std.stripChars(std.split(std.strReplace(std.strReplace(x, '!', '='), '~', '='), '=')[0], ' ')
        for x in std.split(c.ksmSelector, ',')
        if std.length(std.findSubstr('=', x)) > 0
      ];
      local all = ['job', c.ksmClusterLabel] + named;
      std.join(', ', [all[i] for i in std.range(0, std.length(all) - 1) if !std.member(all[0:i], all[i])]),

    // VMs per node (every exported VM has ksm_process_merging_pages), and those whose
    // profit is below the KsmVmNegativeProfit threshold. Absent on nodes without any.
    vms(m=''):: 'count without (%s) (%s)' % [p.perVmLabels, p.selector('ksm_process_merging_pages', [s(m)])],
    vmsLosing(m=''):: 'count without (%s) (%s < -%d)' % [
      p.perVmLabels,
      p.selector('ksm_process_profit_bytes', [s(m)]),
      c.ksmVmNegativeProfitBytes,
    ],
  },
}
