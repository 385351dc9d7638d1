// The Grafana dashboard: fleet rows aggregate every node of the selected jobs and
// clusters and read recorded series only (per job and cluster, or one per node in the
// instant tables), never a node's raw series over time nor a VM's; node rows show the
// selected node's raw series. Variables: data source, job, cluster (ksmClusterLabel) and
// one instance. Thresholds drawn are the alerts' thresholds.
local promql = import '../lib/promql.libsonnet';
local g = import 'panels.libsonnet';

local u = g.units;
local records = promql.records;
local running = promql.running;
local unmerging = promql.unmerging;
local notRunning = promql.notRunning;
// Grafana's import dialog asks for this input and sets the datasource variable to it.
local dsInput = 'DS_PROMETHEUS';
// Aggregations that keep every label but the metric name, for tables that join queries.
local edge = 'max by (job, instance, state)';
local perVm = 'max by (job, instance, vm, pid)';
local on = [[0, 'no', 'text'], [1, 'yes', 'green']];
local pct0(x) = std.format('%.0f%%', x * 100);
local pct2(x) = std.format('%.2f%%', x * 100);

// The edges of the run state as annotations, one colour per cause (the `cause` label of
// ksm_run_transitions_total); exporters without that label show as "not reported".
local causes = [
  ['ksmtuned', 'cause="ksmtuned"', 'blue'],
  ['another controller', 'cause="other"', 'red'],
  ['cause unknown', 'cause="unknown"', 'purple'],
  ['cause not reported', 'cause=""', 'orange'],
];

{
  grafanaDashboards+:: {
    local c = $._config,
    local e = promql.new(c),
    local cl = c.ksmClusterLabel,
    local num = promql.num,
    local t = g.target,
    // The matchers of every query: the configured selector, the job and cluster
    // variables (fleet rows), and the instance variable (node rows).
    local fleetMatchers = 'job=~"$job", %s=~"$%s"' % [cl, cl],
    local nodeMatchers = fleetMatchers + ', instance=~"$instance"',
    local node(metric, extra='') = promql.selector(metric, [c.ksmSelector, nodeMatchers, extra]),
    local fleet(metric, extra='') = promql.selector(metric, [c.ksmSelector, fleetMatchers, extra]),

    local fleetRows = [
      g.row('Fleet ($job, $%s)' % cl),
      g.stat(
        'Saved across the fleet',
        'Memory KSM saves on all nodes of the selected jobs and clusters.',
        'sum(%s)' % fleet(records.saved),
        u.bytes,
        color=g.fixed(g.good),
      ),
      g.stat(
        'Fleet savings share of RAM',
        'Memory KSM saves over the MemTotal of the same nodes.',
        'sum(%s) / sum(%s)' % [fleet(records.saved), fleet(records.total)],
        u.percent,
        color=g.fixed(g.good),
      ),
      g.stat(
        'Nodes running KSM',
        'Nodes whose KSM run state is running.',
        'sum(%s)' % fleet(records.running),
        'short',
        color=g.fixed(g.neutral),
      ),
      g.stat(
        'Nodes without KSM sysfs',
        'Exporters that cannot read /sys/kernel/mm/ksm (KsmSysfsMissing, information: a kernel without KSM).',
        'sum(%s) - sum(%s)' % [fleet(records.nodes), fleet(records.withSysfs)],
        'short',
        steps=[[null, g.good], [1, g.neutral]],
      ),
      g.stat(
        'Fleet general profit',
        'Sum of general_profit over the nodes that report it (kernel 6.4+): red when KSM costs the fleet more memory than it saves.',
        'sum(%s)' % fleet(records.generalProfit),
        u.bytes,
        steps=g.lossRed,
      ),
      g.stat(
        'ksmd CPU, all nodes',
        'CPU used by ksmd on all selected nodes, in cores (over %s).' % c.ksmdCpuWindow,
        'sum(%s)' % fleet(records.ksmdCores),
        u.cores,
        color=g.fixed(g.neutral),
      ),
      g.timeseries(
        'Saved by cluster',
        'Memory KSM saves per job and %s, from the %s recording rule.' % [cl, records.saved],
        [t(fleet(records.saved), '{{job}} {{%s}}' % cl)],
        u.bytes,
        width=12,
      ),
      g.panel(
        'bargauge',
        'Top nodes by saved memory',
        'The ten nodes where KSM saves the most now.',
        [t('topk(10, %s)' % fleet('ksm_saved_bytes'), instant=true) { format: 'time_series' }],
        color=g.fixed(g.good),
      ) {
        fieldConfig+: { defaults+: { unit: u.bytes } },
        options: {
          orientation: 'horizontal',
          displayMode: 'gradient',
          reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false },
        },
        gridPos: { w: 12, h: 8 },
      },
      g.table(
        'Nodes',
        "One row per node: saved memory, its share of the node's RAM, general profit, run-state changes in %s, whether KSM runs and how many VMs the exporter reads. Click a node to open its node view."
        % c.ksmFlappingWindow,
        [
          t('max by (job, instance) (%s)' % expr, instant=true)
          for expr in [
            fleet('ksm_saved_bytes'),
            fleet(records.savedRatio),
            fleet('ksm_general_profit_bytes'),
            fleet(records.flapping),
            fleet('ksm_run_state', running),
            fleet(records.vms),
          ]
        ],
        'short',
        [
          ['A', 'Saved', u.bytes],
          ['B', 'Share of RAM', u.percent],
          ['C', 'General profit', u.bytes],
          ['D', 'Changes in %s' % c.ksmFlappingWindow, 'short'],
          ['E', 'Running', 'bool_yes_no'],
          ['F', 'VMs', 'short'],
        ],
        width=24,
        sortBy='Saved',
        links=[{
          title: 'Node view of ${__value.raw}',
          url: '/d/%s/ksm?${__url_time_range}&${datasource:queryparam}&var-instance=${__value.raw}'
               % c.ksmDashboardUID,
        }],
      ),
      g.table(
        'Nodes whose KSM flaps',
        'Run-state changes in the last %s per node, most first (%s); KsmFlapping fires above %s.'
        % [c.ksmFlappingWindow, records.flapping, num(c.ksmFlappingThreshold)],
        [t('sort_desc(%s > 0)' % fleet(records.flapping), instant=true)],
        'short',
        [['A', 'Changes in %s' % c.ksmFlappingWindow, 'short']],
        sortBy='Changes in %s' % c.ksmFlappingWindow,
        width=8,
      ),
      g.table(
        'Nodes where KSM is stopped under memory pressure',
        'KSM stopped or unmerging while less than %s of memory is available now (MemAvailable, or MemFree before 3.14, over MemTotal), on nodes where KSM is meant to run: the expression of KsmStoppedUnderMemoryPressure, which fires after %s.'
        % [pct0(c.ksmPressureAvailableRatio), c.ksmPressureFor],
        [t(e.stoppedUnderPressure(fleetMatchers), instant=true)],
        u.percent,
        [['A', 'Available now', u.percent]],
        width=8,
      ),
      g.table(
        'Nodes with VMs where KSM costs more than it saves',
        'Per node, the VMs whose KSM profit (saved bytes less the memory of their rmap_items, kernel 6.4+) is below -%s MiB now, most first (%s), beside the VMs the exporter reads there (%s). KsmVmNegativeProfit fires once per node after %s; the node view lists its VMs.'
        % [num(c.ksmVmNegativeProfitBytes / 1048576), records.vmsLosing, records.vms, c.ksmVmNegativeProfitFor],
        [
          t('sort_desc(%s)' % fleet(records.vmsLosing), instant=true),
          t('%s and on (job, instance) %s' % [fleet(records.vms), fleet(records.vmsLosing)], instant=true),
        ],
        'short',
        [['A', 'VMs losing', 'short'], ['B', 'VMs', 'short']],
        width=8,
        sortBy='VMs losing',
      ),
    ],

    local healthRows = [
      g.row('Exporter health ($job, $%s)' % cl),
      g.stat(
        'Targets down',
        'ksm-exporter targets Prometheus cannot scrape (KsmExporterDown).',
        'sum(%s) - sum(%s)' % [fleet(records.targets), fleet(records.targetsUp)],
        'short',
        steps=[[null, g.good], [1, 'red']],
      ),
      g.stat(
        'VMs left out',
        'Per-VM series the exporters dropped beyond --collector.process.max, all nodes.',
        'sum(%s)' % fleet(records.dropped),
        'short',
        steps=[[null, g.good], [1, 'orange']],
      ),
      g.timeseries(
        'Read errors',
        'Files the exporters could not read or parse, per node and file: a broken file is skipped and counted, its series absent.',
        [t(
          'sum by (job, instance, file) (increase(%s[$__rate_interval]))' % fleet('ksm_exporter_read_errors_total'),
          '{{instance}} {{file}}',
        )],
        'short',
      ),
      g.stateTimeline(
        'Collectors',
        "Per collector, whether its last scrape succeeded on every selected node (ksm_scrape_collector_success, lowest over the nodes): a failed collector's series are absent, never 0.",
        [t('min by (collector) (%s)' % fleet(records.collectors), '{{collector}}')],
        [[0, 'failed', 'red'], [1, 'ok', 'green']],
        width=8,
        height=8,
      ),
    ],

    local nodeRows = [
      g.row('Node: savings ($instance)'),
      g.timeseries(
        'KSM saved',
        'pages_sharing * page size: memory KSM saves now.',
        [t(node('ksm_saved_bytes'))],
        u.bytes,
        color=g.fixed(g.good),
      ),
      g.timeseries(
        'Savings share of RAM',
        'Memory KSM saves as a share of MemTotal.',
        [t('%s / %s' % [node('ksm_saved_bytes'), node('ksm_memory_total_bytes')])],
        u.percent,
        color=g.fixed(g.good),
      ),
      g.timeseries(
        'Sharing ratio',
        'pages_sharing / pages_shared: how many more sites share each shared page. Higher is better.',
        [t(node('ksm_sharing_ratio'))],
        u.times,
      ),
      g.timeseries(
        'General profit',
        "Saved memory minus the memory of KSM's rmap_items (kernel 6.4+). Below zero (red) KSM costs more than it saves; KsmNegativeGeneralProfit fires once settled KSM loses more than %s of the node's memory for %s."
        % [pct2(c.ksmNegativeProfitMemoryRatio), c.ksmNegativeProfitFor],
        [t(node('ksm_general_profit_bytes'))],
        u.bytes,
        threshold=0,
        aboveIsBad=false,
      ),
      g.timeseries(
        'Pages',
        'shared: KSM pages in use; sharing: further mappings of them (the saving); unshared: unique pages checked again and again; volatile: changing too fast to merge.',
        [t(node('ksm_pages_' + kind), '{{instance}} ' + kind) for kind in ['shared', 'sharing', 'unshared', 'volatile']],
        u.pages,
        width=8,
      ),
      g.timeseries(
        'Unshared per sharing page',
        "pages_unshared / pages_sharing. The kernel reads a high ratio as wasted effort; the red line is the KsmWastingEffort threshold (%s), which fires on settled KSM whose unique pages exceed %s of the node's memory."
        % [num(c.ksmWastingRatio), pct0(c.ksmWastingMinMemoryRatio)],
        [t('%s / %s' % [node('ksm_pages_unshared'), node('ksm_pages_sharing')])],
        u.times,
        threshold=c.ksmWastingRatio,
      ),

      g.row('Node: scanning ($instance)'),
      g.timeseries(
        'Seconds per full scan',
        'How long ksmd takes to scan all mergeable memory once, averaged over the last %s (on a large node a full scan takes hours; from the %s recording rule). Empty while no full scan completed in that time.'
        % [c.ksmFullScanWindow, records.fullScans],
        [t('1 / (%s > 0)' % node(records.fullScans))],
        u.seconds,
      ),
      g.timeseries(
        'Pages scanned and skipped',
        "ksmd's scanning speed; skipped pages come from smart_scan (kernel 6.7+).",
        [
          t('rate(%s[$__rate_interval])' % node('ksm_pages_%s_total' % kind), '{{instance}} ' + kind)
          for kind in ['scanned', 'skipped']
        ],
        u.pagesPerSecond,
      ),
      g.timeseries(
        'Sleep between batches',
        'sleep_millisecs: how long ksmd sleeps after each batch of pages_to_scan pages.',
        [t(node('ksm_sleep_seconds'))],
        u.seconds,
        width=4,
      ),
      g.timeseries(
        'Pages per batch',
        'pages_to_scan: pages ksmd scans before it sleeps (set by ksmtuned or the scan-time advisor).',
        [t(node('ksm_pages_to_scan'))],
        u.pages,
        width=4,
      ),

      g.row('Node: run state ($instance)'),
      g.stateTimeline(
        'Run state',
        "KSM's run file: stopped (0), running (1), unmerging (2). The dashboard annotations mark each change, coloured by its cause: ksmtuned (blue), another controller or a person (red), unknown (purple), not reported (orange).",
        [t('max by (job, instance) (%s) + 2 * max by (job, instance) (%s)' % [
          node('ksm_run_state', running),
          node('ksm_run_state', unmerging),
        ])],
        [[0, 'stopped', 'red'], [1, 'running', 'green'], [2, 'unmerging', 'orange']],
        width=16,
        height=8,
      ),
      g.timeseries(
        'Run-state changes in %s' % c.ksmFlappingWindow,
        'From the %s recording rule. KsmFlapping fires above %s (red line).'
        % [records.flapping, num(c.ksmFlappingThreshold)],
        [t(node(records.flapping))],
        'short',
        threshold=c.ksmFlappingThreshold + 1,
      ),
      g.table(
        'Memory at the latest edges',
        "Memory when KSM last went into each state, in the terms of the KSM test report's ksmtuned log: used (MemTotal - MemFree), free (MemFree), available (MemAvailable).",
        [
          t('%s (%s)' % [edge, node('ksm_last_transition_memory_%s_bytes' % kind)], instant=true)
          for kind in ['used', 'free', 'available']
        ] + [t('%s (%s) * 1000' % [edge, node('ksm_last_transition_timestamp_seconds')], instant=true)],
        u.bytes,
        [
          ['A', 'Used', u.bytes],
          ['B', 'Free', u.bytes],
          ['C', 'Available', u.bytes],
          ['D', 'At', 'dateTimeAsIso'],
        ],
        width=16,
      ),
      g.timeseries(
        'Available memory',
        'MemAvailable / MemTotal now (MemFree before kernel 3.14), from the %s recording rule. KsmStoppedUnderMemoryPressure fires when KSM is not running while this is below %s (red line) for %s.'
        % [records.pressure, pct0(c.ksmPressureAvailableRatio), c.ksmPressureFor],
        [t(node(records.pressure))],
        u.percent,
        threshold=c.ksmPressureAvailableRatio,
        aboveIsBad=false,
      ),
    ],

    local vm = '{{instance}} {{vm}}',
    local saved = '%s * on (job, instance) group_left %s' % [
      node('ksm_process_merging_pages'),
      node('ksm_page_size_bytes'),
    ],
    local perVmRows = [
      g.row('Per VM ($instance)'),
      g.timeseries(
        'Saved per VM (top 10)',
        'Merging pages * page size: what KSM saves on each VM as the kernel reckons it per process (ksm_merging_pages, kernel 5.19+; what its profit starts from). A merged page counts for every VM that maps it, the KSM page itself included, so the VMs of a node add up to (pages_shared + pages_sharing) * page size, one page per KSM page more than KSM saved.',
        [t('topk by (job, instance) (10, %s)' % saved, vm)],
        u.bytes,
        width=6,
      ),
      g.timeseries(
        'KSM profit per VM (lowest 10)',
        "Saved bytes less the memory of the VM's rmap_items (kernel 6.4+), lowest first. Below zero (red line) KSM costs the VM more memory than it saves; KsmVmNegativeProfit fires below -%s MiB held for %s."
        % [num(c.ksmVmNegativeProfitBytes / 1048576), c.ksmVmNegativeProfitFor],
        [t('bottomk by (job, instance) (10, %s)' % node('ksm_process_profit_bytes'), vm)],
        u.bytes,
        threshold=0,
        aboveIsBad=false,
        width=6,
      ),
      g.timeseries(
        'KSM metadata per VM (top 10)',
        'rmap_items: KSM keeps one (64 bytes on 64-bit kernels) for each scanned page of the VM (kernel 6.1+), merged or not: the cost side of the profit.',
        [t('topk by (job, instance) (10, %s)' % node('ksm_process_rmap_items'), vm)],
        'short',
        width=6,
      ),
      g.timeseries(
        'VMs not exported',
        'left out: matching processes beyond --collector.process.max (those with the fewest merging pages). unreadable: KSM files the exporter may not read (it needs root or CAP_DAC_READ_SEARCH); vanished: processes that exited while read, normal when VMs stop.',
        [
          t(node('ksm_process_series_dropped'), '{{instance}} left out'),
          t(
            'sum by (job, instance, reason) (increase(%s[$__rate_interval]))' % node('ksm_process_read_errors_total'),
            '{{instance}} {{reason}}',
          ),
        ],
        'short',
        width=6,
      ),
      g.table(
        'VMs',
        "Every VM the exporter reads (processes matching --collector.process.pattern, at most --collector.process.max): saved (merging pages * page size), profit and rmap_items as in the graphs above; zero pages: empty pages merged with the kernel's zero page (use_zero_pages, 6.10+); mergeable: some of its memory is registered for KSM (6.14+); merge any: the whole process is (prctl PR_SET_MEMORY_MERGE, 6.14+). A column is empty where the kernel does not say.",
        [
          t('%s (%s)' % [perVm, expr], instant=true)
          for expr in [
            saved,
            node('ksm_process_profit_bytes'),
            node('ksm_process_rmap_items'),
            node('ksm_process_zero_pages'),
            node('ksm_process_mergeable'),
            node('ksm_process_merge_any'),
          ]
        ],
        'short',
        [
          ['A', 'Saved', u.bytes],
          ['B', 'Profit', u.bytes],
          ['C', 'rmap_items', 'short'],
          ['D', 'Zero pages', u.pages],
          ['E', 'Mergeable', 'bool_yes_no'],
          ['F', 'Merge any', 'bool_yes_no'],
        ],
        width=24,
        sortBy='Saved',
      ),

      g.row('Cost ($instance)'),
      g.timeseries(
        'ksmd CPU',
        'CPU time of the ksmd kernel thread per second, in cores (1 is one CPU busy). pages_to_scan and sleep_millisecs set it (ksmtuned, or the scan-time advisor within advisor_max_cpu). KsmdCpuOverBudget fires above %s cores (red line) over %s, held for %s.'
        % [num(c.ksmdCpuBudgetCores), c.ksmdCpuWindow, c.ksmdCpuFor],
        [t(e.ksmdCores('$__rate_interval', nodeMatchers))],
        u.cores,
        threshold=c.ksmdCpuBudgetCores,
      ),
      g.timeseries(
        'Copy-on-write breaks and swap-in copies',
        'cow: writes to a merged page, each making the writer a private copy (cow_ksm, kernel 5.19+); swap-in: merged pages copied when swapped in (ksm_swpin_copy). A high copy-on-write rate means KSM merges pages that the guests then write.',
        [
          t('rate(%s[$__rate_interval])' % node('ksm_cow_breaks_total'), '{{instance}} cow'),
          t('rate(%s[$__rate_interval])' % node('ksm_swapin_copies_total'), '{{instance}} swap-in'),
        ],
        u.pagesPerSecond,
      ),
      g.timeseries(
        'Time to settle',
        'From the latest start of KSM until it first counted as settled (pages_sharing moved by less than 1 % over the last --settle.full-scans full scans). Kept after KSM stops, until the next start; absent until KSM has settled after a start the exporter saw.',
        [t(node('ksm_settle_duration_seconds'))],
        u.seconds,
      ),
      g.stateTimeline(
        'Settled',
        'settled: KSM runs and pages_sharing moved by less than 1 % over the last --settle.full-scans full scans; settling: KSM runs and is still merging (or a VM started and it merges again); not running: KSM stopped or unmerging.',
        [t('max by (job, instance) (%s) + 2 * max by (job, instance) (%s)' % [
          node('ksm_settled'),
          node('ksm_run_state', notRunning),
        ])],
        [[0, 'settling', 'orange'], [1, 'settled', 'green'], [2, 'not running', 'text']],
      ),

      g.row('ksmtuned ($instance)'),
      g.timeseries(
        'ksmtuned: free memory and threshold',
        "ksmtuned's rule, each KSM_MONITOR_INTERVAL (60 s): stop KSM when free (MemFree + Buffers + Cached) is above the threshold (KSM_THRES_COEF % of MemTotal) and committed + threshold is below MemTotal (next panel); else start it. MemFree alone is drawn too. Free memory going back and forth across the threshold is the flapping of the KSM test report's ksmtuned log: merging frees memory, free rises above the threshold, ksmtuned stops KSM; the guests dirty pages, free falls, ksmtuned starts it again. The annotations mark each edge, coloured by cause (ksmtuned blue, another controller red, unknown purple).",
        [
          t(node('ksmtuned_free_bytes'), '{{instance}} ksmtuned free'),
          t(node('ksmtuned_threshold_bytes'), '{{instance}} ksmtuned threshold'),
          t(node('ksm_memory_free_bytes'), '{{instance}} MemFree'),
        ],
        u.bytes,
        width=12,
      ),
      g.timeseries(
        'ksmtuned: committed memory',
        'committed: the resident memory of the qemu processes as ksmtuned sums it. While committed + threshold is at or above MemTotal, ksmtuned keeps KSM running whatever free memory says.',
        [
          t('%s + %s' % [node('ksmtuned_committed_bytes'), node('ksmtuned_threshold_bytes')], '{{instance}} committed + threshold'),
          t(node('ksm_memory_total_bytes'), '{{instance}} MemTotal'),
        ],
        u.bytes,
        width=12,
      ),
      g.stateTimeline(
        "ksmtuned's decision and KSM",
        "would run: ksmtuned's next look starts KSM (ksmtuned_would_run, computed from --collector.ksmtuned.config and /proc); KSM running: the run file says running; ksmtuned alive: a ksmtuned process exists. would run and KSM running differ for up to KSM_MONITOR_INTERVAL after a crossing; for longer, ksmtuned is not running or something else writes run.",
        [
          t(node('ksmtuned_would_run'), '{{instance}} would run'),
          t(node('ksm_run_state', running), '{{instance}} KSM running'),
          t(node('ksmtuned_running'), '{{instance}} ksmtuned alive'),
        ],
        on,
        height=8,
      ),
    ],

    'ksm-exporter.json': {
      __inputs: [{
        name: dsInput,
        label: 'Prometheus',
        description: 'The Prometheus that scrapes ksm-exporter and has its rules.',
        type: 'datasource',
        pluginId: 'prometheus',
        pluginName: 'Prometheus',
      }],
      __requires: [
        { type: 'grafana', id: 'grafana', name: 'Grafana', version: '9.0.0' },
        { type: 'datasource', id: 'prometheus', name: 'Prometheus', version: '1.0.0' },
      ],
      uid: c.ksmDashboardUID,
      title: c.ksmDashboardTitle,
      description: 'ksm-exporter: KSM savings, cost and flapping across the fleet and per node.',
      tags: c.ksmDashboardTags,
      editable: true,
      schemaVersion: 36,
      time: { from: 'now-6h', to: 'now' },
      refresh: c.ksmDashboardRefresh,
      timezone: '',
      templating: {
        list: [
          {
            type: 'datasource',
            name: 'datasource',
            label: 'Data source',
            query: 'prometheus',
            // The data source picked in the import dialog.
            current: { text: '${%s}' % dsInput, value: '${%s}' % dsInput },
          },
          g.variable('job', 'Job', 'label_values(ksm_up{%s}, job)' % c.ksmSelector),
          // Nodes without the label match too (".*" rather than ".+").
          g.variable(
            cl,
            std.asciiUpper(cl[0]) + std.asciiLower(cl[1:]),
            'label_values(ksm_up{%s, job=~"$job"}, %s)' % [c.ksmSelector, cl],
            allValue='.*',
          ),
          // One node by default: node rows are for looking at a node.
          g.variable(
            'instance',
            'Node',
            'label_values(ksm_up{%s, job=~"$job", %s=~"$%s"}, instance)' % [c.ksmSelector, cl, cl],
            multi=false,
          ),
        ],
      },
      annotations: {
        list: [
          {
            builtIn: 1,
            datasource: { type: 'grafana', uid: '-- Grafana --' },
            enable: true,
            hide: true,
            iconColor: 'rgba(0, 211, 255, 1)',
            name: 'Annotations & Alerts',
            type: 'dashboard',
          },
        ] + [
          {
            name: 'KSM run-state changes: ' + cause[0],
            datasource: g.datasource,
            enable: true,
            iconColor: cause[2],
            // A change shows for two one-minute steps, merged into one region.
            expr: 'increase(%s[2m]) > 0' % node('ksm_run_transitions_total', cause[1]),
            step: '1m',
            titleFormat: 'KSM {{state}} (%s)' % cause[0],
            textFormat: '{{instance}}',
            tagKeys: 'instance,state,cause',
          }
          for cause in causes
        ],
      },
      panels: g.layout(fleetRows + healthRows + nodeRows + perVmRows),
    },
  },
}
