"""Row layouts: every schema adapter, layout detection, the user column mapping and row validation."""

from __future__ import annotations

import pytest

from fedcurate.common.data.formats import (
    SCHEMAS,
    RowError,
    detect_schema,
    row_to_sample,
    validate_columns,
)


def _sample(row, schema, columns=None, source=None):
    return row_to_sample(row, schema, columns or {}, default_id="f:3", file_name="f.jsonl", source=source)


@pytest.mark.parametrize(
    ("schema", "row", "expected"),
    [
        ("alpaca", {"instruction": "Add", "input": "2+2", "output": "4", "clean": True},
         ("f:3", "Add", "2+2", "4", {"clean": True})),
        ("question-answer", {"id": 12, "question": "Q?", "answer": "A.", "task": "math"},
         ("12", "Q?", "", "A.", {"task": "math"})),
        ("prompt-completion", {"id": "p1", "prompt": "P", "completion": "C"}, ("p1", "P", "", "C", {})),
        ("native", {"id": "n1", "instruction": "I", "input": "X", "response": "R", "source": "s.jsonl",
                    "metadata": {"clean": False}, "extra": 1},
         ("n1", "I", "X", "R", {"clean": False, "extra": 1})),
    ],
)
def test_flat_schemas_map_fields_and_keep_other_columns(schema, row, expected):
    # Execute
    sample = _sample(row, schema)

    # Assert
    assert (sample.id, sample.instruction, sample.input, sample.response, sample.metadata) == expected


def test_native_keeps_row_source_unless_overridden():
    # Prepare
    row = {"instruction": "I", "response": "R", "source": "orig"}

    # Execute
    kept, overridden, plain = _sample(row, "native"), _sample(row, "native", source="site-a"), \
        _sample({"instruction": "I", "output": "R"}, "alpaca")

    # Assert
    assert (kept.source, overridden.source, plain.source) == ("orig", "site-a", "f.jsonl")


def test_tulu_messages_take_first_user_turn_and_following_reply():
    # Prepare
    row = {"id": "c1", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "More"},
        {"role": "assistant", "content": "Sure"},
    ]}

    # Execute
    sample = _sample(row, "messages")

    # Assert
    assert (sample.id, sample.instruction, sample.response) == ("c1", "Hi", "Hello")
    assert sample.metadata == {"system": "Be brief.", "turns": [
        {"role": "user", "content": "More"}, {"role": "assistant", "content": "Sure"}]}


def test_sharegpt_conversations_normalise_roles():
    # Prepare
    row = {"conversations": [{"from": "gpt", "value": "greeting"}, {"from": "human", "value": "Q"},
                             {"from": "gpt", "value": "A"}], "lang": "en"}

    # Execute
    sample = _sample(row, "messages")

    # Assert
    assert (sample.instruction, sample.response) == ("Q", "A")
    assert sample.metadata == {"lang": "en", "turns": [{"role": "assistant", "content": "greeting"}]}


@pytest.mark.parametrize(
    ("row", "field", "reason"),
    [
        ({"messages": [{"role": "assistant", "content": "A"}]}, "messages", "no user turn"),
        ({"messages": [{"role": "user", "content": "Q"}]}, "messages", "no assistant reply"),
        ({"messages": [{"role": "assistant", "content": "A"}, {"role": "user", "content": "Q"}]},
         "messages", "no assistant reply"),
        ({"messages": "hello"}, "messages", "wrong type"),
        ({"messages": ["hello"]}, "messages", "turn 1 is not an object"),
        ({"conversations": [{"from": "human", "value": 3}]}, "conversations", "'value' must be a string"),
        ({"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": " "}]},
         "messages", "empty or whitespace-only response"),
    ],
)
def test_bad_chats_are_rejected_with_the_column(row, field, reason):
    # Execute
    with pytest.raises(RowError) as info:
        _sample(row, "messages")

    # Assert
    assert info.value.field == field
    assert reason in info.value.reason


@pytest.mark.parametrize(
    ("row", "field", "reason"),
    [
        ({"instruction": "I"}, "response", "missing required field 'response'"),
        ({"instruction": "I", "response": None}, "response", "(null)"),
        ({"instruction": "I", "response": 42}, "response", "wrong type"),
        ({"instruction": "I", "response": 4.5}, "response", "got float"),
        ({"instruction": ["I"], "response": "R"}, "instruction", "wrong type"),
        ({"instruction": "I", "response": "R", "input": 1}, "input", "wrong type"),
        ({"instruction": "I", "response": " \n\t"}, "response", "empty or whitespace-only response"),
        ({"instruction": "", "response": "R"}, "instruction", "empty or whitespace-only instruction"),
        ({"id": 1.5, "instruction": "I", "response": "R"}, "id", "an id must be a string or an integer"),
        ({"id": True, "instruction": "I", "response": "R"}, "id", "got bool"),
        ({"instruction": "I", "response": "R", "metadata": [1]}, "metadata", "expected an object"),
    ],
)
def test_row_validation_names_field_and_reason(row, field, reason):
    # Execute
    with pytest.raises(RowError) as info:
        _sample(row, "native")

    # Assert
    assert info.value.field == field
    assert reason in info.value.reason


def test_user_mapping_applies_on_top_of_a_schema():
    # Prepare
    row = {"uid": 5, "instruction": "I", "output": "old", "better": "new", "id": "kept-as-metadata"}
    columns = {"id": "uid", "response": "better"}

    # Execute
    sample = _sample(row, "alpaca", columns)

    # Assert
    assert (sample.id, sample.response) == ("5", "new")
    assert sample.metadata == {"output": "old", "id": "kept-as-metadata"}


def test_columns_schema_uses_only_the_mapping_and_names_mapped_column_when_missing():
    # Prepare
    columns = {"instruction": "q", "response": "a"}

    # Execute
    sample = _sample({"q": "Q", "a": "A", "instruction": "ignored"}, "columns", columns)
    with pytest.raises(RowError) as info:
        _sample({"q": "Q"}, "columns", columns)

    # Assert
    assert (sample.instruction, sample.response, sample.metadata) == ("Q", "A", {"instruction": "ignored"})
    assert info.value.field == "a"
    assert "(mapped to response)" in info.value.reason


@pytest.mark.parametrize(
    ("keys", "columns", "expected"),
    [
        ({"instruction", "input", "response", "metadata"}, {}, "native"),
        ({"instruction", "input", "output"}, {}, "alpaca"),
        ({"messages", "id"}, {}, "messages"),
        ({"conversations"}, {}, "messages"),
        ({"question", "answer"}, {}, "question-answer"),
        ({"prompt", "completion"}, {}, "prompt-completion"),
        ({"q", "a"}, {"instruction": "q", "response": "a"}, "columns"),
        ({"instruction", "text"}, {"response": "text"}, "native"),
        ({"q", "a"}, {}, None),
        ({"q", "a"}, {"instruction": "q"}, None),
    ],
)
def test_detect_schema(keys, columns, expected):
    # Execute / Assert
    assert detect_schema(keys, columns) == expected


def test_validate_columns_names_unknown_field():
    # Execute
    with pytest.raises(ValueError) as info:
        validate_columns({"instruction": "q", "answer": "a", "input": ""})

    # Assert
    assert "'answer' is not a Sample field" in str(info.value)
    assert "columns.input" in str(info.value)
    assert validate_columns({"instruction": "q"}) == {"instruction": "q"}


def test_every_schema_is_selectable():
    # Assert: the names other modules and the config rely on
    assert {"alpaca", "messages", "question-answer", "prompt-completion", "columns", "native"} == set(SCHEMAS)
