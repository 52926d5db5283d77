"""Report writers: a plain-text/Markdown table and a plot of accuracy against latency."""

from __future__ import annotations

import os
from pathlib import Path

from edgepack.bench.figures import new_figure, save_figure


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _name(row: dict) -> str:
    return str(row.get("name") or Path(str(row.get("model", "?"))).name)


def _size_kb(row: dict):
    return row["size_bytes"] / 1024 if row.get("size_bytes") is not None else None


def _latency(key: str):
    return lambda row: (row.get("latency_ms") or {}).get(key)


def _peak_mb(row: dict):
    return (row.get("memory_mb") or {}).get("peak")


def _cosine(row: dict):
    return (row.get("reference") or {}).get("mean_cosine")


# (header, value getter, format); the optional ones show only when some row has a value.
COLUMNS = [("params", lambda r: r.get("params"), ","),
           ("size KB", _size_kb, ".1f"),
           ("accuracy", lambda r: r.get("accuracy"), ".4f"),
           ("p50 ms", _latency("p50"), ".4f"), ("p90 ms", _latency("p90"), ".4f"),
           ("p99 ms", _latency("p99"), ".4f"), ("spread", _latency("spread"), ".1%")]
OPTIONAL_COLUMNS = [("cosine", _cosine, ".5f"),
                    ("items/s", lambda r: r.get("throughput_per_s"), ",.0f"),
                    ("peak MB", _peak_mb, ".1f")]


def results_table(rows: list[dict], markdown: bool = False) -> str:
    """One line per result: name, params, size, accuracy, p50/p90/p99, spread, provider.

    Columns for reference errors (cosine), throughput and peak memory appear when a row has
    them; ``kept`` appears for pipeline rows.
    """
    columns = COLUMNS + [c for c in OPTIONAL_COLUMNS if any(c[1](r) is not None for r in rows)]
    headers = ["model"] + [c[0] for c in columns] + ["provider"]
    show_kept = any("kept" in r for r in rows)
    if show_kept:
        headers.append("kept")
    lines = []
    for r in rows:
        cells = [_name(r)] + [_fmt(get(r), spec) for _, get, spec in columns]
        cells.append(str(r.get("provider", "-")).replace("ExecutionProvider", ""))
        if show_kept:
            reason = r.get("reason", "")
            if not markdown and len(reason) > 60:
                reason = reason[:57] + "..."  # the full reason is in report.json/report.md
            cells.append("yes" if r.get("kept", True) else "no: " + reason)
        lines.append(cells)
    if markdown:
        out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        out += ["| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
                for cells in lines]
        return "\n".join(out)
    widths = [max(len(h), *(len(c[i]) for c in lines)) if lines else len(h)
              for i, h in enumerate(headers)]

    def fmt_row(cells):
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

    return "\n".join([fmt_row(headers), fmt_row(["-" * w for w in widths])] +
                     [fmt_row(c) for c in lines])


def markdown_report(rows: list[dict], environment: dict | None = None) -> str:
    """A Markdown page: the table, then how each number was measured and any warnings."""
    parts = ["# Benchmark", "", results_table(rows, markdown=True), ""]
    if environment:
        parts += [f"Machine: {environment.get('cpu', '?')} ({environment.get('arch', '?')}, "
                  f"{environment.get('logical_cores', '?')} logical cores), ONNX Runtime "
                  f"{environment.get('onnxruntime', '?')}.", ""]
    for r in rows:
        lat, settings = r.get("latency_ms") or {}, r.get("settings") or {}
        parts.append(
            f"- **{_name(r)}**: {lat.get('runs', '?')} timed runs after "
            f"{settings.get('warmup', '?')} warm-up runs, provider(s) "
            f"{', '.join(r.get('providers', []))}, nodes per provider "
            f"{r.get('nodes_per_provider', {})}, {r.get('threads')} intra-op thread(s), "
            f"batch {r.get('batch')}; session created in {_fmt(r.get('session_create_ms'), '.1f')}"
            f" ms, first inference {_fmt(r.get('first_inference_ms'), '.2f')} ms.")
        if r.get("warning"):
            parts.append(f"  - warning: {r['warning']}")
    return "\n".join(parts) + "\n"


def tradeoff_plot(rows: list[dict], path: str | os.PathLike, title: str = "") -> Path | None:
    """Accuracy vs p50 latency, one labelled point per result; None when nothing to plot."""
    points = [(r.get("name") or Path(str(r.get("model"))).name, r["latency_ms"]["p50"],
               r["accuracy"], r.get("kept", True))
              for r in rows if r.get("accuracy") is not None and r.get("latency_ms")]
    if not points:
        return None
    fig, ax = new_figure(figsize=(6.4, 4.2), dpi=120)
    for index, (name, latency, accuracy, kept) in enumerate(points):
        ax.scatter(latency, accuracy, marker="o" if kept else "x",
                   color="tab:blue" if kept else "tab:red")
        # Alternate labels above and below: compressed stages often sit at one accuracy.
        ax.annotate(name, (latency, accuracy), textcoords="offset points",
                    xytext=(5, 4 if index % 2 == 0 else -11), fontsize=8)
    ax.set_xlabel("p50 latency (ms, lower is better)")
    ax.set_ylabel("top-1 accuracy")
    ax.set_title(title or "accuracy vs latency (x: not kept)")
    ax.grid(alpha=0.3)
    return save_figure(fig, path, "accuracy vs latency plot")
