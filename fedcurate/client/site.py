"""The site side of each phase, free of Flower: read the site's inputs, write its outputs, count.

    result = prepare("site-0", "/data/site-0.jsonl", Path("runs/x/sites/site-0"), cfg)

Every phase writes under `<site_dir>/<phase>/` and ends with an atomically written `DONE` marker.
prepare's marker records what its outputs were made from (`prepare_inputs`: the data path, the sha256 of
the data's content, the [data] settings); a re-run whose inputs are the same resumes (its stored stats are
returned), one whose data file (or path, or settings) changed since prepares again, overwriting the outputs.

prepare layout:
    <site_dir>/prepare/samples.jsonl   validated samples, normalised (`write_samples`)
    <site_dir>/prepare/rejects.jsonl   rows that failed validation (data.on-error = "skip")
    <site_dir>/prepare/stats.json      {site, num_samples, num_rejects, rejects_by_reason, seconds}
    <site_dir>/prepare/DONE            {finished, data_path, data_digest, data}, written last

Rejects are counted by *kind* (`reject_kind`): the reason cut at its first ':' or '(', with quoted
values and numbers removed, plus the column in parentheses when the reject names one, e.g.
"malformed JSON at column", "wrong type (response)", "missing required field (instruction)",
"duplicate id (id)". Counts thus group by cause, not by offending value, and no row content leaks into
a kind. Only these counts leave the site; rows and texts never do.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from fedcurate.common.config import Config, to_dict
from fedcurate.common.data.loaders import (
    data_digest,
    load_from_config,
    load_samples,
    write_rejects,
    write_samples,
)
from fedcurate.common.data.sample import Reject, Sample
from fedcurate.common.io import write_json
from fedcurate.common.protocol import layout

logger = logging.getLogger(__name__)

MAX_KIND_CHARS = 80  # a kind is a label, not a message: long reasons are cut


@dataclass(frozen=True)
class PrepareResult:
    """What `prepare` found at one site (the content of stats.json, plus whether it was resumed)."""

    site: str
    num_samples: int
    num_rejects: int
    rejects_by_reason: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    resumed: bool = False

    def to_stats(self) -> dict[str, Any]:
        """The stats.json form (without `resumed`, which describes this call, not the data)."""
        stats = asdict(self)
        del stats["resumed"]
        return stats


@dataclass(frozen=True)
class SiteLocation:
    """Who this site is and where its data and outputs are."""

    site: str
    data_path: str
    site_dir: Path
    test_path: str = ""  # the site's own held-out set (node config "test-path"), for the evaluate phase


def locate(node_config: dict[str, Any], record: dict[str, Any]) -> SiteLocation:
    """Resolve the site from its node config, falling back on the instruction's record (simulation).

    site:      node "site", else "site-<partition-id>"
    data_path: node "data-path", else record "data-paths"[partition-id], else record "data-template"
               formatted with `partition_id`
    site_dir:  node "run-dir" (a partner's own disk), else <record "run-dir">/sites/<site>
    test_path: node "test-path" (the site's held-out set), else "" (evaluation.site-test-path then applies)
    """
    partition = node_config.get("partition-id")
    if "site" in node_config:
        site = str(node_config["site"])
    elif partition is not None:
        site = f"site-{partition}"
    else:
        raise ValueError("this SuperNode has no site name: start it with --node-config "
                         "'site=\"<name>\" data-path=\"<file>\"'")
    if "data-path" in node_config:
        data_path = str(node_config["data-path"])
    elif "data-paths" in record and partition is not None:
        data_path = str(record["data-paths"][int(partition)])
    elif "data-template" in record and partition is not None:
        data_path = str(record["data-template"]).format(partition_id=partition)
    else:
        raise ValueError(f"site {site!r} has no data: start its SuperNode with --node-config "
                         "'data-path=\"<file>\"'")
    test_path = str(node_config.get("test-path", ""))
    if "run-dir" in node_config:
        return SiteLocation(site, data_path, Path(str(node_config["run-dir"])), test_path)
    return SiteLocation(site, data_path, layout.site_dir(Path(str(record["run-dir"])), site), test_path)


def reject_kind(reject: Reject) -> str:
    """Short label of a reject's cause, free of row values (rule in the module docstring)."""
    unquoted = re.sub(r"'[^']*'|\"[^\"]*\"|(?<![\w-])\d+(?![\w-])", " ", reject.reason)
    head = " ".join(re.split(r"[:(]", unquoted, maxsplit=1)[0].split()) or "unknown"
    head = head if len(head) <= MAX_KIND_CHARS else head[: MAX_KIND_CHARS - 3] + "..."
    return f"{head} ({reject.field})" if reject.field else head


def count_reject_kinds(rejects: list[Reject]) -> dict[str, int]:
    """{kind: count}, most frequent first (ties by name, so the output is deterministic)."""
    counts = Counter(reject_kind(r) for r in rejects)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def describe_rejects(rejects: list[Reject], limit: int = 20) -> str:
    """"file:line: kind" per reject (at most `limit`): locates bad rows without quoting their values,
    so it may leave the site in an error reply (the full `DataError` text stays in the site's log)."""
    lines = [f"  {r.file}:{r.line}: {reject_kind(r)}" for r in rejects[:limit]]
    more = [f"  ... and {len(rejects) - limit} more"] if len(rejects) > limit else []
    return "\n".join([f"{len(rejects)} bad input row(s):", *lines, *more])


def site_data_path(data_path: str, cfg: Config) -> str:
    """The data source prepare reads: the site's `data_path`, else data.path."""
    target = data_path or cfg.data.path
    if not target:
        raise ValueError("no input data: set data.path in the config or pass an input path")
    return str(target)


def prepare_inputs(data_path: str, cfg: Config, digest: str | None = None) -> dict[str, Any]:
    """What prepare's outputs are made from: the data source, the sha256 of its content (`data_digest`;
    computed unless given) and the [data] settings that shape loading (all but data.path)."""
    target = site_data_path(data_path, cfg)
    settings = {k: v for k, v in to_dict(cfg)["data"].items() if k != "path"}
    return {"data_path": target, "data_digest": digest or data_digest(target),
            "data": json.loads(json.dumps(settings, sort_keys=True, default=str))}  # as read back from DONE


def prepare_stale(site_dir: Path, inputs: dict[str, Any]) -> str:
    """Why the prepare outputs in `site_dir` are not those of `inputs` ("" when they are)."""
    done = layout.step_dir(site_dir, "prepare") / "DONE"
    if not done.is_file():
        return "prepare has not finished"
    try:
        stored = json.loads(done.read_text(encoding="utf-8"))
    except ValueError:  # a marker written before DONE recorded the inputs (a timestamp)
        stored = None
    if not isinstance(stored, dict) or "data_digest" not in stored:
        return "the cached prepare records no data digest"
    if stored["data_digest"] != inputs["data_digest"]:
        return "the data file changed since the cached prepare"
    if stored.get("data_path") != inputs["data_path"]:
        return "the data path changed since the cached prepare"
    if stored.get("data") != inputs["data"]:
        return "the [data] settings changed since the cached prepare"
    return ""


def prepare(site: str, data_path: str, site_dir: Path, cfg: Config, digest: str | None = None) -> PrepareResult:
    """Load and validate the site's data with `cfg.data`; write samples, rejects, stats and DONE.

    Resumes (returns the stored stats) when DONE records the same inputs (`prepare_inputs`; `digest`, the
    data's `data_digest`, is computed unless given); otherwise prepares again. The digest is taken before
    the data is read, so a file that changes while it is read is prepared again by the next run.
    Raises `DataError` (listing every bad row with file and line) when `data.on-error = "raise"`
    and a row is bad; nothing is marked done then, so a fixed file is picked up by the next run.
    """
    out = layout.step_dir(site_dir, "prepare")
    inputs = prepare_inputs(data_path, cfg, digest)
    if layout.step_done(site_dir, "prepare"):
        stale = prepare_stale(site_dir, inputs)
        if not stale:
            stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))
            logger.info("[%s] prepare already done (%s): %d samples, %d rejects",
                        site, out, stats["num_samples"], stats["num_rejects"])
            return PrepareResult(**stats, resumed=True)
        logger.info("[%s] %s (%s): preparing again", site, stale, out)
        (out / "DONE").unlink()  # not done until the new outputs are all written
    start = time.perf_counter()
    loaded = load_from_config(cfg.data, path=inputs["data_path"])
    write_samples(out / "samples.jsonl", loaded.samples)
    write_rejects(out / "rejects.jsonl", loaded.rejects)
    result = PrepareResult(site=site, num_samples=len(loaded.samples), num_rejects=len(loaded.rejects),
                           rejects_by_reason=count_reject_kinds(loaded.rejects),
                           seconds=round(time.perf_counter() - start, 3))
    write_json(out / "stats.json", result.to_stats())
    write_json(out / "DONE", {"finished": datetime.now(UTC).isoformat(timespec="seconds"), **inputs})
    logger.info("[%s] prepared %d samples, %d rejects %s in %.1f s", site, result.num_samples,
                result.num_rejects, result.rejects_by_reason or "", result.seconds)
    return result


def site_samples(site_dir: Path) -> list[Sample]:
    """The samples `prepare` validated at this site."""
    path = layout.site_samples_path(site_dir)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: the prepare step has not run at this site")
    return load_samples(path).samples


def labels_of(samples: Sequence[Sample]) -> np.ndarray | None:
    """Ground-truth `clean` flags (synthetic data), or None."""
    flags = [s.metadata.get("clean") for s in samples]
    if not flags or any(not isinstance(f, bool) for f in flags):
        return None
    return np.asarray(flags, dtype=bool)


def site_test_path(cfg: Config, where: SiteLocation) -> str:
    """The site's held-out set: node config test-path, else evaluation.site-test-path for this site ("" if none)."""
    return where.test_path or cfg.evaluation.site_test_path.replace("{site}", where.site)
