"""Fuzzing the config loader: any input gives a Config or a ConfigError that names every bad key.

    .venv/bin/pytest tests/common/test_fuzz_config.py -q

Random nested dicts over the real sections (right and wrong types, unknown keys and sections, out-of-range
numbers, wrong choices, cross-section rules) go through `from_dict`; valid configs must survive the Flower
run-config bridge (`from_flat(to_flat(cfg))`) and the resolved TOML (`load_config` of `to_toml(cfg)`).
The tests after "bugs found by fuzzing" pin bugs that fuzzing found (all fixed; each docstring says what broke).
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
import tomllib
import typing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from fedcurate.common.config import (
    Config,
    ConfigError,
    DataConfig,
    RaterConfig,
    from_dict,
    from_flat,
    load_config,
    sections,
    to_dict,
    to_flat,
    to_toml,
    toml_key,
)
from fedcurate.common.data.formats import MAPPABLE
from fedcurate.common.scorers import SCORERS

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SECTIONS = sections()
ALL_SCORERS = SCORERS.names()
NO_ANCHOR_SCORERS = [s for s in ALL_SCORERS if s not in ("clues", "datainf", "less")]  # those need anchor-path
INT64 = (-2**63, 2**63 - 1)  # TOML integers and Flower's ints are 64-bit; from_dict rejects larger ones

# Any text but lone surrogates (which cannot be written as UTF-8): control characters must survive to_toml,
# commas, edge spaces and empty items must survive the flat bridge's lists.
safe_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
list_item = st.text(st.characters(exclude_categories=("Cs",)), max_size=8)
column_key = st.sampled_from(MAPPABLE)  # data.columns keys are Sample fields
finite = st.floats(allow_nan=False, allow_infinity=False)


def _fields(cls: type) -> dict[str, tuple[Any, Any]]:
    """TOML key -> (dataclass field, resolved type) of one section."""
    hints = typing.get_type_hints(cls)
    return {toml_key(f.name): (f, hints[f.name]) for f in dataclasses.fields(cls)}


def _bounds(meta: Any) -> tuple[float | None, float | None]:
    return meta.get("min"), meta.get("max")


def good_value(typ: Any, meta: Any) -> st.SearchStrategy[Any]:
    """Values `from_dict` must accept for a field of type `typ` with constraints `meta`."""
    lo, hi = _bounds(meta)
    origin, args = typing.get_origin(typ), typing.get_args(typ)
    if origin is list:
        return st.lists(list_item if args[0] is str else finite | st.just(math.inf), max_size=3)
    if origin is dict:
        return st.dictionaries(column_key, safe_text.filter(bool), max_size=3)
    if meta.get("choices"):
        return st.sampled_from([c for c in meta["choices"] if c != "anchor"])  # anchor mode needs scorer clues
    if typ is bool:
        return st.booleans()
    if typ is int:
        return st.integers(INT64[0] if lo is None else math.ceil(lo), INT64[1] if hi is None else math.floor(hi))
    if typ is float:
        ints = st.integers(-10**6 if lo is None else math.ceil(lo), 10**6 if hi is None else math.floor(hi))
        return st.floats(lo, hi, allow_nan=False) | ints
    return safe_text


def bad_value(typ: Any, meta: Any) -> st.SearchStrategy[Any]:
    """Values `from_dict` must reject (wrong type, out of range, not a choice) for that field."""
    lo, hi = _bounds(meta)
    origin, args = typing.get_origin(typ), typing.get_args(typ)
    not_list = st.none() | st.booleans() | st.integers(*INT64) | finite | st.dictionaries(column_key, st.integers())
    if origin is list and args[0] is str:
        return not_list | st.lists(st.integers() | finite | st.none(), min_size=1, max_size=3)
    if origin is list:  # list[float]: a non-empty str parses into str items, which are rejected too
        text_items = safe_text.filter(lambda s: any(p.strip() for p in s.split(",")))
        return st.none() | st.booleans() | text_items | st.lists(safe_text | st.booleans() | st.just(math.nan),
                                                                 min_size=1, max_size=3)
    if origin is dict:
        return st.none() | safe_text | st.integers() | st.lists(safe_text, min_size=1) \
            | st.dictionaries(column_key, st.integers() | st.none() | st.booleans(), min_size=1, max_size=2) \
            | st.dictionaries(st.text(max_size=6).filter(lambda k: k not in MAPPABLE), safe_text.filter(bool),
                              min_size=1, max_size=2) \
            | st.dictionaries(column_key, st.just(""), min_size=1, max_size=2)
    wrong_type = {bool: st.integers(*INT64) | safe_text | finite | st.none(),
                  int: safe_text | finite | st.booleans() | st.none() | st.lists(st.integers(), max_size=2),
                  float: safe_text | st.booleans() | st.none() | st.just(math.nan) | st.lists(finite, max_size=2),
                  str: st.integers(*INT64) | finite | st.booleans() | st.none() | st.lists(safe_text, max_size=2)}[typ]
    options = [wrong_type]
    if meta.get("choices"):
        options.append(safe_text.filter(lambda s: s not in meta["choices"]))
    if typ is int and lo is not None:
        options.append(st.integers(INT64[0], math.ceil(lo) - 1))
    if typ is int and hi is not None:
        options.append(st.integers(math.floor(hi) + 1, INT64[1]))
    if typ is float and lo is not None:
        options.append(st.floats(max_value=lo, allow_nan=False).filter(lambda v: v < lo)
                       | st.integers(INT64[0], math.ceil(lo) - 1))
    if typ is float and hi is not None:
        options.append(st.floats(min_value=hi, allow_nan=False).filter(lambda v: v > hi)
                       | st.integers(math.floor(hi) + 1, INT64[1]))
    return st.one_of(options)


class Draft:
    """A raw config being drawn, with every key made bad (where it must be named) and every value expected."""

    def __init__(self, draw: st.DrawFn, allow_bad: bool) -> None:
        self.draw, self.allow_bad = draw, allow_bad
        self.raw: dict[Any, Any] = {}
        self.bad: list[str] = []
        self.expected: list[tuple[tuple[Any, ...], Any]] = []  # (attribute path, value) for good keys

    def __repr__(self) -> str:
        return f"Draft(raw={self.raw!r}, bad={self.bad!r})"

    def coin(self, p_true: float = 0.5) -> bool:
        return self.draw(st.integers(0, 99)) < round(p_true * 100)

    def field(self, table: dict[str, Any], where: str, path: tuple[Any, ...], key: str, typ: Any, meta: Any,
              good: st.SearchStrategy[Any] | None = None, bad: st.SearchStrategy[Any] | None = None) -> bool:
        """Put a good or (sometimes) a bad value under `key`; returns whether it was good."""
        if self.allow_bad and self.coin(0.03):
            table[key] = self.draw(bad if bad is not None else bad_value(typ, meta), label=f"bad {where}.{key}")
            self.bad.append(f"{where}.{key}")
            return False
        table[key] = self.draw(good if good is not None else good_value(typ, meta), label=f"{where}.{key}")
        self.expected.append(((*path, key.replace("-", "_")), table[key]))
        return True

    def section(self, cls: type, where: str, path: tuple[Any, ...], skip: tuple[str, ...] = ()) -> dict[str, Any]:
        """A table with a random subset of the section's keys, plus (sometimes) unknown keys."""
        table: dict[str, Any] = {}
        fields = _fields(cls)
        for key in self.draw(st.lists(st.sampled_from(sorted(set(fields) - set(skip))), unique=True, max_size=6)):
            f, typ = fields[key]
            self.field(table, where, path, key, typ, f.metadata)
        if self.allow_bad and self.coin(0.05):
            key = self.draw(st.text(max_size=8).filter(lambda k: k not in fields), label="unknown key")
            table[key] = self.draw(st.integers() | safe_text)
            self.bad.append(f"{where}.{key}")
        return table


def _scoring(d: Draft) -> dict[str, Any]:
    """scorers / primary / weights, drawn together so that good values also pass the cross-section rules."""
    table: dict[str, Any] = {}
    scorers = ["length", "random"]
    if d.coin():
        unknown = st.lists(st.text(min_size=1, max_size=8).filter(lambda s: s not in ALL_SCORERS and s.strip()),
                           min_size=1, max_size=2)
        d.field(table, "scoring", ("scoring",), "scorers", list[str], {},
                good=st.lists(st.sampled_from(NO_ANCHOR_SCORERS), min_size=1, max_size=3, unique=True),
                bad=unknown | st.just([]) | bad_value(list[str], {}))
        if isinstance(table["scorers"], list) and all(isinstance(s, str) for s in table["scorers"]):
            scorers = table["scorers"] or scorers
    if d.coin():
        d.field(table, "scoring", ("scoring",), "primary", str, {}, good=st.sampled_from(["", *scorers]),
                bad=st.text(max_size=6).filter(lambda s: s and s not in scorers) | st.integers())
    if d.coin():
        d.field(table, "scoring", ("scoring",), "weights", list[float], {},
                good=st.just([]) | st.lists(finite, min_size=len(scorers), max_size=len(scorers)),
                bad=st.lists(finite, min_size=1, max_size=4).filter(lambda w: len(w) != len(scorers)))
    if d.coin():
        d.field(table, "scoring", ("scoring",), "seed", int, {})
    return table


def _federation(d: Draft) -> dict[str, Any]:
    """Like any section, but min-sites <= sites and every noise rate in [0, 1] (cross-section rules)."""
    table = d.section(SECTIONS["federation"], "federation", ("federation",),
                      skip=("sites", "min-sites", "site-noise-rates"))
    sites = 2
    if d.coin() and d.field(table, "federation", ("federation",), "sites", int, {"min": 1},
                            good=st.integers(1, 64)):
        sites = table["sites"]
    if d.coin():
        d.field(table, "federation", ("federation",), "min-sites", int, {"min": 1}, good=st.integers(1, sites),
                bad=st.integers(sites + 1, 10**6) | bad_value(int, {"min": 1}))
    if d.coin():
        d.field(table, "federation", ("federation",), "site-noise-rates", list[float], {},
                good=st.lists(st.floats(0, 1), max_size=3),
                bad=st.lists(st.floats(0, 1), max_size=2).flatmap(
                    lambda ok: (st.floats(min_value=1.0) | st.floats(max_value=-1e-300)).filter(
                        lambda r: not 0 <= r <= 1).map(lambda r: [*ok, r])))
    return table


def _privacy(d: Draft) -> dict[str, Any]:
    """dp-epsilon > 0 needs dp-delta in (0, 1) and a score-range [lo, hi] with lo < hi (cross-field rules)."""
    table: dict[str, Any] = {}  # every [privacy] key is drawn here (cross-field rules)
    on = d.coin()
    if on:
        table["dp-epsilon"] = d.draw(st.floats(1e-3, 100), label="dp-epsilon")
        table["dp-delta"] = d.draw(st.floats(1e-12, 0.5), label="dp-delta")
        lo = d.draw(st.floats(-1e6, 1e6), label="lo")
        table["score-range"] = [lo, lo + d.draw(st.floats(1e-3, 1e6), label="width")]
        if d.allow_bad and d.coin(0.1):
            table["score-range"] = [lo]
            d.bad.append("privacy.score-range")
    elif d.coin():
        table["score-range"] = d.draw(st.lists(st.floats(-1e6, 1e6), max_size=3), label="unused score-range")
    return table


def _rating(d: Draft) -> dict[str, Any]:
    """[[rating.raters]] tables with unique names; a duplicate name is a bad `rating.raters`."""
    table = d.section(SECTIONS["rating"], "rating", ("rating",), skip=("raters",))
    if d.coin(0.6):
        names = d.draw(st.lists(safe_text.filter(lambda s: s != "rater"), max_size=3, unique=True), label="names")
        if d.allow_bad and d.coin(0.1):
            table["raters"] = d.draw(bad_value(list[str], {}).filter(lambda v: v != []), label="bad raters")
            d.bad.append("rating.raters")
            return table
        raters = []
        for i, name in enumerate(names):
            rater = d.section(RaterConfig, f"rating.raters[{i}]", ("rating", "raters", i), skip=("name",))
            rater["name"] = name
            d.expected.append((("rating", "raters", i, "name"), name))
            raters.append(rater)
        if raters and d.allow_bad and d.coin(0.1):
            raters.append(dict(raters[0]))
            d.bad.append("rating.raters")
        table["raters"] = raters
    return table


@st.composite
def raw_configs(draw: st.DrawFn, allow_bad: bool = True) -> Draft:
    """A nested {section: {key: value}} dict with a record of what is bad and what must come through."""
    d = Draft(draw, allow_bad)
    special = {"scoring": _scoring, "federation": _federation, "rating": _rating, "privacy": _privacy}
    for sec in draw(st.lists(st.sampled_from(list(SECTIONS)), unique=True, max_size=len(SECTIONS))):
        if allow_bad and d.coin(0.03):
            d.raw[sec] = draw(st.integers() | safe_text | st.lists(st.integers(), max_size=2), label=f"bad [{sec}]")
            d.bad.append(f"[{sec}]")
        elif sec in special:
            d.raw[sec] = special[sec](d)
        else:
            d.raw[sec] = d.section(SECTIONS[sec], sec, (sec,))
    if allow_bad and d.coin(0.05):
        sec = draw(st.text(max_size=8).filter(lambda s: s not in SECTIONS), label="unknown section")
        d.raw[sec] = {}
        d.bad.append(f"[{sec}]")
    return d


def _value_at(cfg: Config, path: tuple[Any, ...]) -> Any:
    value: Any = cfg
    for part in path:
        value = value[part] if isinstance(part, int) else getattr(value, part)
    return value


@FUZZ
@given(draft=raw_configs())
def test_from_dict_returns_a_config_or_names_every_bad_key(draft):
    """Good keys come through with their values; any bad key gives a ConfigError naming it (never another
    exception type); and a ConfigError only happens when something was bad."""
    # Execute
    try:
        cfg = from_dict(draft.raw, "fuzz.toml")
    except ConfigError as err:
        # Assert
        event("ConfigError")
        message = str(err)
        assert draft.bad, f"valid config rejected:\n{message}"
        assert message.startswith("fuzz.toml: ")
        missing = [where for where in draft.bad if where not in message]
        assert not missing, f"bad keys not named: {missing}\n{message}"
        return
    # Assert
    event("Config")
    assert not draft.bad, f"bad keys accepted: {draft.bad}"
    for path, value in draft.expected:
        assert _value_at(cfg, path) == value, path


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])  # to_flat/from_flat ~0.2 s
@given(draft=raw_configs(allow_bad=False))
def test_valid_configs_round_trip_through_flat_and_toml(draft):
    """from_flat(to_flat(cfg)) == cfg (Flower run-config) and load_config(to_toml(cfg)) == cfg (resolved.toml)."""
    # Prepare
    cfg = from_dict(draft.raw)

    # Execute
    flat = to_flat(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "resolved.toml"
        path.write_text(to_toml(cfg), encoding="utf-8")
        reloaded = load_config(path)

    # Assert
    assert all(isinstance(v, bool | int | float | str) for v in flat.values())
    assert from_flat(flat) == cfg
    assert reloaded == cfg


toml_values = st.sampled_from(['1', '-3', '0', '0.5', '1e-7', '2.5e3', 'inf', '-inf', 'nan', 'true', 'false',
                               '"x"', '"auto"', '"length,random"', "''", '[]', '[1, "a"]', '["length"]',
                               '[0.1, 0.9]', '{a = "b"}', '{instruction = "q"}', '1979-05-27', '"\\u00e9"'])
toml_keys = st.sampled_from(sorted({k for cls in SECTIONS.values() for k in _fields(cls)} | {"raters", "x"}))
toml_lines = st.one_of(
    st.sampled_from([*SECTIONS, "oops", "rating.raters"]).map(lambda s: f"[{s}]"),
    st.just("[[rating.raters]]"),
    st.tuples(toml_keys, toml_values).map(lambda kv: f"{kv[0]} = {kv[1]}"),
    st.text(max_size=12),
)


@FUZZ
@given(lines=st.lists(toml_lines, max_size=12))
def test_any_toml_text_loads_or_raises_config_error(lines):
    """TOML-ish text files (valid or not): load_config gives a Config or a ConfigError naming the file."""
    with tempfile.TemporaryDirectory() as tmp:
        # Prepare
        path = Path(tmp) / "fuzz.toml"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")

        # Execute / Assert
        try:
            load_config(path)
            event("Config")
        except ConfigError as err:
            event("invalid TOML" if "invalid TOML" in str(err) else "ConfigError")
            assert str(err).startswith(str(path))


# ---------------------------------------------------------------- bugs found by fuzzing (fixed)
def _from_dict_or_named_error(raw: dict[str, Any], where: str) -> Config | None:
    """from_dict's result, or None after checking that its ConfigError names `where`."""
    try:
        return from_dict(raw)
    except ConfigError as err:
        assert where in str(err)
        return None


@settings(max_examples=20, deadline=None)
@given(text=st.text(min_size=1, max_size=6).map(lambda s: s + "\n"),
       field=st.sampled_from([("run", "dir"), ("data", "path"), ("model", "name-or-path")]))
@example(text="runs/a\nb", field=("run", "dir"))
@example(text="x\x7f", field=("data", "path"))
def test_to_toml_round_trips_strings_with_control_characters(text, field):
    """Any string from_dict accepts comes back from load_config(to_toml(cfg)) (or from_dict rejects it).
    Was: to_toml escaped only \\ and ", so a newline or \x7f made resolved.toml invalid TOML."""
    # Prepare
    sec, key = field
    cfg = _from_dict_or_named_error({sec: {key: text}}, f"{sec}.{key}")
    if cfg is None:
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "resolved.toml"
        path.write_text(to_toml(cfg), encoding="utf-8")

        # Execute / Assert
        assert load_config(path) == cfg


@settings(max_examples=20, deadline=None)
@given(columns=st.dictionaries(column_key | st.text(max_size=6), st.text("abc", min_size=1, max_size=3), min_size=1,
                               max_size=3),
       via_toml=st.booleans())
@example(columns={"a.b": "x"}, via_toml=True)
@example(columns={"my col": "y"}, via_toml=True)
@example(columns={"my_col": "z"}, via_toml=False)
def test_column_mapping_keys_round_trip(columns, via_toml):
    """data.columns keys that from_dict accepts come back from load_config(to_toml(cfg)) and from_flat(to_flat(cfg))
    (or from_dict rejects them by name). Was: keys were not checked against the Sample fields, to_dict kebab-cased
    them ('my_col' -> 'my-col') and to_toml wrote them bare ({a.b = "x"} is a nested table)."""
    # Prepare
    cfg = _from_dict_or_named_error({"data": {"columns": columns}}, "data.columns")
    if cfg is None:
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "resolved.toml"
        path.write_text(to_toml(cfg), encoding="utf-8")

        # Execute / Assert
        assert (load_config(path) if via_toml else from_flat(to_flat(cfg))) == cfg


@settings(max_examples=20, deadline=None)
@given(items=st.lists(st.text(st.sampled_from("ab, "), max_size=4), min_size=1, max_size=3))
@example(items=["a,b"])
@example(items=["", "q_proj"])
def test_flat_bridge_round_trips_any_accepted_string_list(items):
    """A list[str] value from_dict accepts survives to_flat -> from_flat (or from_dict rejects it by name).
    Was: lists travelled comma-joined, so ['a,b'] arrived as ['a', 'b'] and ['', 'q_proj'] as ['q_proj']."""
    # Prepare
    cfg = _from_dict_or_named_error({"training": {"target-modules": items}}, "training.target-modules")
    if cfg is None:
        return

    # Execute / Assert
    assert from_flat(to_flat(cfg)) == cfg


@settings(max_examples=20, deadline=None)
@given(value=st.integers(2**1024, 2**1100) | st.integers(-2**1100, -2**1024),
       field=st.sampled_from([("selection", "threshold"), ("selection", "fraction"), ("training", "epochs")]),
       via_toml=st.booleans())
@example(value=10**400, field=("selection", "threshold"), via_toml=True)
def test_huge_integer_for_a_float_field_is_a_config_error(value, field, via_toml):
    """An integer too large for a float is a ConfigError naming the key, from a dict or from a TOML file.
    Was: OverflowError from float(value)."""
    sec, key = field
    with tempfile.TemporaryDirectory() as tmp:
        # Prepare
        path = Path(tmp) / "big.toml"
        path.write_text(f"[{sec}]\n{key} = {value}\n", encoding="utf-8")

        # Execute / Assert
        with pytest.raises(ConfigError, match=f"{sec}.{key}"):
            load_config(path) if via_toml else from_dict({sec: {key: value}})


@settings(max_examples=40, deadline=None)
@given(data=st.binary(max_size=64))
@example(data=b'[run]\ndir = "\xff"\n')
def test_arbitrary_bytes_config_file_loads_or_raises_config_error(data):
    """Any file content: a Config or a ConfigError naming the file. Was: UnicodeDecodeError on non-UTF-8 bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        # Prepare
        path = Path(tmp) / "fuzz.toml"
        path.write_bytes(data)

        # Execute / Assert
        try:
            load_config(path)
        except ConfigError as err:
            assert str(err).startswith(str(path))


@settings(max_examples=20, deadline=None)
@given(sec=st.sampled_from(list(SECTIONS)), scalar=st.sampled_from(["1", '"x"', "[1]", "true"]),
       key=st.sampled_from(["path", "seed", "dir"]))
@example(sec="data", scalar="1", key="path")
def test_overrides_on_a_non_table_section_give_config_error(sec, scalar, key):
    """`fedcurate ... --set sec.key=v` over a file whose [sec] is a scalar: ConfigError naming [sec].
    Was: TypeError from applying the override to the scalar."""
    with tempfile.TemporaryDirectory() as tmp:
        # Prepare
        path = Path(tmp) / "scalar.toml"
        path.write_text(f"{sec} = {scalar}\n", encoding="utf-8")

        # Execute / Assert
        with pytest.raises(ConfigError, match=f"\\[{sec}\\]"):
            load_config(path, overrides={f"{sec}.{key}": "v"})


flat_keys = st.sampled_from(sorted(to_flat(Config()))) | st.sampled_from(
    ["rating.raters", "rating.raters.0.name", "rating.raters.1.batch-size", "rating.raters.x.name",
     "rating.raters.-1.name", "data.columns.instruction", "oops.key", "data"])
flat_values = st.booleans() | st.integers(-3, 3) | st.floats(-2, 2) | st.text(max_size=6) | st.sampled_from(
    ["two", "1.5", "length,random", "a,,b"])


@settings(max_examples=80, deadline=None)
@given(flat=st.dictionaries(flat_keys, flat_values, max_size=6))
@example(flat={"rating.raters": "two"})
@example(flat={"rating.raters.-1.name": "a"})
def test_any_run_config_gives_config_or_config_error(flat):
    """A Flower run-config (e.g. `flwr run --run-config`) with any keys and values: Config or ConfigError.
    Was: ValueError/IndexError from int() on the raters count or index, and a huge count allocated that many."""
    # Execute / Assert
    try:
        from_flat(flat)
    except ConfigError:
        pass


def test_config_file_that_is_a_directory_is_a_config_error(tmp_path):
    """Was: IsADirectoryError."""
    # Execute / Assert
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)


@pytest.mark.parametrize("flat", [{"rating.raters": 10**9}, {"rating.raters": 65}, {"rating.raters.64.name": "a"},
                                  {"rating.raters": "two"}, {"rating.raters.x.name": "a"}])
def test_run_config_rater_count_and_index_are_bounded(flat):
    """A count or index beyond 64 raters (or not a number) is a ConfigError naming the key, allocated nothing."""
    # Execute / Assert
    with pytest.raises(ConfigError, match="rating.raters"):
        from_flat(flat)


def test_more_raters_than_the_cap_is_a_config_error():
    """The same cap holds for a TOML file, so every config from_dict accepts also crosses the flat bridge."""
    # Prepare
    raters = [{"name": f"r{i}"} for i in range(65)]
    # Execute / Assert
    with pytest.raises(ConfigError, match="rating.raters: 65 tables; at most 64"):
        from_dict({"rating": {"raters": raters}})
    assert len(from_flat(to_flat(from_dict({"rating": {"raters": raters[:64]}}))).rating.raters) == 64


@pytest.mark.parametrize("value", [2**63, -2**63 - 1, 10**5000], ids=["2^63", "-2^63-1", "10^5000"])
def test_integer_beyond_64_bits_is_a_config_error(value):
    """TOML and Flower's ConfigRecord carry 64-bit integers; a larger one is named, not sent on to fail later."""
    # Execute / Assert
    with pytest.raises(ConfigError, match="selection.count = .*64-bit integer range"):
        from_dict({"selection": {"count": value}})


def test_column_mapping_keys_are_kept_and_quoted():
    """to_dict keeps the keys of a dict field as written; to_toml quotes keys that are not bare TOML keys."""
    # Prepare: built directly (from_dict only accepts Sample fields as keys)
    columns = {"my_col": "a", "a.b": "x", "my col": "y", "": "z", "é": "w"}
    cfg = Config(data=DataConfig(columns=columns))
    # Execute
    as_dict = to_dict(cfg)["data"]["columns"]
    parsed = tomllib.loads(to_toml(cfg))["data"]["columns"]
    # Assert
    assert as_dict == columns
    assert parsed == columns


def test_flat_lists_stay_comma_joined_when_that_is_lossless():
    """Plain lists read as a user writes them in a run-config; only lists that commas would break become JSON."""
    # Prepare
    cfg = from_dict({"training": {"target-modules": ["q_proj", "v_proj"]}, "dynamics": {"modules": ["a,b", ""]},
                     "federation": {"site-noise-rates": [0.1, 1e-07]}})
    # Execute
    flat = to_flat(cfg)
    # Assert
    assert flat["training.target-modules"] == "q_proj,v_proj"
    assert flat["federation.site-noise-rates"] == "0.1,1e-07"
    assert flat["dynamics.modules"] == '["a,b", ""]'
    assert from_flat(flat) == cfg
    assert from_flat({**flat, "training.target-modules": " q_proj , v_proj,"}) == cfg  # as typed by a user
