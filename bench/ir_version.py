"""ONNX files stamped with an IR version the installed ONNX Runtime reads.

The onnx package stamps every model it builds or converts with its own newest IR version,
and onnxruntime releases trail it: onnx 1.23 writes IR 14, onnxruntime-gpu 1.31 reads up
to IR 13 and refuses anything newer outright ("Unsupported model IR version"), even a model
that uses nothing the newer IR added. So every file edgepack writes goes through
:func:`lower_to_runtime`: its IR version is lowered to the newest the runtime loads (found
by trying, once per process), never below the oldest IR its opsets need. A model that
needs a newer IR than the runtime reads is left as it is, and the runtime's own error
names the problem.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

OLDEST_PROBED = 7  # IR 7 is the oldest that holds opset 13, the probe model's opset


@lru_cache(maxsize=1)
def runtime_ir_version() -> int:
    """The newest IR version the installed ONNX Runtime loads (probed with a one-node model)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    value = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", [value],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    options = ort.SessionOptions()
    options.log_severity_level = 4
    for version in range(onnx.IR_VERSION, OLDEST_PROBED - 1, -1):
        model.ir_version = version
        try:
            ort.InferenceSession(model.SerializeToString(), sess_options=options,
                                 providers=["CPUExecutionProvider"])
        except Exception:  # ONNX Runtime's Fail is no Python builtin error type
            continue
        return version
    return OLDEST_PROBED


def lower_to_runtime(model) -> bool:
    """Lower ``model.ir_version`` (a ModelProto, in place) to what the runtime reads.

    Returns whether it changed. The version never goes below what the model's opsets need.
    """
    from onnx import helper

    newest = runtime_ir_version()
    if model.ir_version <= newest:
        return False
    needed = helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
    if needed > newest:
        return False
    model.ir_version = newest
    return True


def lower_file_to_runtime(path: str | os.PathLike) -> bool:
    """:func:`lower_to_runtime` for a file; its external data files are left untouched."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    if not lower_to_runtime(model):
        return False
    Path(path).write_bytes(model.SerializeToString())
    return True
