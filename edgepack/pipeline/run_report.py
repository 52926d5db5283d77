"""The run folder's reports: report.json, report.md, tradeoff.png, robustness.png,
privacy.png, and manifest.json last."""

from __future__ import annotations

from pathlib import Path

from edgepack.bench.privacy.privacy_report import privacy_notes, privacy_table
from edgepack.bench.robustness.robustness_report import robustness_notes, robustness_table
from edgepack.core.files import atomic_write_json, atomic_write_text, sha256_file


def robustness_section(report: dict, rows: list[dict]) -> str:
    """Clean vs attacked accuracy per stage, attribution drift, and what was measured how."""
    table = robustness_table(rows)
    if not table:
        return ""
    threshold = (report.get("robustness") or {}).get("attribution_threshold")
    drifted = [f"{r['name']} (rho {r['attribution']['rho']:.3f})" for r in rows
               if (r.get("attribution") or {}).get("flagged")]
    text = "\n## Robustness\n\n" + table + "\n" + robustness_notes(rows, threshold)
    if drifted:
        text += (f"\n**Attribution drift:** {', '.join(drifted)} rank input positions unlike "
                 f"the teacher (below {threshold}): the compressed model may be right for other "
                 "reasons; inspect it before shipping.\n")
    return text


def privacy_section(report: dict, rows: list[dict]) -> str:
    """Membership inference per artifact, how it was measured, and each artifact's formal
    guarantee ('' when the run has neither)."""
    privacy = report.get("privacy")
    if not privacy:
        return ""
    text = "\n## Privacy\n\n"
    table = privacy_table(rows)
    if table:
        text += table + "\n" + privacy_notes(rows) + "\n"
    text += "Formal guarantee per artifact:\n\n"
    text += "".join(f"- {name}: {line}\n" for name, line in privacy["guarantees"].items())
    note = (privacy.get("dp") or {}).get("rng_note")
    if note:
        text += f"\nCaveat: {note}.\n"
    return text


def baseline_line(stage: dict) -> str:
    """One line: the distilled student against its twin trained alone at equal compute."""
    record = stage.get("record")
    b = record.get("alone_baseline") if isinstance(record, dict) else None
    if not b:
        return ""
    failed = b.get("failed_lrs") or {}
    failures = "; ".join(f"lr {lr}: {why}" for lr, why in failed.items())
    if b.get("alone_failed"):
        return (f"{stage['name']}: no fair baseline: the same student trained alone failed at "
                f"every learning rate tried ({failures}); KD {b['kd_accuracy']:.4f}, teacher "
                f"{b['teacher_accuracy']:.4f}; no gap closed is given against a model that "
                "did not learn")
    sides = b.get("failed_sides") or []
    if "teacher" in sides:
        closed = "no gap closed is given: the teacher is near chance"
    elif b["gap_closed"] is None:
        closed = "no gap to close (the student alone is not below the teacher)"
    else:
        closed = f"{b['gap_closed']:.0%} of the gap closed"
    verdict = "" if b["kd_accuracy"] > b["alone_accuracy"] else \
        "; distillation did not beat training alone"
    if "kd student" in sides:
        verdict += "; the KD student is near chance"
    skipped = f"; failed first: {failures}" if failures else ""
    return (f"{stage['name']}: KD {b['kd_accuracy']:.4f} vs the same student alone "
            f"{b['alone_accuracy']:.4f} (equal steps: {b['steps']}; its lr {b['alone_lr']:g}, "
            f"best on validation of {', '.join(b['validation_accuracy'])}{skipped}), teacher "
            f"{b['teacher_accuracy']:.4f}: {closed}{verdict}; binomial SE "
            f"{b['binomial_se'] * 100:.2f} points on {b['evaluation_samples']:,} samples")


def teacher_warning(teacher: dict) -> str:
    """One line when the teacher is near chance: every verdict compares against it."""
    if not teacher.get("near_chance"):
        return ""
    return (f"warning: the teacher's accuracy {teacher['accuracy']:.4f} is near chance "
            f"({teacher['chance_accuracy']:.4f}, always the most frequent class): it did not "
            "learn, so the stages' accuracy drops and kept verdicts compare with nothing")


def distillation_section(rows: list[dict]) -> str:
    lines = [line for line in map(baseline_line, rows) if line]
    if not lines:
        return ""
    return ("\n## Distillation against a fair baseline\n\n"
            + "\n".join(f"- {line}" for line in lines) + "\n")


def learning_curve_section(rows: list[dict]) -> str:
    """Per distill stage that measured one: its quality on the validation rows after every
    epoch (compress/embedding_curve.py), to say whether more epochs would have paid."""
    parts = []
    for row in rows:
        record = row.get("record")
        curve = record.get("learning_curve") if isinstance(record, dict) else None
        if not curve:
            continue
        lines = ["| epoch | training loss | validation cosine | validation Spearman |",
                 "|---|---|---|---|"]
        lines += [f"| {p['epoch']} | {p['loss']:.4f} | {p['validation_cosine']:.4f} | "
                  f"{p['validation_spearman']:.4f} |" for p in curve]
        parts.append(f"{row['name']}, on held-out validation sentences (not the evaluation "
                     "ones), against the teacher:\n\n" + "\n".join(lines) + "\n")
    if not parts:
        return ""
    return "\n## Learning curve\n\n" + "\n".join(parts)


def providers_section(rows: list[dict]) -> str:
    """p50 on every provider when a run timed several: the judged (first) provider is not
    always the fastest one for a model (small models at batch 1 often run faster on the CPU
    than on a GPU)."""
    timed = [r for r in rows if r.get("by_provider")]
    if not timed:
        return ""
    providers = list(timed[0]["by_provider"])
    short = [name.replace("ExecutionProvider", "") for name in providers]
    lines = ["| model | " + " | ".join(f"{name} p50 ms" for name in short) + " | fastest |",
             "|---" * (len(providers) + 2) + "|"]
    for row in timed:
        p50 = [(row["by_provider"].get(name) or {}).get("latency_ms", {}).get("p50")
               for name in providers]
        known = [(value, name) for value, name in zip(p50, short) if value is not None]
        fastest = min(known)[1] if known else "-"
        cells = " | ".join("-" if value is None else f"{value:.4f}" for value in p50)
        lines.append(f"| {row['name']} | {cells} | {fastest} |")
    return ("\n## Every provider\n\nThe stages were kept or refused on the first provider; "
            "these are the same files timed on each.\n\n" + "\n".join(lines) + "\n")


def measured_on(env: dict, bench: dict) -> str:
    """The machine and runtime the judged figures came from: the GPU's name too when the
    first (judged) provider is not the CPU."""
    host = f"{env['cpu']} ({env['arch']}, {env['logical_cores']} logical cores)"
    provider = (bench.get("providers") or ["cpu"])[0]
    runtime = f"ONNX Runtime {env['onnxruntime']}"
    if provider.lower() in ("cpu", "cpuexecutionprovider"):
        return f"{host}, {runtime} on the CPU"
    gpus = ", ".join(env.get("gpus") or []) or "a GPU the NVIDIA driver did not name"
    return f"{gpus} (host {host}), {runtime} with the {provider} provider"


def report_markdown(report: dict, rows: list[dict]) -> str:
    """report.md: the metric kind's table and its own text, then what every run has."""
    from edgepack.pipeline.metric_kinds import kind_of_report
    from edgepack.pipeline.outcome import outcome_markdown

    kind = kind_of_report(report)
    env, bench = report["env"], report["bench"]
    return (f"# edgepack report: {report.get('name', 'run')}\n\n"
            f"{kind.table(rows, True)}\n\n"
            f"{kind.measured(report) if kind.measured else _measured(env, bench)}\n\n"
            f"Final artifact: {report.get('final_artifact') or '(none kept)'}\n"
            + (f"\n**{teacher_warning(report['teacher'])}**\n" if teacher_warning(
                report["teacher"]) else "")
            + providers_section(rows)
            + distillation_section(rows)
            + learning_curve_section(rows)
            + kind.markdown(report, rows)
            + outcome_markdown(report))


def _measured(env: dict, bench: dict) -> str:
    return (f"Measured on {measured_on(env, bench)}, threads {bench['threads']}, batch "
            f"{bench['batch']}, at least {bench['min_runs']} runs and {bench['min_time_s']} s "
            "per model, timed interleaved with each stage's input.")


def write_manifest(out_dir: Path) -> None:
    """sha256 and size of every file in the run folder (a package stage's own manifest.json
    included); written last, so a complete run has it (``verify`` compares sizes first, and
    hashes only files of the recorded size)."""
    files = sorted(p for p in out_dir.rglob("*") if p.is_file() and p != out_dir / "manifest.json"
                   and not any(part.startswith(".") for part in p.relative_to(out_dir).parts))
    manifest = {"edgepack_run": True,
                "files": {str(p.relative_to(out_dir)): sha256_file(p) for p in files},
                "sizes": {str(p.relative_to(out_dir)): p.stat().st_size for p in files}}
    atomic_write_json(out_dir / "manifest.json", manifest)


def report_rows(report: dict) -> list[dict]:
    """The teacher and every stage that was measured or refused (a package is neither)."""
    return [{"name": "teacher", **report["teacher"]}] + [
        s for s in report["stages"] if "latency_ms" in s or not s.get("kept", True)]


def write_outputs(out_dir: Path, report: dict, recipe_toml: str | None) -> None:
    """report.json, report.md, the metric kind's plots (tradeoff.png ...), recipe.toml, then
    manifest.json last."""
    from edgepack.pipeline.metric_kinds import kind_of_report

    atomic_write_json(out_dir / "report.json", report)
    rows = report_rows(report)
    atomic_write_text(out_dir / "report.md", report_markdown(report, rows))
    kind_of_report(report).plot(report, rows, out_dir)
    if recipe_toml is not None:
        atomic_write_text(out_dir / "recipe.toml", recipe_toml)
    write_manifest(out_dir)
