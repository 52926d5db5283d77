"""Membership inference on one deployed model: every attack, its figures and intervals.

The model runs through ONNX Runtime on a member set (samples it trained on) and a
non-member set of the same size from the same distribution that nothing in the run used
for training or selection; each attack in :mod:`edgepack.bench.privacy.membership_scores` turns the outputs
into one score per sample and :func:`edgepack.bench.privacy.metrics.summarize` says how well the
scores tell the two sets apart. A model that leaks nothing scores an AUC of 0.5.

The sets are checked first (:func:`check_member_sets`): the same inputs and label space on
both sides, equal sizes, enough samples for the interval, and no sample in both.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import numpy as np

from edgepack.bench.privacy.config import MIN_SAMPLES, PrivacyConfig
from edgepack.bench.privacy.metrics import roc_curve, summarize
from edgepack.bench.privacy.membership_scores import SCORES, lira_score
from edgepack.core.errors import BadInput


@dataclass
class MemberSets:
    """Members and non-members: model inputs by name (in the model's order) and labels."""

    members: dict[str, np.ndarray]
    member_labels: np.ndarray
    non_members: dict[str, np.ndarray]
    non_member_labels: np.ndarray
    source: str = "the member sets"

    @property
    def size(self) -> int:
        return len(self.member_labels)


def _labels(arrays: dict, what: str) -> np.ndarray:
    if "labels" not in arrays:
        raise BadInput(f"{what} has no 'labels' array; membership attacks need the true "
                       "label of every sample")
    labels = np.asarray(arrays["labels"])
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise BadInput(f"{what}: 'labels' must be a 1-D integer array of class indices, got "
                       f"{labels.dtype} of shape {list(labels.shape)}")
    return labels.astype(np.int64)


def load_member_sets(members_path, non_members_path) -> MemberSets:
    """Read the two ``.npz`` files (no pickle) and check them (:func:`check_member_sets`)."""
    from edgepack.bench.inputs import load_npz

    found = []
    for path, what in ((members_path, "--members"), (non_members_path, "--non-members")):
        arrays = load_npz(path)
        labels = _labels(arrays, f"{what} {path}")
        found.append(({k: v for k, v in arrays.items() if k != "labels"}, labels))
    sets = MemberSets(found[0][0], found[0][1], found[1][0], found[1][1],
                      source=f"{members_path} and {non_members_path}")
    check_member_sets(sets)
    return sets


def canonical_values(values: np.ndarray) -> np.ndarray:
    """The array with one byte pattern per value: -0.0 as 0.0 and every NaN as the same NaN,
    so two rows hash alike exactly when their values are equal (a sample written twice with
    another zero sign or NaN payload is still the same sample)."""
    values = np.ascontiguousarray(values)
    if values.dtype.kind not in "fc":
        return values
    zero = np.zeros((), values.dtype)
    return np.ascontiguousarray(np.where(np.isnan(values), np.array(np.nan, values.dtype),
                                         values + zero))   # -0.0 + 0.0 is +0.0


def _row_digests(arrays: dict[str, np.ndarray]) -> list[bytes]:
    """One digest per row of the inputs' values (not their bytes: :func:`canonical_values`)."""
    names = sorted(arrays)
    canonical = {n: canonical_values(arrays[n]) for n in names}
    rows = len(next(iter(arrays.values())))
    return [hashlib.sha256(b"".join(canonical[n][i].tobytes() for n in names)).digest()
            for i in range(rows)]


def check_member_sets(sets: MemberSets, classes: int | None = None) -> None:
    """One line naming what is wrong, before any model runs: inputs, sizes, labels, overlap."""
    m, n = sets.members, sets.non_members
    if not m or not n:
        raise BadInput("members and non-members must each hold the model's input arrays "
                       "besides 'labels'")
    if sorted(m) != sorted(n):
        raise BadInput(f"members and non-members hold different arrays: {sorted(m)} vs "
                       f"{sorted(n)}; both need the same model inputs")
    for name in m:
        for arrays, labels, what in ((m, sets.member_labels, "members"),
                                     (n, sets.non_member_labels, "non-members")):
            if len(arrays[name]) != len(labels):
                raise BadInput(f"{what}: array {name!r} has {len(arrays[name])} rows but "
                               f"'labels' has {len(labels)}")
        if m[name].shape[1:] != n[name].shape[1:] or m[name].dtype != n[name].dtype:
            raise BadInput(f"input {name!r}: members are {m[name].dtype} "
                           f"{list(m[name].shape[1:])} per sample, non-members "
                           f"{n[name].dtype} {list(n[name].shape[1:])}; both must match")
    sizes = (len(sets.member_labels), len(sets.non_member_labels))
    if sizes[0] != sizes[1]:
        raise BadInput(f"members ({sizes[0]}) and non-members ({sizes[1]}) differ in size; "
                       "the attacks are scored on equal-sized sets: pass as many of each")
    if sizes[0] < MIN_SAMPLES:
        raise BadInput(f"{sizes[0]} members and non-members are too few: at least "
                       f"{MIN_SAMPLES} of each are needed for an interval at 1% FPR")
    seen_m, seen_n = set(sets.member_labels.tolist()), set(sets.non_member_labels.tolist())
    if seen_m != seen_n:
        only = sorted(seen_m ^ seen_n)[:5]
        raise BadInput(f"members and non-members have different label spaces (labels "
                       f"{only} appear on one side only); both must come from the same "
                       "classes")
    if classes is not None and (min(seen_m) < 0 or max(seen_m) >= classes):
        raise BadInput(f"labels run from {min(seen_m)} to {max(seen_m)} but the model has "
                       f"{classes} outputs; expected class indices in [0, {classes})")
    shared = set(_row_digests(m)) & set(_row_digests(n))
    if shared:
        raise BadInput(f"{len(shared)} sample(s) appear among both members and non-members; "
                       "the two sets must not overlap")


def session_logits(session, feeds: dict[str, np.ndarray], batch: int = 256) -> np.ndarray:
    """The session's first output on every row of ``feeds``, in batches of ``batch``."""
    declared = session.get_inputs()
    first = declared[0].shape[0]
    size = first if isinstance(first, int) and first > 0 else batch
    rows = len(next(iter(feeds.values())))
    outs = []
    for start in range(0, rows, size):
        chunk = {i.name: feeds[i.name][start:start + size] for i in declared}
        taken = len(next(iter(chunk.values())))
        if taken < size and size != batch:   # a fixed batch axis: pad with the last row
            chunk = {k: np.concatenate([v, np.repeat(v[-1:], size - taken, axis=0)])
                     for k, v in chunk.items()}
        outs.append(session.run(None, chunk)[0][:taken])
    logits = np.concatenate(outs).astype(np.float64)
    return logits.reshape(rows, -1)


def evaluate_membership(session, sets: MemberSets, config: PrivacyConfig,
                        reference_logits: list[tuple[np.ndarray, np.ndarray]] | None = None
                        ) -> dict:
    """Every attack of ``config`` on one ONNX Runtime session.

    ``reference_logits``: for ``lira``, each reference model's logits on (members,
    non-members); without them ``lira`` is reported as not run, with the reason.
    """
    started, cpu_started = time.perf_counter(), time.process_time()
    logits_m = session_logits(session, sets.members)
    logits_n = session_logits(session, sets.non_members)
    check_member_sets(sets, classes=logits_m.shape[1])
    labels_m, labels_n = sets.member_labels, sets.non_member_labels
    attacks, curves = {}, {}
    for attack in config.attacks:
        if attack == "lira":
            if not reference_logits or len(reference_logits) < 2:
                attacks[attack] = {"run": False, "reason": "no reference models (it needs "
                                   "at least 2 trained on data disjoint from both sets)"}
                continue
            score_m = lira_score(logits_m, labels_m, [r[0] for r in reference_logits])
            score_n = lira_score(logits_n, labels_n, [r[1] for r in reference_logits])
        else:
            score_m = SCORES[attack](logits_m, labels_m)
            score_n = SCORES[attack](logits_n, labels_n)
        attacks[attack] = summarize(score_m, score_n, config.bootstrap, config.seed)
        curves[attack] = _thinned_curve(score_m, score_n)
    out = {"members": sets.size, "non_members": sets.size, "bootstrap": config.bootstrap,
           "attacks": attacks, "roc": curves,
           "member_accuracy": float((logits_m.argmax(1) == labels_m).mean()),
           "non_member_accuracy": float((logits_n.argmax(1) == labels_n).mean())}
    if reference_logits:
        out["references"] = len(reference_logits)
    out["seconds"] = time.perf_counter() - started
    out["cpu_seconds"] = time.process_time() - cpu_started
    return out


def _thinned_curve(members, non_members, points: int = 200) -> dict:
    """The ROC curve at about ``points`` points (for the plot), on a log-spaced FPR grid."""
    fpr, tpr = roc_curve(members, non_members)
    grid = np.unique(np.concatenate([[0.0], np.logspace(-3, 0, points)]))
    return {"fpr": [round(float(x), 5) for x in grid],
            "tpr": [round(float(tpr[fpr <= x + 1e-12].max()), 5) for x in grid]}


def sets_digest(sets: MemberSets) -> str:
    """sha256 of both sets, for caches keyed on them."""
    digest = hashlib.sha256()
    for arrays, labels in ((sets.members, sets.member_labels),
                           (sets.non_members, sets.non_member_labels)):
        for name in sorted(arrays):
            digest.update(name.encode() + np.ascontiguousarray(arrays[name]).tobytes())
        digest.update(np.ascontiguousarray(labels).tobytes())
    return digest.hexdigest()

