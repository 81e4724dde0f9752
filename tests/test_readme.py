"""The README's configuration reference matches the config dataclasses."""

from pathlib import Path

from fedcurate.common.config import reference_markdown

README = Path(__file__).parents[1] / "README.md"


def test_config_reference_is_current():
    # Prepare
    text = README.read_text(encoding="utf-8")
    start = text.index("<!-- config-reference:start -->\n") + len("<!-- config-reference:start -->\n")
    end = text.index("<!-- config-reference:end -->")
    # Assert
    assert text[start:end] == reference_markdown(), (
        "README configuration reference is stale: regenerate it with `python -m fedcurate.common.config`")


def test_readme_opens_with_the_two_commands():
    # Assert
    lines = [ln for ln in README.read_text(encoding="utf-8").splitlines() if ln.strip()]
    assert lines[1] == "```bash" and lines[2].startswith("make demo") and lines[3].startswith("make test")
