"""The `fedcurate` command line: one entry point, one subcommand per job.

    fedcurate demo                     # synthetic data, tiny model, CPU, a few minutes
    fedcurate validate CONFIG          # check a config file, report every problem at once
    fedcurate select --config C --input FILE --out DIR
    fedcurate simulate --config C --sites N --out DIR
    fedcurate rate --config C --input FILE --out DIR
    fedcurate curate --config C --input FILE [--ratings FILE] --out DIR
    fedcurate proxy train|score ...
    fedcurate bench rating|curation|dynamics|proxy|quality [ARGS...]
    fedcurate certs|keygen|register|superlink|supernode|launch ...   # deployment (README's runbook)
    fedcurate report RUN_DIR                           # self-contained report.html with plots
    fedcurate compare RUN_DIR... --out DIR             # one table and plot across runs
    fedcurate judge --model M [--adapter A] --config C --out DIR [--mode correct|pairwise]
    fedcurate lm-eval --model M [--adapter A] --tasks ds2|local_gsm8k,... --out FILE   # extra `eval`
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import NamedTuple

from fedcurate.app.cli import deployment, results, run
from fedcurate.common.config import ConfigError
from fedcurate.common.data.sample import DataError

log = logging.getLogger("fedcurate")


class Command(NamedTuple):
    """One subcommand: its name, one-line help, an example command line, its arguments and its handler."""

    name: str
    help: str
    example: str
    arguments: Callable[[argparse.ArgumentParser], None]
    handler: Callable[[argparse.Namespace], int]


# The command table, one row per subcommand in `--help` order. Arguments and handlers live by job in
# run.py (the pipeline), deployment.py (the runbook) and results.py (reports, evaluation); handlers import
# the modules that do the work (server, client, models, the report) only when they run.
COMMANDS: tuple[Command, ...] = (
    Command("demo", "Run the CPU quickstart on synthetic mixed-quality data.",
            "fedcurate demo --out demo-out", run.demo_args, run.do_demo),
    Command("validate", "Check a config file; every problem is reported at once.",
            "fedcurate validate configs/centralized.toml", run.validate_args, run.do_validate),
    Command("select", "Score and select data in one process (centralized mode).",
            "fedcurate select --config configs/gsm8k.toml --input ../shared/data/gsm8k/train.jsonl --out runs/gsm8k",
            run.select_args, run.do_select),
    Command("simulate", "Run a multi-site federation on Flower's simulation runtime.",
            "fedcurate simulate --config configs/quickstart.toml --sites 4 --out runs/sim",
            run.simulate_args, run.do_simulate),
    Command("rate", "Rate samples with the configured LLM judges ([[rating.raters]]).",
            "fedcurate rate --config configs/rating-tiny.toml --input data.jsonl --out runs/rated",
            run.rate_args, run.do_rate),
    Command("curate", "DS2 score curation: raw ratings + embeddings in, curated and long-tail scores out.",
            "fedcurate curate --config configs/curation.toml --input data.jsonl --ratings runs/rated/ratings.parquet "
            "--out runs/curated", run.curate_args, run.do_curate),
    Command("proxy", "Train a cheap proxy head on LLM ratings, or score a whole corpus with it.",
            "fedcurate proxy train --input data.jsonl --ratings runs/rated/ratings.parquet --out runs/proxy\n"
            "  fedcurate proxy score --head runs/proxy/head --input corpus.jsonl --out runs/proxy/scores.parquet",
            run.proxy_args, run.do_proxy),
    Command("bench", "Run a benchmark; its last output line is a JSON object of figures.",
            "fedcurate bench rating --samples 64", run.bench_args, run.do_bench),
    Command("certs", "Make the CA (its key outside the SuperLink's directory) and the SuperLink's TLS certificate.",
            "fedcurate certs --out certs --ca-dir ca --san superlink.example.org",
            deployment.certs_args, deployment.do_certs),
    Command("keygen", "At a partner: make this site's SuperNode key pair; send only the .pub to the coordinator.",
            "fedcurate keygen --site hospital-a --out keys", deployment.keygen_args, deployment.do_keygen),
    Command("register", "At the coordinator: register a partner's public key under its site name.",
            "fedcurate register --certs certs --site hospital-a --key hospital-a.pub",
            deployment.register_args, deployment.do_register),
    Command("superlink", "Start the SuperLink: Fleet API only on the public port (nginx), Control and runtime "
            "on loopback, TLS + SuperNode auth, registered site keys, gated ServerApp.",
            "fedcurate superlink --certs certs --host 0.0.0.0 --port 8000 --state /srv/fedcurate",
            deployment.superlink_args, deployment.do_superlink),
    Command("supernode", "Start one site's SuperNode after checking key, CA and address; only the installed "
            "fedcurate ClientApp runs.",
            "fedcurate supernode --superlink superlink.example.org:8000 --ca ca.crt --key keys/hospital-a "
            "--site hospital-a --data /data/a.jsonl", deployment.supernode_args, deployment.do_supernode),
    Command("launch", "Submit a federated run, print phase progress, resubmit after a SuperLink restart; "
            "exit 0 only when it completed.",
            "fedcurate launch --state superlink-state --config configs/clues-federated.toml --run-dir runs/x",
            deployment.launch_args, deployment.do_launch),
    Command("report", "Write a self-contained HTML report of a run directory (plots embedded, no scripts).",
            "fedcurate report demo-out", results.report_args, results.do_report),
    Command("compare", "Compare runs: one table (Markdown, HTML, JSON) and one bar plot across them.",
            "fedcurate compare runs/bench-quality --out runs/compare", results.compare_args, results.do_compare),
    Command("lm-eval", "Evaluate a model (optionally + LoRA adapter) with lm-evaluation-harness (extra `eval`).",
            "fedcurate lm-eval --model tiny --tasks local_gsm8k,local_bbh --gsm8k-jsonl data/gsm8k/test.jsonl "
            "--bbh-json data/bbh/boolean_expressions.json --limit 50 --out runs/x/lm_eval.json\n"
            "  fedcurate lm-eval --model meta-llama/Llama-3.1-8B --adapter runs/x/server/train/adapter --tasks ds2 "
            "--batch-size 8 --device cuda --dtype bfloat16 --out runs/x/ds2.json",
            results.lm_eval_args, results.do_lm_eval),
    Command("judge", "Judge a model's answers to a test set with an LLM judge: 0/1 correctness against the "
            "references, or win rate against a baseline model (both answer orders).",
            "fedcurate judge --model tiny --adapter runs/x/server/train/adapter --test test.jsonl "
            "--config configs/rating-tiny.toml --out runs/judge --mode pairwise", results.judge_args, results.do_judge),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedcurate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for cmd in COMMANDS:
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help, epilog=f"example:\n  {cmd.example}",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(func=cmd.handler)
        cmd.arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")  # must be set before flwr is first imported
    logging.getLogger("flwr").propagate = False  # Flower logs through its own handler
    logging.getLogger("alembic").setLevel(logging.WARNING)
    from fedcurate.server.certs import CertError
    from fedcurate.server.deploy import DeployError
    from fedcurate.server.orchestrator import ConfigChangedError, PhaseError

    try:
        return int(args.func(args))
    except (ConfigError, DataError, FileNotFoundError, ConfigChangedError, PhaseError, DeployError,
            CertError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        print(f"error: disk full while writing {err.filename or 'an output'} ({err.strerror}). Every output "
              f"is written atomically, so what exists is complete; free space and re-run the same command to "
              f"resume.", file=sys.stderr)
        return 2
