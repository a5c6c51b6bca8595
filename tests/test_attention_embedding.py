"""Block and patch embeddings: PCA against sklearn on stacked data, cluster structure, labels, seeding."""
import json

import numpy as np
import pytest
from sklearn.decomposition import PCA

import orderings
from patchorder.attention import AttentionExport, BlockAttention
from patchorder.attention.embedding import block_embeddings, patch_embeddings


def two_pattern_export(images=6, grid=(4, 4), seed=0):
    """Stage 0 with two blocks that attend in clearly different ways (plus small per-image noise)."""
    rng = np.random.default_rng(seed)
    L = grid[0] * grid[1]
    patterns = [np.eye(L), np.ones((L, L)) / L]
    routes = orderings.routes("spiral", *grid, "cross4").numpy()
    blocks = [
        BlockAttention(0, b, grid, "spiral", (patterns[b] + 0.01 * rng.random((images, L, L))).astype(np.float32),
                       routes)
        for b in range(2)
    ]
    return AttentionExport(blocks=blocks, images=np.zeros((images, 8, 8, 3), np.uint8),
                           labels=list(range(images)))


def test_block_pca_equals_sklearn_pca_on_the_flattened_matrices():
    export = two_pattern_export()
    emb = block_embeddings(export, stage=0, methods="pca")["pca"]
    stacked = np.concatenate([b.attn.reshape(len(b.attn), -1) for b in export.blocks]).astype(np.float64)
    expected = PCA(n_components=2, svd_solver="full").fit_transform(stacked)
    for k in range(2):  # principal axes are defined up to sign
        sign = np.sign(expected[:, k] @ emb.coords[:, k])
        np.testing.assert_allclose(emb.coords[:, k], sign * expected[:, k], rtol=1e-4, atol=1e-5)
    assert [(p["block"], p["image"]) for p in emb.points] == [(b, i) for b in range(2) for i in range(6)]
    assert emb.points[3]["label"] == 3 and emb.points[3]["key"] == "s0b0"


def test_points_on_a_line_keep_their_spacing_under_pca():
    L = 9
    rng = np.random.default_rng(1)
    direction = rng.random((L, L))
    t = np.array([0.0, 1.0, 3.0, 7.0])
    block = BlockAttention(0, 0, (3, 3), "row_major", (t[:, None, None] * direction).astype(np.float32),
                           orderings.routes("row_major", 3, 3, "single").numpy())
    export = AttentionExport(blocks=[block], images=np.zeros((4, 3, 3, 3), np.uint8))
    coords = block_embeddings(export, 0, "pca")["pca"].coords
    spacing = np.abs(coords[:, 0] - coords[0, 0])
    np.testing.assert_allclose(spacing, t * np.linalg.norm(direction), rtol=1e-4)
    np.testing.assert_allclose(coords[:, 1], 0, atol=1e-3)


def nearest_neighbour_purity(coords, groups):
    dist = ((coords[:, None] - coords[None]) ** 2).sum(-1)
    np.fill_diagonal(dist, np.inf)
    return np.mean(groups[dist.argmin(1)] == groups)


@pytest.mark.slow
def test_tsne_and_umap_separate_blocks_that_attend_differently_and_are_seeded():
    export = two_pattern_export(images=8)
    embs = block_embeddings(export, 0, methods=("tsne", "umap"), seed=3)
    groups = np.array([p["block"] for p in embs["tsne"].points])
    for method, emb in embs.items():
        assert emb.coords.shape == (16, 2) and np.isfinite(emb.coords).all() and emb.note == ""
        assert nearest_neighbour_purity(emb.coords, groups) == 1.0, method
    again = block_embeddings(export, 0, methods="tsne", seed=3)["tsne"]
    np.testing.assert_array_equal(again.coords, embs["tsne"].coords)
    json.dumps(embs["umap"].to_json())


def test_patch_embedding_points_carry_grid_and_sequence_labels():
    grid = (3, 5)
    L = 15
    route = orderings.get("spiral")(*grid).numpy()
    rng = np.random.default_rng(2)
    attn = rng.random((2, L, L)).astype(np.float32)
    block = BlockAttention(1, 2, grid, "spiral", attn, orderings.routes("spiral", *grid, "cross4").numpy())
    export = AttentionExport(blocks=[block], images=np.zeros((2, 4, 4, 3), np.uint8))
    emb = patch_embeddings(export, 1, 2, methods="pca")["pca"]
    assert emb.coords.shape == (L, 2) and emb.kind == "patches" and emb.block == 2
    for s, q in enumerate(route):
        point = emb.points[q]
        assert (point["patch"], point["row"], point["col"], point["seq_pos"]) == (q, q // 5, q % 5, s)
    expected = PCA(n_components=2, svd_solver="full").fit_transform(attn.mean(0).astype(np.float64))
    for k in range(2):
        sign = np.sign(expected[:, k] @ emb.coords[:, k])
        np.testing.assert_allclose(emb.coords[:, k], sign * expected[:, k], rtol=1e-4, atol=1e-5)


def test_too_few_points_fall_back_to_pca_with_a_note_and_bad_requests_fail():
    export = two_pattern_export(images=1)
    emb = block_embeddings(export, 0, methods=("pca", "tsne"))
    assert "needs at least 5 points, got 2" in emb["tsne"].note
    np.testing.assert_array_equal(emb["tsne"].coords, emb["pca"].coords)
    with pytest.raises(ValueError, match="unknown embedding method 'mds'"):
        block_embeddings(export, 0, methods="mds")
    with pytest.raises(ValueError, match="no block in stage 3"):
        block_embeddings(export, 3)
    with pytest.raises(KeyError, match="no attention for stage 0 block 9"):
        patch_embeddings(export, 0, 9)


# ---------- the Gram matrix and the projection cache ----------

def test_gram_is_the_float64_product_also_for_large_signed_and_strided_inputs():
    from patchorder.attention.embedding import _gram

    rng = np.random.default_rng(5)
    vectors = [(rng.normal(size=(37, 41)) * 10.0 ** rng.integers(-30, 30)).astype(np.float32) for _ in range(5)]
    vectors.append((rng.lognormal(0, 1, (41, 37)) * 1e30).astype(np.float32).T)  # non-contiguous; float32 x^2 overflows
    X = np.stack([v.reshape(-1) for v in vectors]).astype(np.float64)
    truth = X @ X.T
    bound = np.outer(*(2 * [np.linalg.norm(X, axis=1)]))  # |x_i . x_j| <= |x_i| |x_j|
    for buffer_values in (1 << 20, 64, 7 * len(vectors)):  # one chunk; chunks of 10 features; of 7 (a remainder)
        gram = _gram(vectors, buffer_values=buffer_values)
        assert gram.dtype == np.float64 and np.isfinite(gram).all()
        assert np.all(np.abs(gram - truth) <= 1e-13 * bound), buffer_values


def counting(monkeypatch, name):
    """Replace patchorder.attention.embedding.<name> by a wrapper that counts its calls."""
    from patchorder.attention import embedding

    calls = []
    original = getattr(embedding, name)

    def wrapper(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(embedding, name, wrapper)
    return calls


def assert_same_embeddings(a, b):
    assert a.keys() == b.keys()
    for method in a:
        np.testing.assert_array_equal(a[method].coords, b[method].coords)
        assert (a[method].points, a[method].note, a[method].kind) == (b[method].points, b[method].note, b[method].kind)


def test_a_cache_computes_each_projection_once_and_changes_nothing(monkeypatch):
    from dataclasses import replace

    from patchorder.attention.embedding import EmbeddingCache

    export = two_pattern_export(images=8)
    plain_blocks = block_embeddings(export, 0, ("pca", "tsne"), seed=1)
    plain_patches = patch_embeddings(export, 0, 1, ("pca", "tsne"), seed=1)
    gram_calls, row_calls, layout_calls = (counting(monkeypatch, n) for n in
                                           ("_components_from_gram", "_components_from_rows", "_layout"))
    cache = EmbeddingCache()
    assert_same_embeddings(block_embeddings(export, 0, "pca", seed=1, cache=cache), {"pca": plain_blocks["pca"]})
    assert_same_embeddings(block_embeddings(export, 0, ("pca", "tsne"), seed=1, cache=cache), plain_blocks)
    assert_same_embeddings(patch_embeddings(export, 0, 1, "pca", seed=1, cache=cache), {"pca": plain_patches["pca"]})
    assert_same_embeddings(patch_embeddings(export, 0, 1, ("pca", "tsne"), seed=1, cache=cache), plain_patches)
    assert (len(gram_calls), len(row_calls), len(layout_calls)) == (1, 1, 4)  # pca once, tsne once, per kind
    # another export with the same shapes and keys (its coordinates are twice these), or another seed: computed
    # afresh, never taken from the cache
    other = replace(export, blocks=[replace(b, attn=2 * b.attn) for b in export.blocks])
    assert_same_embeddings(patch_embeddings(other, 0, 1, "pca", seed=1, cache=cache),
                           patch_embeddings(other, 0, 1, "pca", seed=1))
    assert_same_embeddings(block_embeddings(other, 0, "pca", seed=1, cache=cache),
                           block_embeddings(other, 0, "pca", seed=1))
    patch_embeddings(export, 0, 1, "pca", seed=2, cache=cache)
    assert (len(gram_calls), len(row_calls)) == (3, 4)  # + other's (with and without cache), + seed 2


def test_without_a_cache_one_projection_serves_every_method(monkeypatch):
    export = two_pattern_export(images=8)
    gram_calls, row_calls = (counting(monkeypatch, name) for name in ("_components_from_gram", "_components_from_rows"))
    block_embeddings(export, 0, ("pca", "tsne"))
    patch_embeddings(export, 0, 0, ("pca", "tsne"))
    assert (len(gram_calls), len(row_calls)) == (1, 1)
