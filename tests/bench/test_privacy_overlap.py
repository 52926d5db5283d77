"""The member sets' overlap check compares values, not bytes: a sample written again with
-0.0 for 0.0, or with another NaN payload, is the same sample and is refused."""

from __future__ import annotations

import numpy as np
import pytest

from edgepack.bench.privacy import MIN_SAMPLES, MemberSets, check_member_sets
from edgepack.bench.privacy.membership import canonical_values
from edgepack.core.errors import BadInput
from tests.bench.conftest import matmul_add
from tests.edgepack.helpers import error_line, run_cli


def _quiet_nan(payload: int, dtype) -> np.floating:
    """A NaN of ``dtype`` with its own payload bits."""
    bits = {np.float32: np.uint32(0x7FC00000 | payload),
            np.float64: np.uint64(0x7FF8000000000000 | payload)}[dtype]
    return np.array(bits).view(dtype)[()]


def _sets(dtype, variant: str) -> MemberSets:
    """Members and non-members of distinct random rows, except non-member row 5, which is
    member row 2 written again as ``variant`` says."""
    rng = np.random.default_rng(11)
    members = rng.standard_normal((MIN_SAMPLES, 8)).astype(dtype)
    non_members = rng.standard_normal((MIN_SAMPLES, 8)).astype(dtype)
    members[2, :3] = 0.0
    members[2, 3] = _quiet_nan(1, dtype)
    non_members[5] = members[2]
    if variant == "negative zero":
        non_members[5, :3] = -0.0
    elif variant == "nan payload":
        non_members[5, 3] = _quiet_nan(2, dtype)
    labels = np.arange(MIN_SAMPLES) % 10
    return MemberSets({"x": members}, labels, {"x": non_members}, labels.copy())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("variant", ["same bytes", "negative zero", "nan payload"])
def test_a_sample_in_both_sets_is_found_whatever_its_bytes(dtype, variant):
    sets = _sets(dtype, variant)
    assert variant == "same bytes" or \
        sets.members["x"][2].tobytes() != sets.non_members["x"][5].tobytes()
    with pytest.raises(BadInput, match="1 sample"):
        check_member_sets(sets)


def test_canonical_values_keep_dtype_and_every_other_value():
    values = np.array([[-0.0, 1.5, -2.0, np.inf, -np.inf]], np.float32)
    canonical = canonical_values(values)
    assert canonical.dtype == np.float32 and np.signbit(canonical[0, 0]) == np.False_
    assert canonical[0, 1:].tolist() == values[0, 1:].tolist()
    ints = np.array([[0, -1]], np.int64)
    assert canonical_values(ints).tobytes() == ints.tobytes()


def test_bench_privacy_refuses_sets_that_overlap_by_value(tmp_path, capsys):
    sets = _sets(np.float32, "negative zero")
    members, non = tmp_path / "members.npz", tmp_path / "non.npz"
    np.savez(members, x=sets.members["x"], labels=sets.member_labels)
    np.savez(non, x=sets.non_members["x"], labels=sets.non_member_labels)
    model = matmul_add(tmp_path / "m.onnx", features=8)
    code, err = run_cli(capsys, "bench", model, "--privacy", "--members", members,
                        "--non-members", non, "--json", tmp_path / "o.json")
    assert code == 2 and "1 sample(s) appear among both" in error_line(err)
    assert not (tmp_path / "o.json").exists()
