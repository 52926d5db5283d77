"""Report writers: a plain-text/Markdown table and a plot of accuracy against latency."""

from __future__ import annotations

import os
from pathlib import Path

from export.files import atomic_path


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def results_table(rows: list[dict], markdown: bool = False) -> str:
    """One line per result: name, params, size, accuracy, p50/p90/p99, provider, kept."""
    headers = ["model", "params", "size KB", "accuracy", "p50 ms", "p90 ms", "p99 ms",
               "spread", "provider"]
    show_kept = any("kept" in r for r in rows)
    if show_kept:
        headers.append("kept")
    lines = []
    for r in rows:
        lat = r.get("latency_ms") or {}
        cells = [str(r.get("name") or Path(str(r.get("model", "?"))).name),
                 _fmt(r.get("params"), ","),
                 _fmt(r["size_bytes"] / 1024 if r.get("size_bytes") is not None else None, ".1f"),
                 _fmt(r.get("accuracy"), ".4f"),
                 _fmt(lat.get("p50"), ".4f"), _fmt(lat.get("p90"), ".4f"),
                 _fmt(lat.get("p99"), ".4f"),
                 _fmt(lat.get("spread"), ".1%"),
                 str(r.get("provider", "-")).replace("ExecutionProvider", "")]
        if show_kept:
            reason = r.get("reason", "")
            if not markdown and len(reason) > 60:
                reason = reason[:57] + "..."  # the full reason is in report.json/report.md
            cells.append("yes" if r.get("kept", True) else "no: " + reason)
        lines.append(cells)
    if markdown:
        out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        out += ["| " + " | ".join(c) + " |" for c in lines]
        return "\n".join(out)
    widths = [max(len(h), *(len(c[i]) for c in lines)) if lines else len(h)
              for i, h in enumerate(headers)]
    fmt_row = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
    return "\n".join([fmt_row(headers), fmt_row(["-" * w for w in widths])] +
                     [fmt_row(c) for c in lines])


def tradeoff_plot(rows: list[dict], path: str | os.PathLike, title: str = "") -> Path | None:
    """Accuracy vs p50 latency, one labelled point per result; None when nothing to plot."""
    points = [(r.get("name") or Path(str(r.get("model"))).name, r["latency_ms"]["p50"],
               r["accuracy"], r.get("kept", True))
              for r in rows if r.get("accuracy") is not None and r.get("latency_ms")]
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for name, latency, accuracy, kept in points:
        ax.scatter(latency, accuracy, marker="o" if kept else "x",
                   color="tab:blue" if kept else "tab:red")
        ax.annotate(name, (latency, accuracy), textcoords="offset points", xytext=(5, 4),
                    fontsize=8)
    ax.set_xlabel("p50 latency (ms, lower is better)")
    ax.set_ylabel("top-1 accuracy")
    ax.set_title(title or "accuracy vs latency (x: not kept)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(path)
