"""Held-out inputs for a text model given without data: built-in English sentences, tokenized
with the tokenizer that sits beside the model.

Random token ids are no text: a sentence of random wordpieces moves a transformer's hidden
states in ways real text never does, and int8 that is fine on real text fails an output check
on it (all-MiniLM-L6-v2 dynamic int8: mean cosine 0.977 on random ids, 0.989 on sentences).
An exported Hugging Face folder (edgepack's ``export --hf`` or Optimum's) holds the model's
``tokenizer.json``; when it is there and the ``tokenizers`` package is installed, the output
check runs on these sentences instead. They are not calibration data and are in no corpus of
the project's; the record names them as the source.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SENTENCES = (
    "The harbour was quiet except for the gulls circling above the fishing boats.",
    "She forgot her umbrella and arrived at the interview soaked to the skin.",
    "Our neighbours planted three apple trees along the fence last spring.",
    "The software update fixed the crash but made the app noticeably slower.",
    "A thick fog rolled in from the sea and the ferry crossing was cancelled.",
    "He has been learning to play the cello for almost two years now.",
    "The bakery on the corner sells out of croissants before nine o'clock.",
    "Scientists measured the glacier and found it had retreated forty metres.",
    "Can you tell me how to get to the train station from here?",
    "The council voted to turn the old warehouse into a public library.",
    "My grandmother still writes letters by hand and posts them every week.",
    "The referee stopped the match when the floodlights failed.",
    "Prices of fresh vegetables rose sharply after the late frost.",
    "The museum guide explained how the ancient ship had been rebuilt.",
    "I would like to change my booking to a later flight, if possible.",
    "The river burst its banks and several streets were under water by noon.",
    "Their startup builds batteries that charge in under ten minutes.",
    "The choir rehearsed the same passage until every voice was in tune.",
    "Please remember to switch off the lights when you leave the office.",
    "The hikers reached the summit just as the clouds began to clear.",
    "A new study links regular walking with better memory in older adults.",
    "The shop assistant wrapped the gift in blue paper with a silver ribbon.",
    "Engineers are testing a bridge design that flexes in strong winds.",
    "We spent the evening playing board games and eating homemade pizza.",
    "The orchestra's tour was postponed because the conductor fell ill.",
    "Farmers hope the rain will come before the wheat harvest is ruined.",
    "The detective noticed that the clock on the wall had stopped at midnight.",
    "Students can borrow laptops from the library for up to two weeks.",
    "The cat knocked a glass off the table and ran under the sofa.",
    "After months of negotiation the two companies agreed to merge.",
    "The tram line will be extended to the airport by the end of next year.",
    "She painted the small kitchen yellow to make it feel brighter.",
)
TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
SOURCE = "built-in English sentences, tokenized with the model's own tokenizer.json"
GENERATED_SOURCE = "generated inputs (no held-out data)"


def tokenizer_beside(model_path: Path):
    """The ``tokenizers`` tokenizer in the model's folder, or None (no file, no package)."""
    path = Path(model_path).parent / "tokenizer.json"
    if not path.is_file():
        return None
    try:
        from tokenizers import Tokenizer

        return Tokenizer.from_file(str(path))
    except Exception:  # not installed, or a file this version cannot read: use generated ids
        return None


def sentence_batches(model_path: Path, session, rows: int) -> list[dict] | None:
    """``rows`` built-in sentences as the model's token inputs, or None when the model is
    not a token model with a tokenizer beside it (or fixes shapes the sentences cannot fit)."""
    inputs = session.get_inputs()
    names = [i.name for i in inputs]
    if "input_ids" not in names or any(n not in TOKEN_INPUTS for n in names):
        return None
    tokenizer = tokenizer_beside(model_path)
    if tokenizer is None:
        return None
    declared = next(i for i in inputs if i.name == "input_ids").shape
    if any(isinstance(d, int) and d > 0 for d in declared):
        return None   # a fixed batch or length: generated inputs fit it exactly
    tokenizer.no_padding()   # padded here, to the longest sentence, with the mask saying so
    encoded = tokenizer.encode_batch(list(SENTENCES[:max(1, rows)]))
    length = max(len(e.ids) for e in encoded)
    ids = np.zeros((len(encoded), length), np.int64)
    mask = np.zeros_like(ids)
    for row, item in enumerate(encoded):
        ids[row, :len(item.ids)] = item.ids
        mask[row, :len(item.ids)] = 1
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    return [{name: feeds[name] for name in names}]


def random_ids_cause(model_path: Path, held_out: list[dict], source: str) -> str:
    """Why a text model's output check may have failed when it ran on generated inputs:
    random token ids are no text (see the module docstring), and what to pass instead; ""
    when the check ran on real inputs or the model takes no token ids."""
    if source != GENERATED_SOURCE or not held_out or "input_ids" not in held_out[0]:
        return ""
    name = Path(model_path).name
    why = (f"there is no tokenizer.json beside {name}"
           if not (Path(model_path).parent / "tokenizer.json").is_file()
           else f"the tokenizer.json beside {name} gave no sentences that fit its inputs")
    return (f"the check ran on random token ids (no --data was given and {why}): random ids "
            f"are not text, and int8 that is right on real text can fail on them; pass "
            f"--data CALIB.npz with real token ids (input_ids, attention_mask), or put the "
            f"model's tokenizer.json beside it")
