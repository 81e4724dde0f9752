"""Shipped judge templates, SelectIT prompts, and user template files validated at load time."""

import math

import pytest

from fedcurate.common.data.sample import Sample
from fedcurate.common.rating.prompts import (
    SELECTIT_INSTRUCTIONS,
    SHIPPED,
    TemplateError,
    load_template,
    selectit_prompts,
)

SAMPLE = Sample("s1", "Add {a} and 2.", "The sum is {response}.", input="a = 3")


@pytest.mark.parametrize("name", ["ds2", "alpagasus", "fineweb-edu", "selectit"])
def test_shipped_templates_render_every_field_once(name):
    # Execute
    text = load_template(name).render(SAMPLE)
    # Assert: sample text appears verbatim; braces inside the sample are not substituted again
    assert text.count("Add {a} and 2.") == 1
    assert text.count("The sum is {response}.") == 1
    assert text.count("a = 3") == 1
    assert "{instruction}" not in text and "{input}" not in text


@pytest.mark.parametrize(("name", "completion", "score"), [
    ("ds2", '{"Rarity": 2, "Complexity": 5, "Informativeness": 6, "Overall rating": 7}', 3.0),
    ("alpagasus", "Score: 4\nA score of 5 would need more detail.", 4.0),
    ("fineweb-edu", "Points 1 and 2 apply.\nEducational score: 2", 2.0),
    ("selectit", "5", 5.0),
])
def test_each_template_knows_its_parser(name, completion, score):
    # Execute
    rating = load_template(name).parse(completion)
    # Assert
    assert rating.reason == "" and rating.score == score


def test_ranges_of_the_shipped_templates():
    # Execute
    ranges = {n: (t.low, t.high) for n, t in SHIPPED.items()}
    # Assert
    assert ranges == {"ds2": (0.0, 5.0), "alpagasus": (0.0, 5.0), "fineweb-edu": (0.0, 5.0)}
    assert math.isnan(load_template("selectit").parse("0").score)  # SelectIT scores start at 1


def test_ds2_template_asks_for_the_four_json_keys():
    # Execute
    text = SHIPPED["ds2"].text
    # Assert
    for key in ('"Rarity"', '"Complexity"', '"Informativeness"', '"Overall rating"'):
        assert key in text


def test_selectit_prompts_are_distinct_and_use_the_level_count():
    # Execute
    prompts = selectit_prompts(5, levels=7)
    # Assert
    assert len(SELECTIT_INSTRUCTIONS) >= 5
    assert len({p.text for p in prompts}) == 5
    assert all("7" in p.text and p.high == 7.0 and p.low == 1.0 for p in prompts)
    assert all(p.text.endswith("\n") for p in prompts)  # the rating digit starts a fresh token


def test_too_many_selectit_prompts_is_an_error():
    # Execute / Assert
    with pytest.raises(TemplateError, match="only 8 SelectIT"):
        selectit_prompts(len(SELECTIT_INSTRUCTIONS) + 1, levels=5)


def test_user_template_file_with_header(tmp_path):
    # Prepare
    path = tmp_path / "judge.txt"
    path.write_text("#! scale: 1-10\n#! pick: first\nRate {instruction}\n{input}\n=> {response}\n"
                    'Answer as {"score": N}.\n', encoding="utf-8")
    # Execute
    t = load_template(str(path))
    # Assert
    assert (t.low, t.high, t.pick, t.name) == (1.0, 10.0, "first", "judge")
    assert t.render(SAMPLE).startswith("Rate Add {a} and 2.\na = 3\n=> The sum is {response}.")
    assert t.parse("Score: 9").score == 9.0
    assert t.parse("Score: 0").reason.startswith("out of range")


@pytest.mark.parametrize(("content", "message"), [
    ("Rate {instruction}: {answer}\n", "unknown placeholder(s) {answer}"),
    ("Rate {instruction} please.\n", "no {response} placeholder"),
    ("#! scale: 5-1\n{response}", "expected 'LOW-HIGH'"),
    ("#! parser: yaml\n{response}", "parser 'yaml'"),
    ("#! colour: red\n{response}", "bad header line 'colour'"),
])
def test_bad_user_template_names_the_file(tmp_path, content, message):
    # Prepare
    path = tmp_path / "bad.txt"
    path.write_text(content, encoding="utf-8")
    # Execute / Assert
    with pytest.raises(TemplateError) as err:
        load_template(str(path))
    assert str(path) in str(err.value) and message in str(err.value)


def test_unknown_template_name():
    # Execute / Assert
    with pytest.raises(TemplateError, match="neither a shipped template"):
        load_template("ds3")


def test_selectit_prompt_file(tmp_path):
    # Prepare
    path = tmp_path / "lines.txt"
    path.write_text("Grade it 1-{levels}.\n\nHow good, 1 to {levels}?\n", encoding="utf-8")
    bad = tmp_path / "bad.txt"
    bad.write_text("Grade {response}\n", encoding="utf-8")
    # Execute
    prompts = selectit_prompts(2, 4, path)
    # Assert
    assert prompts[0].text.startswith("Grade it 1-4.")
    with pytest.raises(TemplateError, match="only 2"):
        selectit_prompts(3, 4, path)
    with pytest.raises(TemplateError, match="may only use"):
        selectit_prompts(1, 4, bad)
