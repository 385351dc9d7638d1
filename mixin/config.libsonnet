// Every knob of ksm-exporter's alerts, recording rules and dashboard. Override any of them:
//   (import 'mixin.libsonnet') + { _config+:: { ksmSelector: 'job="kvm-nodes"' } }
// Durations are Prometheus durations ('90s', '1h'); ratios are fractions, not percentages.
{
  _config+:: {
    // PromQL matchers that pick ksm-exporter's targets, in every expression. The job
    // examples/prometheus.yml names and the Kubernetes Service (deploy/kubernetes) gives.
    ksmSelector: 'job="ksm-exporter"',
    // The target label that groups nodes (file_sd's `cell` in examples/targets): the
    // dashboard's second variable and the fleet aggregation.
    ksmClusterLabel: 'cell',
    // Each alert's runbook; %s is the alert name in lower case (the runbook's anchors).
    ksmRunbookURLPattern: 'https://github.com/ksm-exporter/ksm-exporter/blob/main/docs/runbook.md#%s',
    // One of critical, warning, info per alert; override one with
    // ksmSeverities+: { KsmFlapping: 'critical' }.
    ksmSeverities: {
      KsmFlapping: 'warning',
      KsmStoppedUnderMemoryPressure: 'warning',
      KsmSavingsCollapsing: 'critical',
      KsmSysfsMissing: 'info',
      KsmExporterDown: 'warning',
      KsmWastingEffort: 'info',
      KsmNegativeGeneralProfit: 'warning',
      KsmVmNegativeProfit: 'info',
      KsmdCpuOverBudget: 'warning',
    },

    // ksmtuned in the report switched KSM every 1 to 4 minutes (5 changes in 40 minutes
    // on day one, 8 on day two). More than 4 changes in an hour is more than two
    // stop/start cycles: a node whose free memory sits on ksmtuned's threshold.
    ksmFlappingThreshold: 4,
    ksmFlappingWindow: '1h',
    ksmFlappingFor: '0s',
    // One episode, one page: the alert stays firing until the node has not crossed the
    // threshold for this long (a node changing at about the threshold rate would
    // otherwise fire and resolve every cycle).
    ksmFlappingKeepFiringFor: '1h',

    // ksmtuned's KSM_THRES_COEF default: it wants KSM running once less than 20 % of
    // memory is free, so KSM stopped below that works against ksmtuned's own rule.
    ksmPressureAvailableRatio: 0.2,
    // One ksmtuned cycle is 60 s; give it a few to start KSM again before alerting.
    ksmPressureFor: '10m',
    // KSM is meant to run on a node where it ran within this long (or ksmtuned runs or
    // is configured there); elsewhere it is off on purpose and never alerts.
    ksmPressureRanWithin: '1d',
    // How often the recording rules over long windows (ksmPressureRanWithin,
    // ksmFullScanWindow) evaluate, and the step of the recorded run state those read:
    // below Prometheus' 5m lookback, so that the recorded series never go stale between
    // two evaluations.
    ksmWindowsInterval: '2m',
    // Seconds per full scan average over this much time: a full scan of a large node
    // takes hours, so a usual rate interval would show nothing.
    ksmFullScanWindow: '6h',

    // Savings collapsing: saved memory fell by this share of MemTotal below its maximum
    // within the window, while available memory is below ksmPressureAvailableRatio.
    ksmCollapseMemoryRatio: 0.05,
    ksmCollapseWindow: '1h',
    ksmCollapseFor: '5m',

    // Kernel docs: a high pages_unshared / pages_sharing ratio indicates wasted effort.
    // An order of magnitude, on settled KSM, and only where the unique pages ksmd keeps
    // checking are a noticeable share of the node's memory.
    ksmWastingRatio: 10,
    ksmWastingMinMemoryRatio: 0.05,
    ksmWastingFor: '1h',

    // general_profit below this share of MemTotal, on settled KSM: 0.1 % of a 32 GiB
    // node is 32 MiB of rmap_items (half a million of them) that merge nothing.
    ksmNegativeProfitMemoryRatio: 0.001,
    ksmNegativeProfitFor: '30m',

    // A VM whose rmap_items outweigh its merged pages by more than this: 64 MiB is a
    // million rmap_items (64 bytes each on 64-bit kernels), the metadata of 4 GiB of
    // guest memory that merges nothing. Held for an hour: KSM builds the rmap_items of
    // a new VM before it merges its pages.
    ksmVmNegativeProfitBytes: 64 * 1024 * 1024,
    ksmVmNegativeProfitFor: '1h',

    // ksmd's CPU budget in cores (CPU seconds per second), averaged over the window.
    ksmdCpuBudgetCores: 0.5,
    ksmdCpuWindow: '10m',
    ksmdCpuFor: '30m',

    ksmSysfsMissingFor: '5m',
    ksmExporterDownFor: '5m',

    // The Grafana dashboard.
    ksmDashboardUID: 'ksm-exporter',
    ksmDashboardTitle: 'KSM (Kernel Same-page Merging)',
    ksmDashboardTags: ['ksm', 'kvm', 'memory'],
    ksmDashboardRefresh: '1m',
  },
}
