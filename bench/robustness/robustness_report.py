"""The robustness part of a report: a Markdown/text table and a clean-vs-attacked plot.

Rows are report rows (``name`` plus the ``robustness`` dict of
:func:`edgepack.bench.robustness.evaluate_robustness`, and optionally ``attribution``: ``{"rho",
"method", "flagged"}``). Columns appear for the attacks and epsilons some row has.
"""

from __future__ import annotations

import os
from pathlib import Path

from edgepack.bench.figures import new_figure, save_figure
from edgepack.bench.robustness.attacks import ATTACKS


def _name(row: dict) -> str:
    return str(row.get("name") or Path(str(row.get("model", "?"))).name)


def _label(attack: str) -> str:
    return ATTACKS.get(attack).label


def _columns(rows: list[dict]) -> list[tuple[str, str]]:
    """(attack, eps) pairs present in any row, attacks in the registry's order."""
    order = ATTACKS.names()
    found = {(attack, eps) for r in rows for attack, by_eps in (r.get("robustness") or {}).items()
             if attack in order for eps in by_eps}
    return sorted(found, key=lambda k: (order.index(k[0]), float(k[1])))


def _cell(rob: dict, attack: str, eps: str) -> str:
    value = (rob.get(attack) or {}).get(eps)
    if value is None:
        return "-"
    queries = (rob.get("queries") or {}).get(eps) if ATTACKS.get(attack).counts_queries \
        else None
    if not queries:
        return f"{value:.3f}"
    return f"{value:.3f} ({queries['median']:.0f}/{queries['mean']:.0f} q)"


def _attribution_cell(row: dict) -> str:
    attribution = row.get("attribution")
    if not attribution:
        return "-"
    if "rho" not in attribution:
        return attribution.get("reason", "-")
    flag = " **drifted**" if attribution.get("flagged") else ""
    return f"{attribution['rho']:.3f} ({attribution['method']}){flag}"


def robustness_table(rows: list[dict], first: str = "stage") -> str:
    """Markdown: clean vs attacked accuracy per row, and attribution drift ('' if none).

    ``first`` heads the name column ("stage" in a run report, "model" for ``bench``).
    """
    columns = _columns(rows)
    show_attr = any(r.get("attribution") for r in rows)
    if not columns and not show_attr and \
            not any((r.get("robustness") or {}).get("reason") for r in rows):
        return ""
    headers = [first, "clean"] + [f"{_label(a)} eps={e}" for a, e in columns]
    headers += ["attribution rho vs teacher"] if show_attr else []
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for r in rows:
        rob = r.get("robustness") or {}
        if rob.get("applicable") is False:
            cells = [f"not applicable: {rob['reason']}"] + [""] * (len(headers) - 2)
        else:
            clean = rob.get("clean")
            cells = ["-" if clean is None else f"{clean:.3f}"]
            cells += [_cell(rob, a, e) for a, e in columns]
            cells += [_attribution_cell(r)] if show_attr else []
        lines.append("| " + " | ".join([_name(r)] + cells).replace("\n", " ") + " |")
    return "\n".join(lines) + "\n"


def robustness_notes(rows: list[dict], threshold: float | None = None) -> str:
    """How the table was measured, in words, from the first row that has robustness."""
    rob = next((r["robustness"] for r in rows if (r.get("robustness") or {}).get("clean")
                is not None), None)
    if rob is None:
        return ""
    text = (f"Accuracy on the first {rob['samples']} evaluation inputs, each run through the "
            "artifact itself on ONNX Runtime; eps is the L-infinity budget in input standard "
            f"deviations (1 = {rob['scale']:.3g}). noise: random +-eps signs (the control); "
            "FGSM/PGD: crafted on the torch model each artifact is, or was exported from "
            "(a transfer attack for ONNX-only stages); Square: black-box Square Attack on the "
            "artifact's scores (median/mean model calls per attacked sample in brackets).")
    if threshold is not None:
        text += (" Attribution: mean Spearman rank correlation of the stage's saliency maps "
                 "with the teacher's (gradient x input for torch models, occlusion through "
                 f"ONNX Runtime for ONNX-only ones); below {threshold} is flagged as drifted.")
    return text + "\n"


def robustness_plot(rows: list[dict], path: str | os.PathLike, title: str = "") -> Path | None:
    """Clean and attacked accuracy per stage at the largest epsilon; None if nothing to plot."""
    rows = [r for r in rows if (r.get("robustness") or {}).get("clean") is not None]
    columns = _columns(rows)
    if not rows or not columns:
        return None
    largest = max((e for _, e in columns), key=float)
    fig, ax = new_figure(figsize=(6.4, 4.2), dpi=120)
    positions = range(len(rows))
    ax.plot(positions, [r["robustness"]["clean"] for r in rows], "o-", color="black",
            label="clean")
    for attack in [a for a in ATTACKS.names() if (a, largest) in columns]:
        values = [(r["robustness"].get(attack) or {}).get(largest) for r in rows]
        ax.plot(positions, [float("nan") if v is None else v for v in values], "o--",
                label=f"{_label(attack)} eps={largest}")
    ax.set_xticks(list(positions), [_name(r) for r in rows], rotation=20, fontsize=8)
    ax.set_ylabel("top-1 accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title(title or "clean vs attacked accuracy per stage")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path, "robustness plot")
