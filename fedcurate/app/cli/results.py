"""The `fedcurate` commands that look at results: report, compare, lm-eval, judge.

    fedcurate report demo-out                                   # demo-out/report.html
    fedcurate compare runs/bench-quality --out runs/compare     # one table and plot across runs
    fedcurate judge --model tiny --config configs/rating-tiny.toml --out runs/judge

Per command: `<name>_args(parser)` adds its arguments, `do_<name>(args) -> exit code` runs it. Handlers import
the report, lm-evaluation-harness and the judge only when they run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fedcurate.app.cli.options import config_args, parse_overrides
from fedcurate.common.config import load_config


def report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", type=Path, help="a run directory (the --out of select, simulate or demo)")
    p.add_argument("--out", type=Path, default=None, help="HTML file to write (default RUN_DIR/report.html)")


def do_report(args: argparse.Namespace) -> int:
    from fedcurate.app.report import ReportError, write_report

    try:
        print(f"report: {write_report(args.run_dir, args.out)}")
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def compare_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dirs", type=Path, nargs="+",
                   help="run directories, or folders of runs (e.g. a quality benchmark's --out)")
    p.add_argument("--out", type=Path, required=True, help="folder for comparison.{md,html,json,png}")
    p.add_argument("--labels", nargs="+", default=None, help="one label per RUN_DIR (default: folder names)")


def do_compare(args: argparse.Namespace) -> int:
    from fedcurate.app.report import ReportError, write_comparison

    try:
        html_path = write_comparison(args.run_dirs, args.out, args.labels)
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print((args.out / "comparison.md").read_text(encoding="utf-8"))
    print(f"comparison: {html_path}")
    return 0


def lm_eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="base or merged model: local directory, hub id, or 'tiny'")
    p.add_argument("--adapter", help="peft LoRA adapter directory applied to --model")
    p.add_argument("--no-merge", action="store_true", help="keep the adapter unmerged (default: merge into the base)")
    p.add_argument("--tasks", required=True,
                   help="comma-separated lm-eval tasks, or DS2 names: ds2 (all five), ds2:mmlu, ds2:truthfulqa, "
                        "ds2:gsm8k, ds2:bbh, ds2:tydiqa; local_gsm8k, local_bbh, local_bbh_mc with the options below")
    p.add_argument("--include-path", help="extra directory of lm-eval task YAML files")
    p.add_argument("--gsm8k-jsonl", type=Path, help="local GSM8K file: defines task local_gsm8k (offline)")
    p.add_argument("--bbh-json", type=Path, help="local BIG-Bench Hard file: defines local_bbh (+ local_bbh_mc)")
    p.add_argument("--limit", type=int, help="evaluate only the first N documents of each task")
    p.add_argument("--num-fewshot", type=int, help="shots for every task (default: DS2's, else the task's own)")
    p.add_argument("--max-gen-toks", type=int, default=256, help="generation cap of the local tasks (tokens)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-samples", action="store_true", help="also write every document's response")
    p.add_argument("--out", type=Path, required=True, help="results JSON file")


def do_lm_eval(args: argparse.Namespace) -> int:
    from fedcurate.common.lm_eval_bridge import LmEvalError, local_task_dir, run_lm_eval, write_results
    from fedcurate.common.models.loading import ModelLoadError

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    try:
        include_path = args.include_path
        if args.gsm8k_jsonl or args.bbh_json:
            if include_path:
                raise LmEvalError("give either --include-path or --gsm8k-jsonl/--bbh-json, not both")
            tasks_dir = args.out.parent / f"{args.out.stem}.tasks"  # the YAMLs stay beside the results
            include_path = str(local_task_dir(tasks_dir, gsm8k_jsonl=args.gsm8k_jsonl, bbh_json=args.bbh_json,
                                              max_gen_toks=args.max_gen_toks))
        res = run_lm_eval(args.model, tasks=tasks, adapter=args.adapter, merge_adapter=not args.no_merge,
                          include_path=include_path, limit=args.limit, num_fewshot=args.num_fewshot,
                          batch_size=args.batch_size, device=args.device, dtype=args.dtype, seed=args.seed,
                          log_samples=args.log_samples)
    except (LmEvalError, ModelLoadError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    write_results(args.out, res)
    for task, figures in res["results"].items():
        print(f"{task}: " + ", ".join(f"{k} {v:.4f}" for k, v in figures.items() if "stderr" not in k))
    print(f"results: {args.out}")
    return 0


def judge_args(p: argparse.ArgumentParser) -> None:
    config_args(p, required=True)
    p.add_argument("--model", required=True, help="model under test: hub id, local path or `tiny`")
    p.add_argument("--adapter", type=Path, help="peft LoRA adapter directory applied to --model")
    p.add_argument("--baseline", help="pairwise: the baseline model (default: --model without --adapter)")
    p.add_argument("--baseline-adapter", type=Path, help="pairwise: peft adapter applied to --baseline")
    p.add_argument("--test", type=Path, default=None,
                   help="test set; its responses are the reference answers (default: evaluation.test-path)")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--mode", choices=("correct", "pairwise"), default="correct",
                   help="correct: 0/1 against the reference (default); pairwise: win rate against the baseline")
    p.add_argument("--judge", default="", help="name of the [[rating.raters]] entry that judges (default: the first)")
    p.add_argument("--prompt", type=Path, help="judge prompt file (default: built in; see configs/prompts/judge-*.txt)")
    p.add_argument("--method", choices=("auto", "probs", "generate"), default="auto",
                   help="probs: candidate-token probabilities; generate: parse a reply; auto: probs, else generate")
    p.add_argument("--max-new-tokens", type=int, default=256, help="answer length budget of the model under test")


def do_judge(args: argparse.Namespace) -> int:
    from fedcurate.common.judge_eval import headline, run_judge

    cfg = load_config(args.config, parse_overrides(args.overrides))
    result = run_judge(cfg, model=args.model, adapter=args.adapter, baseline=args.baseline,
                       baseline_adapter=args.baseline_adapter, test_path=args.test, out_dir=args.out,
                       mode=args.mode, judge=args.judge, prompt=args.prompt, method=args.method,
                       max_new_tokens=args.max_new_tokens)
    print(f"{headline(result)}; outputs in {args.out}/")
    return 0
