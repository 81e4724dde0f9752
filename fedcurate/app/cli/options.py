"""Arguments and parsing helpers shared by several `fedcurate` commands.

    config_args(parser)                                       # --config FILE, repeatable --set SECTION.KEY=VALUE
    parse_overrides(["selection.fraction=0.3", "run.dir=x"])  # {"selection.fraction": 0.3, "run.dir": "x"}
    given(Path("c.toml"), {}, "run.dir")                      # a setting as written, before validation (or None)
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedcurate.common.config import ConfigError


def config_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("--config", type=Path, required=required, help="TOML experiment config")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value (TOML syntax for the value), repeatable")


def parse_overrides(pairs: Sequence[str]) -> dict[str, object]:
    import tomllib

    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or "." not in key:
            raise ConfigError("--set", [f"{pair!r}: expected SECTION.KEY=VALUE"])
        try:
            out[key.strip()] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = value  # a bare word is a string
    return out


def given(path: Path | None, overrides: dict[str, Any], dotted: str) -> Any:
    """A setting as the config file or an override gives it (None when neither does), before validation."""
    import tomllib

    if dotted in overrides:
        return overrides[dotted]
    if not path or not Path(path).exists():
        return None
    sec, _, key = dotted.partition(".")
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8")).get(sec, {}).get(key)
    except tomllib.TOMLDecodeError:
        return None  # load_config reports it
