"""An offline English sentence corpus, assembled from text that installed packages ship.

Origin: nothing is downloaded. The sentences come from

1. the Python documentation's topic texts that every CPython ships for ``help()``
   (``pydoc_data/topics.py``: the language reference sections, in English prose);
2. the docstrings of the Python standard library's modules, classes and functions, read
   from the ``.py`` sources with :mod:`ast` (never imported: importing runs code);
3. optionally, docstrings of installed third-party packages (``packages``), read the same way.

Text is split into sentences, and only prose-like ones are kept: 6 to 40 words, mostly
letters, no code (``>>>``, braces, ``=``, backquotes). Sentences are deduplicated on a
normalised form (lower case, single spaces), and split into training and evaluation sets by
a hash of that form, so a sentence lands in the same split on every run and machine, and
no evaluation sentence is ever trained on. The corpus depends on the Python version (its
standard library), which is part of the cache key.

The result is cached as JSON under ``~/.cache/edgepack/corpus`` (``$XDG_CACHE_HOME``
honoured).
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
import sys
import sysconfig
from pathlib import Path

CORPUS_VERSION = 1
MIN_WORDS, MAX_WORDS = 6, 40
SKIP_DIRS = {"test", "tests", "idlelib", "lib2to3", "turtledemo", "site-packages",
             "__pycache__", "ensurepip", "venv", "tkinter"}
_CODE = re.compile(r">>>|\{|\}|=|`|::|\\|\$|#|<|>|\[|\]|\|")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")


def normalise(sentence: str) -> str:
    """The form sentences are compared on: lower case, single spaces."""
    return " ".join(sentence.lower().split())


def sentences_in(text: str) -> list[str]:
    """Prose sentences of a text: paragraphs joined, split at sentence ends, filtered."""
    found = []
    for paragraph in re.split(r"\n\s*\n", text):
        flat = " ".join(paragraph.split())
        for sentence in _SENTENCE_END.split(flat):
            if is_prose(sentence):
                found.append(sentence)
    return found


def is_prose(sentence: str) -> bool:
    """A plain English sentence: 6-40 words, ends with a stop, mostly words, no code."""
    words = sentence.split()
    if not MIN_WORDS <= len(words) <= MAX_WORDS or sentence[-1] not in ".!?":
        return False
    if not sentence[0].isupper() or _CODE.search(sentence):
        return False
    wordy = sum(1 for w in words if _WORD.fullmatch(w.strip(".,;:!?()\"'")))
    return wordy >= 0.8 * len(words)


def topic_texts() -> list[str]:
    """The language-reference texts CPython ships for ``help()`` (``pydoc_data``)."""
    from pydoc_data.topics import topics

    return [topics[name] for name in sorted(topics)]


def docstrings_in_file(path: Path) -> list[str]:
    """Module, class and function docstrings of one source file (parsed, not imported)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
        return []
    nodes = [tree] + [n for n in ast.walk(tree) if isinstance(
        n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    return [doc for doc in (ast.get_docstring(n) for n in nodes) if doc]


def source_files(root: Path) -> list[Path]:
    """``.py`` files under ``root``, in a fixed order, skipping tests and demos."""
    return sorted(p for p in root.rglob("*.py")
                  if not SKIP_DIRS & set(p.relative_to(root).parts[:-1]))


def package_roots(packages: tuple[str, ...]) -> list[Path]:
    """Source folders of installed packages, found without importing them."""
    import importlib.util

    roots = []
    for name in packages:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise ValueError(f"corpus packages: {name!r} is not an installed package")
        roots.append(Path(list(spec.submodule_search_locations)[0]))
    return roots


def raw_texts(packages: tuple[str, ...] = ()) -> list[str]:
    """Every text the corpus is made from, in a fixed order."""
    texts = topic_texts()
    roots = [Path(sysconfig.get_paths()["stdlib"])] + package_roots(packages)
    for root in roots:
        for path in source_files(root):
            texts.extend(docstrings_in_file(path))
    return texts


def in_evaluation(sentence: str, eval_percent: float) -> bool:
    """Whether a sentence belongs to the evaluation split: a hash of its normalised form."""
    digest = hashlib.sha256(normalise(sentence).encode()).digest()
    return int.from_bytes(digest[:4], "big") % 10_000 < eval_percent * 100


def build_corpus(texts: list[str], eval_percent: float = 10.0) -> dict[str, list[str]]:
    """Deduplicated sentences of ``texts``, split by hash into train and evaluation."""
    if not 0 < eval_percent < 100:
        raise ValueError(f"corpus eval_percent must be in (0, 100), got {eval_percent}")
    seen: set[str] = set()
    corpus: dict[str, list[str]] = {"train": [], "evaluation": []}
    for text in texts:
        for sentence in sentences_in(text):
            key = normalise(sentence)
            if key in seen:
                continue
            seen.add(key)
            split = "evaluation" if in_evaluation(sentence, eval_percent) else "train"
            corpus[split].append(sentence)
    return corpus


def corpus_key(packages: tuple[str, ...], eval_percent: float) -> str:
    blob = json.dumps({"python": sys.version.split()[0], "packages": list(packages),
                       "eval_percent": eval_percent, "version": CORPUS_VERSION,
                       "words": [MIN_WORDS, MAX_WORDS]}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def english_corpus(packages: tuple[str, ...] = (), eval_percent: float = 10.0,
                   cache: bool = True) -> dict[str, list[str]]:
    """The corpus (``{"train": [...], "evaluation": [...]}``), from the cache when made before."""
    from edgepack.core.files import atomic_write_json
    from edgepack.pipeline.teacher import cache_dir

    path = cache_dir() / "corpus" / f"english-{corpus_key(tuple(packages), eval_percent)}.json"
    if cache and path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if set(data) == {"train", "evaluation"}:
                return data
        except (OSError, json.JSONDecodeError):
            pass  # a damaged cache entry is made again
    corpus = build_corpus(raw_texts(tuple(packages)), eval_percent)
    if cache:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(path, corpus)
        except OSError:
            pass  # a read-only cache folder only costs time
    return corpus
