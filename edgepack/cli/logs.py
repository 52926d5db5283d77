"""How loud ``edgepack run`` and ``edgepack demo`` are: ``--quiet``, default, ``--verbose``.

- default: one line per stage; training shows a progress bar on a terminal and one line per
  epoch elsewhere (a bar's carriage-return redraws would flood a CI log or ``> log 2>&1``);
- ``--quiet``: no progress at all, only warnings and errors on stderr (the summary table
  still goes to stdout);
- ``--verbose``: one line per epoch on a terminal too, and the library's debug lines.

Messages go through :mod:`logging` on the project's own loggers, so the library says nothing
unless a caller (this CLI, or a user's script) sets a handler up.
"""

from __future__ import annotations

import logging
import sys

PROJECT_LOGGERS = ("edgepack", "compress", "export", "bench", "core")
_HANDLER_NAME = "edgepack-cli"


def add_log_flags(parser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quiet", "-q", action="store_true",
                       help="no progress or stage lines: warnings, errors and the summary only")
    group.add_argument("--verbose", "-v", action="store_true",
                       help="one line per training epoch even on a terminal, and debug lines")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def configure_logging(args, stream=None) -> bool:
    """Point the project's loggers at stderr at the level the flags ask for.

    Returns whether training may show progress (bars on a terminal, lines elsewhere).
    """
    level = logging.WARNING if args.quiet else logging.DEBUG if args.verbose else logging.INFO
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(logging.Formatter("%(message)s"))
    for name in PROJECT_LOGGERS:
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if h.get_name() == _HANDLER_NAME]:
            logger.removeHandler(old)  # a second call in one process replaces the first
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False
    return not (args.quiet or args.no_progress)
