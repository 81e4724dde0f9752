"""`fedcurate curate` and the DS2 scorers end to end on real text embeddings (offline MiniLM)."""

import json

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from fedcurate.app.cli import main
from fedcurate.common.data.loaders import write_samples
from fedcurate.common.data.sample import Sample
from fedcurate.simulations.raters import corrupt_scores, transition_matrix_from_diagonal
from fedcurate.simulations.synthetic import TASK_FAMILIES, generate_clean

# True quality follows the task family, so it is clusterable in embedding space, as HOC assumes.
TRUE_SCORE = dict(zip(TASK_FAMILIES, [5, 4, 3, 2, 1], strict=True))


def _rated_data(tmp_path, n=800, seed=0):
    samples = generate_clean(n, seed=seed)
    truth = np.array([TRUE_SCORE[s.metadata["task"]] for s in samples])
    T = transition_matrix_from_diagonal([0.6] * 6)
    noisy = corrupt_scores(truth, T, seed=seed)
    rows = [Sample(s.id, s.instruction, s.response, s.input, s.source,
                   {**s.metadata, "rating": int(r), "true": int(t)})
            for s, r, t in zip(samples, noisy, truth, strict=True)]
    path = tmp_path / "rated.jsonl"
    write_samples(path, rows)
    return path, truth, noisy


def test_curate_command_improves_ratings_and_writes_report(tmp_path, capsys):
    # Prepare
    data, truth, noisy = _rated_data(tmp_path)
    out = tmp_path / "curated"
    # Execute
    code = main(["curate", "--input", str(data), "--out", str(out), "--set", 'curation.score-field="rating"',
                 "--set", "curation.hoc-rounds=20", "--set", "curation.detect-epochs=21"])
    # Assert
    assert code == 0, capsys.readouterr().err
    table = pq.read_table(out / "curation.parquet").to_pydict()
    curated = np.asarray(table["curated"])
    raw_acc, cur_acc = (noisy == truth).mean(), (curated == truth).mean()
    assert cur_acc > raw_acc + 0.08, (raw_acc, cur_acc)
    report = json.loads((out / "report" / "curation.json").read_text())
    assert np.asarray(report["T"]).shape == (6, 6) and report["examples"]
    assert sum(sum(row.values()) for row in report["changed_by_class"].values()) == int((curated != noisy).sum())
    with Image.open(out / "report" / "T.png") as img:
        assert img.size[0] > 100
    stats = json.loads((out / "stats.json").read_text())
    assert stats["num_samples"] == 800 and stats["changed"] > 0


def test_ds2_scorer_in_select_keeps_high_true_scores(tmp_path):
    # Prepare
    data, truth, noisy = _rated_data(tmp_path, n=600, seed=1)
    out = tmp_path / "select"
    # Execute
    code = main(["select", "--input", str(data), "--out", str(out),
                 "--set", "scoring.scorers=['ds2', 'ds2-raw', 'random']", "--set", 'scoring.primary="ds2"',
                 "--set", 'curation.score-field="rating"', "--set", "curation.hoc-rounds=20",
                 "--set", "curation.detect-epochs=21", "--set", f'run.dir="{tmp_path}"',
                 "--set", 'selection.mode="count"', "--set", "selection.count=120"])
    # Assert
    assert code == 0
    kept = [json.loads(x)["metadata"]["true"] for x in (out / "selected.jsonl").read_text().splitlines()]
    assert len(kept) == 120
    assert np.mean(kept) > 4.5  # the top fifth by curated score is mostly the true-5 family
