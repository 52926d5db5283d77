"""The one candidate search, on plain values: each option the classifier and decoder paths
set (stop at the first passing candidate, a speed probe, a first look, timing on or off, a
lone candidate untimed, faster or not), every candidate recorded with its verdict."""

from __future__ import annotations

import pytest

from edgepack.compress.quantize.selection import (Made, Probe, SearchOptions, Timing, Verdict,
                                                  select)

# name -> (passes the judge, speed over the input)
CANDIDATES = {"a": (False, 3.0), "b": (True, 1.5), "c": (True, 2.0), "d": (True, 0.5)}


def _make(index, name):
    return Made(None, figures={"made": index}, state=name)


def _judge(made):
    passed, _ = CANDIDATES[made.state]
    return Verdict(passed, "passed" if passed else "failed", why="" if passed else "no",
                   score=-ord(made.state))


def _timer(passing):
    speeds = [CANDIDATES[t.candidate][1] for t in passing]
    return Timing({"input": 1.0}, [{"speedup": s} for s in speeds], speeds, what="speed")


def _select(names, **options):
    return select(names, _make, _judge, _timer, SearchOptions(**options),
                  lambda name: {"label": name})


def _verdicts(outcome) -> dict:
    return {e["label"]: e["verdict"] for e in outcome.entries}


def test_the_fastest_passing_faster_candidate_is_kept_and_every_one_recorded():
    outcome = _select("abcd")
    assert outcome.chosen.candidate == "c" and outcome.input_timing == {"input": 1.0}
    assert _verdicts(outcome) == {"a": "failed", "b": "passed, but slower", "c": "chosen",
                                  "d": "passed, but not faster than the input"}
    assert outcome.entries[1]["why"] == "1.50x vs the chosen 2.00x"
    assert [e["made"] for e in outcome.entries] == [0, 1, 2, 3]


def test_none_faster_keeps_none_and_names_the_fastest():
    outcome = _select("ad")
    assert outcome.chosen is None and outcome.fastest().candidate == "d"
    assert outcome.entries[1]["why"] == "0.50x the input's speed"
    assert _select("ad", must_be_faster=False).chosen.candidate == "d"


def test_none_passing_names_the_closest():
    outcome = _select("a")
    assert outcome.chosen is None and outcome.passing == []
    assert outcome.best_failing().candidate == "a"


@pytest.mark.parametrize("names, chosen, tried", [("bc", "b", 1), ("abc", "c", 3)])
def test_accept_first_stops_only_when_the_first_passes(names, chosen, tried):
    outcome = _select(names, accept_first=True, mark_chosen=False)
    assert outcome.chosen.candidate == chosen and len(outcome.tried) == tried
    assert outcome.chosen.entry["verdict"] == "passed"


def test_a_lone_passing_candidate_is_kept_untimed_when_asked():
    outcome = _select("ad", time_alone=False)
    assert outcome.chosen.candidate == "d" and "speedup" not in outcome.chosen.entry


def test_without_timing_the_first_passing_one_is_kept():
    outcome = _select("acb", timed=False)
    assert outcome.chosen.candidate == "c" and outcome.input_timing == {}
    assert _verdicts(outcome) == {"a": "failed", "c": "chosen", "b": "passed, not chosen"}


def test_a_probe_rules_out_a_slow_candidate_before_it_is_judged():
    judged = []

    def judge(made):
        judged.append(made.state)
        return _judge(made)

    probe = Probe(lambda made: CANDIDATES[made.state][1], 0.8, "tokens/s")
    outcome = select("cd", _make, judge, _timer, SearchOptions(probe=probe),
                     lambda name: {"label": name})
    assert judged == ["c"] and outcome.chosen.candidate == "c"
    slow = outcome.entries[1]
    assert slow["verdict"] == "slower than the input on a first probe"
    assert slow["why"] == "0.50x the input's tokens/s (< 0.8); quality not judged"


def test_a_screen_verdict_is_final_and_none_goes_on_to_the_judge():
    def screen(made):
        return Verdict(False, "failed at first look", why="far") if made.state == "b" else None

    outcome = _select("bc", screen=screen)
    assert _verdicts(outcome) == {"b": "failed at first look", "c": "chosen"}


def test_a_candidate_not_made_says_why():
    outcome = select("xc", lambda i, n: "cannot" if n == "x" else _make(i, n), _judge, _timer,
                     SearchOptions(), lambda name: {"label": name})
    assert outcome.entries[0] == {"label": "x", "verdict": "not made", "why": "cannot"}
    assert outcome.chosen.candidate == "c" and outcome.best_failing() is None
