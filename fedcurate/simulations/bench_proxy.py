"""Benchmark of `fedcurate proxy score`: flat peak memory in the corpus size, throughput, kill and resume.

Command: python -m fedcurate.simulations.bench_proxy [--sizes 50000,200000] [--chunk-size 4096]
[--budget-s 900] [--work DIR] (`fedcurate bench proxy`). Steps:
1. synthetic mixed-quality samples (`generate_clean` + 40 % `corrupt`), written as JSONL corpora that are
   prefixes of one another; a head trained by `proxy_train` on separate samples rated by a simulated judge
   (clean 4 +- 1, corrupted 1 +- 1);
2. throughput: `proxy_score` of a small corpus in a subprocess (samples/s after start-up);
3. per size, `proxy_score` in its own subprocess: wall time, peak RSS (the child's ru_maxrss) and the
   resident memory sampled every 0.5 s against progress (rows recorded in the manifest); a size whose
   estimated time exceeds --budget-s is skipped with its estimate;
4. kill and resume: `proxy_score` of the --resume-size corpus, SIGKILLed once half its rows are recorded,
   then run again to the end; its output is compared with the uninterrupted run of the first size (the
   resume corpus is its prefix, so every full chunk is computed identically): same ids in order, no
   duplicate, max |score difference|, equal int_scores.
The last stdout line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fedcurate.common.config import load_config
from fedcurate.common.io import write_json

logger = logging.getLogger(__name__)
THRESHOLD = 3.0


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def work_score(head: str, data: str, out: str, chunk_size: int) -> dict[str, Any]:
    """One `proxy_score` run (the function behind `fedcurate proxy score`)."""
    from fedcurate.common.proxy.scoring import proxy_score

    t0 = time.perf_counter()
    stats = proxy_score(load_config(), head, data, out, THRESHOLD, chunk_size=chunk_size, progress=False)
    return {"wall_s": round(time.perf_counter() - t0, 2), "peak_rss_mib": round(_peak_rss_mib(), 1),
            "scored": stats["scored"], "kept": stats["kept"], "resumed_after_parts": stats["resumed_after_parts"],
            "scoring_s": stats["seconds_this_run"], "samples_per_s": stats["samples_per_s_this_run"]}


def prepare(work: Path, sizes: list[int], train_n: int, seed: int) -> Path:
    """Write corpus-<n>.jsonl for every size (prefixes of one corpus) and train the head; returns its folder.

    What an earlier run left in `work` with the same seed is reused (`prepared.json`), so a measurement
    can be repeated on the same files.
    """
    from fedcurate.common.data.loaders import write_samples
    from fedcurate.common.proxy.train import proxy_train
    from fedcurate.simulations.synthetic import corrupt, generate_clean

    marker = work / "prepared.json"
    before = json.loads(marker.read_text()) if marker.exists() else {}
    if before.get("seed") != seed or before.get("train") != train_n:
        before = {}
    missing = sorted(n for n in set(sizes) if n not in before.get("sizes", []) or not (work / f"corpus-{n}.jsonl").exists())
    if missing:
        samples = corrupt(generate_clean(max(sizes), seed), 0.4, seed)
        for n in missing:
            write_samples(work / f"corpus-{n}.jsonl", samples[:n])
        del samples
    head = work / "proxy" / "head"
    if not before or not (head / "head.json").exists():
        train = corrupt(generate_clean(train_n, seed + 1, id_prefix="t"), 0.4, seed + 1)
        rng = np.random.default_rng(seed)
        ratings = [float(np.clip((4 if s.metadata["clean"] else 1) + rng.integers(-1, 2), 0, 5)) for s in train]
        write_samples(work / "train.jsonl", train)
        pq.write_table(pa.table({"id": [s.id for s in train], "rating": ratings}), work / "ratings.parquet")
        stats = proxy_train(load_config(), work / "train.jsonl", work / "ratings.parquet", work / "proxy")
        logger.info("bench: head validation %s",
                    {k: stats["metrics"]["validation"][k] for k in ("mse", "constant_mse", "f1")})
    sizes_done = sorted(set(before.get("sizes", [])) | set(sizes))
    write_json(marker, {"seed": seed, "train": train_n, "sizes": sizes_done})
    return head


def _spawn(spec: dict[str, Any], manifest: Path, kill_at_rows: int | None = None) -> dict[str, Any]:
    """Run a worker in a fresh interpreter, sampling its RSS and progress; SIGKILL it at `kill_at_rows`."""
    proc = subprocess.Popen([sys.executable, "-m", "fedcurate.simulations.bench_proxy", "--worker", json.dumps(spec)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    trace: list[tuple[float, int, float]] = []  # (seconds, rows recorded, VmRSS MiB)
    t0 = time.perf_counter()
    rows = 0
    while proc.poll() is None:
        rows = max(rows, _rows(manifest))  # the manifest disappears after the final merge
        trace.append((round(time.perf_counter() - t0, 1), rows, _vmrss_mib(proc.pid)))
        if kill_at_rows is not None and rows >= kill_at_rows:
            proc.kill()
            proc.wait()
            return {"killed_at_rows": rows, "trace": trace}
        time.sleep(0.5)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"bench worker {spec} failed:\n{err[-4000:]}")
    return {**json.loads(out.strip().splitlines()[-1]), "trace": trace}


def _rows(manifest: Path) -> int:
    try:
        return int(json.loads(manifest.read_text())["totals"]["rows"])
    except (OSError, ValueError, KeyError):
        return 0


def _vmrss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def _rss_by_progress(trace: list[tuple[float, int, float]], n: int) -> dict[str, float]:
    """Largest RSS seen until 25/50/75/100 % of the rows were recorded."""
    out = {}
    for q in (0.25, 0.5, 0.75, 1.0):
        seen = [rss for _, rows, rss in trace if rows <= q * n]
        out[f"{int(q * 100)}%"] = round(max(seen), 1) if seen else 0.0
    return out


def _score(work: Path, head: Path, n: int, chunk: int, tag: str, kill_at: int | None = None,
           fresh: bool = True) -> dict[str, Any]:
    """`proxy_score` of corpus-<n> in a subprocess; `fresh` removes what an earlier run left (else it resumes)."""
    from fedcurate.common.proxy.scoring import output_paths

    out = work / f"scores-{tag}.parquet"
    if fresh:
        for path in output_paths(out).values():
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
    spec = {"kind": "score", "head": str(head), "data": str(work / f"corpus-{n}.jsonl"), "out": str(out),
            "chunk_size": chunk}
    return _spawn(spec, Path(f"{out}.parts") / "manifest.json", kill_at)


def _resume_check(work: Path, head: Path, n: int, ref_tag: str, chunk: int) -> dict[str, Any]:
    killed = _score(work, head, n, chunk, "resume", kill_at=n // 2)
    resumed = _score(work, head, n, chunk, "resume", fresh=False)
    got = pq.read_table(work / "scores-resume.parquet").to_pydict()
    ref = pq.read_table(work / f"scores-{ref_tag}.parquet").slice(0, n).to_pydict()
    return {"n": n, "killed_at_rows": killed["killed_at_rows"], "resumed_after_parts": resumed["resumed_after_parts"],
            "rows": len(got["id"]), "duplicate_ids": len(got["id"]) - len(set(got["id"])),
            "ids_equal_uninterrupted": got["id"] == ref["id"],
            "int_scores_equal": got["int_score"] == ref["int_score"],
            "max_abs_score_diff": float(np.max(np.abs(np.subtract(got["score"], ref["score"])))),
            "resume_wall_s": resumed["wall_s"]}


def run(sizes: list[int], chunk: int, train_n: int, throughput_n: int, resume_n: int, budget_s: float,
        work: Path, seed: int) -> dict[str, Any]:
    """Every measurement (see the module docstring)."""
    t0 = time.perf_counter()
    head = prepare(work, [n for n in (*sizes, throughput_n, resume_n) if n > 0], train_n, seed)
    report: dict[str, Any] = {"cpus": os.cpu_count(), "chunk_size": chunk, "threshold": THRESHOLD,
                              "prepare_s": round(time.perf_counter() - t0, 1)}
    probe = _score(work, head, throughput_n, chunk, "throughput")
    rate = probe["samples_per_s"]
    report["throughput"] = {"n": throughput_n, "samples_per_s": rate, "wall_s": probe["wall_s"],
                            "startup_s": round(probe["wall_s"] - probe["scoring_s"], 1),
                            "peak_rss_mib": probe["peak_rss_mib"]}
    report["runs"] = {}
    for n in sizes:
        estimate = n / rate
        if estimate > budget_s:
            report["runs"][str(n)] = {"skipped": f"estimated {estimate:.0f} s > budget {budget_s:.0f} s"}
            continue
        r = _score(work, head, n, chunk, str(n))
        rate = r["samples_per_s"] or rate  # a long run measures the rate better than the probe
        report["runs"][str(n)] = {"wall_s": r["wall_s"], "samples_per_s": r["samples_per_s"],
                                  "peak_rss_mib": r["peak_rss_mib"], "rss_mib_by_progress": _rss_by_progress(r["trace"], n),
                                  "kept": r["kept"]}
        logger.info("bench: %d -> %s", n, report["runs"][str(n)])
    done = [n for n in sizes if "peak_rss_mib" in report["runs"][str(n)]]
    if len(done) >= 2:
        lo, hi = report["runs"][str(done[0])], report["runs"][str(done[-1])]
        report["peak_rss_growth_mib"] = round(hi["peak_rss_mib"] - lo["peak_rss_mib"], 1)
        report["peak_rss_ratio"] = round(hi["peak_rss_mib"] / lo["peak_rss_mib"], 3)
    if done and 0 < resume_n <= done[0]:
        report["resume"] = _resume_check(work, head, resume_n, str(done[0]), chunk)
    report["total_s"] = round(time.perf_counter() - t0, 1)
    return report


def main(argv: list[str] | None = None) -> int:
    """Entry point of `fedcurate bench proxy`."""
    parser = argparse.ArgumentParser(prog="fedcurate bench proxy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="50000,200000", help="comma-separated corpus sizes, ascending")
    parser.add_argument("--chunk-size", type=int, default=4096)
    parser.add_argument("--train", type=int, default=2000, help="rated samples the head is trained on")
    parser.add_argument("--throughput-sample", type=int, default=3000, help="corpus size of the throughput probe")
    parser.add_argument("--resume-size", type=int, default=20000, help="corpus killed and resumed (<= first size; 0: no resume check)")
    parser.add_argument("--budget-s", type=float, default=900.0, help="skip a size estimated to take longer")
    parser.add_argument("--work", type=Path, default=None, help="working directory (default: a temporary one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.worker:
        spec = json.loads(args.worker)
        spec.pop("kind")
        result = work_score(**spec)
    else:
        sizes = sorted(int(s) for s in args.sizes.split(","))
        with tempfile.TemporaryDirectory(prefix="bench-proxy-") as tmp:
            work = args.work or Path(tmp)
            work.mkdir(parents=True, exist_ok=True)
            result = run(sizes, args.chunk_size, args.train, args.throughput_sample, args.resume_size,
                         args.budget_s, work, args.seed)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
