"""The deployed model's scores as a numpy function: what every attack queries."""

from __future__ import annotations

import numpy as np


def ort_predict(session, batch: int = 256):
    """``predict`` for the attacks: the first output of an ORT session, batched.

    A model with a fixed batch dimension gets batches of exactly that size (the last one
    padded by repeating its final row; the padding's scores are dropped).
    """
    declared = session.get_inputs()[0]
    fixed = declared.shape[0] if isinstance(declared.shape[0], int) and declared.shape[0] > 0 \
        else None
    size = fixed or batch
    dtype = np.float16 if declared.type == "tensor(float16)" else np.float32

    def predict(x: np.ndarray) -> np.ndarray:
        outs = []
        for start in range(0, len(x), size):
            chunk = x[start:start + size]
            rows = len(chunk)
            if fixed and rows < fixed:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], fixed - rows, axis=0)])
            outs.append(session.run(None, {declared.name: chunk.astype(dtype)})[0][:rows])
        return np.concatenate(outs).astype(np.float32).reshape(len(x), -1)
    return predict
