"""The decoder run's report: a table per stage (quality against the teacher, generation
speed), and a decode tokens/s versus perplexity plot with every quantize candidate.

The plot shows every candidate the quantize search measured, not only the kept one, so a
reader sees what the choice was made among: filled marks passed the quality gate, hollow
ones did not (their speed is the short probe's, scaled by the input's timed speed); the
stages' artifacts are labelled.
"""

from __future__ import annotations

from pathlib import Path

from edgepack.bench.figures import new_figure, save_figure


COLUMNS = ("stage", "size MB", "perplexity", "ppl ratio", "top-1 agr", "greedy agr",
           "prefill ms", "decode tok/s", "token p50/p90 ms", "peak MB", "kept")


def _cell(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _row(row: dict) -> list[str]:
    latency = row.get("latency_ms") or {}
    prefill = row.get("prefill_ms") or {}
    kept = "yes" if row.get("kept", True) else f"no: {row.get('reason', '')}"
    return [row["name"], _cell(row.get("size_bytes") and row["size_bytes"] / 1e6, ".1f"),
            _cell(row.get("perplexity"), ".3f"), _cell(row.get("perplexity_ratio"), ".4f"),
            _cell(row.get("top1_agreement"), ".3f"), _cell(row.get("greedy_agreement"), ".3f"),
            _cell(prefill.get("p50"), ".1f"), _cell(row.get("decode_tokens_per_s"), ".1f"),
            f"{_cell(latency.get('p50'), '.2f')}/{_cell(latency.get('p90'), '.2f')}",
            _cell(row.get("peak_rss_mb"), ".0f"), kept if row["name"] != "teacher" else "-"]


def decoder_table(rows: list[dict], markdown: bool = False) -> str:
    """One line per stage (the teacher first)."""
    body = [_row(r) for r in rows]
    if markdown:
        lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in body])
    widths = [max(len(c), *(len(r[i]) for r in body)) for i, c in enumerate(COLUMNS)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths))]
    return "\n".join(lines + ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in body])


def candidate_points(stages: list[dict]) -> list[dict]:
    """Every quantize candidate whose quality was judged, from the stage records: its timed
    decode tokens/s when it passed the gate, else its speed-probe ratio times the input's
    timed tokens/s (the probe is shorter: those points are marked as probed)."""
    points = []
    for stage in stages:
        record = stage.get("record") or {}
        base = (record.get("input") or {}).get("decode_tokens_per_s")
        for cand in record.get("candidates", []):
            speed = cand.get("decode_tokens_per_s") or (
                cand["probe_speedup"] * base if base and cand.get("probe_speedup") else None)
            if cand.get("perplexity") is None or not speed:
                continue
            points.append({"label": cand.get("label") or cand.get("method", "?"),
                           "perplexity": cand["perplexity"], "tokens_per_s": speed,
                           "timed": bool(cand.get("decode_tokens_per_s")),
                           "passed": not str(cand.get("verdict", "")).startswith("failed")})
    return points


def decoder_plot(report: dict, path: Path) -> Path | None:
    """Decode tokens/s (x) against perplexity (y): candidates and the stages' artifacts."""
    stages = [s for s in report["stages"] if s.get("decode_tokens_per_s")]
    points = candidate_points(report["stages"])
    if not stages and not points:
        return None
    fig, ax = new_figure(figsize=(7, 4.5))
    for point in points:
        ax.scatter(point["tokens_per_s"], point["perplexity"], s=24, color="tab:blue",
                   facecolors="tab:blue" if point["passed"] else "none", alpha=0.8)
    for stage in stages:
        ax.scatter(stage["decode_tokens_per_s"], stage["perplexity"], s=70, marker="D",
                   color="tab:green" if stage.get("kept") else "tab:red")
        ax.annotate(stage["name"], (stage["decode_tokens_per_s"], stage["perplexity"]),
                    textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.axhline(report["teacher"]["perplexity"], color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("decode tokens/s (1 thread, batch 1)")
    ax.set_ylabel("perplexity on held-out text")
    ax.set_title(f"{report.get('name', '')}: speed vs perplexity (hollow: failed the gate)",
                 fontsize=9)
    return save_figure(fig, path, "decoder speed vs perplexity plot")


def decoder_measured(report: dict) -> str:
    """How a language-model run's figures were measured: quality against the torch teacher,
    generation timed interleaved with each stage's input."""
    from edgepack.pipeline.run_report import measured_on

    metric, bench = report["metric"], report["bench"]
    return (f"Quality against the fp32 teacher (torch) on held-out text; generation measured "
            f"on {measured_on(report['env'], bench)}, threads {bench['threads']}, batch 1, a "
            f"{metric['prompt_tokens']}-token prompt then {metric['new_tokens']} decode steps, "
            f"{metric['rounds']} rounds interleaved with each stage's input.")


__all__ = ["decoder_measured", "decoder_plot", "decoder_table"]
