"""The `fedcurate` commands that run the pipeline: demo, validate, select, simulate, rate, curate, proxy, bench.

    fedcurate select --config configs/gsm8k.toml --input train.jsonl --out runs/gsm8k
    fedcurate simulate --config configs/quickstart.toml --sites 4 --out runs/sim

Per command: `<name>_args(parser)` adds its arguments, `do_<name>(args) -> exit code` runs it. Handlers import
the pipeline, the server's simulation runner and the benchmarks only when they run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fedcurate.app.cli.options import config_args, given, parse_overrides
from fedcurate.common.config import ConfigError, load_config

# bench name -> module with `main(argv) -> int`
BENCHES = {
    "rating": "fedcurate.simulations.bench_rating",
    "curation": "fedcurate.simulations.bench_curation",
    "dynamics": "fedcurate.simulations.bench_dynamics",
    "proxy": "fedcurate.simulations.bench_proxy",
    "quality": "fedcurate.simulations.bench_quality",
}


def demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("demo-out"), help="output directory")
    p.add_argument("--samples", type=int, default=None, help="synthetic training samples")


def do_demo(args: argparse.Namespace) -> int:
    from fedcurate.app.demo import run_demo

    report = run_demo(args.out, num_samples=args.samples)
    print(report.read_text(encoding="utf-8"))
    print(f"report: {report} (with plots: {report.with_suffix('.html')})")
    return 0


def validate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", type=Path)


def do_validate(args: argparse.Namespace) -> int:
    load_config(args.config)
    print(f"{args.config}: OK")
    return 0


def select_args(p: argparse.ArgumentParser) -> None:
    config_args(p)
    p.add_argument("--input", type=Path, help="data file (overrides data.path)")
    p.add_argument("--out", type=Path, help="run directory (overrides run.dir)")
    p.add_argument("--list-scorers", action="store_true", help="print the registered scorers and exit")


def do_select(args: argparse.Namespace) -> int:
    from fedcurate.common.scorers import SCORERS

    if args.list_scorers:
        for name in SCORERS.names():
            cls = SCORERS.get(name)
            doc = (cls.__doc__ or sys.modules[cls.__module__].__doc__ or "").strip().splitlines()[0]
            print(f"{name:12s} {doc}")
        return 0
    from fedcurate.app.pipeline import run_select

    cfg = load_config(args.config, parse_overrides(args.overrides))
    out = args.out or Path(cfg.run.dir)
    stats = run_select(cfg, out, args.input)
    print(f"kept {stats['kept']} of {stats['num_samples']} samples; outputs in {out}/")
    return 0


def simulate_args(p: argparse.ArgumentParser) -> None:
    config_args(p)
    p.add_argument("--sites", type=int, help="number of simulated sites (overrides federation.sites)")
    p.add_argument("--input", type=Path, nargs="+", help="one data file per site (default: synthetic data)")
    p.add_argument("--out", type=Path, help="run directory (overrides run.dir)")


def do_simulate(args: argparse.Namespace) -> int:
    from fedcurate.app.simulate import simulate

    overrides = parse_overrides(args.overrides)
    if args.sites:
        overrides["federation.sites"] = args.sites
    if not args.input:  # synthetic data: its anchor and test sets are generated into <out>/data
        data = Path(args.out or given(args.config, overrides, "run.dir") or "runs/fedcurate").resolve() / "data"
        for key, name in (("dynamics.anchor-path", "anchor.jsonl"), ("evaluation.test-path", "test.jsonl")):
            if not given(args.config, overrides, key):
                overrides[key] = str(data / name)
    cfg = load_config(args.config, overrides)
    out = args.out or Path(cfg.run.dir)
    simulate(cfg, out, cfg.federation.sites, args.input)
    print(f"simulation finished; outputs in {out}/")
    return 0


def rate_args(p: argparse.ArgumentParser) -> None:
    config_args(p, required=True)
    p.add_argument("--input", type=Path, help="data file (overrides data.path)")
    p.add_argument("--out", type=Path, help="output directory (overrides run.dir)")


def do_rate(args: argparse.Namespace) -> int:
    from fedcurate.common.rating.run import run_rate

    cfg = load_config(args.config, parse_overrides(args.overrides))
    out = args.out or Path(cfg.run.dir)
    stats = run_rate(cfg, args.input, out)
    print(f"rated {stats.get('num_samples', '?')} samples; outputs in {out}/")
    return 0


def curate_args(p: argparse.ArgumentParser) -> None:
    config_args(p)
    p.add_argument("--input", type=Path, help="data file (overrides data.path)")
    p.add_argument("--ratings", type=Path, help="ratings.parquet from `fedcurate rate` (default: "
                                                "curation.score-field, else rate with [rating])")
    p.add_argument("--out", type=Path, help="output directory (overrides run.dir)")


def do_curate(args: argparse.Namespace) -> int:
    from fedcurate.common.curation.run import run_curate

    cfg = load_config(args.config, parse_overrides(args.overrides))
    out = args.out or Path(cfg.run.dir)
    stats = run_curate(cfg, args.input, out, args.ratings)
    print(f"curated {stats['num_samples']} samples: {stats['flagged']} flagged, {stats['changed']} changed; "
          f"report in {out}/report/")
    return 0


def proxy_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("train", "score"))
    config_args(p)
    p.add_argument("--input", type=Path, help="data file (overrides data.path)")
    p.add_argument("--ratings", type=Path, help="train: ratings.parquet from `fedcurate rate`")
    p.add_argument("--column", default="rating", help="train: rating column to learn (default: rating)")
    p.add_argument("--head", type=Path, help="score: the trained head directory")
    p.add_argument("--threshold", type=float, help="train: F1 threshold (default 3); score: keep-filter threshold")
    p.add_argument("--out", type=Path, required=True, help="train: output directory; score: output Parquet file")


def do_proxy(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, parse_overrides(args.overrides))
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


def bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", choices=sorted(BENCHES), help="which benchmark")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments of that benchmark (see its --help)")


def do_bench(args: argparse.Namespace) -> int:
    import importlib

    module = importlib.import_module(BENCHES[args.name])
    return int(module.main(args.args) or 0)
