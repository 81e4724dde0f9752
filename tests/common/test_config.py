"""Typed config: defaults, TOML loading, every error reported at once, Flower flat bridge."""

import subprocess
import sys
from pathlib import Path

import pytest

from fedcurate.common.config import (
    SCORER_NAMES,
    Config,
    ConfigError,
    from_flat,
    load_config,
    reference_markdown,
    to_flat,
    to_toml,
)

CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("*.toml"))


def test_defaults_are_valid():
    # Execute
    cfg = load_config(None)
    # Assert
    assert cfg == Config()
    assert cfg.selection.mode == "fraction"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load_and_round_trip(path, tmp_path):
    # Execute
    cfg = load_config(path)
    (tmp_path / "resolved.toml").write_text(to_toml(cfg))
    # Assert
    assert load_config(tmp_path / "resolved.toml") == cfg
    assert from_flat(to_flat(cfg)) == cfg


def test_all_errors_reported_at_once(tmp_path):
    # Prepare
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[data]\non-error = "ignore"\ncolour = 1\n'
        "[selection]\nfraction = 1.5\ncount = \"ten\"\n"
        "[oops]\nx = 1\n"
        '[scoring]\nscorers = ["lenght"]\n'
    )
    # Execute
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    # Assert
    problems = "\n".join(info.value.problems)
    assert len(info.value.problems) == 6, problems
    assert "data.on-error = 'ignore': allowed values are 'raise', 'skip'" in problems
    assert "data.colour: unknown key" in problems
    assert "selection.fraction = 1.5: must be <= 1.0" in problems
    assert "selection.count = 'ten': expected int, got str" in problems
    assert "unknown section [oops]" in problems
    assert "did you mean 'length'?" in problems
    assert str(bad) in str(info.value)


def test_cross_section_checks():
    # Execute / Assert
    with pytest.raises(ConfigError, match="federation.min-sites = 3: must be <= federation.sites"):
        load_config(None, {"federation.sites": 2, "federation.min-sites": 3})
    with pytest.raises(ConfigError, match="scoring.primary = 'ifd': must be one of scoring.scorers"):
        load_config(None, {"scoring.primary": "ifd"})


def test_invalid_toml_and_missing_file(tmp_path):
    # Prepare
    broken = tmp_path / "broken.toml"
    broken.write_text("[data\npath = 1")
    # Execute / Assert
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(broken)
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.toml")


def test_flat_bridge_carries_lists_and_tables():
    # Prepare
    cfg = load_config(None, {
        "data.columns": {"instruction": "question", "response": "answer"},
        "training.target-modules": ["q_proj", "k_proj", "v_proj"],
        "federation.site-noise-rates": [0.1, 0.5],
        "federation.sites": 2,
    })
    # Execute
    flat = to_flat(cfg)
    # Assert: only Flower run-config value types travel
    assert all(isinstance(v, bool | int | float | str) for v in flat.values())
    assert flat["training.target-modules"] == "q_proj,k_proj,v_proj"
    assert flat["data.columns.instruction"] == "question"
    assert from_flat(flat) == cfg


def test_raters_are_an_array_of_tables(tmp_path):
    # Prepare
    path = tmp_path / "r.toml"
    path.write_text(
        '[[rating.raters]]\nname = "gpt"\nbackend = "openai"\nurl = "http://127.0.0.1:9/v1"\n'
        '[[rating.raters]]\nname = "sel"\nkind = "selectit"\nselectit-prompts = 3\n'
    )
    # Execute
    cfg = load_config(path)
    # Assert
    assert [r.name for r in cfg.rating.raters] == ["gpt", "sel"]
    assert cfg.rating.raters[1].selectit_prompts == 3
    assert from_flat(to_flat(cfg)) == cfg
    (tmp_path / "again.toml").write_text(to_toml(cfg))
    assert load_config(tmp_path / "again.toml") == cfg


def test_rater_errors_name_the_table(tmp_path):
    # Prepare
    path = tmp_path / "r.toml"
    path.write_text('[[rating.raters]]\nname = "a"\nbackend = "tgi"\n[[rating.raters]]\nname = "a"\n')
    # Execute
    with pytest.raises(ConfigError) as info:
        load_config(path)
    # Assert
    problems = "\n".join(info.value.problems)
    assert "rating.raters[0].backend = 'tgi': allowed values are" in problems
    assert "name 'a' is used by more than one rater" in problems


def test_scorer_names_are_the_registered_scorers():
    # Prepare: the config checks scoring.scorers against SCORER_NAMES, the pipeline looks names up in SCORERS
    from fedcurate.common.scorers import SCORERS

    # Assert
    assert sorted(SCORER_NAMES) == SCORERS.names()


def test_unknown_scorer_is_reported_without_importing_the_scorers(tmp_path):
    # Prepare: a fresh interpreter, so no other test has imported the scorers
    bad = tmp_path / "bad.toml"
    bad.write_text('[scoring]\nscorers = ["lenght", "random"]\n')
    code = ("import sys\n"
            "from fedcurate.common.config import ConfigError, load_config\n"
            "try:\n"
            f"    load_config({str(bad)!r})\n"
            "except ConfigError as err:\n"
            "    print(err)\n"
            "print('fedcurate.common.scorers' in sys.modules)\n")
    # Execute
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    # Assert
    assert out == (f"{bad}: 1 config error(s):\n  - scoring.scorers: unknown scorer 'lenght'; did you mean "
                   f"'length'? available: {', '.join(sorted(SCORER_NAMES))}\nFalse\n")


def test_module_prints_the_reference():
    # Execute: what `make docs` runs, without the README argument
    out = subprocess.run([sys.executable, "-m", "fedcurate.common.config"], capture_output=True, text=True,
                         check=True).stdout
    # Assert
    assert out == reference_markdown()
