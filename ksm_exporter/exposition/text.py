"""Writing the exposition formats fast, byte for byte what prometheus-client writes.

A scrape builds ~25 families of one or a few samples. Through prometheus-client that is
a MetricFamily object, a name validation and an escape per sample: about 0.6 ms, as much
as reading the KSM files. Here a family is a plain tuple, its HELP/TYPE lines and label
strings are made once and cached, and a scrape only formats the values.

prometheus-client is not imported at all on this path: importing it loads ssl, http.client,
urllib and wsgiref, about 10 MB of resident memory, which is more than the rest of the
exporter. It is imported only when something needs it: a collector without families(),
or a format other than text 0.0.4 and OpenMetrics 1.0.0 (see negotiate()).
tests/test_exposition_text.py checks the output against prometheus-client's.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from prometheus_client.core import Metric

OPENMETRICS_EOF = "# EOF\n"
TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"


class Family(NamedTuple):
    """One metric family: a gauge or a counter (name without _total)."""

    name: str
    help: str
    kind: str  # "gauge" or "counter"
    labels: tuple[str, ...] = ()
    samples: tuple[tuple[tuple[str, ...], float], ...] = ()  # (label values, value)


def gauge(name: str, help: str, value: float) -> Family:
    return Family(name, help, "gauge", (), (((), value),))


def counter(name: str, help: str, value: float) -> Family:
    return Family(name, help, "counter", (), (((), value),))


def to_metric(f: Family) -> Metric:
    """The prometheus-client object for a family (for prometheus-client's encoders)."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    cls = CounterMetricFamily if f.kind == "counter" else GaugeMetricFamily
    m = cls(f.name, f.help, labels=f.labels)
    for values, value in f.samples:
        m.add_metric(list(values), value)
    return m


def go_float(value: float) -> str:
    """A sample value as Go (and so prometheus-client) writes it: 1e+06 style exponents
    from a million up, +Inf, -Inf, NaN."""
    d = float(value)
    if math.isinf(d):
        return "+Inf" if d > 0 else "-Inf"
    if d != d:
        return "NaN"
    s = repr(d)
    dot = s.find(".")
    if d > 0 and dot > 6:
        mantissa = f"{s[0]}.{s[1:dot]}{s[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return s


def _escape(s: str, quote: bool) -> str:
    s = s.replace("\\", "\\\\").replace("\n", "\\n")
    return s.replace('"', '\\"') if quote else s


@functools.lru_cache(maxsize=1024)
def _header(name: str, help: str, kind: str, openmetrics: bool) -> str:
    """The HELP and TYPE lines. The text format names a counter by its samples (_total),
    OpenMetrics by the family, and escapes quotes in HELP too."""
    base = name[:-6] if kind == "counter" and name.endswith("_total") else name
    shown = base + "_total" if kind == "counter" and not openmetrics else base
    return f"# HELP {shown} {_escape(help, openmetrics)}\n# TYPE {shown} {kind}\n"


@functools.lru_cache(maxsize=4096)
def _label_text(labels: tuple[str, ...], values: tuple[str, ...], openmetrics: bool) -> str:
    """`{a="x",b="y"}`: sorted by name, values escaped (the same in both formats)."""
    pairs = sorted(zip(labels, values))
    return "{" + ",".join(f'{k}="{_escape(v, True)}"' for k, v in pairs) + "}"


# Most values are integers that repeat from scrape to scrape (counts, settings): format
# each once. Only ints: as dict keys 0.0 and -0.0 are one, yet they print differently.
_INT_TEXT: dict[int, str] = {}


def _value_text(value: float) -> str:
    if type(value) is not int:
        return go_float(value)
    text = _INT_TEXT.get(value)
    if text is None:
        if len(_INT_TEXT) >= 4096:
            _INT_TEXT.clear()
        text = _INT_TEXT[value] = go_float(value)
    return text


def render(families: Iterable[Family], openmetrics: bool) -> str:
    """The families in the text format 0.0.4, or OpenMetrics 1.0.0 without `# EOF`."""
    out: list[str] = []
    for f in families:
        out.append(_header(f.name, f.help, f.kind, openmetrics))
        sample_name = f.name
        if f.kind == "counter":  # as CounterMetricFamily: the name may carry _total
            sample_name = f.name if f.name.endswith("_total") else f.name + "_total"
        labels = f.labels
        for values, value in f.samples:
            if values:
                text = _label_text(labels, values, openmetrics)
                out.append(f"{sample_name}{text} {_value_text(value)}\n")
            else:
                out.append(f"{sample_name} {_value_text(value)}\n")
    return "".join(out)


def negotiate(accept: str) -> tuple[bool, str] | None:
    """(OpenMetrics?, content type) for an Accept header, as prometheus-client's
    choose_encoder decides, for the two formats written here; None for any other, which
    then goes through prometheus-client."""
    for accepted in accept.split(","):
        toks = accepted.split(";")
        mime = toks[0].strip()
        if mime not in ("application/openmetrics-text", "text/plain"):
            continue
        params: dict[str, str] = {}
        for tok in toks[1:]:
            if "=" in tok:
                key, value = tok.strip().split("=", 1)
                params.setdefault(key, value)
        version = params.get("version", "")
        if mime == "text/plain":
            if version and version != "0.0.4":
                return None
            continue
        if not version:
            return True, OPENMETRICS_CONTENT_TYPE
        if version != "1.0.0":
            return None
        escaping = params.get("escaping", "underscores")
        if escaping not in ("underscores", "allow-utf-8"):
            # dots and values rename metrics; anything else means underscores
            if escaping in ("dots", "values"):
                return None
            escaping = "underscores"
        return True, f"{OPENMETRICS_CONTENT_TYPE}; escaping={escaping}"
    return False, TEXT_CONTENT_TYPE


class FastRegistry:
    """Collectors in the order registered. Those with a `families()` method are written
    here; any other (a prometheus-client collector: `collect()` yielding its Metric
    objects) through prometheus-client, as its registry would."""

    def __init__(self) -> None:
        self._order: list[Any] = []

    def register(self, collector: Any) -> None:
        self._order.append(collector)

    def unregister(self, collector: Any) -> None:
        self._order.remove(collector)

    def collect(self) -> Iterator[Metric]:
        """prometheus-client's view, for its encoders (other formats)."""
        for c in self._order:
            families = getattr(c, "families", None)
            yield from map(to_metric, families()) if families else c.collect()

    def encode(self, openmetrics: bool) -> bytes:
        parts = []
        for c in self._order:
            families = getattr(c, "families", None)
            if families is not None:
                parts.append(render(families(), openmetrics))
            else:
                parts.append(_client_render(openmetrics, *c.collect()))
        if openmetrics:
            parts.append(OPENMETRICS_EOF)
        return "".join(parts).encode()


class _One:
    def __init__(self, *metrics: Metric) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return iter(self.metrics)


def _client_render(openmetrics: bool, *metrics: Metric) -> str:
    from prometheus_client.exposition import generate_latest
    from prometheus_client.openmetrics.exposition import generate_latest as generate_om

    text = (generate_om if openmetrics else generate_latest)(_One(*metrics)).decode()
    return text[: -len(OPENMETRICS_EOF)] if openmetrics else text
