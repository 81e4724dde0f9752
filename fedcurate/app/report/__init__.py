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

Modules, one job each: `run` (reading a run directory), `html` (the pieces of a page), `sections` (the
report's sections and `write_report`), `compare` (`write_comparison`), `plots` (the figures, PNG bytes).
"""

from fedcurate.app.report.compare import expand_runs, run_figures, write_comparison
from fedcurate.app.report.run import ReportError, RunView, is_run_dir, load_run
from fedcurate.app.report.sections import SECTIONS, describe_composite, write_report

__all__ = ["SECTIONS", "ReportError", "RunView", "describe_composite", "expand_runs", "is_run_dir", "load_run",
           "run_figures", "write_comparison", "write_report"]
