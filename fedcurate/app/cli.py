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
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fedcurate.common.config import ConfigError, load_config
from fedcurate.common.data.sample import DataError

log = logging.getLogger("fedcurate")


def _add(sub: argparse._SubParsersAction, name: str, help: str, example: str,
         func: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, description=help, epilog=f"example:\n  {example}",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=func)
    return p


def _config_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("--config", type=Path, required=required, help="TOML experiment config")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value (TOML syntax for the value), repeatable")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedcurate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _add(sub, "demo", "Run the CPU quickstart on synthetic mixed-quality data.",
             "fedcurate demo --out demo-out", _cmd_demo)
    p.add_argument("--out", type=Path, default=Path("demo-out"), help="output directory")
    p.add_argument("--samples", type=int, default=None, help="synthetic training samples")

    p = _add(sub, "validate", "Check a config file; every problem is reported at once.",
             "fedcurate validate configs/centralized.toml", _cmd_validate)
    p.add_argument("config", type=Path)

    p = _add(sub, "select", "Score and select data in one process (centralized mode).",
             "fedcurate select --config configs/gsm8k.toml --input ../shared/data/gsm8k/train.jsonl --out runs/gsm8k",
             _cmd_select)
    _config_args(p)
    p.add_argument("--input", type=Path, help="data file (overrides data.path)")
    p.add_argument("--out", type=Path, help="run directory (overrides run.dir)")
    p.add_argument("--list-scorers", action="store_true", help="print the registered scorers and exit")

    p = _add(sub, "simulate", "Run a multi-site federation on Flower's simulation runtime.",
             "fedcurate simulate --config configs/quickstart.toml --sites 4 --out runs/sim", _cmd_simulate)
    _config_args(p)
    p.add_argument("--sites", type=int, help="number of simulated sites (overrides federation.sites)")
    p.add_argument("--input", type=Path, nargs="+", help="one data file per site (default: synthetic data)")
    p.add_argument("--out", type=Path, help="run directory (overrides run.dir)")

    p = _add(sub, "rate", "Rate samples with the configured LLM judges ([[rating.raters]]).",
             "fedcurate rate --config configs/rating-tiny.toml --input data.jsonl --out runs/rated", _cmd_rate)
    _config_args(p, required=True)
    p.add_argument("--input", type=Path, help="data file (overrides data.path)")
    p.add_argument("--out", type=Path, help="output directory (overrides run.dir)")

    p = _add(sub, "curate", "DS2 score curation: raw ratings + embeddings in, curated and long-tail scores out.",
             "fedcurate curate --config configs/curation.toml --input data.jsonl --ratings runs/rated/ratings.parquet "
             "--out runs/curated", _cmd_curate)
    _config_args(p)
    p.add_argument("--input", type=Path, help="data file (overrides data.path)")
    p.add_argument("--ratings", type=Path, help="ratings.parquet from `fedcurate rate` (default: "
                                                "curation.score-field, else rate with [rating])")
    p.add_argument("--out", type=Path, help="output directory (overrides run.dir)")

    p = _add(sub, "proxy", "Train a cheap proxy head on LLM ratings, or score a whole corpus with it.",
             "fedcurate proxy train --input data.jsonl --ratings runs/rated/ratings.parquet --out runs/proxy\n"
             "  fedcurate proxy score --head runs/proxy/head --input corpus.jsonl --out runs/proxy/scores.parquet",
             _cmd_proxy)
    p.add_argument("action", choices=("train", "score"))
    _config_args(p)
    p.add_argument("--input", type=Path, help="data file (overrides data.path)")
    p.add_argument("--ratings", type=Path, help="train: ratings.parquet from `fedcurate rate`")
    p.add_argument("--column", default="rating", help="train: rating column to learn (default: rating)")
    p.add_argument("--head", type=Path, help="score: the trained head directory")
    p.add_argument("--threshold", type=float, help="train: F1 threshold (default 3); score: keep-filter threshold")
    p.add_argument("--out", type=Path, required=True, help="train: output directory; score: output Parquet file")

    p = _add(sub, "bench", "Run a benchmark; its last output line is a JSON object of figures.",
             "fedcurate bench rating --samples 64", _cmd_bench)
    p.add_argument("name", choices=sorted(BENCHES), help="which benchmark")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments of that benchmark (see its --help)")
    _deployment_parsers(sub)
    return parser


def _deployment_parsers(sub: argparse._SubParsersAction) -> None:
    p = _add(sub, "certs", "Make the CA (its key outside the SuperLink's directory) and the SuperLink's TLS certificate.",
             "fedcurate certs --out certs --ca-dir ca --san superlink.example.org", _cmd_certs)
    p.add_argument("--out", type=Path, required=True, help="the SuperLink's directory: ca.crt, server.pem/.key, sites/")
    p.add_argument("--ca-dir", type=Path, default=None,
                   help="where the CA key lives (default: ca/ beside --out; reused if present; keep it offline)")
    p.add_argument("--san", default="", help="comma-separated DNS names / IPs the SuperNodes dial")
    p.add_argument("--sites", default="", help="with --demo: make these partners' key pairs here too")
    p.add_argument("--demo", action="store_true",
                   help="single-machine trials only: write partner private keys (demo-keys/ beside --out)")

    p = _add(sub, "keygen", "At a partner: make this site's SuperNode key pair; send only the .pub to the coordinator.",
             "fedcurate keygen --site hospital-a --out keys", _cmd_keygen)
    p.add_argument("--site", required=True, help="this site's name, as the coordinator will register it")
    p.add_argument("--out", type=Path, default=Path("keys"), help="directory for <site> and <site>.pub (default keys/)")

    p = _add(sub, "register", "At the coordinator: register a partner's public key under its site name.",
             "fedcurate register --certs certs --site hospital-a --key hospital-a.pub", _cmd_register)
    p.add_argument("--certs", type=Path, required=True, help="the SuperLink's directory from `fedcurate certs`")
    p.add_argument("--site", required=True, help="the partner's site name")
    p.add_argument("--key", type=Path, required=True, help="the partner's public key (.pub from `fedcurate keygen`)")
    p.add_argument("--replace", action="store_true", help="swap the key of an already registered site")

    p = _add(sub, "superlink", "Start the SuperLink: Fleet API only on the public port (nginx), Control and runtime "
             "on loopback, TLS + SuperNode auth, registered site keys, gated ServerApp.",
             "fedcurate superlink --certs certs --host 0.0.0.0 --port 8000 --state /srv/fedcurate", _cmd_superlink)
    p.add_argument("--certs", type=Path, help="directory from `fedcurate certs` (ca.crt, server.pem/.key, sites/)")
    p.add_argument("--host", default="127.0.0.1", help="public bind address (0.0.0.0 for remote partners)")
    p.add_argument("--port", type=int, default=8000, help="public port: the Fleet API, through nginx")
    p.add_argument("--internal-port", type=int, default=None,
                   help="loopback port of Flower's own SuperLink (Fleet+Control+runtime; default PORT+1)")
    p.add_argument("--state", type=Path, default=Path("superlink-state"),
                   help="SuperLink database, site registry, SuperExec secret, proxy files, `flwr` profile (FLWR_HOME)")
    p.add_argument("--admin-network", action="append", default=[], metavar="CIDR",
                   help="also let this network reach the Control API through the public port (repeatable)")
    p.add_argument("--no-register", action="store_true", help="do not register <certs>/sites/*.pub")
    p.add_argument("--no-proxy", action="store_true",
                   help="serve Flower directly on HOST:PORT (Control API exposed: closed test networks only)")
    p.add_argument("--insecure", action="store_true", help="no TLS, no authentication, no proxy (closed test networks)")

    p = _add(sub, "supernode", "Start one site's SuperNode after checking key, CA and address; only the installed "
             "fedcurate ClientApp runs.",
             "fedcurate supernode --superlink superlink.example.org:8000 --ca ca.crt --key keys/hospital-a "
             "--site hospital-a --data /data/a.jsonl", _cmd_supernode)
    p.add_argument("--superlink", required=True, help="HOST:PORT of the SuperLink")
    p.add_argument("--ca", type=Path, help="the coordinator's ca.crt")
    p.add_argument("--key", type=Path, help="this site's private key (from `fedcurate keygen`)")
    p.add_argument("--site", required=True, help="this site's name")
    p.add_argument("--data", required=True, help="this site's data file")
    p.add_argument("--run-dir", type=Path, default=None,
                   help="this site's output directory (default: ./fedcurate-site-SITE; never a path the coordinator sends)")
    p.add_argument("--test", help="this site's own held-out set, for evaluation.at-sites (never leaves the site)")
    p.add_argument("--port", type=int, default=9094, help="local Runtime API port (one per SuperNode on a host)")
    p.add_argument("--pin-app-hash", action="append", default=[], metavar="SHA256",
                   help="run only app bundles with this sha256 (repeatable; default: any bundle of the installed "
                        "fedcurate version -- its code is never run either way)")
    p.add_argument("--insecure", action="store_true", help="no TLS, no authentication (closed test networks)")

    p = _add(sub, "launch", "Submit a federated run, print phase progress, resubmit after a SuperLink restart; "
             "exit 0 only when it completed.",
             "fedcurate launch --state superlink-state --config configs/clues-federated.toml --run-dir runs/x",
             _cmd_launch)
    p.add_argument("--state", type=Path, default=Path("superlink-state"),
                   help="FLWR_HOME holding the connection profile `fedcurate superlink` wrote")
    p.add_argument("--config", type=Path, required=True, help="experiment config, readable by the SuperLink")
    p.add_argument("--run-dir", type=Path, required=True, help="server run directory, at the SuperLink")
    p.add_argument("--reconnect-timeout", type=float, default=600.0,
                   help="seconds to wait for a lost SuperLink before giving up (exit 4)")
    p.add_argument("--resubmits", type=int, default=3, help="resubmissions after SuperLink restarts (default 3)")
    p.add_argument("--poll", type=float, default=5.0, help="seconds between status checks")

    p = _add(sub, "report", "Write a self-contained HTML report of a run directory (plots embedded, no scripts).",
             "fedcurate report demo-out", _cmd_report)
    p.add_argument("run_dir", type=Path, help="a run directory (the --out of select, simulate or demo)")
    p.add_argument("--out", type=Path, default=None, help="HTML file to write (default RUN_DIR/report.html)")

    p = _add(sub, "compare", "Compare runs: one table (Markdown, HTML, JSON) and one bar plot across them.",
             "fedcurate compare runs/bench-quality --out runs/compare", _cmd_compare)
    p.add_argument("run_dirs", type=Path, nargs="+",
                   help="run directories, or folders of runs (e.g. a quality benchmark's --out)")
    p.add_argument("--out", type=Path, required=True, help="folder for comparison.{md,html,json,png}")
    p.add_argument("--labels", nargs="+", default=None, help="one label per RUN_DIR (default: folder names)")

    p = _add(sub, "lm-eval", "Evaluate a model (optionally + LoRA adapter) with lm-evaluation-harness (extra `eval`).",
             "fedcurate lm-eval --model tiny --tasks local_gsm8k,local_bbh --gsm8k-jsonl data/gsm8k/test.jsonl "
             "--bbh-json data/bbh/boolean_expressions.json --limit 50 --out runs/x/lm_eval.json\n"
             "  fedcurate lm-eval --model meta-llama/Llama-3.1-8B --adapter runs/x/server/train/adapter --tasks ds2 "
             "--batch-size 8 --device cuda --dtype bfloat16 --out runs/x/ds2.json", _cmd_lm_eval)
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

    p = _add(sub, "judge", "Judge a model's answers to a test set with an LLM judge: 0/1 correctness against the "
             "references, or win rate against a baseline model (both answer orders).",
             "fedcurate judge --model tiny --adapter runs/x/server/train/adapter --test test.jsonl "
             "--config configs/rating-tiny.toml --out runs/judge --mode pairwise", _cmd_judge)
    _config_args(p, required=True)
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


def _cmd_certs(args: argparse.Namespace) -> int:
    from fedcurate.server.certs import make_certs

    made = make_certs(args.out, [h for h in args.san.split(",") if h], [s for s in args.sites.split(",") if s],
                      ca_dir=args.ca_dir, demo=args.demo)
    print(f"CA: {made['ca']} (give to every partner); CA key: {made['ca_key']} (keep offline; the SuperLink "
          f"never reads it)\nSuperLink: {made['server_cert']}, {made['server_key']}")
    for site, key in made["site_keys"].items():  # type: ignore[union-attr]
        print(f"demo site {site}: private key {key} (single-machine trial only), public key registered")
    if not made["site_keys"]:
        print(f"next: each partner runs `fedcurate keygen --site NAME` and sends NAME.pub; register it with "
              f"`fedcurate register --certs {args.out} --site NAME --key NAME.pub`")
    return 0


def _cmd_keygen(args: argparse.Namespace) -> int:
    from fedcurate.server.certs import fingerprint, load_public_key, make_site_key, public_path

    private = make_site_key(args.out, args.site)
    public = public_path(private)
    print_ = fingerprint(load_public_key(public))
    print(public.read_text(encoding="utf-8").strip())
    print(f"site {args.site}: private key {private} (mode 0600; never send it). Send {public} to the coordinator "
          f"and read them its fingerprint over another channel: {print_}")
    return 0


def _cmd_register(args: argparse.Namespace) -> int:
    from fedcurate.server.certs import fingerprint, load_public_key, register_site

    dest = register_site(args.certs, args.site, args.key, replace=args.replace)
    print_ = fingerprint(load_public_key(dest))
    print(f"site {args.site}: key {print_} registered in {dest}; compare the fingerprint with the partner's. "
          f"`fedcurate superlink` registers it with Flower at its next start.")
    return 0


def _cmd_superlink(args: argparse.Namespace) -> int:
    from fedcurate.server import deploy

    if args.insecure:
        logging.getLogger(__name__).warning(deploy.INSECURE_WARNING + " The Control API is exposed as well.")
    elif args.no_proxy:
        logging.getLogger(__name__).warning("--no-proxy: Flower's Control API (run, stop, register nodes) answers "
                                            "anyone who reaches %s:%d. Closed test networks only.", args.host,
                                            args.port)
    return deploy.serve_superlink(args.certs, args.host, args.port, args.state, args.insecure,
                                  internal_port=args.internal_port, proxy=not (args.no_proxy or args.insecure),
                                  admin_networks=tuple(args.admin_network), register=not args.no_register,
                                  ready=lambda text: print(text, flush=True))


def _cmd_supernode(args: argparse.Namespace) -> int:
    from fedcurate.server import deploy

    if args.insecure:
        logging.getLogger(__name__).warning(deploy.INSECURE_WARNING)
    run_dir = (args.run_dir or Path(f"fedcurate-site-{args.site}")).resolve()
    return deploy.serve_supernode(args.superlink, args.ca, args.key, args.site, args.data, run_dir,
                                  args.port, args.insecure, args.test, tuple(args.pin_app_hash))


def _cmd_launch(args: argparse.Namespace) -> int:
    from fedcurate.server import deploy
    from fedcurate.server.phases import PHASES

    cfg = load_config(args.config)  # every config problem now, not in the ServerApp
    last = cfg.run.stop_after or PHASES[-1]
    phases = PHASES[: PHASES.index(last) + 1]
    return deploy.follow_run(args.state, args.config, args.run_dir, phases, poll_s=args.poll,
                             reconnect_s=args.reconnect_timeout, resubmits=args.resubmits)


def _cmd_report(args: argparse.Namespace) -> int:
    from fedcurate.app.report import ReportError, write_report

    try:
        print(f"report: {write_report(args.run_dir, args.out)}")
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from fedcurate.app.report import ReportError, write_comparison

    try:
        html_path = write_comparison(args.run_dirs, args.out, args.labels)
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print((args.out / "comparison.md").read_text(encoding="utf-8"))
    print(f"comparison: {html_path}")
    return 0


def _cmd_lm_eval(args: argparse.Namespace) -> int:
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


def _cmd_judge(args: argparse.Namespace) -> int:
    from fedcurate.common.judge_eval import headline, run_judge

    cfg = load_config(args.config, _overrides(args.overrides))
    result = run_judge(cfg, model=args.model, adapter=args.adapter, baseline=args.baseline,
                       baseline_adapter=args.baseline_adapter, test_path=args.test, out_dir=args.out,
                       mode=args.mode, judge=args.judge, prompt=args.prompt, method=args.method,
                       max_new_tokens=args.max_new_tokens)
    print(f"{headline(result)}; outputs in {args.out}/")
    return 0


# bench name -> module with `main(argv) -> int`
BENCHES = {
    "rating": "fedcurate.simulations.bench_rating",
    "curation": "fedcurate.simulations.bench_curation",
    "dynamics": "fedcurate.simulations.bench_dynamics",
    "proxy": "fedcurate.simulations.bench_proxy",
    "quality": "fedcurate.simulations.bench_quality",
}


def _overrides(pairs: Sequence[str]) -> dict[str, object]:
    import tomllib

    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or "." not in key:
            raise ConfigError("--set", [f"{pair!r}: expected SECTION.KEY=VALUE"])
        try:
            out[key.strip()] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = value  # a bare word is a string
    return out


def _cmd_validate(args: argparse.Namespace) -> int:
    load_config(args.config)
    print(f"{args.config}: OK")
    return 0


def _cmd_select(args: argparse.Namespace) -> int:
    from fedcurate.common.scorers import SCORERS

    if args.list_scorers:
        for name in SCORERS.names():
            cls = SCORERS.get(name)
            doc = (cls.__doc__ or sys.modules[cls.__module__].__doc__ or "").strip().splitlines()[0]
            print(f"{name:12s} {doc}")
        return 0
    from fedcurate.common.pipeline import run_select

    cfg = load_config(args.config, _overrides(args.overrides))
    out = args.out or Path(cfg.run.dir)
    stats = run_select(cfg, out, args.input)
    print(f"kept {stats['kept']} of {stats['num_samples']} samples; outputs in {out}/")
    return 0


def _given(path: Path | None, overrides: dict[str, Any], dotted: str) -> Any:
    """A setting as the config file or an override gives it (None when neither does), before validation."""
    import tomllib

    if dotted in overrides:
        return overrides[dotted]
    if not path or not Path(path).exists():
        return None
    sec, _, key = dotted.partition(".")
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8")).get(sec, {}).get(key)
    except tomllib.TOMLDecodeError:
        return None  # load_config reports it


def _cmd_simulate(args: argparse.Namespace) -> int:
    from fedcurate.server.simulate import simulate

    overrides = _overrides(args.overrides)
    if args.sites:
        overrides["federation.sites"] = args.sites
    if not args.input:  # synthetic data: its anchor and test sets are generated into <out>/data
        data = Path(args.out or _given(args.config, overrides, "run.dir") or "runs/fedcurate").resolve() / "data"
        for key, name in (("dynamics.anchor-path", "anchor.jsonl"), ("evaluation.test-path", "test.jsonl")):
            if not _given(args.config, overrides, key):
                overrides[key] = str(data / name)
    cfg = load_config(args.config, overrides)
    out = args.out or Path(cfg.run.dir)
    simulate(cfg, out, cfg.federation.sites, args.input)
    print(f"simulation finished; outputs in {out}/")
    return 0


def _cmd_rate(args: argparse.Namespace) -> int:
    from fedcurate.common.rating.run import run_rate

    cfg = load_config(args.config, _overrides(args.overrides))
    out = args.out or Path(cfg.run.dir)
    stats = run_rate(cfg, args.input, out)
    print(f"rated {stats.get('num_samples', '?')} samples; outputs in {out}/")
    return 0


def _cmd_curate(args: argparse.Namespace) -> int:
    from fedcurate.common.curation.run import run_curate

    cfg = load_config(args.config, _overrides(args.overrides))
    out = args.out or Path(cfg.run.dir)
    stats = run_curate(cfg, args.input, out, args.ratings)
    print(f"curated {stats['num_samples']} samples: {stats['flagged']} flagged, {stats['changed']} changed; "
          f"report in {out}/report/")
    return 0


def _cmd_proxy(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, _overrides(args.overrides))
    if args.action == "train":
        from fedcurate.common.proxy.train import proxy_train

        if args.ratings is None:
            raise ConfigError("proxy train", ["--ratings FILE is required"])
        threshold = 3.0 if args.threshold is None else args.threshold
        report = proxy_train(cfg, args.input, args.ratings, args.out, column=args.column, threshold=threshold)
        print(json.dumps(report.get("metrics", {}).get("validation"), default=str))
        print(f"head and report in {args.out}/")
        return 0
    from fedcurate.common.proxy.scoring import proxy_score

    if args.head is None:
        raise ConfigError("proxy score", ["--head DIR is required"])
    stats = proxy_score(cfg, args.head, args.input, args.out, args.threshold)
    print(f"scored {stats['scored']} samples -> {args.out}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    import importlib

    module = importlib.import_module(BENCHES[args.name])
    return int(module.main(args.args) or 0)


def _cmd_demo(args: argparse.Namespace) -> int:
    from fedcurate.app.demo import run_demo

    report = run_demo(args.out, num_samples=args.samples)
    print(report.read_text(encoding="utf-8"))
    print(f"report: {report} (with plots: {report.with_suffix('.html')})")
    return 0


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


if __name__ == "__main__":
    sys.exit(main())
