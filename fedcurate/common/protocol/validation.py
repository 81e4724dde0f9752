"""Validation of what sites send back, before the server aggregates anything. Free of Flower.

Each validator returns a list of human-readable problems; an empty list means valid. Validators never
raise on malformed input (wrong types, ragged lists, object arrays): a malformed reply is a problem to
report, and the caller excludes that reply with the reasons. Counts are checked and summed exactly, as
Python ints (an int64 sum wraps, a float32 one rounds), and no count may exceed MAX_COUNT.

    problems = validate_arrays(reply_arrays, expected_spec(global_arrays))
    problems = validate_counts(hoc_counts, expected_shape=(K,), total=num_samples)
    problems = validate_histogram(counts, edges, edges_reply=reply_edges, num_samples=n)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

Spec = Mapping[str, tuple[tuple[int, ...], Any]]  # key -> (shape, dtype)
_MAX_LISTED = 5  # keys named per problem before "... and N more"
MAX_COUNT = 2**62  # no real count comes near; larger entries could wrap int64 arithmetic downstream


def expected_spec(arrays: Mapping[str, Any]) -> dict[str, tuple[tuple[int, ...], str]]:
    """(shape, dtype name) per key of a reference state (numpy arrays, torch tensors or Flower Arrays)."""
    spec = {}
    for key, value in arrays.items():
        if hasattr(value, "detach"):  # torch tensor
            value = value.detach().cpu()
        arr = value.numpy() if hasattr(value, "numpy") else np.asarray(value)
        spec[key] = (tuple(int(d) for d in arr.shape), str(arr.dtype))
    return spec


def _names(keys: Sequence[str]) -> str:
    keys = sorted(keys)
    more = f" ... and {len(keys) - _MAX_LISTED} more" if len(keys) > _MAX_LISTED else ""
    return ", ".join(repr(k) for k in keys[:_MAX_LISTED]) + more


def _as_array(value: Any) -> np.ndarray | None:
    """`value` as an ndarray, or None when it cannot be one (e.g. a ragged list, a bfloat16 tensor)."""
    try:
        if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch tensor, perhaps requiring grad
            value = value.detach().cpu()
        return np.asarray(value)
    except (ValueError, TypeError, RuntimeError):
        return None


def _non_finite(arr: np.ndarray) -> int:
    """Number of NaN/inf entries; 0 for integer and bool arrays."""
    if arr.dtype.kind in "fc":
        return int(arr.size - np.count_nonzero(np.isfinite(arr)))
    return 0


def validate_arrays(arrays: Mapping[str, Any], expected: Spec) -> list[str]:
    """Problems of a reply's arrays against `expected` (key -> (shape, dtype)): missing or extra keys,
    wrong shape, wrong dtype, non-numeric or non-finite values."""
    if not isinstance(arrays, Mapping):
        return [f"arrays must be a mapping of name -> array, got {type(arrays).__name__}"]
    problems = []
    missing = [k for k in expected if k not in arrays]
    extra = [str(k) for k in arrays if k not in expected]
    if missing:
        problems.append(f"missing arrays: {_names(missing)}")
    if extra:
        problems.append(f"unexpected arrays: {_names(extra)}")
    for key in sorted(k for k in expected if k in arrays):
        shape, dtype = expected[key]
        arr = _as_array(arrays[key])
        if arr is None or arr.dtype.kind not in "biufc":
            problems.append(f"{key!r}: not a numeric array ({type(arrays[key]).__name__})")
            continue
        if arr.shape != tuple(shape):
            problems.append(f"{key!r}: shape {arr.shape}, expected {tuple(shape)}")
        if arr.dtype != np.dtype(dtype):
            problems.append(f"{key!r}: dtype {arr.dtype}, expected {np.dtype(dtype)}")
        bad = _non_finite(arr)
        if bad:
            problems.append(f"{key!r}: {bad} non-finite value(s) (NaN/inf)")
    return problems


def _count_problems(arr: np.ndarray, what: str) -> tuple[list[str], list[int] | None]:
    """Problems of `arr` as counts (numeric, finite, integral, non-negative, at most MAX_COUNT) and, when
    every entry is a finite integer, the entries as exact Python ints (else None)."""
    if arr.dtype.kind not in "biuf":
        return [f"{what}: not numeric (dtype {arr.dtype})"], None
    bad = _non_finite(arr)
    if bad:
        return [f"{what}: {bad} non-finite value(s)"], None
    values = arr.ravel().tolist()  # Python ints/floats: exact, whatever the width of the dtype
    ints = [int(v) for v in values]
    problems = []
    fractional = sum(1 for v, i in zip(values, ints, strict=True) if v != i)
    if fractional:
        problems.append(f"{what}: {fractional} non-integer value(s)")
    negative = [v for v in values if v < 0]
    if negative:
        problems.append(f"{what}: {len(negative)} negative value(s), min {min(negative)}")
    huge = sum(1 for i in ints if i > MAX_COUNT)
    if huge:
        problems.append(f"{what}: {huge} value(s) above 2**62, too large for any real count")
    return problems, None if fractional else ints


def _declared(value: Any, what: str, name: str) -> tuple[list[str], int | None]:
    """A declared total as an exact int (None when not declared); a non-whole number is a problem."""
    if value is None:
        return [], None
    if isinstance(value, float | np.floating) and value.is_integer():
        return [], int(value)
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        return [], int(value)
    return [f"{what}: declared {name} {value!r} is not a whole number"], None


def validate_counts(counts: Any, *, expected_shape: tuple[int, ...], total: int | None = None,
                    max_value: float | None = None) -> list[str]:
    """Problems of a count array (e.g. HOC consensus counts): wrong shape, not numeric, non-finite,
    non-integer, negative or absurd (> MAX_COUNT) entries, a sum different from `total`, entries above
    `max_value` (or above `total`, which no single count can exceed)."""
    arr = _as_array(counts)
    if arr is None:
        return ["counts: not an array (ragged or mixed types)"]
    if arr.shape != tuple(expected_shape):
        return [f"counts: shape {arr.shape}, expected {tuple(expected_shape)}"]
    problems, ints = _count_problems(arr, "counts")
    total_problems, declared = _declared(total, "counts", "total")
    problems += total_problems
    if ints is None:
        return problems
    bounds = [b for b in (max_value, declared) if b is not None]
    bound = min(bounds) if bounds else None
    above = [i for i in ints if bound is not None and i > bound]  # int-vs-float comparisons are exact in Python
    if above:
        problems.append(f"counts: {len(above)} value(s) above {bound} (max {max(above)})")
    if declared is not None and sum(ints) != declared:
        problems.append(f"counts: sum {sum(ints)} != declared total {total}")
    return problems


def validate_histogram(hist: Any, edges_expected: Sequence[float] | np.ndarray,
                       edges_reply: Any = None, num_samples: int | None = None) -> list[str]:
    """Problems of a site histogram on the server's grid: a bin grid other than `edges_expected`
    (length, or `edges_reply` differing beyond float round-off), non-numeric, non-finite, non-integer,
    negative or absurd counts, and counts not summing (exactly) to the declared `num_samples`."""
    edges = np.asarray(edges_expected, dtype=np.float64)
    if edges.ndim != 1 or edges.size < 2:
        raise ValueError(f"the server's bin grid needs at least 2 edges, got shape {edges.shape}")
    arr = _as_array(hist)
    if arr is None or arr.ndim != 1:
        return [f"histogram: expected a flat list of {len(edges) - 1} counts"]
    problems = []
    if arr.shape != (len(edges) - 1,):
        problems.append(f"histogram: {arr.shape[0]} bins, the grid has {len(edges) - 1}")
    if edges_reply is not None:
        problems += _grid_problems(edges_reply, edges)
    count_problems, ints = _count_problems(arr, "histogram")
    declared_problems, declared = _declared(num_samples, "histogram", "num_samples")
    problems += count_problems + declared_problems
    if ints is not None and declared is not None and sum(ints) != declared:
        problems.append(f"histogram: counts sum to {sum(ints)}, the site declared {num_samples} samples")
    return problems


def _grid_problems(edges_reply: Any, edges: np.ndarray) -> list[str]:
    reply = _as_array(edges_reply)
    if reply is None or reply.dtype.kind not in "iuf" or reply.shape != edges.shape:
        return [f"histogram: bin grid differs from the server's ({len(edges)} edges expected)"]
    close = np.isclose(reply, edges, rtol=1e-9, atol=1e-12 * max(1.0, float(np.abs(edges).max())))
    if not close.all():
        first = int(np.argmax(~close))
        return [f"histogram: bin grid differs from the server's (edge {first}: {reply[first]} != {edges[first]})"]
    return []
