"""The metric names a PromQL expression reads, and the ones schedcore/metrics.py defines, so the
monitoring artifacts (alert rules, dashboard) can be checked against the code: a renamed or
misspelt metric fails a test instead of an alert silently never firing.

Not a PromQL parser: strings, label matchers, ranges and grouping label lists are cut out, then
every remaining word is a keyword, a function (followed by "(", and it must be a known one) or a
metric name."""

from __future__ import annotations

import re

from prometheus_client.metrics import MetricWrapperBase

from schedcore import metrics

FUNCTIONS = {
    "abs", "avg", "avg_over_time", "ceil", "clamp_min", "count", "count_over_time", "delta", "deriv",
    "floor", "histogram_quantile", "increase", "irate", "max", "max_over_time", "min",
    "min_over_time", "quantile", "rate", "round", "sum", "topk", "vector",
}  # fmt: skip
KEYWORDS = {"and", "or", "unless", "offset", "bool"}
GROUPING = r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"
# Sample names of each metric type, from the family name prometheus_client describes.
SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}


def metric_names(expr: str) -> set[str]:
    """The metric names `expr` reads; AssertionError on a function this does not know."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(GROUPING, " ", text)
    names: set[str] = set()
    for match in re.finditer(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group()
        if word in KEYWORDS:
            continue
        if text[match.end() :].lstrip().startswith("("):
            assert word in FUNCTIONS, f"unknown function {word} in {expr!r}"
            continue
        names.add(word)
    return names


def defined_names() -> set[str]:
    """Every sample name the metrics of schedcore/metrics.py expose."""
    out: set[str] = set()
    for collector in vars(metrics).values():
        if isinstance(collector, MetricWrapperBase):
            for family in collector.describe():
                out.update(family.name + suffix for suffix in SUFFIXES[family.type])
    return out
