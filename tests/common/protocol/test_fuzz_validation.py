"""Fuzzing the reply validators: they never raise, name what is wrong, and accept exactly the well-formed replies.

    .venv/bin/pytest tests/strategies/test_fuzz_validation.py -q

Random replies (dtypes, shapes, NaN/inf, negative or fractional counts, wrong or extra keys, ragged lists,
None, strings, objects) go through `validate_arrays`, `validate_counts` and `validate_histogram`. Each test
builds a well-formed reply, applies zero or more corruptions that each make it malformed, and checks that
the problem list is empty exactly when nothing was corrupted. The last tests pin bugs fuzzing found: counts
are summed exactly (no int64 wrap-around, no float32/float16 rounding), and a huge declared total is a problem.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedcurate.common.protocol.validation import (
    expected_spec,
    validate_arrays,
    validate_counts,
    validate_histogram,
)

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DTYPES = [np.float16, np.float32, np.float64, np.int32, np.int64, np.uint8, np.bool_, np.complex64]
FLOAT_KINDS = "fc"

shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3)
junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.complex_numbers() | st.text(max_size=4)
    | st.binary(max_size=4) | hnp.arrays(st.sampled_from(DTYPES + [np.dtype("U3"), np.dtype("M8[D]")]), shapes),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=2)
    | st.tuples(inner, inner), max_leaves=8)


def _is_problem_list(problems: object) -> bool:
    return isinstance(problems, list) and all(isinstance(p, str) and p for p in problems)


@FUZZ
@given(arrays=st.dictionaries(st.text(max_size=4) | st.integers() | st.none(), junk, max_size=4) | junk,
       counts=junk, hist=junk, edges_reply=junk, total=st.none() | st.integers(-10, 10**18),
       max_value=st.none() | st.floats(allow_nan=False) | st.integers(-5, 10**6))
def test_validators_never_raise(arrays, counts, hist, edges_reply, total, max_value):
    """Any Python/numpy value in any argument a site controls: a list of problem strings, never an exception."""
    # Prepare
    spec = {"a": ((2, 3), "float32"), "b": ((), "int64")}
    edges = np.linspace(-1.0, 1.0, 4)

    # Execute / Assert
    assert _is_problem_list(validate_arrays(arrays, spec))
    assert _is_problem_list(validate_counts(counts, expected_shape=(3,), total=total, max_value=max_value))
    assert _is_problem_list(validate_histogram(hist, edges, edges_reply=edges_reply, num_samples=total))


# ---------------------------------------------------------------- validate_arrays: exactness
@st.composite
def specs(draw: st.DrawFn) -> dict[str, tuple[tuple[int, ...], str]]:
    keys = draw(st.lists(st.text(min_size=1, max_size=10), min_size=1, max_size=4, unique=True))
    return {k: (draw(shapes), np.dtype(draw(st.sampled_from(DTYPES))).name) for k in keys}


def _well_formed(draw: st.DrawFn, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """A finite array of that shape and dtype (finite values only, whatever the width)."""
    elements = None
    if np.dtype(dtype).kind == "f":
        elements = st.floats(-100, 100, width=np.dtype(dtype).itemsize * 8)
    elif np.dtype(dtype).kind == "c":
        elements = st.complex_numbers(max_magnitude=100, width=np.dtype(dtype).itemsize * 8)
    return draw(hnp.arrays(np.dtype(dtype), shape, elements=elements))


CORRUPTIONS = ["nan", "inf", "shape", "dtype", "ragged", "none", "strings", "drop"]


@FUZZ
@given(spec=specs(), data=st.data())
def test_validate_arrays_is_empty_exactly_for_well_formed_replies(spec, data):
    """Each corrupted key is named in a problem; extra keys are named; no corruption -> no problem; and
    expected_spec of a well-formed reply is the spec itself."""
    # Prepare
    arrays = {k: _well_formed(data.draw, shape, dtype) for k, (shape, dtype) in spec.items()}
    assert expected_spec(arrays) == spec
    corrupted: dict[str, str] = {}
    for key, (shape, dtype) in spec.items():
        options = [c for c in CORRUPTIONS if c not in ("nan", "inf") or
                   (np.dtype(dtype).kind in FLOAT_KINDS and arrays[key].size)]
        kind = data.draw(st.sampled_from(options) | st.none(), label=f"corruption of {key!r}")
        if kind is None:
            continue
        corrupted[key] = kind
        arr = arrays[key]
        if kind in ("nan", "inf"):
            index = data.draw(st.integers(0, arr.size - 1))
            arr.reshape(-1)[index] = np.nan if kind == "nan" else data.draw(st.sampled_from([np.inf, -np.inf]))
        elif kind == "shape":
            arrays[key] = np.zeros(data.draw(shapes.filter(lambda s, old=shape: s != old)), dtype)
        elif kind == "dtype":
            arrays[key] = np.zeros(shape, data.draw(st.sampled_from([d for d in DTYPES if np.dtype(d) != dtype])))
        elif kind == "ragged":
            arrays[key] = [[1.0], [1.0, 2.0]]
        elif kind == "none":
            arrays[key] = None
        elif kind == "strings":
            arrays[key] = np.full(shape, "x")
        else:
            del arrays[key]
    extra = data.draw(st.lists(st.text(max_size=6).filter(lambda k: k not in spec), max_size=2, unique=True))
    arrays.update({k: np.zeros(1) for k in extra})

    # Execute
    problems = validate_arrays(arrays, spec)

    # Assert
    event(f"{len(corrupted) + len(extra)} corruption(s)")
    assert _is_problem_list(problems)
    assert (problems == []) == (not corrupted and not extra), problems
    text = "\n".join(problems)
    for key, kind in corrupted.items():
        assert repr(key) in text, (key, kind, problems)
    for key in extra[:5]:
        assert repr(key) in text, (key, problems)


# ---------------------------------------------------------------- validate_counts: exactness
COUNT_DTYPES = [np.int64, np.int32, np.uint32, np.float64, "list"]
COUNT_CORRUPTIONS = {"negative": "negative value", "fraction": "non-integer value", "nan": "non-finite",
                     "inf": "non-finite", "total": "!= declared total", "shape": "shape", "above-max": "above",
                     "strings": "not numeric", "ragged": "not an array", "none": "shape ()"}


@FUZZ
@given(counts=st.lists(st.integers(0, 10**6), min_size=1, max_size=8), container=st.sampled_from(COUNT_DTYPES),
       kinds=st.sampled_from(sorted(COUNT_CORRUPTIONS)).map(lambda k: [k])
       | st.lists(st.sampled_from(sorted(COUNT_CORRUPTIONS)), max_size=2, unique=True),
       declare_total=st.booleans(), data=st.data())
def test_validate_counts_is_empty_exactly_for_well_formed_counts(counts, container, kinds, declare_total, data):
    """Integral, finite, non-negative counts of the expected shape summing to the declared total and below
    max_value pass; any one corruption (negative, fractional, NaN/inf, wrong sum, wrong shape, too large,
    non-numeric, ragged, None) gives at least one problem mentioning counts; a single corruption is named."""
    # Prepare
    values: list = list(counts)
    shape = (len(values),)
    total = sum(values) if declare_total or "total" in kinds else None
    max_value = max(values) + data.draw(st.integers(0, 10), label="max_value slack")
    i = data.draw(st.integers(0, len(values) - 1), label="index")
    for kind in kinds:
        if kind == "negative":
            values[i] = -data.draw(st.integers(1, 10**6))
        elif kind == "fraction":
            values[i] = values[i] + data.draw(st.sampled_from([0.5, 0.25, 1e-3]))
        elif kind in ("nan", "inf"):
            values[i] = np.nan if kind == "nan" else np.inf
        elif kind == "total":
            total += data.draw(st.integers(1, 10)) * data.draw(st.sampled_from([-1, 1]))
        elif kind == "shape":
            shape = (len(values) + data.draw(st.integers(1, 3)),)
        elif kind == "above-max":
            max_value = values[i] - data.draw(st.integers(1, 5))
    reply = np.asarray(values, dtype=np.float64 if any(isinstance(v, float) for v in values) else None)
    if container != "list" and reply.dtype.kind in "iu" and not (np.dtype(container).kind == "u" and reply.min() < 0):
        reply = reply.astype(container)
    for kind in kinds:
        if kind == "strings":
            reply = np.full(len(values), "7")
        elif kind == "ragged":
            reply = [values, [*values, 1]]
        elif kind == "none":
            reply = None

    # Execute
    problems = validate_counts(reply, expected_shape=shape, total=total, max_value=max_value)

    # Assert
    event(f"{len(kinds)} corruption(s)")
    assert _is_problem_list(problems)
    assert (problems == []) == (not kinds), (kinds, problems)
    assert all(p.startswith("counts") for p in problems)
    if len(kinds) == 1:
        assert COUNT_CORRUPTIONS[kinds[0]] in "\n".join(problems), (kinds, problems)


# ---------------------------------------------------------------- validate_histogram: grid and totals
@st.composite
def grids(draw: st.DrawFn) -> np.ndarray:
    """Strictly increasing finite bin edges, as the server builds them."""
    lo = draw(st.floats(-1e6, 1e6))
    width = draw(st.floats(1e-3, 1e6))
    n = draw(st.integers(2, 40))
    return np.linspace(lo, lo + width, n)


@FUZZ
@given(edges=grids(), data=st.data(), recompute=st.sampled_from(["same", "arange", "ulps", "list"]))
def test_histogram_grid_within_round_off_passes(edges, data, recompute):
    """A site that rebuilds the server's grid its own way (arange, a few ulps off, a JSON-ish list) passes."""
    # Prepare
    n = len(edges)
    if recompute == "arange":
        reply = edges[0] + (edges[-1] - edges[0]) * (np.arange(n) / (n - 1))
    elif recompute == "ulps":
        steps = data.draw(st.lists(st.integers(-4, 4), min_size=n, max_size=n))
        reply = np.array([e + s * np.spacing(e) for e, s in zip(edges, steps, strict=True)])
    elif recompute == "list":
        reply = [float(e) for e in edges]
    else:
        reply = edges.copy()
    counts = data.draw(st.lists(st.integers(0, 1000), min_size=n - 1, max_size=n - 1))

    # Execute
    problems = validate_histogram(counts, edges, edges_reply=reply, num_samples=sum(counts))

    # Assert
    assert problems == []


@FUZZ
@given(edges=grids(), data=st.data(), kind=st.sampled_from(["shift", "nan", "inf", "length", "strings", "none-edge"]))
def test_histogram_grid_beyond_round_off_is_flagged(edges, data, kind):
    """An edge moved by more than 1e-6 of the grid's scale, a NaN/inf edge, another edge count or a
    non-numeric grid: the grid is reported as different."""
    # Prepare
    reply: object = edges.copy()
    i = data.draw(st.integers(0, len(edges) - 1))
    scale = max(1.0, float(np.abs(edges).max()))
    if kind == "shift":
        reply[i] += data.draw(st.floats(1e-6, 1e3)) * scale * data.draw(st.sampled_from([-1, 1]))
    elif kind == "nan":
        reply[i] = np.nan
    elif kind == "inf":
        reply[i] = data.draw(st.sampled_from([np.inf, -np.inf]))
    elif kind == "length":
        reply = np.append(edges, edges[-1] + 1.0) if data.draw(st.booleans()) else edges[:-1]
    elif kind == "strings":
        reply = [str(e) for e in edges]
    else:
        reply = [*edges[:i], None, *edges[i + 1:]]
    counts = [1] * (len(edges) - 1)

    # Execute
    problems = validate_histogram(counts, edges, edges_reply=reply, num_samples=len(counts))

    # Assert
    assert [p for p in problems if "bin grid differs" in p], problems
    assert len(problems) == 1, problems


@FUZZ
@given(counts=st.lists(st.integers(0, 10**9), min_size=1, max_size=16),
       dtype=st.sampled_from([np.int64, np.uint64, np.int32, np.float64, None]),
       offset=st.integers(-3, 3), data=st.data())
def test_histogram_counts_must_sum_to_the_declared_total(counts, dtype, offset, data):
    """Counts pass the total check exactly when they sum to num_samples (int or float counts, lists too)."""
    # Prepare
    if dtype is np.int32:
        counts = [c % 2**31 for c in counts]
    hist = np.asarray(counts, dtype=dtype) if dtype is not None else counts
    edges = np.linspace(0.0, 1.0, len(counts) + 1)
    declared = sum(counts) + offset

    # Execute
    problems = validate_histogram(hist, edges, num_samples=declared)

    # Assert
    assert (problems == []) == (offset == 0), problems
    if offset:
        assert problems == [f"histogram: counts sum to {sum(counts)}, the site declared {declared} samples"]


# ---------------------------------------------------------------- regressions: bugs found by fuzzing, fixed
@settings(max_examples=50, deadline=None)
@given(counts=st.lists(st.integers(0, 2**63 - 1), min_size=1, max_size=6), dtype=st.sampled_from([np.int64, np.uint64]),
       declared_as=st.sampled_from(["wrapped", "exact+1", "exact-1"]))
@example(counts=[2**62] * 4, dtype=np.int64, declared_as="wrapped")
@example(counts=[2**53, 1], dtype=np.int64, declared_as="exact-1")
def test_large_integer_counts_are_summed_exactly(counts, dtype, declared_as):
    """A declared total that differs from the true (Python int) sum of the counts is always reported."""
    # Prepare
    exact = sum(counts)
    bits = 64
    wrapped = exact % 2**bits if dtype is np.uint64 else (exact + 2**63) % 2**bits - 2**63
    declared = {"wrapped": wrapped, "exact+1": exact + 1, "exact-1": exact - 1}[declared_as]
    if declared == exact:
        return
    hist = np.asarray(counts, dtype=dtype)

    # Execute
    hist_problems = validate_histogram(hist, np.linspace(0.0, 1.0, len(counts) + 1), num_samples=declared)
    count_problems = validate_counts(hist, expected_shape=hist.shape, total=declared)

    # Assert
    assert hist_problems and count_problems, (exact, declared)


@settings(max_examples=50, deadline=None)
@given(counts=st.lists(st.integers(0, 2**24), min_size=2, max_size=8), dtype=st.sampled_from([np.float32, np.float16]))
@example(counts=[2**24, 1], dtype=np.float32)
@example(counts=[2048, 1], dtype=np.float16)
def test_low_precision_float_counts_are_summed_exactly(counts, dtype):
    """Exactly representable integral counts summing to the declared total pass, whatever the float width."""
    # Prepare
    hist = np.asarray(counts, dtype=dtype)
    if not np.all(np.isfinite(hist)):  # float16 overflows above 65504
        return
    exact = int(sum(int(v) for v in hist))  # the values as stored (float16 rounds large counts)

    # Execute
    hist_problems = validate_histogram(hist, np.linspace(0.0, 1.0, len(counts) + 1), num_samples=exact)
    count_problems = validate_counts(hist, expected_shape=hist.shape, total=exact)

    # Assert
    assert hist_problems == [] and count_problems == []


@settings(max_examples=10, deadline=None)
@given(total=st.integers(2**1024, 2**1100))
@example(total=10**400)
def test_huge_declared_totals_are_reported_not_raised(total):
    """The validators never raise, even for an absurd declared total."""
    # Execute
    hist_problems = validate_histogram([1, 2], [0.0, 0.5, 1.0], num_samples=total)
    count_problems = validate_counts([1, 2], expected_shape=(2,), total=total)

    # Assert
    assert hist_problems and count_problems
