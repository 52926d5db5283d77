"""The privacy part of a report: a Markdown/text table, notes in words, and a plot.

Rows are report rows (``name`` or ``model`` plus the ``privacy`` dict of
:func:`edgepack.bench.privacy.evaluate_membership`, and optionally a ``guarantee`` line).
"""

from __future__ import annotations

import os
from pathlib import Path

from edgepack.bench.figures import new_figure, save_figure
from edgepack.bench.privacy.config import ATTACKS

LABELS = {"loss": "loss", "correct": "correct", "confidence": "confidence", "entropy": "entropy", "lira": "LiRA"}


def _name(row: dict) -> str:
    return str(row.get("name") or Path(str(row.get("model", "?"))).name)


def _attacks(rows: list[dict]) -> list[str]:
    found = {a for r in rows for a, v in ((r.get("privacy") or {}).get("attacks") or {}).items()
             if v.get("auc") is not None}
    return [a for a in ATTACKS if a in found]


def _interval(figures: dict, key: str) -> str:
    low, high = figures[f"{key}_interval"]
    return f"{figures[key]:.3f} [{low:.3f}, {high:.3f}]"


def privacy_table(rows: list[dict], first: str = "stage") -> str:
    """Markdown: per row and attack, AUC, TPR at 1% FPR and balanced accuracy with 95%
    bootstrap intervals, and the train/held-out accuracy gap ('' when nothing was run)."""
    attacks = _attacks(rows)
    if not attacks:
        return ""
    headers = [first, "attack", "AUC [95%]", "TPR at 1% FPR [95%]", "balanced acc. [95%]",
               "acc. members / non-members"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for r in rows:
        privacy = r.get("privacy") or {}
        for attack in attacks:
            figures = (privacy.get("attacks") or {}).get(attack)
            if not figures:
                continue
            if figures.get("auc") is None:
                cells = [f"not run: {figures.get('reason', '')}", "", "", ""]
            else:
                cells = [_interval(figures, "auc"), _interval(figures, "tpr_at_1pct_fpr"),
                         _interval(figures, "balanced_accuracy"),
                         f"{privacy['member_accuracy']:.3f} / "
                         f"{privacy['non_member_accuracy']:.3f}"]
            lines.append("| " + " | ".join([_name(r), LABELS[attack]] + cells) + " |")
    return "\n".join(lines) + "\n"


def privacy_notes(rows: list[dict]) -> str:
    """How the table was measured, in words, from the first row that has privacy figures."""
    privacy = next((r["privacy"] for r in rows if (r.get("privacy") or {}).get("attacks")),
                   None)
    if privacy is None:
        return ""
    text = (f"Membership inference on {privacy['members']} training samples of the teacher "
            f"(members) and {privacy['non_members']} samples from the same distribution that "
            "the run never used for training or selection (non-members), each artifact run "
            "through ONNX Runtime. loss: the true label's log-probability (Yeom et al. 2018); "
            "correct: whether the prediction is right (Yeom et al.'s gap attack); "
            "confidence / entropy: the top probability and minus the entropy of the "
            "prediction, labels unused")
    if privacy.get("references"):
        text += (f"; LiRA: offline LiRA with a global variance (Carlini et al. 2022), "
                 f"calibrated on {privacy['references']} reference models trained like the "
                 "teacher, each on its own data disjoint from both sets")
    text += (f". AUC 0.5 is no leak. Intervals: 95% bootstrap ({privacy['bootstrap']} "
             "resamples, members and non-members resampled separately); the balanced "
             "accuracy's threshold is fitted on one half and scored on the other.")
    return text + "\n"


def privacy_plot(rows: list[dict], path: str | os.PathLike, title: str = "") -> Path | None:
    """Left: AUC per row and attack with its interval; right: the loss attack's ROC curves
    (log axes, where the low-FPR regime shows). None when nothing was run."""
    rows = [r for r in rows if (r.get("privacy") or {}).get("attacks")]
    attacks = _attacks(rows)
    if not rows or not attacks:
        return None
    fig, (left, right) = new_figure(1, 2, figsize=(10, 4.2), dpi=120)
    width = 0.8 / len(attacks)
    for k, attack in enumerate(attacks):
        xs, ys, low, high = [], [], [], []
        for i, r in enumerate(rows):
            figures = r["privacy"]["attacks"].get(attack) or {}
            if figures.get("auc") is None:
                continue
            xs.append(i + (k - (len(attacks) - 1) / 2) * width)
            ys.append(figures["auc"])
            low.append(figures["auc"] - figures["auc_interval"][0])
            high.append(figures["auc_interval"][1] - figures["auc"])
        left.errorbar(xs, ys, yerr=[low, high], fmt="o", capsize=3, label=LABELS[attack])
    left.axhline(0.5, color="gray", lw=1, ls="--")
    left.set_xticks(range(len(rows)), [_name(r) for r in rows], rotation=20, fontsize=8)
    left.set_ylabel("membership-inference ROC AUC (95% interval)")
    left.set_title("AUC per artifact (0.5: no leak)", fontsize=10)
    left.grid(alpha=0.3)
    left.legend(fontsize=8)
    curve_attack = "lira" if "lira" in attacks else "loss" if "loss" in attacks else attacks[0]
    for r in rows:
        curve = (r["privacy"].get("roc") or {}).get(curve_attack)
        if curve:
            right.plot(curve["fpr"], curve["tpr"], label=_name(r))
    right.plot([1e-3, 1], [1e-3, 1], color="gray", lw=1, ls="--")
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlim(1e-3, 1)
    right.set_ylim(1e-3, 1)
    right.set_xlabel("false positive rate")
    right.set_ylabel("true positive rate")
    right.set_title(f"{LABELS[curve_attack]} attack ROC", fontsize=10)
    right.grid(alpha=0.3)
    right.legend(fontsize=8)
    fig.suptitle(title or "membership inference per artifact", fontsize=11)
    return save_figure(fig, path, "privacy plot")
