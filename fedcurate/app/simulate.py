"""Run the federated pipeline in Flower's simulation runtime (Ray), with the real ServerApp and ClientApp.

    fedcurate simulate --config configs/quickstart.toml --sites 2 --out runs/quickstart
    simulate(cfg, Path("runs/quickstart"), sites=2)                     # synthetic data, split per cfg
    simulate(cfg, Path("runs/mine"), sites=2, data_paths=[Path("a.jsonl"), Path("b.parquet")])

Without `data_paths`, synthetic mixed-quality data is generated from [synthetic] and split over the sites
per [federation] (`iid`, `dirichlet`, or `quality-skew` with one `site-noise-rates` entry per site):
    <out>/data/train.jsonl, anchor.jsonl, test.jsonl, site-0.jsonl, site-1.jsonl, ...
and the anchor and test sets serve as dynamics.anchor-path and evaluation.test-path unless those are set.
With `data_paths`, site i reads data_paths[i] in place (any format the loaders read).
The run directory is `<out>` itself: `<out>/server/<phase>/`, `<out>/sites/site-<i>/<phase>/`.
A failing ServerApp raises here; Ray is shut down in every case.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from flwr.serverapp import ServerApp

from fedcurate.client.client_app import app as client_app
from fedcurate.common.config import Config, from_flat, to_flat
from fedcurate.server.server_app import make_server_app
from fedcurate.simulations.partition import partition, partition_quality_skew, write_partitions
from fedcurate.simulations.synthetic import make_splits, write_splits

logger = logging.getLogger(__name__)

# Ray's own chatter (usage-stats notice, accelerator-override FutureWarning); errors still surface.
RAY_QUIET_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_DEDUP_LOGS": "1", "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0"}


def simulate(cfg: Config, out_dir: Path, sites: int, data_paths: list[Path] | None = None,
             data_dir: Path | None = None) -> Path:
    """Run every phase over `sites` simulated sites into the run directory `out_dir`; returns it.
    `data_dir` holds synthetic site files already written by `write_synthetic_sites` (the demo)."""
    out_dir = Path(out_dir).resolve()
    cfg = from_flat({**to_flat(cfg), "federation.sites": sites}, source=f"<config with --sites {sites}>")
    template, paths = None, None
    if data_paths is None:
        folder = Path(data_dir) if data_dir else out_dir / "data"
        template = str(folder / "site-{partition_id}.jsonl") if data_dir else str(write_synthetic_sites(cfg, folder))
        cfg = with_synthetic_defaults(cfg, folder)
    else:
        paths = [str(p) for p in _check_inputs(data_paths, sites)]
    server_app = make_server_app(cfg, out_dir, data_template=template, data_paths=paths)
    run_flower_simulation(server_app, sites)
    return out_dir


def with_synthetic_defaults(cfg: Config, data_dir: Path) -> Config:
    """Point an empty dynamics.anchor-path / evaluation.test-path at the generated anchor and test sets."""
    flat = to_flat(cfg)
    if not cfg.dynamics.anchor_path and cfg.synthetic.anchor_size:
        flat["dynamics.anchor-path"] = str(data_dir / "anchor.jsonl")
    if not cfg.evaluation.test_path and cfg.synthetic.test_size:
        flat["evaluation.test-path"] = str(data_dir / "test.jsonl")
    return from_flat(flat, source="<simulation config>")


def write_synthetic_sites(cfg: Config, data_dir: Path) -> Path:
    """Generate [synthetic] data, split it per [federation], write it; returns the site path template."""
    syn, fed = cfg.synthetic, cfg.federation
    splits = make_splits(syn.num_samples, syn.noise_rate, syn.anchor_size, syn.test_size, syn.seed)
    write_splits(splits, data_dir)
    if fed.partition == "quality-skew":
        if len(fed.site_noise_rates) != fed.sites:
            raise ValueError(f"federation.partition = 'quality-skew' needs one federation.site-noise-rates "
                             f"entry per site: got {len(fed.site_noise_rates)} for {fed.sites} sites")
        parts = partition_quality_skew(fed.sites, syn.num_samples // fed.sites, fed.site_noise_rates, fed.seed)
    else:
        parts = partition(splits.train, fed.sites, fed.partition, seed=fed.seed, alpha=fed.dirichlet_alpha)
    write_partitions(parts, data_dir)
    logger.info("synthetic data for %d sites (%s) in %s: sizes %s", fed.sites, fed.partition, data_dir,
                [len(p) for p in parts])
    return data_dir / "site-{partition_id}.jsonl"


def _check_inputs(data_paths: list[Path], sites: int) -> list[Path]:
    if len(data_paths) != sites:
        raise ValueError(f"{len(data_paths)} input path(s) for {sites} sites: give one input per site")
    missing = [str(p) for p in data_paths if not Path(p).exists()]
    if missing:
        raise FileNotFoundError(f"input data not found: {', '.join(missing)}")
    return [Path(p).resolve() for p in data_paths]


class _DropDeprecationNotice(logging.Filter):
    """run_simulation is deprecated in favour of `flwr run`, which reinstalls the app's dependencies
    (torch, transformers) on every run; we use it on purpose, so its notice is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "`run_simulation` function is deprecated" not in record.getMessage()


def run_flower_simulation(server_app: ServerApp, sites: int) -> None:
    """`flwr.simulation.run_simulation` with one CPU per site; re-raises ServerApp errors; stops Ray."""
    import ray
    from flwr.simulation import run_simulation

    for key, value in RAY_QUIET_ENV.items():
        os.environ.setdefault(key, value)
    saved_pythonpath = os.environ.get("PYTHONPATH")  # Flower's Ray backend overwrites it
    backend_config = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                      "init_args": {"num_cpus": max(1, min(sites, os.cpu_count() or 1)),
                                    "logging_level": logging.WARNING}}
    notice_filter = _DropDeprecationNotice()
    logging.getLogger("flwr").addFilter(notice_filter)
    try:
        run_simulation(server_app=server_app, client_app=client_app, num_supernodes=sites,
                       backend_config=backend_config)
    finally:
        logging.getLogger("flwr").removeFilter(notice_filter)
        if ray.is_initialized():
            ray.shutdown()
        if saved_pythonpath is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved_pythonpath
