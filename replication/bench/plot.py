"""`edgestate bench propagation --plot FILE.html`: how fast writes converged, per strategy,
against the physical limit, as one self-contained HTML page.

Each curve is a CDF over the measured writes: the share of writes that had reached every
replica within x ms of being written. The physical limit is the same CDF of each write's
direct one-way latency from its origin to its farthest replica (no protocol can beat it);
the same seed gives every strategy the same writes from the same origins, so the limit is one
curve. A write that never reached everyone (loss with no repair in time) keeps its curve below
1. plotly.js is inlined from the installed plotly package: the file opens offline, with no
script fetched from a CDN (the inlined library still names tile and font CDNs in strings it
uses only for maps, which this page has none of).
"""

from __future__ import annotations

from pathlib import Path

COLORS = {"plumtree": "#1f77b4", "gossip": "#ff7f0e", "direct": "#2ca02c"}


def _cdf(values: list[float | None]) -> tuple[list[float], list[float]]:
    """Steps of the empirical CDF; None (never complete) counts in the total, never reached."""
    n = len(values)
    xs = sorted(v for v in values if v is not None)
    return xs, [(i + 1) / n for i in range(len(xs))]


def figure(result: dict):
    import plotly.graph_objects as go

    fig = go.Figure()
    limit: list[float | None] | None = None
    for name, r in result["strategies"].items():
        xs, ys = _cdf(r["convergence_ms"])
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=name, line={"shape": "hv", "color": COLORS.get(name)}))
        limit = limit or r["physical_ms"]
    if limit:
        xs, ys = _cdf(limit)
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name="physical limit",
                                 line={"shape": "hv", "color": "#444", "dash": "dash"}))
    p = result["params"]
    fig.update_layout(
        title=f"Time for a write to reach every replica: {p['writes']} writes, pops {p['pops']}, "
              f"loss {p['loss']}, seed {p['seed']}",
        xaxis_title="virtual ms after the write", yaxis_title="share of writes everywhere",
        yaxis={"range": [0, 1.02], "tickformat": ".0%"}, template="plotly_white", legend={"x": 0.99, "xanchor": "right",
                                                                                        "y": 0.02, "yanchor": "bottom"},
    )
    return fig


def write_html(result: dict, path: str | Path) -> None:
    import plotly.io as pio

    Path(path).write_text(pio.to_html(figure(result), include_plotlyjs=True, full_html=True), encoding="utf-8")
