"""Raters through the real transformers backend: failures keyed by position, several raters with their
combination, resume from the on-disk cache without repeated backend calls, `run_rate`, `rating` scorer."""

import json
import math

import pyarrow.parquet as pq
import pytest

from fedcurate.common.config import RaterConfig, RatingConfig, from_dict
from fedcurate.common.data.sample import Sample
from fedcurate.common.rating.backends.transformers_local import TransformersBackend
from fedcurate.common.rating.raters import PromptRater, SelectITRater, build_rater, combine, rate_dataset
from fedcurate.common.rating.run import run_rate
from fedcurate.common.scorers.base import failure_reason
from fedcurate.common.scorers.llm_rating import RatingScorer

MARK = "<<fail here>>"
SAMPLES = [Sample(f"s{i}", f"Question number {i}: what is {i} + {i}?", f"It is {2 * i}.") for i in range(6)]


def selectit_cfg(name: str = "sit", **kw) -> RaterConfig:
    settings = {"name": name, "kind": "selectit", "model": "tiny", "dtype": "float32", "batch_size": 4,
                "selectit_prompts": 2, "selectit_levels": 5}
    return RaterConfig(**{**settings, **kw})


class Counting(TransformersBackend):
    """The real backend, counting the prompts it is asked about; optionally interrupted after `stop_after` calls."""

    def __init__(self, rcfg: RaterConfig, stop_after: int = -1) -> None:
        super().__init__(rcfg)
        self.prompts = 0
        self.calls = 0
        self.stop_after = stop_after

    def _count(self, prompts) -> None:
        if self.calls == self.stop_after:
            raise KeyboardInterrupt("killed halfway")
        self.calls += 1
        self.prompts += len(prompts)

    def candidate_probs(self, prompts, candidates):
        self._count(prompts)
        return super().candidate_probs(prompts, candidates)

    def generate(self, prompts, *, max_new_tokens, temperature):
        self._count(prompts)
        return super().generate(prompts, max_new_tokens=max_new_tokens, temperature=temperature)


class RaisesOnMark(TransformersBackend):
    """Raises from `candidate_probs` whenever a prompt carries MARK (a backend bug hitting one sample)."""

    def candidate_probs(self, prompts, candidates):
        if any(MARK in p for p in prompts):
            raise RuntimeError("injected failure")
        return super().candidate_probs(prompts, candidates)


class BatchRaisesOnMark(TransformersBackend):
    """Raises inside the batched forward (e.g. out of memory) whenever the batch holds MARK's prompt."""

    def _probs_batch(self, batch, cand_ids):
        _, tok = self.load()
        if any(MARK in tok.decode(ids) for ids in batch):
            raise RuntimeError("out of memory (injected)")
        return super()._probs_batch(batch, cand_ids)


@pytest.mark.parametrize("backend_cls", [RaisesOnMark, BatchRaisesOnMark])
def test_failing_sample_is_nan_at_its_own_position(backend_cls):
    # Prepare
    rcfg = selectit_cfg()
    bad = Sample("bad", "Explain " + MARK, "No.")
    long = Sample("long", "Summarise.", "word " * 120)  # 600+ characters: beyond the tiny model's 512 positions
    samples = [SAMPLES[0], bad, SAMPLES[1], long, SAMPLES[2]]
    clean = SelectITRater(rcfg).rate([SAMPLES[0], SAMPLES[1], SAMPLES[2]])
    # Execute
    ratings = SelectITRater(rcfg, backend=backend_cls(rcfg)).rate(samples)
    # Assert
    assert math.isnan(ratings[1].score) and "injected" in ratings[1].reason
    assert math.isnan(ratings[3].score) and "prompt too long" in ratings[3].reason
    assert [ratings[i].score for i in (0, 2, 4)] == pytest.approx([r.score for r in clean], abs=1e-6)
    assert all(ratings[i].reason == "" for i in (0, 2, 4))


def test_prompt_rater_generates_and_parses(vllm_tiny_dir):
    # Prepare: a tiny model whose greedy answer starts with a digit; one token is the whole answer
    rcfg = RaterConfig(name="judge", prompt="selectit", model=str(vllm_tiny_dir), dtype="float32",
                       max_new_tokens=1, temperature=0.0)
    rater = build_rater(rcfg)
    # Execute
    ratings = rater.rate(SAMPLES)
    # Assert: digits 1..5 are scores, anything else is a failure with its reason, never a default
    assert isinstance(rater, PromptRater)
    for r in ratings:
        assert r.raw.strip().isdigit()
        if 1 <= int(r.raw) <= 5:
            assert (r.score, r.reason) == (float(r.raw), "")
        else:
            assert math.isnan(r.score) and r.reason.startswith("out of range")
    assert any(r.reason == "" for r in ratings)


def test_several_raters_give_columns_and_a_weighted_combination(tmp_path):
    # Prepare
    raters = [selectit_cfg("a", weight=7.0), selectit_cfg("b", selectit_prompts=1, selectit_levels=4, weight=13.0),
              RaterConfig(name="judge", prompt="alpagasus", model="tiny", dtype="float32", max_new_tokens=8,
                          weight=70.0)]
    cfg = RatingConfig(raters=raters, combine="weighted-mean")
    # Execute
    result = rate_dataset(SAMPLES, cfg, tmp_path)
    cols = result.columns
    # Assert: the random tiny judge never writes a score, so the combination uses a and b only
    assert list(cols) == ["a", "a_reason", "b", "b_reason", "judge", "judge_reason", "rating", "rating_reason"]
    assert all(math.isnan(v) for v in cols["judge"]) and all(cols["judge_reason"])
    expected = [(7 * a + 13 * b) / 20 for a, b in zip(cols["a"], cols["b"], strict=True)]
    assert cols["rating"] == pytest.approx(expected)
    assert cols["rating_reason"] == [""] * len(SAMPLES)
    assert result.stats["judge"]["failed"] == len(SAMPLES) and result.stats["a"]["rated"] == len(SAMPLES)


@pytest.mark.parametrize(("how", "expected"), [("weighted-mean", [2.5, 3.0]), ("median", [2.5, 3.0]),
                                               ("min", [1.0, 3.0]), ("max", [4.0, 3.0])])
def test_combine_methods(how, expected):
    # Prepare
    values = [[1.0, math.nan, math.nan], [4.0, 3.0, math.nan]]
    reasons = [["", "no score found: x", "empty output"], ["", "", "backend error: y"]]
    # Execute
    scores, why = combine(values, reasons, ["p", "q"], [1.0, 1.0], how)
    # Assert
    assert scores[:2] == pytest.approx(expected)
    assert math.isnan(scores[2]) and why[2] == "no valid rating: p: empty output; q: backend error: y"
    assert why[:2] == ["", ""]


def test_resume_from_cache_makes_no_repeated_calls(tmp_path):
    # Prepare
    rcfg = selectit_cfg()
    cfg = RatingConfig(raters=[rcfg])
    killed = Counting(rcfg, stop_after=1)  # the second chunk is interrupted
    # Execute
    with pytest.raises(KeyboardInterrupt):
        rate_dataset(SAMPLES, cfg, tmp_path, raters=[SelectITRater(rcfg, backend=killed)], chunk_size=2)
    resumed = Counting(rcfg)
    first = rate_dataset(SAMPLES, cfg, tmp_path, raters=[SelectITRater(rcfg, backend=resumed)], chunk_size=2)
    again = Counting(rcfg)
    second = rate_dataset(SAMPLES, cfg, tmp_path, raters=[SelectITRater(rcfg, backend=again)], chunk_size=2)
    # Assert: 2 prompts per sample; the first chunk (2 samples) survived the kill
    assert killed.prompts == 2 * 2
    assert resumed.prompts == 4 * 2
    assert again.calls == 0
    assert second.columns == first.columns
    assert first.stats["sit"]["from_cache"] == 2 and second.stats["sit"]["from_cache"] == len(SAMPLES)


def test_backend_errors_are_retried_on_the_next_run(tmp_path):
    # Prepare
    rcfg = selectit_cfg()
    cfg = RatingConfig(raters=[rcfg])
    samples = [*SAMPLES[:3], Sample("bad", "Explain " + MARK, "No.")]
    # Execute
    first = rate_dataset(samples, cfg, tmp_path, raters=[SelectITRater(rcfg, backend=RaisesOnMark(rcfg))])
    counting = Counting(rcfg)
    second = rate_dataset(samples, cfg, tmp_path, raters=[SelectITRater(rcfg, backend=counting)])
    # Assert
    assert first.stats["sit"]["failures_by_reason"] == {"backend error": 1}
    assert counting.prompts == 2  # only the failed sample, with its 2 prompts
    assert second.columns["sit_reason"] == [""] * 4
    assert second.columns["sit"][:3] == first.columns["sit"][:3]


def test_changed_settings_do_not_reuse_the_cache(tmp_path):
    # Prepare
    base = selectit_cfg()
    rate_dataset(SAMPLES[:2], RatingConfig(raters=[base]), tmp_path)
    changed = selectit_cfg(selectit_alpha=0.5)
    counting = Counting(changed)
    # Execute
    rate_dataset(SAMPLES[:2], RatingConfig(raters=[changed]), tmp_path,
                 raters=[SelectITRater(changed, backend=counting)])
    # Assert
    assert counting.prompts == 2 * 2


def test_run_rate_writes_ratings_stats_and_rejects(tmp_path):
    # Prepare
    data = tmp_path / "data.jsonl"
    rows = [s.to_dict() for s in SAMPLES[:3]] + [{"id": "x", "instruction": "no response"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    cfg = from_dict({"data": {"on-error": "skip"},
                     "rating": {"raters": [{"name": "sit", "kind": "selectit", "model": "tiny", "dtype": "float32",
                                            "selectit-prompts": 2}]}})
    # Execute
    stats = run_rate(cfg, data, tmp_path / "out")
    # Assert
    table = pq.read_table(tmp_path / "out" / "ratings.parquet").to_pydict()
    assert list(table) == ["id", "sit", "sit_reason", "rating", "rating_reason"]
    assert table["id"] == ["s0", "s1", "s2"] and table["rating"] == table["sit"]
    assert stats["raters"]["sit"]["rated"] == 3 and stats["num_rejected_rows"] == 1
    assert json.loads((tmp_path / "out" / "stats.json").read_text())["raters"]["sit"]["failed"] == 0
    assert (tmp_path / "out" / "rejects.jsonl").read_text().count("\n") == 1
    assert any((tmp_path / "out" / "cache").glob("sit-*/chunk-*.jsonl"))


def test_rating_scorer_returns_the_combined_column(tmp_path):
    # Prepare
    cfg = from_dict({"run": {"dir": str(tmp_path)},
                     "rating": {"raters": [{"name": "sit", "kind": "selectit", "model": "tiny", "dtype": "float32",
                                            "selectit-prompts": 1}]}})
    samples = [*SAMPLES[:2], Sample("long", "Summarise.", "word " * 120)]
    # Execute
    scores = RatingScorer(cfg).score_batch(samples)
    # Assert
    assert RatingScorer.higher_is_better
    assert all(0 <= s <= 5 for s in scores[:2])
    assert math.isnan(scores[2]) and "prompt too long" in failure_reason(scores[2])
    assert any((tmp_path / "cache").iterdir())
