// Block-style YAML for the rules files: expressions as literal blocks, other strings
// single-quoted, keys in the order people read rules in. Local because Debian's jsonnet
// (C++ 0.18) takes seconds per file in std.manifestYamlDoc.
local first = [
  'apiVersion',
  'kind',
  'metadata',
  'spec',
  'name',
  'namespace',
  'alert',
  'record',
  'expr',
  'for',
  'keep_firing_for',
  'labels',
  'annotations',
  'summary',
  'description',
  'runbook_url',
];
local keys(o) =
  [k for k in first if std.objectHas(o, k)]
  + [k for k in std.objectFields(o) if !std.member(first, k)];

// A literal block keeps a string with one final newline and no leading blank exactly.
local blockable(s) =
  std.endsWith(s, '\n') && !std.endsWith(s, '\n\n') && s[0] != ' ' && s[0] != '\n';

local scalar(v, ind) =
  if std.isString(v) then
    if blockable(v) then
      '|\n' + std.join('', [
        (if line == '' then '' else ind + '  ' + line) + '\n'
        for line in std.split(std.substr(v, 0, std.length(v) - 1), '\n')
      ])
    else if std.length(std.findSubstr('\n', v)) > 0 then std.escapeStringJson(v) + '\n'
    else "'" + std.strReplace(v, "'", "''") + "'\n"
  else if v == null then 'null\n'
  else std.toString(v) + '\n';

local emit(v, ind) =
  if std.isObject(v) then
    std.join('', [
      local x = v[k];
      ind + k + ':'
      + (
        if (std.isObject(x) && std.length(x) > 0) || (std.isArray(x) && std.length(x) > 0)
        then '\n' + emit(x, ind + '  ')
        else if std.isObject(x) then ' {}\n'
        else if std.isArray(x) then ' []\n'
        else ' ' + scalar(x, ind)
      )
      for k in keys(v)
    ])
  else
    std.join('', [
      if std.isObject(x) || std.isArray(x) then
        // The first key goes on the dash line; the rest align under it.
        local inner = emit(x, ind + '  ');
        ind + '- ' + std.substr(inner, std.length(ind) + 2, std.length(inner))
      else ind + '- ' + scalar(x, ind)
      for x in v
    ]);

{
  manifest(value):: emit(value, ''),
}
