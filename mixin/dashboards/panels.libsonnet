// Small local builders of Grafana's dashboard JSON (schemaVersion 36), enough for the
// one dashboard: panels, targets, variables and a grid layout. No grafonnet.
{
  datasource: { type: 'prometheus', uid: '${datasource}' },

  // Grafana units: bytes (IEC), a plain ratio shown as "3 x", pages, seconds, per-second
  // rates; "none" only on panels whose values are all mapped to text.
  units: {
    bytes: 'bytes',
    times: 'suffix:x',
    pages: 'count:pages',
    pagesPerSecond: 'count:pages/s',
    seconds: 's',
    percent: 'percentunit',
    cores: 'suffix: cores',
  },

  // Colours. Grafana's default (green, red above 80) paints every byte count red, so
  // every panel says what is good and what is bad: savings are good news (green), a loss
  // is red, counts of nodes in trouble turn orange or red from 1, neutral figures take
  // the palette. Steps are [value, colour] pairs, the first value null.
  good: 'green',
  neutral: 'blue',
  plain: [[null, $.neutral]],
  lossRed: [[null, 'red'], [0, $.good]],
  bySteps: { mode: 'thresholds' },
  fixed(colour):: { mode: 'fixed', fixedColor: colour },

  target(expr, legend='{{instance}}', instant=false)::
    { datasource: $.datasource, expr: expr, legendFormat: legend }
    + (if instant then { instant: true, range: false, format: 'table' } else {}),

  thresholds(steps):: {
    mode: 'absolute',
    steps: [{ color: s[1], value: s[0] } for s in steps],
  },

  panel(kind, title, description, targets, steps=$.plain, color=null):: {
    type: kind,
    title: title,
    description: description,
    datasource: $.datasource,
    targets: [targets[i] { refId: std.char(65 + i) } for i in std.range(0, std.length(targets) - 1)],
    fieldConfig: {
      defaults: {
        color: if color == null then { mode: 'palette-classic' } else color,
        thresholds: $.thresholds(steps),
      },
      overrides: [],
    },
    options: {},
  },

  // `threshold` draws the value at which the matching alert fires as a red line, the bad
  // side shaded (above it, or below it when aboveIsBad is false).
  timeseries(title, description, targets, unit, width=8, threshold=null, aboveIsBad=true, color=null)::
    local steps =
      if threshold == null then $.plain
      else if aboveIsBad then [[null, 'transparent'], [threshold, 'red']]
      else [[null, 'red'], [threshold, 'transparent']];
    $.panel('timeseries', title, description, targets, steps, color) {
      fieldConfig+: {
        defaults+: {
          unit: unit,
          custom: { fillOpacity: 10, showPoints: 'never' }
                  + (if threshold == null then {} else { thresholdsStyle: { mode: 'line+area' } }),
        },
      },
      options: {
        legend: { displayMode: 'list', placement: 'bottom', showLegend: true },
        tooltip: { mode: 'multi', sort: 'desc' },
      },
      gridPos: { w: width, h: 8 },
    },

  // states: [value, text, colour] triples, in order of value.
  stateTimeline(title, description, targets, states, width=24, height=6)::
    $.panel('state-timeline', title, description, targets, color=$.bySteps) {
      fieldConfig+: {
        defaults+: {
          unit: 'none',
          mappings: [{
            type: 'value',
            options: {
              [std.toString(states[i][0])]: { text: states[i][1], color: states[i][2], index: i }
              for i in std.range(0, std.length(states) - 1)
            },
          }],
        },
      },
      options: { showValue: 'auto', mergeValues: true, rowHeight: 0.8 },
      gridPos: { w: width, h: height },
    },

  // A fleet figure; coloured by `steps` unless a fixed `color` is given.
  stat(title, description, expr, unit, steps=$.plain, color=null, width=4)::
    $.panel('stat', title, description, [$.target(expr, '')], steps, if color == null then $.bySteps else color) {
      fieldConfig+: { defaults+: { unit: unit } },
      options: {
        reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false },
        graphMode: 'area',
        colorMode: 'value',
        textMode: 'value',
      },
      gridPos: { w: width, h: 5 },
    },

  // An instant-query table; `columns` ([refId, name, unit] triples) renames each query's
  // value column and gives it a unit. Grafana names that column `Value`, or `Value #A`...
  // once several are merged. `links` go on the instance column.
  table(title, description, targets, unit, columns, width=12, sortBy=null, links=null)::
    $.panel('table', title, description, targets, color=$.fixed('text')) {
      fieldConfig+: {
        defaults+: { unit: unit },
        overrides: [
          {
            matcher: { id: 'byName', options: if std.length(targets) == 1 then 'Value' else 'Value #' + col[0] },
            properties: [{ id: 'displayName', value: col[1] }, { id: 'unit', value: col[2] }],
          }
          for col in columns
        ] + (
          if links == null then []
          else [{ matcher: { id: 'byName', options: 'instance' }, properties: [{ id: 'links', value: links }] }]
        ),
      },
      // One row per series: join the instant queries on their labels, drop the time and
      // metric name columns.
      transformations: [
        { id: 'merge', options: {} },
        { id: 'organize', options: { excludeByName: { Time: true, __name__: true } } },
      ],
      options: { showHeader: true }
               + (if sortBy == null then {} else { sortBy: [{ displayName: sortBy, desc: true }] }),
      gridPos: { w: width, h: 8 },
    },

  row(title):: { type: 'row', title: title, collapsed: false, panels: [] },

  // Each panel's id and gridPos: left to right, a row starts a new line and nothing
  // shares a row header's line.
  layout(panels)::
    local step(acc, p) =
      local pos = if std.objectHas(p, 'gridPos') then p.gridPos else { w: 24, h: 1 };
      local isRow = p.type == 'row';
      local newLine = isRow || acc.x + pos.w > 24;
      local y = if newLine then acc.y + acc.lh else acc.y;
      local x = if newLine then 0 else acc.x;
      local lh = if newLine then 0 else acc.lh;
      {
        x: if isRow then 24 else x + pos.w,
        y: y,
        lh: std.max(lh, pos.h),
        out: acc.out + [p { id: std.length(acc.out) + 1, gridPos: pos { x: x, y: y } }],
      };
    std.foldl(step, panels, { x: 0, y: 0, lh: 0, out: [] }).out,

  // A query variable; multi-value ones start at All (fleet rows cover everything).
  variable(name, label, query, multi=true, allValue='.+')::
    {
      type: 'query',
      name: name,
      label: label,
      datasource: $.datasource,
      query: query,
      refresh: 2,  // on time range change: nodes come and go
      multi: multi,
      includeAll: multi,
      current: {},
      sort: 1,
    }
    + (if multi then { allValue: allValue, current: { text: 'All', value: '$__all' } } else {}),
}
