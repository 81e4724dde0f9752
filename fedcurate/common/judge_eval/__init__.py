"""LLM-judge evaluation of a fine-tuned model: 0/1 correctness against the reference, or pairwise win rate.

    fedcurate judge --model tiny --adapter runs/x/train/adapter --test test.jsonl \\
        --config configs/rating-tiny.toml --out runs/judge --mode pairwise

    from fedcurate.common.judge_eval import generate_answers, judge_correctness, judge_pairwise, run_judge
    answers = generate_answers("tiny", samples, cfg.model, adapter="runs/x/train/adapter", max_new_tokens=64)
    result = judge_correctness(samples, answers, backend)                  # result.accuracy
    result = judge_pairwise(samples, answers, baseline_answers, backend)   # result.win_rate
    result = run_judge(cfg, model="tiny", test_path="test.jsonl", out_dir="runs/judge")  # both steps + files

One module per job; every public name is re-exported here:

    prompts.py   the judge's prompts (built-in or a checked user file), the parsers of its replies
    judging.py   asking the judge (candidate probabilities or generation), correctness and pairwise scoring
    run.py       the model under test's answers, the judge from the config, `run_judge` and its output files
"""

from fedcurate.common.judge_eval.judging import JudgeResult, ask_judge, judge_correctness, judge_pairwise
from fedcurate.common.judge_eval.prompts import (
    CANDIDATES,
    CORRECT_TEXT,
    DEFAULT_TEMPLATES,
    METHODS,
    MODES,
    OPTIONAL,
    PAIRWISE_TEXT,
    PLACEHOLDERS,
    Verdict,
    load_judge_template,
    parse_choice,
    parse_correct,
    render,
)
from fedcurate.common.judge_eval.run import (
    answer_with,
    generate_answers,
    headline,
    judge_rater,
    load_answerer,
    run_judge,
)

__all__ = [
    "CANDIDATES", "CORRECT_TEXT", "DEFAULT_TEMPLATES", "METHODS", "MODES", "OPTIONAL", "PAIRWISE_TEXT",
    "PLACEHOLDERS", "JudgeResult", "Verdict", "answer_with", "ask_judge", "generate_answers", "headline",
    "judge_correctness", "judge_pairwise", "judge_rater", "load_answerer", "load_judge_template",
    "parse_choice", "parse_correct", "render", "run_judge",
]
