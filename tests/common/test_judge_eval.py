"""LLM-judge evaluation: exact figures from scripted judges behind a loopback OpenAI-compatible server,
and the real tiny model as model under test (base + LoRA adapter) and as local `transformers` judge."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from loopback_http import LoopbackServer  # tests/loopback_http.py

from fedcurate.common.config import Config, ConfigError, ModelConfig, RaterConfig, RatingConfig
from fedcurate.common.data.loaders import write_samples
from fedcurate.common.data.sample import Sample
from fedcurate.common.judge_eval import (
    CORRECT_TEXT,
    PAIRWISE_TEXT,
    answer_with,
    generate_answers,
    judge_correctness,
    judge_pairwise,
    load_judge_template,
    parse_choice,
    parse_correct,
    render,
    run_judge,
)
from fedcurate.common.models.loading import get_model, load_model_and_tokenizer
from fedcurate.common.models.tiny import build_tiny_model
from fedcurate.common.rating.backends.openai_http import OpenAIBackend
from fedcurate.common.rating.backends.transformers_local import TransformersBackend
from fedcurate.common.rating.prompts import TemplateError

REPO = Path(__file__).resolve().parents[2]
Policy = Callable[[str], "str | None"]  # the judge's pick for a prompt; None = an unreadable reply


class JudgeServer(LoopbackServer):
    """A loopback OpenAI-compatible judge (/v1/completions and /v1/chat/completions) run by a policy.

    The reply is the policy's pick as text; asked for logprobs, the next-token top list gives the pick
    probability 0.8 and the other candidate 0.2. A None pick replies with prose whose top list holds
    neither candidate. A prompt containing `http400` is answered with HTTP 400.
    """

    def __init__(self, policy: Policy, candidates: tuple[str, str]) -> None:
        super().__init__()
        self.policy, self.candidates = policy, candidates
        self.requests = 0

    def answer(self, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
        chat = "chat" in path
        self.requests += 1
        prompt = body["messages"][-1]["content"] if chat else body["prompt"]
        if "http400" in prompt:
            return 400, b'{"error": {"message": "bad request"}}'
        pick = self.policy(prompt)
        if pick is None:
            text, top = "I cannot decide.", {"I": math.log(0.6), "The": math.log(0.3)}
        else:
            other = next(c for c in self.candidates if c != pick)
            text, top = pick, {pick: math.log(0.8), other: math.log(0.2)}
        if chat:
            logprobs = {"content": [{"token": text[:1], "logprob": 0.0, "top_logprobs": [
                {"token": t, "logprob": lp} for t, lp in top.items()]}]}
            choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text}}
        else:
            logprobs = {"tokens": [text[:1]], "token_logprobs": [0.0], "top_logprobs": [top]}
            choice = {"index": 0, "text": text}
        choice.update(finish_reason="stop", logprobs=logprobs if body.get("logprobs") else None)
        return 200, json.dumps({"id": "x", "object": "completion", "model": "m", "choices": [choice]}).encode()



def reference_in_answer(prompt: str) -> str | None:
    """1 when the sample's reference (a `REF<n>x` code) appears twice: in the reference and in the answer."""
    if "garble" in prompt:
        return None
    ref = re.search(r"REF\d+x", prompt)
    return "1" if ref and prompt.count(ref.group(0)) >= 2 else "0"


def good_answer_first(prompt: str) -> str | None:
    """A if the first answer marker in the prompt is GOOD (answer A is good), B if it is BAD."""
    first = re.search(r"GOOD|BAD|GARBLE", prompt)
    return None if first is None or first.group(0) == "GARBLE" else "A" if first.group(0) == "GOOD" else "B"


@pytest.fixture
def judge_server(request: pytest.FixtureRequest) -> Iterator[JudgeServer]:
    policy, candidates = request.param
    with JudgeServer(policy, candidates) as server:
        yield server


def http_backend(server: JudgeServer, tmp_path: Path, api: str = "completions") -> OpenAIBackend:
    cfg = RaterConfig(name="judge", backend="openai", model="m", url=server.url, max_retries=0, timeout_s=5.0)
    return OpenAIBackend(cfg, cache_dir=tmp_path / "requests", api=api)


def samples_with_refs(n: int, garbled: tuple[int, ...] = (), http400: tuple[int, ...] = ()) -> list[Sample]:
    def question(i: int) -> str:
        return f"Question {i}" + (" garble" if i in garbled else "") + (" http400" if i in http400 else "")

    return [Sample(id=f"s{i}", instruction=question(i), response=f"REF{i}x") for i in range(n)]


CORRECT_POLICY = (reference_in_answer, ("1", "0"))
PAIRWISE_POLICY = (good_answer_first, ("A", "B"))
ALWAYS_A = (lambda prompt: "A", ("A", "B"))


# ---------------------------------------------------------------- correctness through the HTTP backend


@pytest.mark.parametrize("judge_server", [CORRECT_POLICY], indirect=True)
@pytest.mark.parametrize(("method", "api"), [("generate", "completions"), ("probs", "completions"),
                                             ("auto", "chat")])
def test_accuracy_is_exact_with_a_reference_matching_judge(judge_server: JudgeServer, tmp_path: Path,
                                                           method: str, api: str) -> None:
    # Prepare: answers 0, 2 and 3 contain their reference
    samples = samples_with_refs(6)
    answers = ["It is REF0x.", "It is REF9x.", "REF2x", "so REF3x", "no idea", "REF0x"]
    # Execute
    result = judge_correctness(samples, answers, http_backend(judge_server, tmp_path, api), method=method)
    # Assert
    assert [r["verdict"] for r in result.records] == [1, 0, 1, 1, 0, 0]
    assert (result.n, result.n_failed, result.accuracy) == (6, 0, 0.5)
    used = "generate" if method == "generate" else "probs"
    assert {r["method"] for r in result.records} == {used}
    if used == "probs":
        assert result.records[0]["judge_probs"] == pytest.approx({"1": 0.8, "0": 0.2})
        assert result.details["probs_share"] == 1.0
    else:
        assert [r["judge_text"] for r in result.records[:2]] == ["1", "0"]


@pytest.mark.parametrize("judge_server", [CORRECT_POLICY], indirect=True)
def test_unreadable_replies_are_failures_with_reasons_not_zeros(judge_server: JudgeServer, tmp_path: Path) -> None:
    # Prepare: sample 1 gets prose without a verdict (and no candidate in its top logprobs), sample 3 a 400
    samples = samples_with_refs(5, garbled=(1,), http400=(3,))
    answers = ["REF0x", "REF1x", "wrong", "REF3x", "REF4x"]
    # Execute
    result = judge_correctness(samples, answers, http_backend(judge_server, tmp_path), method="auto")
    # Assert: the failures count neither as 0 nor as 1, and shift no other sample's verdict
    assert [r["verdict"] for r in result.records] == [1, None, 0, None, 1]
    assert (result.n, result.n_failed) == (5, 2)
    assert result.accuracy == pytest.approx(2 / 3)
    garbled, refused = result.records[1], result.records[3]
    assert garbled["reason"].startswith("unparseable verdict: expected 1 or 0, got 'I cannot decide.'")
    assert "candidate probabilities: rating tokens missing from top_logprobs" in garbled["reason"]
    assert garbled["judge_text"] == "I cannot decide." and garbled["method"] == "generate"
    assert refused["reason"].startswith("backend error: HTTP 400")
    assert result.failures_by_reason == {"unparseable verdict": 1, "backend error": 1}
    assert result.details["probs_share"] == pytest.approx(3 / 5)


# ---------------------------------------------------------------- pairwise through the HTTP backend


@pytest.mark.parametrize("judge_server", [ALWAYS_A], indirect=True)
@pytest.mark.parametrize("method", ["generate", "probs"])
def test_a_judge_that_always_says_a_gives_half(judge_server: JudgeServer, tmp_path: Path, method: str) -> None:
    # Prepare: the model's answers are clearly better, but this judge only ever picks position A
    samples = samples_with_refs(4)
    # Execute
    result = judge_pairwise(samples, ["GOOD"] * 4, ["BAD"] * 4, http_backend(judge_server, tmp_path),
                            method=method)
    # Assert: both orders cancel the position bias exactly
    assert result.win_rate == 0.5
    assert (result.wins, result.losses, result.ties, result.n_failed) == (0, 0, 4, 0)
    assert result.details["first_position_rate"] == 1.0
    assert result.details["position_consistency"] == 0.0
    assert [o["model_position"] for o in result.records[0]["orders"]] == ["A", "B"]
    assert judge_server.requests == 8  # two orders per sample


@pytest.mark.parametrize("judge_server", [PAIRWISE_POLICY], indirect=True)
def test_consistent_judge_wins_losses_ties_and_failed_orders(judge_server: JudgeServer, tmp_path: Path) -> None:
    # Prepare: model better on 0-2, baseline better on 3, equal on 4; sample 5's model answer is unreadable
    samples = samples_with_refs(6)
    model = ["GOOD", "GOOD", "GOOD", "BAD", "GOOD", "GARBLE"]
    baseline = ["BAD", "BAD", "BAD", "GOOD", "GOOD", "BAD"]
    # Execute
    result = judge_pairwise(samples, model, baseline, http_backend(judge_server, tmp_path), method="auto")
    # Assert
    assert [r["verdict"] for r in result.records] == ["win", "win", "win", "loss", "tie", None]
    assert [r["score"] for r in result.records[:5]] == [1.0, 1.0, 1.0, 0.0, 0.5]
    assert (result.wins, result.losses, result.ties, result.n, result.n_failed) == (3, 1, 1, 6, 1)
    assert result.win_rate == pytest.approx(3.5 / 5)
    assert result.details["position_consistency"] == pytest.approx(4 / 5)
    failed = result.records[5]
    assert failed["reason"].startswith("order 1 (model as A): unparseable verdict")
    assert "order 2" not in failed["reason"]  # the other order was read fine
    assert failed["orders"][1]["choice"] == "B" and failed["orders"][1]["method"] == "probs"
    assert result.failures_by_reason == {"unparseable verdict": 1}


# ---------------------------------------------------------------- parsing and templates


@pytest.mark.parametrize(("text", "choice"), [
    ("1", "1"), ("0", "0"), (" **1**\nThe answer matches.", "1"), ("Correct.", "1"), ("incorrect", "0"),
    ("No, it differs.", "0"), ("The answer differs in the unit.\nVerdict: 0", "0"), ("1.", "1"),
    ("10", None), ("1. The answer first", None), ("It is 1 of many", None), ("", None), ("maybe", None),
])
def test_parse_correct(text: str, choice: str | None) -> None:
    # Execute
    verdict = parse_correct(text)
    # Assert
    assert verdict.choice == choice
    assert bool(verdict.reason) == (choice is None)


@pytest.mark.parametrize(("text", "choice"), [
    ("A", "A"), ("B.", "B"), ("[[B]]", "B"), ("**A** is better", "A"), ("A is better.", "A"),
    ("Both are fine, but the winner is B", "B"), ("Verdict: Answer A", "A"), ("The better answer is: B", "B"),
    ("[[C]]", "tie"), ("Tie", "tie"), ("A good answer would mention units.", None),
    ("Answer A is better than answer B", None), ("Neither", None), ("", None),
])
def test_parse_choice(text: str, choice: str | None) -> None:
    # Execute
    verdict = parse_choice(text)
    # Assert
    assert verdict.choice == choice
    assert bool(verdict.reason) == (choice is None)


def test_shipped_prompt_files_are_the_built_in_templates() -> None:
    # Execute / Assert
    assert load_judge_template(REPO / "configs/prompts/judge-correct.txt", "correct") == CORRECT_TEXT
    assert load_judge_template(REPO / "configs/prompts/judge-pairwise.txt", "pairwise") == PAIRWISE_TEXT
    assert load_judge_template(None, "pairwise") == PAIRWISE_TEXT


def test_user_templates_are_checked_and_rendered_in_one_pass(tmp_path: Path) -> None:
    # Prepare
    missing, unknown = tmp_path / "missing.txt", tmp_path / "unknown.txt"
    missing.write_text("Q: {question}\nA: {answer}\n")
    unknown.write_text("{question} {reference} {answer} {context}\n")
    # Execute / Assert
    with pytest.raises(TemplateError, match=r"missing.txt: a correct judge prompt .* missing \{reference\}"):
        load_judge_template(missing, "correct")
    with pytest.raises(TemplateError, match=r"unknown \{context\}"):
        load_judge_template(unknown, "correct")
    with pytest.raises(TemplateError, match="no such file"):
        load_judge_template(tmp_path / "absent.txt", "pairwise")
    assert render("{question}|{answer}", {"question": "say {answer}", "answer": "x"}) == "say {answer}|x"


# ---------------------------------------------------------------- the tiny model, as answerer and as judge

TINY_MODEL = ModelConfig(template="plain", max_length=64, batch_size=2, device="cpu")


@pytest.fixture(scope="module")
def tiny_with_adapter(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny base model saved to disk, and a LoRA adapter with non-zero weights on it."""
    from peft import LoraConfig, get_peft_model

    root = tmp_path_factory.mktemp("judge-models")
    base_dir = build_tiny_model(root / "base")
    base, _ = load_model_and_tokenizer(str(base_dir), device="cpu")
    torch.manual_seed(0)
    lora = LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(base, lora).save_pretrained(root / "adapter")
    return base_dir, root / "adapter"


def test_answers_come_from_the_adapter_merged_into_its_base(tiny_with_adapter: tuple[Path, Path]) -> None:
    # Prepare
    base_dir, adapter = tiny_with_adapter
    samples = samples_with_refs(3)
    from peft import PeftModel

    base, tok = load_model_and_tokenizer(str(base_dir), device="cpu")
    merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    # Execute
    plain = generate_answers(str(base_dir), samples, TINY_MODEL, max_new_tokens=8)
    tuned = generate_answers(str(base_dir), samples, TINY_MODEL, adapter=adapter, max_new_tokens=8)
    # Assert
    expected = answer_with(merged, tok, samples, template="plain", max_length=64, max_new_tokens=8, batch_size=1)
    assert tuned == expected
    assert tuned != plain
    assert all(len(a) <= 8 for a in tuned + plain)
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        generate_answers(str(base_dir), samples, TINY_MODEL, adapter=base_dir, max_new_tokens=8)


def test_tiny_judge_verdicts_are_its_candidate_argmax() -> None:
    # Prepare: the judge is the local `transformers` backend on the tiny model
    samples = samples_with_refs(3)
    answers = ["REF0x", "nope", "REF2x maybe"]
    judge = TransformersBackend(RaterConfig(model="tiny", dtype="float32", device="cpu"))
    model, tok = get_model("tiny", "float32", "cpu")
    # Execute
    result = judge_correctness(samples, answers, judge, method="probs")
    # Assert: each verdict is the argmax of P("1") vs P("0") from a plain forward of its prompt
    one, zero = tok.convert_tokens_to_ids(["1", "0"])
    for sample, answer, record in zip(samples, answers, result.records, strict=True):
        prompt = render(CORRECT_TEXT, {"question": sample.prompt_text, "reference": sample.response,
                                       "answer": answer})
        with torch.no_grad():
            logits = model(input_ids=tok(prompt, return_tensors="pt")["input_ids"]).logits[0, -1]
        p1 = float(torch.softmax(logits[[one, zero]], dim=0)[0])
        assert record["judge_probs"]["1"] == pytest.approx(p1, abs=1e-5)
        assert record["verdict"] == int(p1 > 0.5)
    assert result.n_failed == 0
    assert result.accuracy == pytest.approx(sum(r["verdict"] for r in result.records) / 3)
    assert 0.0 < result.details["mean_candidate_mass"] < 1.0


def test_run_judge_pairwise_against_the_base_model_with_the_tiny_judge(
        tiny_with_adapter: tuple[Path, Path], tmp_path: Path) -> None:
    # Prepare: the adapter's answers against the base model's, judged by the tiny model itself
    base_dir, adapter = tiny_with_adapter
    write_samples(tmp_path / "test.jsonl", samples_with_refs(4))
    cfg = Config(model=TINY_MODEL, rating=RatingConfig(raters=[RaterConfig(name="tiny-judge", model="tiny",
                                                                           device="cpu")]))
    # Execute
    result = run_judge(cfg, model=str(base_dir), adapter=adapter, test_path=tmp_path / "test.jsonl",
                       out_dir=tmp_path / "out", mode="pairwise", method="probs", max_new_tokens=8)
    # Assert
    records = [json.loads(line) for line in (tmp_path / "out/judge-pairwise.jsonl").read_text().splitlines()]
    summary = json.loads((tmp_path / "out/judge-pairwise.json").read_text())
    assert [r["id"] for r in records] == ["s0", "s1", "s2", "s3"]
    assert records[0]["answer"] != records[0]["baseline_answer"]
    assert (summary["n"], summary["n_failed"], summary["wins"] + summary["losses"] + summary["ties"]) == (4, 0, 4)
    assert summary["win_rate"] == pytest.approx((result.wins + result.ties / 2) / 4)
    assert summary["baseline"] == str(base_dir) and summary["judge"]["name"] == "tiny-judge"
    assert (tmp_path / "out/config.toml").exists()


def test_self_comparison_is_exactly_half(tiny_with_adapter: tuple[Path, Path]) -> None:
    # Prepare: identical answers make both orders' prompts identical, so every sample is a tie
    answers = generate_answers(str(tiny_with_adapter[0]), samples_with_refs(3), TINY_MODEL, max_new_tokens=6)
    judge = TransformersBackend(RaterConfig(model="tiny", dtype="float32", device="cpu"))
    # Execute
    result = judge_pairwise(samples_with_refs(3), answers, answers, judge, method="probs")
    # Assert
    assert (result.win_rate, result.ties, result.details["position_consistency"]) == (0.5, 3, 0.0)


@pytest.mark.parametrize("judge_server", [CORRECT_POLICY], indirect=True)
def test_run_judge_with_an_http_judge_and_resumes_from_its_cache(judge_server: JudgeServer, tmp_path: Path) -> None:
    # Prepare: references are single characters, so some of the tiny model's answers contain theirs
    samples = [Sample(id=f"q{i}", instruction=f"Say {c}", response=c) for i, c in enumerate("etaoin")]
    write_samples(tmp_path / "test.jsonl", samples)
    judge = RaterConfig(name="http", backend="openai", model="m", url=judge_server.url, max_retries=0)
    cfg = Config(model=TINY_MODEL, rating=RatingConfig(raters=[judge]))
    judge_server.policy = lambda prompt: "1" if _answer_has_reference(prompt) else "0"

    def run() -> Any:
        return run_judge(cfg, model="tiny", test_path=tmp_path / "test.jsonl", out_dir=tmp_path / "out",
                         method="generate", max_new_tokens=12)

    # Execute
    result = run()
    asked = judge_server.requests
    again = run()
    # Assert
    expected = [int(r["reference"] in r["answer"]) for r in result.records]
    assert [r["verdict"] for r in result.records] == expected
    assert result.accuracy == pytest.approx(sum(expected) / 6)
    assert again.records == result.records and judge_server.requests == asked == 6  # cached under out/cache
    assert any((tmp_path / "out/cache/requests").iterdir())


def _answer_has_reference(prompt: str) -> bool:
    reference = prompt.split("Reference answer:\n", 1)[1].split("\n", 1)[0]
    answer = prompt.split("Answer to check:\n", 1)[1].rsplit("\n\nIs the answer correct", 1)[0]
    return reference in answer


def test_bad_arguments_are_reported_together(tmp_path: Path) -> None:
    # Prepare
    cfg = Config(rating=RatingConfig(raters=[RaterConfig(name="j")]))
    # Execute / Assert
    with pytest.raises(ConfigError) as err:
        run_judge(cfg, model="tiny", test_path=None, out_dir=tmp_path, mode="pairwise", method="vote",
                  baseline_adapter="a")
    text = str(err.value)
    assert "no test set" in text and "--method = 'vote'" in text and "--mode pairwise needs --baseline" in text
    assert "--baseline-adapter needs --baseline" in text
    with pytest.raises(ConfigError, match="no rater named 'x'; configured: j"):
        run_judge(cfg, model="tiny", test_path="t.jsonl", out_dir=tmp_path, judge="x")
    with pytest.raises(ConfigError, match="--prompt"):
        run_judge(cfg, model="tiny", test_path="t.jsonl", out_dir=tmp_path, prompt=tmp_path / "none.txt")
