"""The lm-eval bridge: local GSM8K/BBH tasks evaluated offline on the tiny model, base and with a LoRA adapter."""

import json
import math
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # before `datasets` is first imported (via lm_eval)
lm_eval = pytest.importorskip("lm_eval")

from lm_eval.api.model import LM  # noqa: E402

from fedcurate.common.lm_eval_bridge import (  # noqa: E402
    DS2_TASKS,
    LOCAL_BBH,
    LOCAL_BBH_MC,
    LOCAL_GSM8K,
    LmEvalError,
    available_tasks,
    local_task_dir,
    plan_runs,
    run_lm_eval,
    write_results,
)
from fedcurate.common.models.tiny import build_tiny_model  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"  # ../shared beside the clone
GSM8K = DATA / "gsm8k" / "test.jsonl"
BBH = DATA / "bbh" / "boolean_expressions.json"
LOCAL = [LOCAL_GSM8K, LOCAL_BBH, LOCAL_BBH_MC]
LIMIT = 8

pytestmark = pytest.mark.skipif(not (GSM8K.is_file() and BBH.is_file()), reason="shared GSM8K/BBH files missing")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("lm_eval") / "tiny")


@pytest.fixture(scope="module")
def tasks_dir(tmp_path_factory) -> Path:
    return local_task_dir(tmp_path_factory.mktemp("tasks"), gsm8k_jsonl=GSM8K, bbh_json=BBH, max_gen_toks=16)


@pytest.fixture(scope="module")
def adapter(tiny, tmp_path_factory) -> Path:
    """A LoRA adapter with random (non-zero) B, so it changes the model's outputs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny)
    torch.manual_seed(0)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj", "o_proj"],
                                                 init_lora_weights=False))
    out = tmp_path_factory.mktemp("adapter") / "adapter"
    peft_model.save_pretrained(out)
    return out


def _run(model, tasks_dir, **kwargs):
    return run_lm_eval(str(model), tasks=LOCAL, include_path=str(tasks_dir), limit=LIMIT, batch_size=4,
                       device="cpu", **kwargs)


def test_local_tasks_offline_figures_counts_and_reproducible(tiny, tasks_dir, tmp_path):
    import datasets

    # Prepare
    assert datasets.config.HF_HUB_OFFLINE, "the test must run with the Hugging Face hubs offline"

    # Execute
    first = _run(tiny, tasks_dir)
    second = _run(tiny, tasks_dir)
    path = write_results(tmp_path / "out" / "results.json", first)

    # Assert
    assert set(first["results"]) == set(LOCAL)
    assert set(first["results"][LOCAL_GSM8K]) >= {"exact_match/strict-match", "exact_match/flexible-extract"}
    assert "exact_match" in first["results"][LOCAL_BBH] and "acc" in first["results"][LOCAL_BBH_MC]
    for figures in first["results"].values():
        assert figures and all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in figures.values()), figures
    assert {t: n["effective"] for t, n in first["n_samples"].items()} == dict.fromkeys(LOCAL, LIMIT)
    assert first["results"] == second["results"] and first["n_samples"] == second["n_samples"]
    assert first["config"]["limit"] == LIMIT and first["config"]["device"] == "cpu"
    assert first["versions"]["lm_eval"] == lm_eval.__version__
    assert json.loads(path.read_text()) == json.loads(json.dumps(first))


def test_adapter_merged_and_unmerged_agree_and_change_outputs(tiny, tasks_dir, adapter):
    # Execute
    base = _run(tiny, tasks_dir, log_samples=True)
    merged = _run(tiny, tasks_dir, adapter=str(adapter), log_samples=True)
    unmerged = _run(tiny, tasks_dir, adapter=str(adapter), merge_adapter=False, log_samples=True)

    # Assert: same structure as the base model, same figures merged or not, different model behaviour
    for res in (merged, unmerged):
        assert {t: set(f) for t, f in res["results"].items()} == {t: set(f) for t, f in base["results"].items()}
        assert res["n_samples"] == base["n_samples"]
    assert merged["config"]["adapter"] == str(adapter) and merged["config"]["merge_adapter"] is True
    assert {t: pytest.approx(f) for t, f in unmerged["results"].items()} == merged["results"]
    assert _texts(merged) == _texts(unmerged)
    assert _logliks(merged) == pytest.approx(_logliks(unmerged), abs=1e-3)
    assert _logliks(merged) != pytest.approx(_logliks(base), abs=1e-3)
    assert _texts(merged) != _texts(base)


def _texts(res):
    return [row["resps"] for row in res["samples"][LOCAL_GSM8K] + res["samples"][LOCAL_BBH]]


def _logliks(res):
    return [ll for row in res["samples"][LOCAL_BBH_MC] for ll, _greedy in row["filtered_resps"]]


class _Oracle(LM):
    """An lm-eval LM that answers from the document itself: right (or wrong) every time."""

    def __init__(self, right: bool):
        super().__init__()
        self.right = right

    def generate_until(self, requests):
        out = []
        for req in requests:
            if "answer" in req.doc:  # GSM8K: the worked solution ends in "#### N"
                number = req.doc["answer"].split("####")[-1].strip()
                out.append(f" Some steps.\n#### {number if self.right else number + '1'}")
            else:  # BBH
                out.append(" " + (req.doc["target"] if self.right else "not " + req.doc["target"]))
        return out

    def loglikelihood(self, requests):
        return [(0.0 if (req.args[1].strip() == req.doc["target"]) == self.right else -5.0, True) for req in requests]

    def loglikelihood_rolling(self, requests):
        raise NotImplementedError


@pytest.mark.parametrize("right", [True, False])
def test_local_task_definitions_score_an_oracle(tasks_dir, right):
    # Execute
    res = run_lm_eval(_Oracle(right), tasks=LOCAL, include_path=str(tasks_dir), limit=LIMIT)

    # Assert: every metric of every task is 1 for right answers and 0 for wrong ones
    want = 1.0 if right else 0.0
    main = {t: {k: v for k, v in f.items() if "stderr" not in k} for t, f in res["results"].items()}
    assert main == {LOCAL_GSM8K: {"exact_match/strict-match": want, "exact_match/flexible-extract": want},
                    LOCAL_BBH: {"exact_match": want}, LOCAL_BBH_MC: {"acc": want}}


def test_unknown_task_is_a_clear_error():
    with pytest.raises(LmEvalError, match=r"unknown lm-eval task.*'gsm8x' \(did you mean 'gsm8k'"):
        run_lm_eval(_Oracle(True), tasks=["gsm8x"], limit=1)  # lm-eval's index is cached for the next test


def test_ds2_names_exist_in_lm_eval_task_index():
    index = available_tasks()  # scans the YAML files shipped with lm-eval; no network
    assert [entry.task for entry in DS2_TASKS.values() if entry.task not in index] == []


def test_plan_runs_expands_ds2_names_and_groups_by_shots():
    assert plan_runs(["ds2"], None) == [(["mmlu"], 5), (["truthfulqa_mc2", "gsm8k_cot", "bbh_cot_fewshot"], None),
                                        (["tydiqa_goldp"], 1)]
    assert plan_runs(["ds2:gsm8k", "local_bbh", "gsm8k_cot"], 0) == [(["gsm8k_cot", "local_bbh"], 0)]
    with pytest.raises(LmEvalError, match="no tasks"):
        plan_runs([], None)


def test_missing_lm_eval_names_the_extra(monkeypatch, tiny):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # `import lm_eval` now raises ImportError
    with pytest.raises(LmEvalError, match=r"pip install 'fedcurate\[eval\]'"):
        run_lm_eval(str(tiny), tasks=[LOCAL_GSM8K])


def test_local_task_dir_checks_its_inputs(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"rows": []}))
    with pytest.raises(LmEvalError, match="gsm8k_jsonl: file .*missing.jsonl does not exist"):
        local_task_dir(tmp_path / "t", gsm8k_jsonl=tmp_path / "missing.jsonl")
    with pytest.raises(LmEvalError, match=r"bbh_json .*bad.json: expected \{\"examples\""):
        local_task_dir(tmp_path / "t", bbh_json=bad)
    with pytest.raises(LmEvalError, match="give gsm8k_jsonl and/or bbh_json"):
        local_task_dir(tmp_path / "t")


def test_open_answer_bbh_file_gets_no_multiple_choice_task(tmp_path):
    counting = DATA / "bbh" / "object_counting.json"  # numeric answers
    if not counting.is_file():
        pytest.skip("object_counting.json missing")
    out = local_task_dir(tmp_path / "t", bbh_json=counting)
    assert sorted(p.name for p in out.iterdir()) == [f"{LOCAL_BBH}.yaml"]
