"""The plots edgepack writes: a figure on matplotlib's file-only backend, saved as a PNG that
marks itself as edgepack's (:func:`edgepack.core.output_paths.png_metadata`, so a later run
may write over it) and appears whole or not at all (:func:`edgepack.core.files.atomic_path`).
"""

from __future__ import annotations

import os
from pathlib import Path

from edgepack.core.files import atomic_path
from edgepack.core.output_paths import png_metadata


def new_figure(*grid, **options):
    """``(figure, axes)`` from ``plt.subplots(*grid, **options)`` on the Agg backend (no
    display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*grid, **options)


def save_figure(fig, path: str | os.PathLike, what: str) -> Path:
    """Lay the figure out, write it to ``path`` as a marked PNG (``what`` names the plot in
    the mark), close it, and return the path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", metadata=png_metadata(what))
    plt.close(fig)
    return Path(path)
