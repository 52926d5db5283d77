"""One copy of a decoder's tied embedding / lm_head in the exported graph.

A model that ties its input embedding to its output projection holds one matrix. The
tracer sees two uses of it, a ``Gather`` of the embedding table ``E`` (vocab x hidden) and a
``MatMul`` by its transpose, and writes the transpose as a second initializer. optimum
removes the copy for most architectures (a ``Transpose`` node on the table feeds the
``MatMul``), but not for all: Gemma3's scaled embedding keeps both, so the file is twice the
embedding's size larger than it should be. :func:`share_tied_embedding` makes the same
rewrite optimum makes when it can: where an initializer feeding a ``MatMul`` is exactly
``E`` transposed, it is replaced by ``Transpose(E)``. The outputs are unchanged bit for bit
(the parity check runs after it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _ties_embedding(model) -> bool:
    """Whether the torch model's output projection is its input embedding."""
    try:
        return model.get_output_embeddings().weight is model.get_input_embeddings().weight
    except (AttributeError, TypeError):
        return False


def _gather_tables(graph, inits: dict) -> list[str]:
    """Initializers used as the table of a ``Gather`` (the embeddings)."""
    return [n.input[0] for n in graph.node
            if n.op_type == "Gather" and n.input and n.input[0] in inits]


def _transposed_copies(graph, inits: dict, table: str) -> list[str]:
    """Initializers fed to a ``MatMul`` that equal ``table`` transposed, exactly."""
    from onnx import numpy_helper

    values = numpy_helper.to_array(inits[table])
    if values.ndim != 2:
        return []
    copies = []
    for node in graph.node:
        if node.op_type != "MatMul" or len(node.input) < 2 or node.input[1] not in inits:
            continue
        candidate = inits[node.input[1]]
        if tuple(candidate.dims) != values.shape[::-1] or node.input[1] in copies:
            continue
        if np.array_equal(numpy_helper.to_array(candidate), values.T):
            copies.append(node.input[1])
    return copies


def share_tied_embedding(path, model) -> list[str]:
    """Rewrite the ONNX file at ``path`` so that a tied embedding is stored once; return the
    initializers removed (empty: nothing to do, the file is untouched)."""
    import onnx
    from onnx import helper

    path = Path(path)
    if not _ties_embedding(model):
        return []
    graph_model = onnx.load(str(path))
    graph = graph_model.graph
    inits = {i.name: i for i in graph.initializer}
    removed = []
    for table in _gather_tables(graph, inits):
        copies = _transposed_copies(graph, inits, table)
        if not copies:
            continue
        transposed = f"{table}_transposed"
        graph.node.insert(0, helper.make_node("Transpose", [table], [transposed], perm=[1, 0],
                                              name=f"{table}_transpose"))
        for node in graph.node:
            node.input[:] = [transposed if name in copies else name for name in node.input]
        removed += copies
    if not removed:
        return []
    kept = [i for i in graph.initializer if i.name not in removed]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    _save_like(graph_model, path)
    return removed


def _save_like(graph_model, path: Path) -> None:
    """Save over ``path``, keeping external data in one file beside it when it had some."""
    import onnx

    data = path.with_name(path.name + "_data")
    external = data.exists() or graph_model.ByteSize() > 2 ** 31 - 1
    if external:
        data.unlink(missing_ok=True)
    onnx.save(graph_model, str(path), save_as_external_data=external,
              all_tensors_to_one_file=True, location=data.name)


__all__ = ["share_tied_embedding"]
