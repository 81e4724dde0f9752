"""Self-contained HTML report of a run directory, and one comparison table across runs.

    fedcurate report runs/demo                         # -> runs/demo/report.html
    fedcurate compare runs/a runs/b --out runs/cmp     # -> runs/cmp/comparison.{html,md,json,png}
    fedcurate compare runs/bench-quality --out runs/cmp   # a folder of runs (a benchmark's --out): each one

    write_report(Path("runs/demo"))                    # returns the path of report.html
    write_comparison([Path("runs/a"), Path("runs/b")], Path("runs/cmp"), labels=["a", "b"])

The report reads only what the phases wrote (`run.json`, `server/<phase>/summary.json` + `DONE`,
`stats/*.json`, `sites/<site>/...`) and works for federated and centralized runs (one site, `local`) and for
runs that stopped early: a section whose phase did not run says "not run" and why. Its sections (stable
ids): overview, scores, transition, threshold, selection, training, communication, evaluation, privacy.
Every figure is a PNG embedded as a base64 data URI: one HTML file, no script, nothing fetched.
In a deployment the server's run directory has no `sites/`: the per-site score plots are then "not run".

The comparison writes, into the folder `out`: `comparison.md` (the table), `comparison.json` (its rows),
`comparison.png` (bars across runs: kept, precision of the kept set when ground truth is known, held-out
loss, token accuracy, exact match) and `comparison.html` (the table and the plot embedded), whose path it
returns.
"""

from __future__ import annotations

import html
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from fedcurate.app import report_plots as plots
from fedcurate.common import io

log = logging.getLogger(__name__)

PROGRESS_MIN_ITEMS = 8  # show a progress bar when reading or plotting at least this many sites or runs
NOT_SCORES = {"id", "score", "selected", "drop_reason", "clean"}


class ReportError(ValueError):
    """The path given is not a run directory, or one of its files cannot be read."""


# ---------------------------------------------------------------- reading a run directory
@dataclass
class RunView:
    """What a run directory holds: settings, each phase's state and summary, the sites."""

    root: Path
    settings: dict[str, Any]
    status: dict[str, str]  # phase -> "done" | "skipped" | "unfinished" | "not run"
    summaries: dict[str, dict[str, Any]]  # finished phases only (skipped ones too)
    sites: list[str]

    def done(self, phase: str) -> dict[str, Any] | None:
        """The summary of a phase that ran (None when it did not run or was skipped)."""
        return self.summaries[phase] if self.status[phase] == "done" else None

    def why_missing(self, phase: str) -> str:
        state = self.status[phase]
        if state == "skipped":
            return f"the {phase} phase was skipped: {self.summaries[phase]['skipped']}"
        last = next((p for p in reversed(list(self.status)) if self.status[p] in ("done", "skipped")), None)
        after = f" (the run stopped after {last})" if last else " (no phase has finished)"
        return f"the {phase} phase {'started but did not finish' if state == 'unfinished' else 'has not run'}{after}"

    def stats(self, name: str) -> Any:
        """stats/<name>.json, or None."""
        return read_json(self.root / "stats" / f"{name}.json", missing_ok=True)

    def site_dir(self, site: str) -> Path:
        return self.root / "sites" / site


def read_json(path: Path, missing_ok: bool = False) -> Any:
    if missing_ok and not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ReportError(f"{path}: cannot read it as JSON ({err})") from err


def is_run_dir(path: Path) -> bool:
    from fedcurate.server.phases import PHASES

    return (path / "run.json").is_file() or any((path / "server" / p / "summary.json").is_file() for p in PHASES)


def load_run(path: Path) -> RunView:
    """Read a run directory; ReportError naming the path if it is not one."""
    from fedcurate.server.phases import PHASES

    root = Path(path)
    if not root.is_dir() or not is_run_dir(root):
        what = "does not exist" if not root.exists() else "is not a run directory"
        raise ReportError(f"{root} {what}: expected run.json or server/<phase>/summary.json in it (the --out of "
                          "fedcurate select, simulate or demo)")
    settings = (read_json(root / "run.json", missing_ok=True) or {}).get("settings", {})
    status, summaries = {}, {}
    for phase in PHASES:
        folder = root / "server" / phase
        if (folder / "DONE").is_file():
            summaries[phase] = read_json(folder / "summary.json")
            status[phase] = "skipped" if "skipped" in summaries[phase] else "done"
        else:
            status[phase] = "unfinished" if folder.is_dir() else "not run"
    sites = sorted(p.name for p in (root / "sites").iterdir() if p.is_dir()) if (root / "sites").is_dir() else []
    for listed in (summaries.get("prepare", {}).get("sites", {}), summaries.get("select", {}).get("sites", {})):
        sites = sorted(set(sites) | set(listed))
    return RunView(root, settings, status, summaries, sites)


# ---------------------------------------------------------------- HTML pieces
def fmt(v: Any) -> str:
    """A cell: n/a for missing or NaN, integers as they are, floats to 4 significant digits."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, bool | np.bool_):
        return "yes" if v else "no"
    if isinstance(v, int | np.integer):
        return str(v)
    if isinstance(v, float | np.floating):
        return f"{float(v):.4g}"
    if isinstance(v, list | tuple):
        return ", ".join(fmt(x) for x in v)
    return str(v)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], row_sites: Sequence[str] | None = None) -> str:
    """An HTML table; `row_sites` tags each row with data-site (tests and readers can count sites)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        tag = f' data-site="{html.escape(row_sites[i])}"' if row_sites and row_sites[i] else ""
        body.append(f"<tr{tag}>" + "".join(f"<td>{html.escape(fmt(c))}</td>" for c in row) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def para(text: str) -> str:
    return f"<p>{html.escape(text)}</p>"


def not_run(reason: str) -> str:
    return f'<p class="not-run">not run: {html.escape(reason)}</p>'


def img(png: bytes, alt: str) -> str:
    return f'<img src="{plots.data_uri(png)}" alt="{html.escape(alt)}">'


CSS = """body{font-family:sans-serif;margin:2em auto;max-width:1250px;color:#222}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #bbb;padding:.2em .6em;text-align:right}
th{background:#eee}td:first-child{text-align:left}img{max-width:100%;display:block;margin:.6em 0}
.not-run{color:#777;font-style:italic}nav a{margin-right:1em}section{border-top:1px solid #ddd}"""


def page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n")


def _progress(items: Sequence[Any], desc: str) -> Any:
    return tqdm(items, desc=desc, unit="site", leave=False, disable=len(items) < PROGRESS_MIN_ITEMS)


# ---------------------------------------------------------------- sections
KEY_SETTINGS = ("scoring.scorers", "scoring.weights", "scoring.primary", "selection.mode", "selection.scope",
                "selection.fraction", "selection.count", "selection.threshold", "federation.sites",
                "federation.aggregation", "federation.exact", "federation.warmup-rounds", "federation.train-rounds",
                "federation.local-steps", "model.name-or-path", "privacy.dp-epsilon", "privacy.secure-aggregation",
                "evaluation.test-path")


def mode_of(run: RunView) -> str:
    if not run.sites:
        return "no site has replied yet"
    if run.sites == ["local"]:
        return "centralized (one site, local)"
    return f"federated, {len(run.sites)} site(s)"


def section_overview(run: RunView) -> str:
    finished = [p for p, s in run.status.items() if s in ("done", "skipped")]
    out = [para(f"Run directory {run.root.resolve()}: {mode_of(run)}; {len(finished)} of {len(run.status)} "
                f"phases finished.")]
    if run.settings:
        shown = [k for k in KEY_SETTINGS if k in run.settings]
        out.append(table(["setting", "value"], [[k, run.settings[k]] for k in shown]))
        out.append("<details><summary>all settings</summary>" + table(
            ["setting", "value"], [[k, v] for k, v in run.settings.items()]) + "</details>")
    else:
        out.append(not_run(f"no settings: {run.root / 'run.json'} is missing"))
    rows = []
    for phase, state in run.status.items():
        s = run.summaries.get(phase, {})
        comm = s.get("communication", {})
        note = s.get("skipped", "") or (f"{len(s.get('exclusions', []))} exclusion(s)" if s.get("exclusions") else "")
        rows.append([phase, state, s.get("seconds"), comm.get("rounds"), comm.get("bytes_sent"),
                     comm.get("bytes_received"), note])
    out.append(table(["phase", "state", "seconds", "rounds", "bytes sent", "bytes received", "note"], rows))
    prep = run.done("prepare")
    if prep:
        clean = (run.stats("prepare") or {}).get("sites", {})
        sites = list(prep["sites"])
        out.append(table(["site", "samples", "rejected rows", "rejects by reason", "clean (ground truth)"], [
            [s, v["num_samples"], v["num_rejects"], json.dumps(v["rejects_by_reason"]) if v["rejects_by_reason"]
             else "", clean.get(s, {}).get("num-clean")] for s, v in prep["sites"].items()], sites))
    return "\n".join(out)


def site_scores(run: RunView) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, bool]]:
    """{scorer or "composite": {site: values}} from each site's select/scores.parquet (else dynamics
    columns), and each scorer's orientation."""
    columns: dict[str, dict[str, np.ndarray]] = {}
    higher: dict[str, bool] = {}
    for site in _progress(run.sites, "report: read scores"):
        folder = run.site_dir(site)
        meta = read_json(folder / "dynamics" / "columns.json", missing_ok=True) or {}
        higher.update({n: bool(m.get("higher_is_better", True)) for n, m in meta.items()})
        path = folder / "select" / "scores.parquet"
        if not path.exists():
            path = folder / "dynamics" / "columns.parquet"
        if not path.exists():
            continue
        data = pq.read_table(path)
        names = list(meta) or [c for c in data.column_names if c not in NOT_SCORES and not c.endswith("_reason")]
        for name in [n for n in names if n in data.column_names] + (["score"] if "score" in data.column_names else []):
            values = np.asarray(data.column(name).to_numpy(zero_copy_only=False), dtype=np.float64)  # null -> NaN
            columns.setdefault("composite" if name == "score" else name, {})[site] = values
    return columns, higher


def section_scores(run: RunView) -> str:
    out = []
    dyn = run.done("dynamics")
    if dyn:
        out.append(para("Federation-wide statistics of each scorer (from the sites' moments; failures are NaN):"))
        out.append(table(["scorer", "count", "mean", "std", "min", "max", "failures"], [
            [n, s["count"], s["mean"], s["std"], s["min"], s["max"], s["failures"]]
            for n, s in dyn["scorers"].items()]))
    columns, higher = site_scores(run)
    if not columns:
        return "\n".join(out + [not_run(run.why_missing("dynamics") if not dyn else
                                        f"no site directory under {run.root / 'sites'} holds scores")])
    titles = {n: f"{n} ({'higher' if higher.get(n, True) else 'lower'} is better)" for n in columns}
    titles["composite"] = "composite score (what the threshold cuts)"
    sites = sorted({s for per_site in columns.values() for s in per_site})
    out.append(table(["site", *[f"{n}: mean" for n in columns], *[f"{n}: failed" for n in columns]], [
        [s, *[float(np.nanmean(c[s])) if s in c and np.isfinite(c[s]).any() else None for c in columns.values()],
         *[int((~np.isfinite(c[s])).sum()) if s in c else None for c in columns.values()]] for s in sites], sites))
    png = plots.score_plot(columns, titles)
    out.append(img(png, f"Score distributions per site for {', '.join(columns)} (0.5-99.5th percentile range)"))
    return "\n".join(out)


def section_transition(run: RunView) -> str:
    cur = run.done("curate")
    if not cur or "T" not in cur:
        return not_run(run.why_missing("curate") if not cur else "the curate summary holds no transition matrix")
    T, p = np.asarray(cur["T"], dtype=float), np.asarray(cur["p"], dtype=float)
    k = T.shape[0]
    raw = curated = None
    for site in _progress(run.sites, "report: read curation"):
        path = run.site_dir(site) / "curate" / "apply" / "curation.npz"
        if path.exists():
            with np.load(path) as z:
                r, c = (_class_counts(z[key], k) for key in ("raw", "curated"))
            raw, curated = (r, c) if raw is None else (raw + r, curated + c)
    stats = (run.stats("curate") or {}).get("sites", {})
    out = [para(f"DS2: one global T and prior p solved from the summed consensus counts of {len(cur['sites'])} "
                f"site(s) ({cur['rows']} consensus rows, HOC loss {fmt(cur.get('hoc_loss'))})."),
           table(["site", "flagged", "changed"], [[s, stats.get(s, {}).get("flagged"), cur["changed"].get(s)]
                                                   for s in cur["sites"]], cur["sites"]),
           img(plots.transition_plot(T, p, raw, curated),
               f"Heatmap of the {k}x{k} noise transition matrix T, prior p, and raw vs curated score counts")]
    return "\n".join(out)


def _class_counts(values: np.ndarray, k: int) -> np.ndarray:
    v = values[np.isfinite(values)]
    return np.bincount(np.clip(np.rint(v), 0, k - 1).astype(int), minlength=k)


def section_threshold(run: RunView) -> str:
    from fedcurate.app.demo import describe_composite

    thr = run.done("threshold")
    if not thr:
        return not_run(run.why_missing("threshold"))
    rows = [["composite score", describe_composite(thr.get("composite", {}))]]
    rows += [[k, thr[k]] for k in ("scope", "mode", "num_samples", "target", "expected_kept", "histogram_rounds",
                                   "tie_fraction", "anchor_threshold", "threshold", "secure_aggregation") if k in thr]
    out = [table(["", "value"], rows)]
    lines: dict[str, float] = {}
    if thr.get("threshold") is not None:
        lines["global threshold"] = float(thr["threshold"])
    else:
        sites = (run.done("select") or {}).get("sites", {})
        lines.update({f"{s} threshold": float(v["threshold"]) for s, v in sites.items() if v.get("threshold")
                      is not None})
        out.append(para("Local scope: every site applies the rule to its own scores (no global threshold)."))
    hist = thr.get("histogram")
    if not hist:
        return "\n".join(out + [not_run("the threshold summary holds no histogram")])
    counts = np.asarray(hist["counts"], dtype=float)
    if "privacy" in thr:
        out.append(para("The histogram counts carry the sites' Gaussian DP noise (negative bins drawn at 0)."))
    out.append(img(plots.threshold_plot(np.asarray(hist["edges"], dtype=float), counts, lines),
                   "Aggregated histogram of the composite score over all sites, with the threshold drawn over it"))
    return "\n".join(out)


def section_selection(run: RunView) -> str:
    sel = run.done("select")
    if not sel:
        return not_run(run.why_missing("select"))
    sites = list(sel["sites"])
    reasons = sorted({r for v in sel["sites"].values() for r in (v.get("dropped-by-reason") or {})})
    rows = []
    for s, v in sel["sites"].items():
        share = v["num-clean-kept"] / v["kept"] if v.get("kept") and v.get("num-clean-kept") is not None else None
        rows.append([s, v["num-samples"], v["kept"], v["dropped"],
                     *[(v.get("dropped-by-reason") or {}).get(r, 0) for r in reasons], v.get("threshold"), share])
    total = ["all sites", sel["kept"] + sel["dropped"], sel["kept"], sel["dropped"],
             *[sum(r[4 + i] for r in rows) for i in range(len(reasons))], sel.get("threshold"), sel.get("precision")]
    out = [table(["site", "samples", "kept", "dropped", *[f"dropped: {r}" for r in reasons], "threshold",
                  "precision (clean kept / kept)"], [*rows, total], [*sites, ""])]
    if sel.get("precision") is not None:
        out.append(para(f"Precision of the kept set {fmt(sel['precision'])} against {fmt(sel.get('precision_full'))} "
                        "for the full data (share of clean samples, from the ground truth)."))
    central = read_json(run.root / "stats.json", missing_ok=True) or {}
    if isinstance(central.get("precision"), dict):
        out.append(para("Each scorer alone at the same budget (centralized run):"))
        out.append(table(["scorer", "precision"], list(central["precision"].items())))
    out.append(img(plots.selection_plot(sites, [v["kept"] for v in sel["sites"].values()],
                                        {r: [(v.get("dropped-by-reason") or {}).get(r, 0) for v in sel["sites"].values()]
                                         for r in reasons}),
                   "Bar chart of kept and dropped samples per site, by drop reason"))
    return "\n".join(out)


def section_training(run: RunView) -> str:
    phases: dict[str, list[dict[str, Any]]] = {p: (run.done(p) or {}).get("rounds") or [] for p in ("warmup", "train")}
    phases = {p: rounds for p, rounds in phases.items() if rounds}
    if not phases:
        return not_run(f"{run.why_missing('warmup')}; {run.why_missing('train')}")
    rows, curves = [], {}
    for phase, rounds in phases.items():
        per_site: dict[str, list[tuple[int, float]]] = {}
        for r in rounds:
            for site, v in r["sites"].items():
                if v.get("loss-last") is not None:
                    per_site.setdefault(site, []).append((int(r["round"]), float(v["loss-last"])))
            n = sum(v.get("num-examples") or 0 for v in r["sites"].values())
            mean = sum((v.get("num-examples") or 0) * (v.get("loss-last") or 0.0) for v in r["sites"].values())
            rows.append([phase, r["round"], r.get("step"), r.get("lr_mean"),
                         f"merge: {r['method']}" if "method" in r else "fedavg", n,
                         mean / n if n else None, len(r.get("excluded", []))])
        curves[phase] = per_site
    ev = run.done("evaluate") or {}
    lines = {f"held-out loss, {name}": float(e["loss"]) for name, e in (("merged adapter", ev), ("base model",
             ev.get("base", {}))) if e.get("loss") is not None}
    out = [table(["phase", "round", "step", "mean learning rate", "aggregation", "examples",
                  "loss (last step, weighted mean)", "excluded"], rows),
           img(plots.training_plot(curves, lines), "Line plot of each site's local training loss per round"
               + (" with the held-out losses" if lines else ""))]
    return "\n".join(out)


def section_communication(run: RunView) -> str:
    traffic = run.stats("communication") or []
    if not traffic:
        return not_run(f"no rounds logged in {run.root / 'stats' / 'communication.json'}")
    steps = list(dict.fromkeys(t["step"] for t in traffic))
    sites = sorted({t["site"] for t in traffic})
    by_step = {d: [sum(t[d] for t in traffic if t["step"] == s) for s in steps] for d in ("sent", "received")}
    by_site = {d: [sum(t[d] for t in traffic if t["site"] == s) for s in sites] for d in ("sent", "received")}
    phases = list(dict.fromkeys(t["phase"] for t in traffic))
    out = [para("Sent: server to sites; received: sites to server (bytes of the serialized messages)."),
           table(["phase", "rounds", "bytes sent", "bytes received", "secure aggregation"], [
               [p, len({t["step"] for t in traffic if t["phase"] == p}),
                sum(t["sent"] for t in traffic if t["phase"] == p),
                sum(t["received"] for t in traffic if t["phase"] == p),
                "yes" if any(t.get("secure") for t in traffic if t["phase"] == p) else "no"] for p in phases]),
           table(["site", "bytes sent", "bytes received"],
                 [[s, by_site["sent"][i], by_site["received"][i]] for i, s in enumerate(sites)], sites),
           img(plots.communication_plot(steps, {"sent (server to sites)": by_step["sent"],
                                                "received (sites to server)": by_step["received"]},
                                        sites, {"sent": by_site["sent"], "received": by_site["received"]}),
               "Bar charts of bytes sent and received per round and per site")]
    return "\n".join(out)


EVAL_METRICS = (("loss", "loss"), ("token_accuracy", "token accuracy"), ("exact_match", "exact match"))


def section_evaluation(run: RunView) -> str:
    ev = run.done("evaluate")
    if not ev:
        return not_run(run.why_missing("evaluate"))
    out: list[str] = []
    if "test_path" in ev:
        models = [("merged adapter", ev)] + ([("base model", ev["base"])] if "base" in ev else [])
        out += [para(f"Held-out evaluation on {ev['test_path']}."),
                table(["model", "samples", *[t for _, t in EVAL_METRICS], "skipped"],
                      [[name, e.get("num_samples"), *[e.get(k) for k, _ in EVAL_METRICS], e.get("num_skipped")]
                       for name, e in models])]
        metrics = {t: [e.get(k) for _, e in models] for k, t in EVAL_METRICS if any(e.get(k) is not None
                                                                                    for _, e in models)}
        if metrics:
            out.append(img(plots.metric_bars([n for n, _ in models], metrics, "held-out evaluation"),
                           "Bar charts of held-out loss, token accuracy and exact match per model"))
    if "sites" in ev:  # evaluation.at-sites: each site on its own held-out set
        per_site = ev["sites"].get("per_site", {})
        keys = [k.replace("_", "-") for k, _ in EVAL_METRICS]
        rows = [[s, r.get("num-samples"), *[r.get(k) for k in keys], r.get("skipped", "")]
                for s, r in per_site.items()]
        rows.append(["all sites (weighted)", ev["sites"].get("num_samples"),
                     *[ev["sites"].get("mean", {}).get(k) for k in keys], ""])
        out += [para("The merged adapter on each site's own held-out set (only the figures left the sites)."),
                table(["site", "samples", *[t for _, t in EVAL_METRICS], "note"], rows)]
    return "\n".join(out) or not_run("no evaluation figures in the evaluate phase's summary")


PRIVACY_LABELS = {"unit": "neighbouring datasets differ by one", "epsilon": "epsilon budget", "delta": "delta",
                  "sigma": "noise std (sigma) per release", "releases": "planned releases",
                  "noise_multiplier": "noise multiplier", "clipping_norm": "clipping norm",
                  "rounds": "noisy rounds", "spent_epsilon": "spent epsilon"}


def privacy_kinds(priv: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """stats/privacy.json per kind of release ("threshold": per sample, "training": per site); an older
    file holding one accountant is the threshold phase's."""
    return {"threshold": priv} if "accountant" in priv else {k: v for k, v in priv.items() if isinstance(v, dict)}


def section_privacy(run: RunView) -> str:
    secure = run.settings.get("privacy.secure-aggregation")
    out = [para("Secure aggregation (SecAgg+) was on: the server saw only sums over sites.")] if secure else []
    priv = run.stats("privacy")
    if not priv:
        off = ", ".join(f"{k} = {run.settings[k]}" for k in ("privacy.dp-epsilon", "privacy.train-noise-multiplier")
                        if k in run.settings)
        why = run.why_missing("threshold") if not run.done("threshold") else \
            f"differential privacy was off ({off or 'no privacy settings recorded'})"
        return "\n".join(out + [not_run(why)])
    out.append(para("Budgets of different kinds of release hold under different neighbouring relations "
                    "(one sample, one site): they are reported side by side, not added."))
    for kind, info in privacy_kinds(priv).items():
        out.append(f"<h3>{html.escape(kind)}</h3>")
        out.append(table(["", "value"], [[PRIVACY_LABELS.get(k, k), v] for k, v in info.items()
                                         if not isinstance(v, dict | list)]))
        releases = info.get("accountant", {}).get("releases", [])
        out.append(table(["release", "sigma", "L2 sensitivity", "rho (zCDP)"],
                         [[r.get("what"), r.get("sigma"), r.get("sensitivity"), r.get("rho")] for r in releases]))
    return "\n".join(out)


SECTIONS: tuple[tuple[str, str, Callable[[RunView], str]], ...] = (
    ("overview", "Overview", section_overview), ("scores", "Score distributions", section_scores),
    ("transition", "DS2 noise transition matrix", section_transition),
    ("threshold", "Threshold", section_threshold), ("selection", "Selection", section_selection),
    ("training", "Training curves", section_training), ("communication", "Communication", section_communication),
    ("evaluation", "Evaluation", section_evaluation), ("privacy", "Privacy", section_privacy))


def write_report(run_dir: Path, out: Path | None = None) -> Path:
    """Write the self-contained HTML report of `run_dir` (default `run_dir/report.html`); returns its path."""
    run = load_run(Path(run_dir))
    out = Path(out) if out else run.root / "report.html"
    nav = "<nav>" + "".join(f'<a href="#{sid}">{html.escape(title)}</a>' for sid, title, _ in SECTIONS) + "</nav>"
    parts = [nav]
    for sid, title, build in SECTIONS:
        log.info("report: %s", sid)
        parts.append(f'<section><h2 id="{sid}">{html.escape(title)}</h2>\n{build(run)}\n</section>')
    io.write_text(out, page(f"fedcurate run report: {run.root.resolve().name}", "\n".join(parts)))
    log.info("report written to %s", out)
    return out


# ---------------------------------------------------------------- comparison across runs
def expand_runs(paths: Sequence[Path], labels: Sequence[str] | None = None) -> list[tuple[str, Path]]:
    """(label, run dir) for every path: a run directory itself, or each run directory in a folder of runs
    (up to two levels, e.g. a quality benchmark's `<out>/<method>` or `<out>/seed-<s>/<method>`)."""
    if labels is not None and len(labels) != len(paths):
        raise ReportError(f"{len(labels)} label(s) for {len(paths)} run path(s); give one label per path")
    found: list[tuple[str, Path]] = []
    for i, path in enumerate(map(Path, paths)):
        label = labels[i] if labels else path.resolve().name
        if is_run_dir(path):
            found.append((label, path))
            continue
        inner = sorted(p for p in path.glob("*") if p.is_dir() and is_run_dir(p)) or \
            sorted(p for p in path.glob("*/*") if p.is_dir() and is_run_dir(p))
        if not path.is_dir() or not inner:
            load_run(path)  # raises the ReportError naming the path
        prefix = f"{label}/" if labels or len(paths) > 1 else ""
        found += [(prefix + p.relative_to(path).as_posix(), p) for p in inner]
    return found


def run_figures(run: RunView) -> dict[str, Any]:
    """The figures of one run that a comparison shows."""
    sel, ev, prep = run.done("select") or {}, run.done("evaluate") or {}, run.done("prepare") or {}
    s = run.settings
    rule = {"fraction": f"fraction {s.get('selection.fraction')}", "count": f"count {s.get('selection.count')}",
            "threshold": f"threshold {s.get('selection.threshold')}"}.get(s.get("selection.mode", ""),
                                                                          s.get("selection.mode", "n/a"))
    traffic = run.stats("communication") or []
    return {"path": str(run.root), "mode": mode_of(run), "scorers": s.get("scoring.scorers", "n/a"),
            "selection": f"{rule}, {s.get('selection.scope', 'global')}",
            "samples": sel["kept"] + sel["dropped"] if sel else prep.get("num_samples"),
            "kept": sel.get("kept"), "precision": sel.get("precision"), "precision_full": sel.get("precision_full"),
            "threshold": sel.get("threshold"), "loss": ev.get("loss"), "token_accuracy": ev.get("token_accuracy"),
            "exact_match": ev.get("exact_match"), "base_loss": ev.get("base", {}).get("loss"),
            "bytes": sum(t["sent"] + t["received"] for t in traffic),
            "phases": f"{sum(v in ('done', 'skipped') for v in run.status.values())}/{len(run.status)}"}


COLUMNS = (("run", "label"), ("mode", "mode"), ("scorers", "scorers"), ("selection", "selection"),
           ("samples", "samples"), ("kept", "kept"), ("precision", "precision"),
           ("precision (full data)", "precision_full"), ("threshold", "threshold"), ("held-out loss", "loss"),
           ("token accuracy", "token_accuracy"), ("exact match", "exact_match"), ("base model loss", "base_loss"),
           ("bytes", "bytes"), ("phases finished", "phases"))
PLOTTED = (("kept", "kept"), ("precision", "precision of the kept set"), ("loss", "held-out loss"),
           ("token_accuracy", "token accuracy"), ("exact_match", "exact match"))


def write_comparison(run_dirs: Sequence[Path], out: Path, labels: Sequence[str] | None = None) -> Path:
    """Compare runs (see the module docstring for what is written into the folder `out`); returns the path
    of comparison.html."""
    runs = expand_runs(run_dirs, labels)
    rows = [{"label": label, **run_figures(load_run(path))} for label, path in _progress(runs, "compare: read")]
    out = Path(out)
    headers = [h for h, _ in COLUMNS]
    md = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    md += ["| " + " | ".join(fmt(r[k]).replace("|", "/") for _, k in COLUMNS) + " |" for r in rows]
    io.write_text(out / "comparison.md", "# fedcurate run comparison\n\n" + "\n".join(md) + "\n")
    io.write_json(out / "comparison.json", rows)
    metrics = {title: [r[k] for r in rows] for k, title in PLOTTED if any(r[k] is not None for r in rows)}
    png = plots.metric_bars([r["label"] for r in rows], metrics, "runs compared")
    io.write_with(out / "comparison.png", lambda tmp: tmp.write_bytes(png))
    body = (table(headers, [[r[k] for _, k in COLUMNS] for r in rows]) +
            img(png, "Bar charts across runs: " + ", ".join(metrics)))
    io.write_text(out / "comparison.html", page("fedcurate run comparison", body))
    log.info("comparison of %d run(s) written to %s", len(rows), out)
    return out / "comparison.html"
