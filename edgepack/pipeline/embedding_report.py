"""Reports for embedding runs: a table and a latency-vs-quality plot of cosine and Spearman.

The accuracy table and plot (:mod:`edgepack.bench.report`) have nothing to show for a model whose
output is an embedding; these show, per row, the mean cosine to the teacher's embeddings and
the Spearman correlation of pairwise similarities (:mod:`edgepack.pipeline.metric_kinds.embedding`) against p50
latency.
"""

from __future__ import annotations

import os
from pathlib import Path

from edgepack.bench.figures import new_figure, save_figure


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _p50(row: dict):
    return (row.get("latency_ms") or {}).get("p50")


def embedding_table(rows: list[dict], markdown: bool = False) -> str:
    """One line per row: name, params, size, cosine, Spearman, p50 and, in pipelines, kept."""
    show_kept = any("kept" in r for r in rows)
    headers = ["model", "params", "size MB", "cosine", "Spearman", "p50 ms", "p90 ms"]
    headers += ["kept"] if show_kept else []
    lines = []
    for r in rows:
        size = r.get("size_bytes")
        cells = [str(r.get("name", "?")), _fmt(r.get("params"), ","),
                 _fmt(size / 1e6 if size else None, ".1f"), _fmt(r.get("mean_cosine"), ".4f"),
                 _fmt(r.get("spearman"), ".4f"), _fmt(_p50(r), ".3f"),
                 _fmt((r.get("latency_ms") or {}).get("p90"), ".3f")]
        if show_kept:
            reason = r.get("reason", "")
            if not markdown and len(reason) > 70:
                reason = reason[:67] + "..."
            cells.append("yes" if r.get("kept", True) else "no: " + reason)
        lines.append(cells)
    if markdown:
        out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        return "\n".join(out + ["| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
                                for cells in lines])
    widths = [max([len(h)] + [len(c[i]) for c in lines]) for i, h in enumerate(headers)]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
    return "\n".join([fmt(headers), fmt(["-" * w for w in widths])] + [fmt(c) for c in lines])


def embedding_plot(rows: list[dict], path: str | os.PathLike, title: str = "") -> Path | None:
    """Mean cosine (circles) and Spearman (triangles) against p50 latency, one label per
    row; rows that were not kept are drawn hollow. None when no row has both figures."""
    points = [r for r in rows if r.get("mean_cosine") is not None and _p50(r) is not None]
    if not points:
        return None
    fig, ax = new_figure(figsize=(7.2, 4.6), dpi=120)
    for index, r in enumerate(points):
        kept = r.get("kept", True)
        for key, marker, color in (("mean_cosine", "o", "tab:blue"),
                                   ("spearman", "^", "tab:orange")):
            if r.get(key) is None:
                continue
            ax.scatter(_p50(r), r[key], marker=marker, edgecolors=color,
                       facecolors=color if kept else "none",
                       label=key.replace("mean_", "mean ") if index == 0 else None)
        ax.annotate(r.get("name", "?"), (_p50(r), r["mean_cosine"]), textcoords="offset points",
                    xytext=(5, 5 if index % 2 == 0 else -12), fontsize=7)
    ax.set_xlabel("p50 latency (ms, lower is better)")
    ax.set_ylabel("agreement with the fp32 teacher")
    ax.set_title(title or "embedding quality vs latency (hollow: not kept)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return save_figure(fig, path, "embedding quality plot")
