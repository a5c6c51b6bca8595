"""Attention metrics on hand-made matrices whose answers are known in closed form."""
import json
import math

import numpy as np
import pytest
from scipy.stats import spearmanr

import orderings
from patchorder.attention import AttentionExport, BlockAttention
from patchorder.attention.metrics import (
    attention_distance, block_similarity_matrix, compare_exports, distance_map, matrix_similarity, metrics_table,
    neighbour_mass, sequence_coherence, stage_summary,
)


def raster_relabel(grid, mapping):
    """Permutation sending raster index q to the raster index of mapping(row, col)."""
    height, width = grid
    return np.array([mapping(q // width, q % width) for q in range(height * width)])


def relabel(attn, new_index):
    """attn'[new(q), new(k)] = attn[q, k]."""
    out = np.empty_like(attn)
    out[..., new_index[:, None], new_index[None, :]] = attn
    return out


def test_identity_attention_has_zero_distance_and_all_mass_on_neighbours():
    grid = (4, 6)
    attn = np.stack([np.eye(24) * s for s in (1.0, 3.0)])  # two images, different scales
    assert attention_distance(attn, grid) == 0
    assert neighbour_mass(attn, grid, radius=0) == 1
    assert neighbour_mass(attn, grid, radius=1) == 1
    assert np.all(distance_map(attn, grid) == 0)


def test_uniform_causal_attention_on_a_line_matches_closed_forms():
    L = 37
    attn = np.tril(np.ones((L, L))) / np.arange(1, L + 1)[:, None]  # query q attends to 0..q uniformly
    # Row q: mean of |q - k| over k <= q is q / 2; averaged over q: (L - 1) / 4.
    assert attention_distance(attn, (1, L)) == pytest.approx((L - 1) / 4, rel=1e-12)
    # Row q >= 1 has 2 of its q + 1 keys within distance 1; row 0 has 1 of 1.
    harmonic = sum(1 / k for k in range(1, L + 1))
    assert neighbour_mass(attn, (1, L), 1) == pytest.approx((1 + 2 * (harmonic - 1)) / L, rel=1e-12)
    np.testing.assert_allclose(distance_map(attn, (1, L)), np.arange(L) / 2)


def test_uniform_attention_over_small_grids():
    # 2x2: every query sees distances 0, 1, 1, sqrt(2).
    assert attention_distance(np.ones((4, 4)), (2, 2)) == pytest.approx((2 + math.sqrt(2)) / 4)
    # 3x3, radius 1: centre 9/9, edges 6/9, corners 4/9.
    assert neighbour_mass(np.ones((9, 9)), (3, 3), 1) == pytest.approx((1 + 4 * 6 / 9 + 4 * 4 / 9) / 9)


def test_metrics_ignore_sign_and_row_scale_and_rows_without_mass():
    rng = np.random.default_rng(0)
    attn = rng.random((20, 20))
    scaled = -attn * rng.uniform(0.1, 10, size=(20, 1))
    assert attention_distance(scaled, (4, 5)) == pytest.approx(attention_distance(attn, (4, 5)), rel=1e-12)
    with_empty = attn.copy()
    with_empty[3] = 0
    expected = np.delete(distance_map(attn, (4, 5)), 3).mean()
    assert attention_distance(with_empty, (4, 5)) == pytest.approx(expected, rel=1e-12)


def test_neighbour_mass_is_the_share_of_each_row_within_the_square_around_its_query():
    """Oracle: for every image and query of a non-square grid, loop over the keys and add those at most r rows
    and r columns away (edges and corners included), over the row's total mass; rows without mass are skipped."""
    rng = np.random.default_rng(7)
    grid = (5, 7)
    L = 35
    attn = rng.lognormal(-3, 2, (3, L, L)) * (rng.random((3, L, L)) < 0.7)
    attn[1, 4] = 0  # a row without mass
    for radius in (0, 1, 2, 6):
        shares = []
        for matrix in attn:
            for q in range(L):
                total = matrix[q].sum()
                if total == 0:
                    continue
                near = sum(matrix[q, k] for k in range(L)
                           if abs(k // 7 - q // 7) <= radius and abs(k % 7 - q % 7) <= radius)
                shares.append(near / total)
        assert neighbour_mass(attn, grid, radius) == pytest.approx(np.mean(shares), rel=1e-12)



@pytest.mark.parametrize("grid,mapping", [
    ((4, 5), lambda r, c: r * 5 + (4 - c)),  # mirror left-right
    ((4, 5), lambda r, c: (3 - r) * 5 + (4 - c)),  # rotate 180 degrees
    ((5, 5), lambda r, c: c * 5 + r),  # transpose (square grid)
])
def test_grid_isometries_leave_distance_and_neighbour_mass_unchanged(grid, mapping):
    rng = np.random.default_rng(1)
    L = grid[0] * grid[1]
    attn = rng.random((2, L, L)) ** 4
    moved = relabel(attn, raster_relabel(grid, mapping))
    assert attention_distance(moved, grid) == pytest.approx(attention_distance(attn, grid), rel=1e-12)
    for r in (0, 1, 2):
        assert neighbour_mass(moved, grid, r) == pytest.approx(neighbour_mass(attn, grid, r), rel=1e-12)


def rows_on_a_quarter_circle(route):
    """Row of the patch at sequence position s: (cos, sin)(theta s) on two columns, theta (L - 1) < pi / 2.

    The cosine between two rows is cos(theta * sequence distance): dissimilarity grows strictly with it.
    """
    L = len(route)
    theta = (math.pi / 2) / L
    attn = np.zeros((L, L))
    attn[route, 0] = np.cos(theta * np.arange(L))
    attn[route, 1] = np.sin(theta * np.arange(L))
    return attn


def test_coherence_is_one_when_rows_drift_with_the_scan():
    route = orderings.get("spiral")(5, 6).numpy()
    assert sequence_coherence(rows_on_a_quarter_circle(route), route) == pytest.approx(1.0, abs=1e-12)


def test_coherence_matches_known_dissimilarities():
    """Rows alternate between two patterns along the sequence: dissimilarity is 0 or 1 by parity of distance."""
    L = 24
    route = np.random.default_rng(2).permutation(L)
    attn = np.zeros((L, L))
    attn[route[0::2], 0] = 1.0
    attn[route[1::2], 1] = 1.0
    s, t = np.triu_indices(L, k=1)
    expected = spearmanr(t - s, (t - s) % 2).statistic  # positions s < t: distance t - s, dissimilarity parity
    assert sequence_coherence(attn, route) == pytest.approx(expected, abs=1e-12)


def test_coherence_is_invariant_to_consistent_relabelling_and_sampling_approximates_it():
    rng = np.random.default_rng(3)
    L = 30
    route = rng.permutation(L)
    attn = rng.random((3, L, L)) + rows_on_a_quarter_circle(route)[None] * 3
    full = sequence_coherence(attn, route)
    new = rng.permutation(L)
    assert sequence_coherence(relabel(attn, new), new[route]) == pytest.approx(full, abs=1e-12)
    sampled = sequence_coherence(attn, route, max_pairs=300, seed=5)
    assert sampled == sequence_coherence(attn, route, max_pairs=300, seed=5)
    assert abs(sampled - full) < 0.15 and full > 0.5


def test_matrix_similarity_known_values():
    rng = np.random.default_rng(4)
    a = rng.random((6, 6))
    assert matrix_similarity(a, 2 * a) == pytest.approx(1.0)
    assert matrix_similarity(a, 3 * a + 1, "pearson") == pytest.approx(1.0)
    assert matrix_similarity(a, -a, "pearson") == pytest.approx(-1.0)
    assert matrix_similarity(np.eye(2), np.array([[0, 1], [1, 0]])) == 0
    with pytest.raises(ValueError, match="unknown similarity 'l2'"):
        matrix_similarity(a, a, "l2")
    with pytest.raises(ValueError, match="grids differ"):
        matrix_similarity(a, a[:3])


def make_export(ordering="row_major", merged=True, seed=0):
    rng = np.random.default_rng(seed)
    blocks = []
    for stage, grid, count in ((0, (4, 4), 2), (1, (2, 2), 1)):
        routes = orderings.routes(ordering, *grid, "cross4").numpy()
        L = grid[0] * grid[1]
        for block in range(count):
            shape = (3, L, L) if merged else (3, 4, L, L)
            blocks.append(BlockAttention(stage, block, grid, ordering, rng.random(shape).astype(np.float32), routes))
    return AttentionExport(blocks=blocks, images=np.zeros((3, 8, 8, 3), np.uint8), model="synthetic",
                           ordering=ordering, merge="sum" if merged else "none")


def test_metrics_table_rows_are_json_and_agree_with_the_functions():
    export = make_export()
    rows = metrics_table(export)
    json.dumps(rows)
    assert [(r["stage"], r["block"]) for r in rows] == [(0, 0), (0, 1), (1, 0)]
    b = export.block(0, 1)
    assert rows[1]["distance"] == pytest.approx(attention_distance(b.attn, b.grid))
    assert rows[1]["neighbour_mass_r1"] == pytest.approx(neighbour_mass(b.attn, b.grid, 1))
    assert rows[1]["coherence"] == pytest.approx(sequence_coherence(b.attn, b.routes[0]))
    assert rows[0]["similarity_previous"] is None and rows[2]["similarity_previous"] is None
    assert rows[1]["similarity_previous"] == pytest.approx(
        matrix_similarity(export.block(0, 0).attn.mean(0), b.attn.mean(0)))
    summary = stage_summary(rows)
    assert summary[0]["blocks"] == 2
    assert summary[0]["distance"] == pytest.approx((rows[0]["distance"] + rows[1]["distance"]) / 2)


def test_per_route_exports_are_measured_on_the_route_sum():
    export = make_export(merged=False)
    rows = metrics_table(export)
    b = export.block(0, 0)
    assert rows[0]["distance"] == pytest.approx(attention_distance(b.attn.sum(1), b.grid))


def test_block_similarity_and_export_comparison():
    export = make_export()
    keys, sim = block_similarity_matrix(export, 0)
    assert keys == ["s0b0", "s0b1"]
    np.testing.assert_allclose(np.diag(sim), 1.0)
    assert sim[0, 1] == pytest.approx(sim[1, 0])
    same = compare_exports(export, export)
    assert all(r["cosine"] == pytest.approx(1.0) and r["pearson"] == pytest.approx(1.0) for r in same)
    other = compare_exports(export, make_export("column_major", seed=1))
    assert other[0]["ordering_b"] == "column_major" and other[0]["pearson"] < 0.5
    with pytest.raises(ValueError, match="no block in stage 7"):
        block_similarity_matrix(export, 7)


def test_bad_shapes_are_reported():
    with pytest.raises(ValueError, match=r"attention must be \(\.\.\., 6, 6\) for grid \(2, 3\)"):
        attention_distance(np.ones((5, 5)), (2, 3))
    with pytest.raises(ValueError, match="radius must be >= 0"):
        neighbour_mass(np.ones((4, 4)), (2, 2), -1)
