"""Validation of what sites send back, before the server aggregates anything. Free of Flower.

Each validator returns a list of human-readable problems; an empty list means valid. Validators never
raise on malformed input (wrong types, ragged lists, object arrays): a malformed reply is a problem to
report, and the caller excludes that reply with the reasons.

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
    """`value` as an ndarray, or None when it cannot be one (e.g. a ragged list)."""
    try:
        return np.asarray(value)
    except (ValueError, TypeError):
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


def _integer_problems(arr: np.ndarray, what: str) -> list[str]:
    """Numeric, finite, integral, non-negative: the problems of `arr` against that."""
    if arr.dtype.kind not in "biuf":
        return [f"{what}: not numeric (dtype {arr.dtype})"]
    bad = _non_finite(arr)
    if bad:
        return [f"{what}: {bad} non-finite value(s)"]
    problems = []
    if arr.dtype.kind == "f" and np.any(arr != np.round(arr)):
        problems.append(f"{what}: {int(np.count_nonzero(arr != np.round(arr)))} non-integer value(s)")
    if np.any(arr < 0):
        problems.append(f"{what}: {int(np.count_nonzero(arr < 0))} negative value(s), min {arr.min()}")
    return problems


def validate_counts(counts: Any, *, expected_shape: tuple[int, ...], total: int | None = None,
                    max_value: float | None = None) -> list[str]:
    """Problems of a count array (e.g. HOC consensus counts): wrong shape, not numeric, non-finite,
    non-integer or negative entries, a sum different from `total`, entries above `max_value` (or above
    `total`, which no single count can exceed)."""
    arr = _as_array(counts)
    if arr is None:
        return ["counts: not an array (ragged or mixed types)"]
    if arr.shape != tuple(expected_shape):
        return [f"counts: shape {arr.shape}, expected {tuple(expected_shape)}"]
    problems = _integer_problems(arr, "counts")
    if arr.dtype.kind not in "biuf" or _non_finite(arr):
        return problems
    bounds = [b for b in (max_value, total) if b is not None]
    if bounds and arr.size and float(arr.max()) > min(bounds):
        bound = min(bounds)
        problems.append(f"counts: {int(np.count_nonzero(arr > bound))} value(s) above {bound} "
                        f"(max {arr.max()})")
    if total is not None and float(arr.sum()) != float(total):
        problems.append(f"counts: sum {arr.sum()} != declared total {total}")
    return problems


def validate_histogram(hist: Any, edges_expected: Sequence[float] | np.ndarray,
                       edges_reply: Any = None, num_samples: int | None = None) -> list[str]:
    """Problems of a site histogram on the server's grid: a bin grid other than `edges_expected`
    (length, or `edges_reply` differing beyond float round-off), non-numeric, non-finite, non-integer or
    negative counts, and counts not summing to the declared `num_samples`."""
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
        reply = _as_array(edges_reply)
        if reply is None or reply.dtype.kind not in "iuf" or reply.shape != edges.shape:
            problems.append(f"histogram: bin grid differs from the server's ({len(edges)} edges expected)")
        else:
            close = np.isclose(reply, edges, rtol=1e-9, atol=1e-12 * max(1.0, float(np.abs(edges).max())))
            if not close.all():
                first = int(np.argmax(~close))
                problems.append(f"histogram: bin grid differs from the server's (edge {first}: "
                                f"{reply[first]} != {edges[first]})")
    problems += _integer_problems(arr, "histogram")
    if num_samples is not None and arr.dtype.kind in "biuf" and not _non_finite(arr) \
            and float(arr.sum()) != float(num_samples):
        problems.append(f"histogram: counts sum to {arr.sum()}, the site declared {num_samples} samples")
    return problems
