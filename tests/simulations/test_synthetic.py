"""Tests for the synthetic mixed-quality data generator: determinism, ground truth and noise."""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest

from fedcurate.common.data.sample import Sample
from fedcurate.simulations.synthetic import (
    NOISE_TYPES,
    TASK_FAMILIES,
    clean_response,
    corrupt,
    generate_clean,
    main,
    make_splits,
    precision,
    write_splits,
)


def _is_subsequence(short: str, long: str) -> bool:
    chars = iter(long)
    return all(ch in chars for ch in short)


def test_generate_clean_is_deterministic_per_seed():
    # Execute
    a, b, c = generate_clean(200, seed=3), generate_clean(200, seed=3), generate_clean(200, seed=4)

    # Assert
    assert a == b
    assert [s.instruction for s in a] != [s.instruction for s in c]


def test_write_splits_same_seed_gives_byte_identical_files(tmp_path):
    # Prepare
    first = write_splits(make_splits(120, 0.4, 20, 30, seed=7), tmp_path / "a")
    second = write_splits(make_splits(120, 0.4, 20, 30, seed=7), tmp_path / "b")
    other = write_splits(make_splits(120, 0.4, 20, 30, seed=8), tmp_path / "c")

    # Assert
    for name in ("train", "anchor", "test"):
        assert first[name].read_bytes() == second[name].read_bytes()
        assert first[name].read_bytes() != other[name].read_bytes()


def test_clean_response_recomputes_every_generated_answer():
    # Prepare
    samples = generate_clean(500, seed=0)

    # Execute
    recomputed = [clean_response(s.instruction) for s in samples]

    # Assert
    assert recomputed == [s.response for s in samples]


@pytest.mark.parametrize("instruction, expected", [
    ("Reverse the word: planet", "tenalp"),
    ("Sort the digits: 5391", "1359"),
    ("What is 37 + 58?", "95"),
    ("Uppercase: green apple", "GREEN APPLE"),
    ("Count 'a' in banana", "3"),
    ("How many z's are in banana?", "0"),
])
def test_clean_response_known_answers(instruction, expected):
    # Execute / Assert
    assert clean_response(instruction) == expected


def test_clean_response_rejects_foreign_instruction():
    # Execute / Assert
    with pytest.raises(ValueError, match="not a synthetic instruction"):
        clean_response("Write a poem about the sea.")


def test_samples_are_short_ascii_with_varied_phrasing():
    # Prepare
    samples = generate_clean(1000, seed=1)

    # Assert
    assert all(len(s.instruction) <= 40 and len(s.response) <= 30 for s in samples)
    assert all((s.instruction + s.response).isascii() and s.response for s in samples)
    for family in TASK_FAMILIES:
        openings = {s.instruction.split()[0] for s in samples if s.metadata["task"] == family}
        assert len(openings) >= 2, family


def test_families_are_balanced_and_metadata_is_ground_truth_only():
    # Execute
    samples = generate_clean(503, seed=2)

    # Assert
    counts = Counter(s.metadata["task"] for s in samples)
    assert set(counts) == set(TASK_FAMILIES)
    assert max(counts.values()) - min(counts.values()) <= 1
    assert all(s.metadata == {"clean": True, "noise": "none", "task": s.metadata["task"]} for s in samples)
    assert len({s.id for s in samples}) == 503


def test_generate_clean_rejects_unknown_family():
    # Execute / Assert
    with pytest.raises(ValueError, match="available"):
        generate_clean(10, seed=0, families=("reverse", "poetry"))


@pytest.mark.parametrize("n, rate", [(101, 0.25), (200, 0.4), (57, 1.0), (40, 0.0)])
def test_corrupt_changes_exactly_rounded_share(n, rate):
    # Prepare
    clean = generate_clean(n, seed=5)

    # Execute
    noisy = corrupt(clean, rate, seed=5)

    # Assert
    flagged = [s for s in noisy if not s.metadata["clean"]]
    changed = [a for a, b in zip(noisy, clean, strict=True) if a.response != b.response]
    assert len(flagged) == round(rate * n) == len(changed)
    assert [s.id for s in noisy] == [s.id for s in clean]


def test_every_corrupted_response_is_wrong_and_every_clean_one_right():
    # Prepare
    noisy = corrupt(generate_clean(600, seed=9), 0.5, seed=9)

    # Assert
    for s in noisy:
        assert (s.response == clean_response(s.instruction)) == s.metadata["clean"], s
        assert s.response
        assert s.metadata["noise"] in (("none",) if s.metadata["clean"] else NOISE_TYPES)


def test_noise_types_have_their_documented_shape():
    # Prepare
    clean = generate_clean(900, seed=11)
    noisy = corrupt(clean, 0.6, seed=11)
    other_answers = {s.metadata["task"]: {c.response for c in clean if c.metadata["task"] != s.metadata["task"]}
                     for s in clean}

    # Assert
    kinds = Counter(s.metadata["noise"] for s in noisy)
    assert all(kinds[t] > 50 for t in NOISE_TYPES), kinds
    for s, orig in zip(noisy, clean, strict=True):
        kind = s.metadata["noise"]
        if kind == "cut":
            assert orig.response.startswith(s.response) and 0 < len(s.response) < len(orig.response)
            assert len(s.response) <= max(1, int(0.6 * len(orig.response)))  # a 20-60% prefix
        elif kind == "deletion":
            assert 1 <= len(orig.response) - len(s.response) <= 3
            assert _is_subsequence(s.response, orig.response)
        elif kind == "exchange":
            assert s.response in other_answers[s.metadata["task"]]


@pytest.mark.parametrize("kind", NOISE_TYPES)
def test_corrupt_uses_only_enabled_noise_type(kind):
    # Execute
    noisy = corrupt(generate_clean(300, seed=1), 0.3, seed=1, noise_types=(kind,))

    # Assert
    assert {s.metadata["noise"] for s in noisy} == {"none", kind}
    assert sum(not s.metadata["clean"] for s in noisy) == 90


@pytest.mark.parametrize("rate, types", [(-0.1, NOISE_TYPES), (1.5, NOISE_TYPES), (0.2, ("shuffle",)), (0.2, ())])
def test_corrupt_rejects_bad_arguments(rate, types):
    # Execute / Assert
    with pytest.raises(ValueError):
        corrupt(generate_clean(10, seed=0), rate, seed=0, noise_types=types)


def test_make_splits_train_noisy_anchor_and_test_clean_with_unique_ids():
    # Execute
    splits = make_splits(num_samples=250, noise_rate=0.3, anchor_size=40, test_size=60, seed=4)

    # Assert
    assert (len(splits.train), len(splits.anchor), len(splits.test)) == (250, 40, 60)
    assert precision(splits.train) == pytest.approx(1 - 75 / 250)
    for name, part in (("anchor", splits.anchor), ("test", splits.test)):
        assert precision(part) == 1.0
        assert all(s.response == clean_response(s.instruction) for s in part)
        assert all(s.id.startswith(f"{name}-") for s in part)
    everything = splits.train + splits.anchor + splits.test
    assert len({s.id for s in everything}) == 350
    assert len({s.instruction for s in everything}) == 350  # no test item seen in training


def test_precision_counts_clean_share():
    # Prepare
    def sample(i, clean):
        return Sample(id=str(i), instruction="x", response="y", metadata={"clean": clean})

    # Execute / Assert
    assert precision([sample(0, True), sample(1, False), sample(2, True), sample(3, False)]) == 0.5
    assert math.isnan(precision([]))
    with pytest.raises(ValueError, match="clean"):
        precision([Sample(id="a", instruction="x", response="y")])


def test_cli_writes_three_splits(tmp_path):
    # Execute
    code = main(["--out", str(tmp_path), "--n", "50", "--noise-rate", "0.2", "--anchor-size", "5",
                 "--test-size", "7", "--seed", "1"])

    # Assert
    assert code == 0
    rows = {n: [json.loads(line) for line in (tmp_path / f"{n}.jsonl").read_text().splitlines()]
            for n in ("train", "anchor", "test")}
    assert [len(rows[n]) for n in ("train", "anchor", "test")] == [50, 5, 7]
    assert sum(not r["metadata"]["clean"] for r in rows["train"]) == 10
    assert Sample.from_dict(rows["test"][0]).response == clean_response(rows["test"][0]["instruction"])
