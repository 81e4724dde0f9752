"""Registry lookups and atomic writes."""

import json

import pytest

from fedcurate.common import io
from fedcurate.common.registry import Registry


def test_registry_rejects_duplicates_and_suggests():
    # Prepare
    reg: Registry[int] = Registry("widget")
    reg.register("length")(1)
    # Execute / Assert
    with pytest.raises(ValueError, match="already registered"):
        reg.register("length")(2)
    with pytest.raises(KeyError, match="did you mean 'length'\\? available: length"):
        reg.get("lenght")
    assert reg.get("length") == 1 and "length" in reg


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    # Prepare
    target = tmp_path / "out.jsonl"
    io.write_jsonl(target, [{"a": 1}])

    def rows():
        yield {"a": 2}
        raise OSError("disk full")

    # Execute
    with pytest.raises(OSError, match="disk full"):
        io.write_jsonl(target, rows())
    # Assert: the old content survives and no temporary file is left behind
    assert [json.loads(x) for x in target.read_text().splitlines()] == [{"a": 1}]
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_write_json_maps_nan_to_null(tmp_path):
    # Execute
    io.write_json(tmp_path / "s.json", {"x": float("nan"), "y": [1.0, float("nan")]})
    # Assert
    assert json.loads((tmp_path / "s.json").read_text()) == {"x": None, "y": [1.0, None]}
