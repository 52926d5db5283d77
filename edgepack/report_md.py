"""The run folder's reports: report.json, report.md, tradeoff.png, and manifest.json last."""

from __future__ import annotations

from pathlib import Path

from bench.report import results_table, tradeoff_plot
from core.files import atomic_write_json, atomic_write_text, sha256_file


def robustness_table(rows: list[dict]) -> str:
    """Markdown: accuracy under FGSM/PGD per stage (empty when robustness was off)."""
    keys = sorted({(attack, eps) for r in rows for attack, by_eps in
                   (r.get("robustness") or {}).items() for eps in by_eps})
    if not keys:
        return ""
    header = "| stage | " + " | ".join(f"{a.upper()} eps={e}" for a, e in keys) + " |"
    lines = ["", "Accuracy under attack (perturbations crafted on the torch model each "
             "artifact is or came from; eps in input standard deviations):", "", header,
             "|" + "---|" * (len(keys) + 1)]
    for r in rows:
        rob = r.get("robustness") or {}
        cells = [f"{rob[a][e]:.4f}" if e in rob.get(a, {}) else "-" for a, e in keys]
        lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def is_embedding(report: dict) -> bool:
    return (report.get("metric") or {}).get("kind") == "embedding"


def report_markdown(report: dict, rows: list[dict]) -> str:
    from edgepack.embedding_report import embedding_table

    env, bench = report["env"], report["bench"]
    table = embedding_table(rows, markdown=True) if is_embedding(report) else \
        results_table(rows, markdown=True)
    return (f"# edgepack report: {report.get('name', 'run')}\n\n"
            f"{table}\n\n"
            f"Measured on {env['cpu']} ({env['arch']}, {env['logical_cores']} logical "
            f"cores), ONNX Runtime {env['onnxruntime']}, threads {bench['threads']}, batch "
            f"{bench['batch']}, at least {bench['min_runs']} runs and {bench['min_time_s']} s "
            "per model, timed interleaved with each stage's input.\n\nFinal artifact: "
            f"{report.get('final_artifact') or '(none kept)'}\n" + robustness_table(rows))


def write_manifest(out_dir: Path) -> None:
    """sha256 of every file in the run folder; written last, so a complete run has it."""
    files = sorted(p for p in out_dir.rglob("*") if p.is_file() and p.name != "manifest.json"
                   and not any(part.startswith(".") for part in p.relative_to(out_dir).parts))
    manifest = {"edgepack_run": True,
                "files": {str(p.relative_to(out_dir)): sha256_file(p) for p in files}}
    atomic_write_json(out_dir / "manifest.json", manifest)


def write_outputs(out_dir: Path, report: dict, recipe_toml: str | None) -> None:
    """report.json, report.md, tradeoff.png, recipe.toml, then manifest.json last."""
    atomic_write_json(out_dir / "report.json", report)
    rows = [{"name": "teacher", **report["teacher"]}] + [
        s for s in report["stages"] if "latency_ms" in s or not s.get("kept", True)]
    atomic_write_text(out_dir / "report.md", report_markdown(report, rows))
    if is_embedding(report):
        from edgepack.embedding_report import embedding_plot

        embedding_plot(rows, out_dir / "tradeoff.png", title=f"{report.get('name', '')}: "
                       "agreement with the teacher vs latency (hollow: not kept)")
    else:
        tradeoff_plot(rows, out_dir / "tradeoff.png", title=f"{report.get('name', '')}: "
                      "accuracy vs latency (x: not kept)")
    if recipe_toml is not None:
        atomic_write_text(out_dir / "recipe.toml", recipe_toml)
    write_manifest(out_dir)
