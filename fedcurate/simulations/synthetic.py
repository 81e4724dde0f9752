"""Synthetic mixed-quality instruction data with ground truth, small enough for a tiny char-level model.

Five task families (`reverse`, `sort-digits`, `add`, `upper`, `count`) give short ASCII prompts whose
answer is a deterministic function of the instruction (`clean_response`), so a model can learn them and
a corrupted answer is detectably wrong. `corrupt` applies the CLUES noise types to an exact share of the
samples: `cut` (truncated response), `deletion` (1-3 answer characters dropped) and `exchange` (the
response of a sample of another family). Every sample's metadata holds the ground truth
{"clean": bool, "noise": "none"|"cut"|"deletion"|"exchange", "task": family} -- never the clean answer,
so data files can be scored without leaking it. Same seed -> byte-identical output.

Command: python -m fedcurate.simulations.synthetic --out DIR --n 1000 --noise-rate 0.4 --seed 0
"""

from __future__ import annotations

import argparse
import logging
import math
import random
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from fedcurate.common.data.sample import Sample
from fedcurate.common.io import write_jsonl

logger = logging.getLogger(__name__)

NOISE_TYPES: tuple[str, ...] = ("cut", "deletion", "exchange")
SOURCE = "synthetic"
_MAX_DRAWS = 20  # redraws to avoid a duplicate instruction before accepting one (small task spaces)

_CONSONANTS = "bcdfghjklmnprstvwz"
_VOWELS = "aeiou"
_WORDS = (
    "apple river planet garden silver window forest market yellow orange pencil rabbit cloud stone "
    "green light music paper table water house horse tiger lemon bread chair smile ocean storm winter "
    "summer dragon castle candle mirror rocket pepper butter monkey bottle jacket flower cat dog sun "
    "red blue sky tree bird fish moon star rain snow book door road ship"
).split()
_FIELD_PATTERNS = {"w": "[a-z]+", "p": "[a-z]+(?: [a-z]+)*", "d": "[0-9]+", "a": "[0-9]+", "b": "[0-9]+",
                   "c": "[a-z]"}


def _word(rng: random.Random) -> str:
    """A real word or a pronounceable pseudo-word (alternating consonant/vowel), 3-7 letters."""
    if rng.random() < 0.5:
        return rng.choice(_WORDS)
    length, consonant_first = rng.randint(3, 7), rng.random() < 0.7
    return "".join(rng.choice(_CONSONANTS if (k % 2 == 0) == consonant_first else _VOWELS)
                   for k in range(length))


def _make_count(rng: random.Random) -> dict[str, str]:
    word = _word(rng)
    absent = [ch for ch in "abcdefghijklmnopqrstuvwxyz" if ch not in word]
    letter = rng.choice(word) if rng.random() < 0.8 else rng.choice(absent)  # ~20% answers are "0"
    return {"c": letter, "w": word}


def _make_phrase(rng: random.Random) -> dict[str, str]:
    words = [_word(rng)]
    for _ in range(rng.randint(0, 2)):
        nxt = _word(rng)
        if len(" ".join([*words, nxt])) <= 20:  # keeps the response <= 20 characters
            words.append(nxt)
    return {"p": " ".join(words)}


@dataclass(frozen=True)
class _Family:
    templates: tuple[str, ...]
    make: Callable[[random.Random], dict[str, str]]
    solve: Callable[[dict[str, str]], str]


_FAMILIES: dict[str, _Family] = {
    "reverse": _Family(
        ("Reverse the word: {w}", "Write {w} backwards.", "Spell {w} in reverse."),
        lambda rng: {"w": _word(rng)},
        lambda f: f["w"][::-1]),
    "sort-digits": _Family(
        ("Sort the digits: {d}", "Sort ascending: {d}", "Order these digits: {d}"),
        lambda rng: {"d": "".join(rng.choice("0123456789") for _ in range(rng.randint(4, 7)))},
        lambda f: "".join(sorted(f["d"]))),
    "add": _Family(
        ("What is {a} + {b}?", "Add {a} and {b}.", "Compute {a} plus {b}."),
        lambda rng: {"a": str(rng.randint(0, 99)), "b": str(rng.randint(0, 99))},
        lambda f: str(int(f["a"]) + int(f["b"]))),
    "upper": _Family(
        ("Uppercase: {p}", "Write in capitals: {p}", "Make upper case: {p}"),
        _make_phrase,
        lambda f: f["p"].upper()),
    "count": _Family(
        ("Count '{c}' in {w}", "How many {c}'s are in {w}?", "Occurrences of {c} in {w}:"),
        _make_count,
        lambda f: str(f["w"].count(f["c"]))),
}
TASK_FAMILIES: tuple[str, ...] = tuple(_FAMILIES)


def _template_regex(template: str) -> re.Pattern[str]:
    parts = re.split(r"\{(\w)\}", template)  # literal, field, literal, field, ...
    body = "".join(re.escape(p) if k % 2 == 0 else f"(?P<{p}>{_FIELD_PATTERNS[p]})" for k, p in enumerate(parts))
    return re.compile(body)


_PARSERS = [(name, _template_regex(t)) for name, fam in _FAMILIES.items() for t in fam.templates]


def clean_response(instruction: str) -> str:
    """The correct answer to a synthetic instruction (raises ValueError if it matches no template)."""
    for name, pattern in _PARSERS:
        match = pattern.fullmatch(instruction)
        if match:
            return _FAMILIES[name].solve(match.groupdict())
    raise ValueError(f"not a synthetic instruction: {instruction!r}")


def derive_seed(seed: int, *tags: object) -> int:
    """An independent, reproducible 32-bit seed for a named sub-stream (str seeds hash via SHA-512)."""
    return random.Random(":".join(map(str, (seed, *tags)))).getrandbits(32)


def _generate(n: int, rng: random.Random, families: Sequence[str], id_prefix: str,
              seen: set[str]) -> list[Sample]:
    """`n` clean samples, families balanced to within one, instructions not in `seen` when possible."""
    unknown = sorted(set(families) - set(_FAMILIES))
    if unknown or not families:
        raise ValueError(f"families: unknown or empty {unknown or list(families)}; available: {TASK_FAMILIES}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    order = [families[k % len(families)] for k in range(n)]
    rng.shuffle(order)
    samples = []
    for k, name in enumerate(order):
        fam = _FAMILIES[name]
        for _ in range(_MAX_DRAWS):
            fields = fam.make(rng)
            instruction = rng.choice(fam.templates).format(**fields)
            if instruction not in seen:
                break
        seen.add(instruction)
        samples.append(Sample(id=f"{id_prefix}{k}", instruction=instruction, response=fam.solve(fields),
                              source=SOURCE, metadata={"clean": True, "noise": "none", "task": name}))
    return samples


def generate_clean(n: int, seed: int, families: Sequence[str] = TASK_FAMILIES,
                   id_prefix: str = "s") -> list[Sample]:
    """`n` clean samples with ids f"{id_prefix}{k}", families balanced to within one."""
    return _generate(n, random.Random(seed), families, id_prefix, seen=set())


def _feasible(sample: Sample, noise_types: Sequence[str], can_exchange: bool) -> list[str]:
    """Noise types that can change this response while keeping it non-empty."""
    ok = {"cut": len(sample.response) >= 2,
          "deletion": len(sample.response.replace(" ", "")) >= 2,
          "exchange": can_exchange}
    return [t for t in noise_types if ok[t]]


def _cut(response: str, rng: random.Random) -> str:
    keep = int(len(response) * rng.uniform(0.2, 0.6))
    return response[: min(max(keep, 1), len(response) - 1)]


def _delete(response: str, rng: random.Random) -> str:
    positions = [k for k, ch in enumerate(response) if ch != " "]  # drop answer characters, not spaces
    dropped = set(rng.sample(positions, rng.randint(1, min(3, len(positions) - 1))))
    return "".join(ch for k, ch in enumerate(response) if k not in dropped)


def _exchange(i: int, samples: Sequence[Sample], rng: random.Random, by_task: dict[str, list[int]]) -> str:
    """The response of a random sample of another family (or any sample), differing from sample i's."""
    own = samples[i]
    others = sorted(t for t in by_task if t != str(own.metadata.get("task", "")))
    for _ in range(_MAX_DRAWS):
        j = rng.choice(by_task[rng.choice(others)]) if others else rng.randrange(len(samples))
        if samples[j].response != own.response:
            return samples[j].response
    start = rng.randrange(len(samples))
    for offset in range(len(samples)):
        j = (start + offset) % len(samples)
        if samples[j].response != own.response:
            return samples[j].response
    raise AssertionError("exchange chosen although every response is identical")


def corrupt(samples: Sequence[Sample], noise_rate: float, seed: int,
            noise_types: Sequence[str] = NOISE_TYPES) -> list[Sample]:
    """Corrupt exactly round(noise_rate * len(samples)) samples, chosen at random; same order and ids.

    Each gets a noise type drawn uniformly from `noise_types`; if that type cannot change its response
    (e.g. `cut` of the one-character answer "7"), one drawn uniformly from the feasible enabled types.
    Only samples with some feasible type are candidates.
    """
    if not 0.0 <= noise_rate <= 1.0:
        raise ValueError(f"noise_rate must be in [0, 1], got {noise_rate}")
    bad = [t for t in noise_types if t not in NOISE_TYPES]
    if bad or not noise_types:
        raise ValueError(f"noise_types: unknown or empty {bad or list(noise_types)}; allowed: {NOISE_TYPES}")
    rng = random.Random(seed)
    can_exchange = len({s.response for s in samples}) > 1
    eligible = [i for i, s in enumerate(samples) if _feasible(s, noise_types, can_exchange)]
    k = round(noise_rate * len(samples))
    if k > len(eligible):
        raise ValueError(f"cannot corrupt {k} samples with {list(noise_types)}: only {len(eligible)} eligible")
    by_task: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(samples):
        by_task[str(s.metadata.get("task", ""))].append(i)
    out = list(samples)
    for i in sorted(rng.sample(eligible, k)):
        feasible = _feasible(samples[i], noise_types, can_exchange)
        kind = rng.choice(list(noise_types))
        kind = kind if kind in feasible else rng.choice(feasible)
        if kind == "cut":
            response = _cut(samples[i].response, rng)
        elif kind == "deletion":
            response = _delete(samples[i].response, rng)
        else:
            response = _exchange(i, samples, rng, by_task)
        assert response and response != samples[i].response
        out[i] = replace(samples[i], response=response,
                         metadata={**samples[i].metadata, "clean": False, "noise": kind})
    logger.debug("corrupted %d/%d samples: %s", k, len(samples), dict(Counter(s.metadata["noise"] for s in out)))
    return out


@dataclass(frozen=True)
class SyntheticSplits:
    """Noisy training data, a clean anchor set (CLUES) and a clean held-out test set."""

    train: list[Sample]
    anchor: list[Sample]
    test: list[Sample]


def make_splits(num_samples: int, noise_rate: float, anchor_size: int, test_size: int,
                seed: int) -> SyntheticSplits:
    """Train (noisy), anchor and test (clean) splits; ids "train-k", "anchor-k", "test-k".

    Instructions are distinct across splits where the task space allows, so test accuracy is not recall.
    """
    rng, seen = random.Random(seed), set()
    train = _generate(num_samples, rng, TASK_FAMILIES, "train-", seen)
    anchor = _generate(anchor_size, rng, TASK_FAMILIES, "anchor-", seen)
    test = _generate(test_size, rng, TASK_FAMILIES, "test-", seen)
    return SyntheticSplits(corrupt(train, noise_rate, derive_seed(seed, "corrupt")), anchor, test)


def write_splits(splits: SyntheticSplits, out_dir: Path) -> dict[str, Path]:
    """Write train.jsonl, anchor.jsonl and test.jsonl atomically; returns {split name: path}."""
    paths = {}
    for name in ("train", "anchor", "test"):
        paths[name] = Path(out_dir) / f"{name}.jsonl"
        write_jsonl(paths[name], (s.to_dict() for s in getattr(splits, name)))
    return paths


def precision(samples: Sequence[Sample]) -> float:
    """Share of samples whose ground truth is clean; NaN for no samples."""
    if not samples:
        return math.nan
    missing = [s.id for s in samples if "clean" not in s.metadata]
    if missing:
        raise ValueError(f"no ground-truth metadata['clean'] for {len(missing)} sample(s), e.g. {missing[:3]}")
    return sum(bool(s.metadata["clean"]) for s in samples) / len(samples)


def main(argv: Sequence[str] | None = None) -> int:
    """Write synthetic train/anchor/test splits. Example: --out data/syn --n 1000 --noise-rate 0.4 --seed 0"""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--n", type=int, default=1000, help="training samples")
    parser.add_argument("--noise-rate", type=float, default=0.4, help="share of corrupted training samples")
    parser.add_argument("--anchor-size", type=int, default=100)
    parser.add_argument("--test-size", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    splits = make_splits(args.n, args.noise_rate, args.anchor_size, args.test_size, args.seed)
    paths = write_splits(splits, args.out)
    noise = Counter(s.metadata["noise"] for s in splits.train)
    logger.info("train %d (precision %.3f, noise %s), anchor %d, test %d -> %s", len(splits.train),
                precision(splits.train), dict(noise), len(splits.anchor), len(splits.test), paths["train"].parent)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
