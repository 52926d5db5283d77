"""How close one model's embeddings are to a reference model's, on the same rows.

Two figures, both the keep rule's for embedding models (``[metric] kind = "embedding"``):
the mean cosine between each row's two embeddings, and the Spearman correlation of the two
models' cosine similarities over every pair of rows (whether the candidate ranks which
sentences are alike as the reference does). Plain numpy, so training can track them per
epoch (``edgepack.compress.distill``) as the pipeline's keep rule does per stage.
"""

from __future__ import annotations

import numpy as np


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64).reshape(len(x), -1)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 (ties are broken by position: similarities are floats)."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.arange(len(values), dtype=np.float64)
    return ranks


def pairwise_spearman(candidate: np.ndarray, reference: np.ndarray) -> float:
    """Spearman correlation of the two models' cosine similarities over all row pairs."""
    if len(reference) < 3:
        raise ValueError("the embedding metric needs at least 3 evaluation rows")
    upper = np.triu_indices(len(reference), k=1)
    a = (_unit_rows(candidate) @ _unit_rows(candidate).T)[upper]
    b = (_unit_rows(reference) @ _unit_rows(reference).T)[upper]
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / np.sqrt((ra * ra).sum() * (rb * rb).sum()))


def embedding_quality(candidate: np.ndarray, reference: np.ndarray) -> dict:
    """Mean cosine to the reference rows, and Spearman of the pairwise similarities."""
    if candidate.shape != reference.shape:
        raise ValueError(f"the model gives embeddings of shape {list(candidate.shape)}; the "
                         f"teacher's are {list(reference.shape)}")
    cosine = (_unit_rows(candidate) * _unit_rows(reference)).sum(1)
    return {"mean_cosine": float(cosine.mean()), "min_cosine": float(cosine.min()),
            "spearman": pairwise_spearman(candidate, reference)}
