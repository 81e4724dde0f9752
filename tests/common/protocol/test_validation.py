"""Reply validators: every kind of corruption is named, valid replies pass, random input never crashes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedcurate.common.protocol.validation import (
    expected_spec,
    validate_arrays,
    validate_counts,
    validate_histogram,
)

SPEC = {"l.lora_A.weight": ((2, 3), "float32"), "l.lora_B.weight": ((4, 2), "float32")}


def _valid() -> dict[str, np.ndarray]:
    return {"l.lora_A.weight": np.ones((2, 3), np.float32), "l.lora_B.weight": np.zeros((4, 2), np.float32)}


def test_valid_arrays_pass_and_expected_spec_reads_shapes_and_dtypes():
    # Execute / Assert
    assert expected_spec(_valid()) == SPEC
    assert validate_arrays(_valid(), SPEC) == []


@pytest.mark.parametrize("corrupt, fragment", [
    (lambda a: a.pop("l.lora_B.weight"), "missing arrays: 'l.lora_B.weight'"),
    (lambda a: a.update(extra=np.ones(1, np.float32)), "unexpected arrays: 'extra'"),
    (lambda a: a.update({"l.lora_A.weight": np.ones((3, 3), np.float32)}), "shape (3, 3), expected (2, 3)"),
    (lambda a: a.update({"l.lora_A.weight": np.ones((2, 3), np.float64)}), "dtype float64, expected float32"),
    (lambda a: a["l.lora_B.weight"].__setitem__((0, 0), np.nan), "1 non-finite value(s)"),
    (lambda a: a["l.lora_B.weight"].__setitem__((1, 1), -np.inf), "1 non-finite value(s)"),
    (lambda a: a.update({"l.lora_A.weight": np.array(["x"] * 6).reshape(2, 3)}), "not a numeric array"),
    (lambda a: a.update({"l.lora_A.weight": [[1.0], [1.0, 2.0]]}), "not a numeric array"),
])
def test_each_array_corruption_is_named(corrupt, fragment):
    # Prepare
    arrays = _valid()
    corrupt(arrays)

    # Execute
    problems = validate_arrays(arrays, SPEC)

    # Assert
    assert any(fragment in p for p in problems), problems


def test_validate_counts():
    # Execute / Assert
    assert validate_counts([3, 0, 7], expected_shape=(3,), total=10) == []
    assert validate_counts(np.array([3.0, 7.0]), expected_shape=(2,), total=10) == []
    assert "shape (2,), expected (3,)" in validate_counts([1, 2], expected_shape=(3,))[0]
    assert "negative" in " ".join(validate_counts([5, -1, 6], expected_shape=(3,), total=10))
    assert "non-integer" in " ".join(validate_counts([2.5, 7.5], expected_shape=(2,)))
    assert "non-finite" in " ".join(validate_counts([np.nan, 1], expected_shape=(2,)))
    assert "sum 9 != declared total 10" in " ".join(validate_counts([2, 7], expected_shape=(2,), total=10))
    assert "above 100" in " ".join(validate_counts([5, 10**9], expected_shape=(2,), max_value=100))
    assert "not numeric" in " ".join(validate_counts(["a", "b"], expected_shape=(2,)))
    assert validate_counts([[1], [1, 2]], expected_shape=(2,)) != []


def test_validate_histogram():
    # Prepare
    edges = np.linspace(0.0, 1.0, 5)

    # Execute / Assert
    assert validate_histogram([1, 2, 3, 4], edges, edges_reply=edges + 1e-15, num_samples=10) == []
    assert "3 bins, the grid has 4" in validate_histogram([1, 2, 3], edges)[0]
    assert "edge 2" in " ".join(validate_histogram([1, 2, 3, 4], edges, edges_reply=[0, 0.25, 0.6, 0.75, 1]))
    assert "grid differs" in " ".join(validate_histogram([1, 2, 3, 4], edges, edges_reply=[0, 1]))
    assert "negative" in " ".join(validate_histogram([1, -2, 3, 4], edges))
    assert "counts sum to 10, the site declared 11" in " ".join(validate_histogram([1, 2, 3, 4], edges,
                                                                                  num_samples=11))


numeric_arrays = hnp.arrays(dtype=st.sampled_from([np.float32, np.float64, np.int64, np.float16]),
                            shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=4))
anything = st.one_of(numeric_arrays, st.none(), st.text(max_size=3), st.lists(st.floats(), max_size=3),
                     st.lists(st.lists(st.integers(), max_size=2), max_size=3))


@settings(max_examples=150, deadline=None)
@given(arrays=st.dictionaries(st.sampled_from(["l.lora_A.weight", "l.lora_B.weight", "x"]), anything),
       hist=anything, edges_reply=anything, total=st.none() | st.integers(-5, 50))
def test_validators_never_crash_on_random_input(arrays, hist, edges_reply, total):
    # Execute / Assert: each returns a list of strings
    for problems in (validate_arrays(arrays, SPEC),
                     validate_counts(hist, expected_shape=(4,), total=total, max_value=1e6),
                     validate_histogram(hist, np.linspace(0, 1, 5), edges_reply=edges_reply, num_samples=total)):
        assert isinstance(problems, list) and all(isinstance(p, str) for p in problems)


@settings(max_examples=150, deadline=None)
@given(data=st.data(), kind=st.sampled_from(["nan", "inf", "shape", "dtype", "drop", "extra"]))
def test_array_corruptions_are_always_caught(data, kind):
    # Prepare: random finite arrays matching SPEC, then one random corruption
    arrays = {k: data.draw(hnp.arrays(np.float32, shape, elements=st.floats(-1e3, 1e3, width=32)))
              for k, (shape, _) in SPEC.items()}
    assert validate_arrays(arrays, SPEC) == []
    key = data.draw(st.sampled_from(sorted(SPEC)))
    if kind in ("nan", "inf"):
        idx = tuple(data.draw(st.integers(0, d - 1)) for d in arrays[key].shape)
        arrays[key][idx] = np.nan if kind == "nan" else -np.inf
    elif kind == "shape":
        arrays[key] = np.zeros((arrays[key].shape[0] + data.draw(st.integers(1, 3)), 1), np.float32)
    elif kind == "dtype":
        arrays[key] = arrays[key].astype(data.draw(st.sampled_from([np.float16, np.float64, np.int32])))
    elif kind == "drop":
        del arrays[key]
    else:
        arrays[data.draw(st.text(min_size=1, max_size=5).filter(lambda s: s not in SPEC))] = np.zeros(1)

    # Execute / Assert
    assert validate_arrays(arrays, SPEC) != []


@settings(max_examples=150, deadline=None)
@given(counts=st.lists(st.integers(0, 1000), min_size=8, max_size=8),
       kind=st.sampled_from(["negative", "bins", "sum", "edges", "fraction"]), data=st.data())
def test_histogram_corruptions_are_always_caught(counts, kind, data):
    # Prepare
    edges = np.linspace(-1.0, 3.0, 9)
    hist, reply_edges, declared = list(counts), edges.copy(), sum(counts)
    assert validate_histogram(hist, edges, edges_reply=reply_edges, num_samples=declared) == []
    i = data.draw(st.integers(0, 7))
    if kind == "negative":
        hist[i] = -data.draw(st.integers(1, 5))
    elif kind == "bins":
        hist = hist + [0] if data.draw(st.booleans()) else hist[:-1]
    elif kind == "sum":
        declared += data.draw(st.integers(1, 10)) * data.draw(st.sampled_from([-1, 1]))
    elif kind == "edges":
        reply_edges[i] += data.draw(st.floats(1e-6, 1.0))
    else:
        hist = [float(c) for c in hist]
        hist[i] += 0.5

    # Execute / Assert
    assert validate_histogram(hist, edges, edges_reply=reply_edges, num_samples=declared) != []
