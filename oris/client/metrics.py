"""Reading a Prometheus scrape on the client side (triage, drills)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def parse_metrics(text: str) -> dict[str, float]:
    """Sample ``name{labels}`` (labels sorted) → value."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


def histogram_p95(metrics: dict[str, float], name: str) -> float | None:
    """Upper bound of the bucket holding the 95th percentile (None without observations)."""
    buckets: list[tuple[float, float]] = []
    for key, value in metrics.items():
        if key.startswith(f"{name}_bucket{{"):
            label = key.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float("inf") if label == "+Inf" else float(label), value))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0
    if not total:
        return None
    for bound, cumulative in buckets:
        if cumulative >= 0.95 * total:
            return bound
    return None


def total(metrics: dict[str, float], name: str) -> float:
    """Sum of a family's samples over all label sets."""
    return sum(v for k, v in metrics.items() if k == name or k.startswith(name + "{"))
