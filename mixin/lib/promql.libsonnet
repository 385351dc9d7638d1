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

  // Recording rule names, read by the dashboard (mixin/rules/ writes them).
  records: {
    flapping: 'instance:ksm_run_transitions:increase_flapping_window',
    flappingCause: 'instance_cause:ksm_run_transitions:increase_flapping_window',
    pressure: 'instance:ksm_memory_available:ratio',
    saved: 'job:ksm_saved_bytes:sum',
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

    // Rounded because increase() extrapolates to the window's edges and a count of 4
    // must not read as 4.07 against a threshold of 4. `without` keeps every target label
    // (cell, rack, file_sd's) and works whether or not the exporter adds `cause`.
    transitionsIncrease(without, m=''):: |||
      round(
        sum without (%s) (
          increase(%s[%s])
        )
      )
    ||| % [without, p.selector('ksm_run_transitions_total', [c.ksmSelector, m]), c.ksmFlappingWindow],

    flapping(m=''):: e.transitionsIncrease('state, cause', m),

    // KSM not running while less than the pressure ratio of memory is available, on a
    // node where KSM is meant to run: it ran within ksmPressureRanWithin, or ksmtuned
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
            max_over_time(%s[%s]) == 1
          or
            %s == 1
          or
            %s
        )
    ||| % [
      p.indent(e.availableRatio(m), 4),
      p.num(c.ksmPressureAvailableRatio),
      p.selector('ksm_run_state', [s(m), p.notRunning]),
      p.selector('ksm_run_state', [s(m), p.running]),
      c.ksmPressureRanWithin,
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
  },
}
