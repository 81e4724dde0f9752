"""Sentence embeddings: default offline encoder, pooling override, disk cache."""

import numpy as np

from fedcurate.common.config import CurationConfig
from fedcurate.common.curation.embeddings import embed_samples, embed_texts, sample_text
from fedcurate.common.data.sample import Sample


def test_sample_text_uses_the_ds2_layout():
    # Prepare
    sample = Sample(id="1", instruction="Add", input="2 and 3", response="5")
    # Execute / Assert
    assert sample_text(sample) == "###user: Add\n\n2 and 3\n###assistant: 5\n"


def test_default_encoder_gives_normalised_vectors_that_reflect_meaning():
    # Execute
    emb = embed_texts(["The cat sat on the mat.", "A cat is sitting on a mat.", "Stock prices fell."],
                      CurationConfig(), progress=False)
    # Assert
    assert emb.shape == (3, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.3


def test_cache_reuses_embedded_texts_and_adds_new_ones(tmp_path):
    # Prepare
    cfg = CurationConfig()
    first = embed_texts(["alpha", "beta", "alpha"], cfg, tmp_path, progress=False)
    files = set(tmp_path.rglob("*.npz"))
    # Execute
    second = embed_texts(["beta", "gamma", "alpha"], cfg, tmp_path, progress=False)
    again = embed_texts(["gamma", "beta"], cfg, tmp_path, progress=False)
    # Assert
    assert len(files) == 1 and len(set(tmp_path.rglob("*.npz"))) == 2  # only "gamma" was encoded
    assert (first[0] == first[2]).all()
    assert (second[0] == first[1]).all() and (second[2] == first[0]).all()
    assert (again[0] == second[1]).all()


def test_cache_is_keyed_by_pooling(tmp_path):
    # Execute
    model = embed_texts(["hello world"], CurationConfig(), tmp_path, progress=False)
    cls = embed_texts(["hello world"], CurationConfig(pooling="cls"), tmp_path, progress=False)
    # Assert
    assert model[0] @ cls[0] < 0.95
    assert len(set(tmp_path.rglob("*.npz"))) == 2


def test_embed_samples_embeds_the_sample_text():
    # Prepare
    sample = Sample(id="1", instruction="Say hi", response="hi")
    # Execute
    a = embed_samples([sample], CurationConfig(), progress=False)
    b = embed_texts([sample_text(sample)], CurationConfig(), progress=False)
    # Assert
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_cache_finds_keys_ending_in_a_zero_byte(tmp_path):
    # Prepare: texts whose sha256 key ends in 0x00 (numpy's S32 strips trailing NULs on save)
    from fedcurate.common.curation.embeddings import _read_cache, _write_chunk, embedding_key

    cfg = CurationConfig()
    texts = [t for t in (f"text {i}" for i in range(5000)) if embedding_key(t, cfg).endswith(b"\0")][:2]
    keys = [embedding_key(t, cfg) for t in texts]
    _write_chunk(tmp_path, keys, np.ones((len(keys), 4), dtype=np.float32))
    # Execute
    found = _read_cache(tmp_path)
    # Assert
    assert len(texts) == 2 and all(k in found for k in keys)
