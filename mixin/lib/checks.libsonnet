// A configuration that cannot work fails the rendering with one clear message rather
// than rules that never fire. Keys of other mixins sharing _config are left alone; a
// key starting with `ksm` that this mixin does not know is a typo.
local defaults = (import '../config.libsonnet')._config;
local severities = ['critical', 'warning', 'info'];
local all(xs) = std.foldl(function(a, b) a && b, xs, true);

// A Prometheus duration: one or more <digits><unit>, units ms, s, m, h, d, w, y.
local isDuration(d) =
  local units = std.split(std.join('', [if std.member('0123456789', ch) then '0' else ch for ch in std.stringChars(d)]), '0');
  std.isString(d) && d != '' && std.member('0123456789', d[0])
  && all([u == '' || std.member(['ms', 's', 'm', 'h', 'd', 'w', 'y'], u) for u in units])
  && std.member(['ms', 's', 'm', 'h', 'd', 'w', 'y'], units[std.length(units) - 1]);

local durationKeys = [
  k
  for k in std.objectFields(defaults)
  if std.endsWith(k, 'For') || std.endsWith(k, 'Window') || std.endsWith(k, 'Within') || std.endsWith(k, 'Interval')
];

{
  local c = $._config,
  local unknown = [
    k
    for k in std.objectFields(c)
    if std.startsWith(k, 'ksm') && !std.objectHas(defaults, k)
  ],
  local badSeverities = [
    '%s: %s' % [k, c.ksmSeverities[k]]
    for k in std.objectFields(c.ksmSeverities)
    if !std.objectHas(defaults.ksmSeverities, k) || !std.member(severities, c.ksmSeverities[k])
  ],
  local badDurations = [k for k in durationKeys if !isDuration(c[k])],
  local url = c.ksmRunbookURLPattern,

  assert unknown == [] : 'ksm-exporter mixin: unknown _config keys: ' + std.join(', ', unknown),
  assert badSeverities == [] :
         'ksm-exporter mixin: ksmSeverities takes the alerts %s, each one of %s; not %s'
         % [std.join(', ', std.objectFields(defaults.ksmSeverities)), std.join(', ', severities), std.join(', ', badSeverities)],
  assert badDurations == [] : 'ksm-exporter mixin: not a Prometheus duration: ' + std.join(', ', badDurations),
  assert (std.startsWith(url, 'https://') || std.startsWith(url, 'http://'))
         && std.length(std.findSubstr('%s', url)) == 1 :
         'ksm-exporter mixin: ksmRunbookURLPattern: an absolute http(s) URL with one %s for the alert name',
}
