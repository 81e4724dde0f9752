"""Evaluate a model (base, base + LoRA adapter, or merged) with EleutherAI's lm-evaluation-harness.

    # the DS2 benchmarks (datasets come from the Hugging Face Hub, so they need network or a warm cache)
    res = run_lm_eval("meta-llama/Llama-3.1-8B", adapter="runs/x/train/adapter", tasks=["ds2"], batch_size=8)
    # offline, on local files: write task YAMLs that point at them, then evaluate on those
    tasks_dir = local_task_dir(run_dir / "lm_eval_tasks", gsm8k_jsonl="data/gsm8k/test.jsonl",
                               bbh_json="data/bbh/boolean_expressions.json")
    res = run_lm_eval("tiny", tasks=["local_gsm8k", "local_bbh"], include_path=str(tasks_dir), limit=8)
    write_results(run_dir / "lm_eval.json", res)

Command line: `fedcurate lm-eval --model PATH [--adapter DIR] --tasks a,b --out results.json`.

Task names are lm-eval's (`mmlu`, `gsm8k_cot`, ...) or the DS2 names of `DS2_TASKS` (`ds2:gsm8k`, ... and
`ds2` for all five), which map to lm-eval tasks and, unless `num_fewshot` is given, to DS2's shot counts
(open-instruct's settings: MMLU 5-shot, GSM 8-shot CoT, BBH 3-shot CoT, TyDiQA 1-shot GoldP). The model is
loaded once and passed to lm-eval's `HFLM` as an instance, so an adapter is applied with peft exactly as
in training. lm-eval is the optional extra `eval`: `pip install 'fedcurate[eval]'`.
"""

from __future__ import annotations

import difflib
import functools
import importlib.metadata
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fedcurate.common import io

logger = logging.getLogger(__name__)

LOCAL_GSM8K, LOCAL_BBH, LOCAL_BBH_MC = "local_gsm8k", "local_bbh", "local_bbh_mc"
MAX_CHOICES = 26  # a BBH file with at most this many distinct non-numeric answers also gets a multiple-choice task


class LmEvalError(RuntimeError):
    """lm-eval is missing, a task name is unknown, or an input file is unusable; the message says which."""


@dataclass(frozen=True)
class Ds2Task:
    """One DS2 benchmark as an lm-eval task, with the shots DS2 used (None: lm-eval's default already is)."""

    task: str  # lm-eval task, group or tag name
    num_fewshot: int | None
    metric: str  # the headline figure in lm-eval's results


DS2_TASKS: dict[str, Ds2Task] = {
    "ds2:mmlu": Ds2Task("mmlu", 5, "acc"),  # group of 57 subjects; lm-eval's default is 0-shot
    "ds2:truthfulqa": Ds2Task("truthfulqa_mc2", None, "acc"),  # MC2, 0-shot after the fixed 6-QA preamble
    "ds2:gsm8k": Ds2Task("gsm8k_cot", None, "exact_match"),  # 8-shot chain of thought (Wei et al. exemplars)
    "ds2:bbh": Ds2Task("bbh_cot_fewshot", None, "exact_match"),  # group of 27 tasks, 3-shot chain of thought
    "ds2:tydiqa": Ds2Task("tydiqa_goldp", 1, "f1"),  # tag of 9 languages, gold passage; lm-eval's default 0-shot
}


def plan_runs(tasks: Sequence[str], num_fewshot: int | None) -> list[tuple[list[str], int | None]]:
    """Expand DS2 names and group the tasks into lm-eval runs that share a few-shot count, in order.

    An explicit `num_fewshot` applies to every task (one run); otherwise DS2 tasks take DS2's shots and the
    others their lm-eval default (None).
    """
    if not tasks:
        raise LmEvalError("no tasks given; name at least one (e.g. local_gsm8k, gsm8k_cot, ds2:gsm8k, ds2)")
    shots: dict[str, int | None] = {}
    for name in tasks:
        for ds2_name in (list(DS2_TASKS) if name == "ds2" else [name]):
            entry = DS2_TASKS.get(ds2_name)
            task = entry.task if entry else ds2_name
            shots.setdefault(task, entry.num_fewshot if entry and num_fewshot is None else num_fewshot)
    runs: dict[int | None, list[str]] = {}
    for task, k in shots.items():
        runs.setdefault(k, []).append(task)
    return [(names, k) for k, names in runs.items()]


def run_lm_eval(
    model: Any, tokenizer: Any = None, *, tasks: Sequence[str], adapter: str | None = None,
    merge_adapter: bool = True, include_path: str | None = None, limit: int | None = None,
    num_fewshot: int | None = None, batch_size: int = 1, device: str = "auto", dtype: str = "float32",
    seed: int = 0, log_samples: bool = False,
) -> dict[str, Any]:
    """Evaluate `model` on `tasks`: a path, hub id or 'tiny'; a loaded PreTrainedModel with its `tokenizer`
    (an adapter is applied to it in place); or any lm-eval `LM` (e.g. lm-eval's `local-completions` client of
    a vLLM server), used as is.

    Returns {"results": {task: {metric: value}}, "n_samples", "n_shot", "config", "versions"} (plus
    "samples" with per-document responses when `log_samples`), all JSON-able. Generation is greedy, so
    two runs with the same arguments give the same figures.
    """
    lm_eval = _import_lm_eval()
    from lm_eval.api.model import LM
    from lm_eval.models.huggingface import HFLM

    runs = plan_runs(tasks, num_fewshot)
    task_manager = _task_manager([t for names, _ in runs for t in names], include_path)
    if isinstance(model, LM):
        if adapter is not None:
            raise LmEvalError("run_lm_eval: an adapter needs a Hugging Face model, not an lm-eval LM")
        lm = model
    else:
        hf_model, hf_tokenizer = _load_model(model, tokenizer, adapter, merge_adapter, dtype, device)
        lm = HFLM(pretrained=hf_model, tokenizer=hf_tokenizer, batch_size=batch_size)
    out: dict[str, Any] = {"results": {}, "n_samples": {}, "n_shot": {}, "task_versions": {}}
    if log_samples:
        out["samples"] = {}
    for i, (names, shots) in enumerate(runs, 1):
        logger.info("[lm-eval %d/%d] tasks %s, num_fewshot %s, limit %s", i, len(runs), names, shots, limit)
        try:
            raw = lm_eval.simple_evaluate(
                model=lm, tasks=names, num_fewshot=shots, limit=limit, task_manager=task_manager,
                log_samples=log_samples, random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
                fewshot_random_seed=seed,
            )
        except ConnectionError as err:  # datasets' error when a hub dataset is neither reachable nor cached
            raise LmEvalError(
                f"task(s) {names} need their dataset from the Hugging Face Hub, which could not be reached "
                f"({err}). Run once with network to fill the datasets cache, or evaluate local files via "
                "local_task_dir / --include-path."
            ) from err
        _merge(out, raw, log_samples)
    out["config"] = {
        "model": _model_name(model), "adapter": adapter, "merge_adapter": merge_adapter if adapter else None,
        "tasks": list(tasks), "runs": [{"tasks": n, "num_fewshot": k} for n, k in runs],
        "include_path": include_path, "limit": limit, "num_fewshot": num_fewshot, "batch_size": batch_size,
        "seed": seed, **_placement(lm),
    }
    out["versions"] = _versions()
    return out


def write_results(path: str | Path, results: dict[str, Any]) -> Path:
    """Write `results` of `run_lm_eval` as pretty JSON, atomically; returns the path."""
    io.write_json(path, results)
    return Path(path)


def local_task_dir(
    out_dir: str | Path, *, gsm8k_jsonl: str | Path | None = None, bbh_json: str | Path | None = None,
    gsm8k_fewshot_jsonl: str | Path | None = None, max_gen_toks: int = 256,
) -> Path:
    """Write lm-eval task YAMLs for local data files into `out_dir` (pass it as `include_path`).

    - `local_gsm8k` (from `gsm8k_jsonl`, rows {"question", "answer" ending in "#### N"}): greedy generation,
      exact match of the number after "####" ("strict-match") or of the last number ("flexible-extract").
      Few-shot examples come from `gsm8k_fewshot_jsonl` if given, else from the evaluated file itself.
    - `local_bbh` (from one BIG-Bench Hard file, {"examples": [{"input", "target"}]}): greedy generation of
      one line, exact match with the target. `local_bbh_mc` as well when the file's answers are a small
      closed set (True/False, (A)..(E), ...): the most likely answer is taken ("acc").
    The data is read through HF `datasets`' json loader, which works offline.
    """
    if gsm8k_jsonl is None and bbh_json is None:
        raise LmEvalError("local_task_dir: give gsm8k_jsonl and/or bbh_json")
    out = Path(out_dir)
    if gsm8k_jsonl is not None:
        fewshot = _existing(gsm8k_fewshot_jsonl, "gsm8k_fewshot_jsonl") if gsm8k_fewshot_jsonl else None
        _write_yaml(out / f"{LOCAL_GSM8K}.yaml", _gsm8k_task(_check_gsm8k(gsm8k_jsonl), fewshot, max_gen_toks))
    if bbh_json is not None:
        path, targets = _check_bbh(bbh_json)
        _write_yaml(out / f"{LOCAL_BBH}.yaml", _bbh_task(path, max_gen_toks))
        choices = sorted(set(targets))
        if len(choices) <= MAX_CHOICES and not any(c.strip().lstrip("-").isdigit() for c in choices):
            _write_yaml(out / f"{LOCAL_BBH_MC}.yaml", _bbh_mc_task(path, choices))
        else:  # open answers (numbers, word lists): lm-eval would read a numeric target as a choice index
            (out / f"{LOCAL_BBH_MC}.yaml").unlink(missing_ok=True)
    return out


def _import_lm_eval() -> Any:
    try:
        import lm_eval
    except ImportError as err:
        raise LmEvalError(
            f"lm-eval is not installed ({err}); install the evaluation extra: pip install 'fedcurate[eval]'"
        ) from err
    return lm_eval


def available_tasks(include_path: str | None = None) -> list[str]:
    """Every task, group and tag name lm-eval knows (its own plus those in `include_path`); no network."""
    _import_lm_eval()
    return list(_full_task_manager(include_path).all_tasks)


@functools.lru_cache(maxsize=4)
def _full_task_manager(include_path: str | None) -> Any:
    """lm-eval's own task index (+ `include_path`): a scan of ~15k YAML files, about 5 s, so kept per process."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=include_path)


def _task_manager(names: list[str], include_path: str | None) -> Any:
    """A TaskManager that knows every name; when `include_path` has them all, lm-eval's own index is not scanned."""
    from lm_eval.tasks import TaskManager

    if include_path is not None:
        if not Path(include_path).is_dir():
            raise LmEvalError(f"include_path {include_path!r} is not a directory of task YAML files")
        local = TaskManager(include_path=include_path, include_defaults=False)
        if all(n in local.all_tasks for n in names):
            return local
    manager = _full_task_manager(include_path)
    unknown = [n for n in names if n not in manager.all_tasks]
    if unknown:
        hints = [f"{n!r} (did you mean {', '.join(map(repr, close))}?)" if (close := difflib.get_close_matches(
            n, manager.all_tasks + list(DS2_TASKS), n=3)) else repr(n) for n in unknown]
        where = f" or in {include_path}" if include_path else ""
        raise LmEvalError(f"unknown lm-eval task(s): {', '.join(hints)}: not among lm-eval's {len(manager.all_tasks)} "
                          f"tasks{where}; DS2 names: ds2, {', '.join(DS2_TASKS)}")
    return manager


def _load_model(model: Any, tokenizer: Any, adapter: str | None, merge: bool, dtype: str,
                device: str) -> tuple[Any, Any]:
    """The model (with `adapter` applied, merged unless `merge` is False) and tokenizer, in eval mode."""
    from fedcurate.common.models.loading import (
        apply_adapter,
        check_adapter_dir,
        load_model_and_tokenizer,
        resolve_device,
    )

    if adapter is not None:  # before a long model load
        try:
            check_adapter_dir(adapter)
        except FileNotFoundError as err:
            raise LmEvalError(f"adapter {adapter!r}: no adapter_config.json there (is it a peft adapter "
                              f"directory?)") from err
    if isinstance(model, str | Path):
        model, loaded_tokenizer = load_model_and_tokenizer(str(model), dtype=dtype, device=device)
        tokenizer = loaded_tokenizer if tokenizer is None else tokenizer
    elif tokenizer is None:
        raise LmEvalError("run_lm_eval: a model instance needs its tokenizer (tokenizer=...)")
    elif device != "auto":
        model.to(resolve_device(device))
    if adapter is not None:
        model = apply_adapter(model, adapter, merge=merge)
        logger.info("applied adapter %s (%s)", adapter, "merged" if merge else "unmerged")
    return model.eval(), tokenizer


def _merge(out: dict[str, Any], raw: dict[str, Any], log_samples: bool) -> None:
    """Fold one `simple_evaluate` output into the compact `out`: numeric figures only, plain Python types."""
    for task, figures in raw["results"].items():
        out["results"][task] = {_metric_name(k): float(v) for k, v in figures.items()
                                if "," in k and isinstance(v, int | float) and not isinstance(v, bool)}
    out["n_samples"].update({t: {k: int(v) for k, v in n.items()} for t, n in raw.get("n-samples", {}).items()})
    out["n_shot"].update(_jsonable(raw.get("n-shot", {})))
    out["task_versions"].update(_jsonable(raw.get("versions", {})))
    if log_samples:
        for task, rows in raw.get("samples", {}).items():
            out["samples"][task] = [_jsonable({k: r[k] for k in ("doc_id", "filter", "target", "resps",
                                                                  "filtered_resps", *r.get("metrics", [])) if k in r})
                                    for r in rows]


def _metric_name(key: str) -> str:
    """lm-eval's "acc,none" -> "acc"; "exact_match,strict-match" -> "exact_match/strict-match"."""
    metric, _, filter_name = key.partition(",")
    return metric if filter_name == "none" else f"{metric}/{filter_name}"


def _jsonable(obj: Any) -> Any:
    """Tuples to lists, numpy scalars to Python numbers, NaN kept (write_json turns it into null)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalar
        return obj.item()
    return obj if obj is None or isinstance(obj, str | int | float | bool) else str(obj)


def _model_name(model: Any) -> str:
    if isinstance(model, str | Path):
        return str(model)
    for owner in (model, getattr(model, "model", None)):  # a PreTrainedModel, or an lm-eval LM holding one
        name = getattr(getattr(owner, "config", None), "name_or_path", None)
        if name:
            return str(name)
    return type(model).__name__


def _placement(lm: Any) -> dict[str, str | None]:
    """Device and dtype of the torch model inside an lm-eval LM (None for API-backed LMs)."""
    param = next(iter(getattr(getattr(lm, "model", None), "parameters", lambda: iter([]))()), None)
    if param is None:
        return {"device": None, "dtype": None}
    return {"device": str(param.device), "dtype": str(param.dtype).removeprefix("torch.")}


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for dist in ("fedcurate", "lm_eval", "transformers", "torch", "peft", "datasets"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _existing(path: str | Path, field: str) -> Path:
    resolved = Path(path).expanduser().resolve()  # the json loader resolves relative paths from the cwd
    if not resolved.is_file():
        raise LmEvalError(f"{field}: file {resolved} does not exist")
    return resolved


def _check_gsm8k(path: str | Path) -> Path:
    resolved = _existing(path, "gsm8k_jsonl")
    with open(resolved, encoding="utf-8") as fh:
        first = fh.readline()
    try:
        row = json.loads(first)
    except json.JSONDecodeError as err:
        raise LmEvalError(f"gsm8k_jsonl {resolved}, line 1: not JSON ({err})") from err
    missing = [k for k in ("question", "answer") if k not in row]
    if missing:
        raise LmEvalError(f"gsm8k_jsonl {resolved}, line 1: missing field(s) {missing}; need question and answer")
    return resolved


def _check_bbh(path: str | Path) -> tuple[Path, list[str]]:
    resolved = _existing(path, "bbh_json")
    try:
        examples = json.loads(resolved.read_text(encoding="utf-8"))["examples"]
        return resolved, [str(ex["target"]) for ex in examples if isinstance(ex["input"], str)]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise LmEvalError(f"bbh_json {resolved}: expected {{\"examples\": [{{\"input\", \"target\"}}, ...]}} "
                          f"as in BIG-Bench Hard ({type(err).__name__}: {err})") from err


def _json_dataset(path: Path, field: str | None = None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"data_files": {"test": str(path)}}
    if field:
        kwargs["field"] = field
    return {"dataset_path": "json", "dataset_kwargs": kwargs, "test_split": "test"}


def _gsm8k_task(path: Path, fewshot: Path | None, max_gen_toks: int) -> dict[str, Any]:
    task: dict[str, Any] = {"task": LOCAL_GSM8K, **_json_dataset(path)}
    if fewshot is not None:  # a second split of the same json dataset
        task["dataset_kwargs"]["data_files"]["train"] = str(fewshot)
        task["fewshot_split"] = "train"
    number = "(-?[$0-9.,]{2,})|(-?[0-9]+)"
    return task | {
        "output_type": "generate_until",
        "doc_to_text": "Question: {{question}}\nAnswer:",
        "doc_to_target": "{{answer}}",  # the worked solution, so few-shot examples show "#### N"
        "generation_kwargs": {"until": ["Question:", "\n\n"], "max_gen_toks": max_gen_toks, "do_sample": False},
        "filter_list": [
            {"name": "strict-match", "filter": [{"function": "regex", "regex_pattern": "#### (\\-?[0-9\\.\\,]+)"},
                                                {"function": "take_first"}]},
            {"name": "flexible-extract", "filter": [{"function": "regex", "group_select": -1,
                                                     "regex_pattern": number}, {"function": "take_first"}]},
        ],
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True,
                         "ignore_case": True, "regexes_to_ignore": [",", "\\$", "(?s).*#### ", "\\.$", "^\\s+", "\\s+$"]}],
        "metadata": {"version": 1.0},
    }


def _bbh_task(path: Path, max_gen_toks: int) -> dict[str, Any]:
    return {
        "task": LOCAL_BBH, **_json_dataset(path, field="examples"), "output_type": "generate_until",
        "doc_to_text": "Q: {{input}}\nA:", "doc_to_target": "{{target}}", "target_delimiter": " ",
        "generation_kwargs": {"until": ["\n", "Q:"], "max_gen_toks": max_gen_toks, "do_sample": False},
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True,
                         "regexes_to_ignore": ["^\\s+", "\\s+$"]}],
        "metadata": {"version": 1.0},
    }


def _bbh_mc_task(path: Path, choices: list[str]) -> dict[str, Any]:
    return {
        "task": LOCAL_BBH_MC, **_json_dataset(path, field="examples"), "output_type": "multiple_choice",
        "doc_to_text": "Q: {{input}}\nA:", "doc_to_target": "{{target}}", "doc_to_choice": choices,
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1.0},
    }


def _write_yaml(path: Path, task: dict[str, Any]) -> None:
    io.write_text(path, yaml.safe_dump(task, sort_keys=False, allow_unicode=True, width=1000))
