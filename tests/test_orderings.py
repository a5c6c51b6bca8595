"""Orderings: exact permutations written out by hand, adjacency, the Hilbert curve, cross4 against VMamba's
CrossScan, caching, user-defined orderings and error messages."""
import subprocess
import sys

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

import orderings
from orderings import FunctionOrdering, Ordering, OrderingError, get, resolve, routes, validate
from orderings.examples import Tiled
from orderings.hilbert import _walk, hilbert_cells


def cells(perm: torch.Tensor, width: int) -> list[tuple[int, int]]:
    return [(int(p) // width, int(p) % width) for p in perm]


def unit_steps(perm: torch.Tensor, width: int) -> bool:
    path = cells(perm, width)
    return all(abs(r1 - r0) + abs(c1 - c0) == 1 for (r0, c0), (r1, c1) in zip(path, path[1:]))


# --- exact permutations, derived by hand on the raster-numbered grid ----------------------------------------

EXPECTED = {
    # 2x3 grid: 0 1 2 / 3 4 5
    ("row_major", 2, 3): [0, 1, 2, 3, 4, 5],
    ("column_major", 2, 3): [0, 3, 1, 4, 2, 5],
    # 3x3 grid: 0 1 2 / 3 4 5 / 6 7 8
    ("diagonal", 3, 3): [0, 1, 3, 2, 4, 6, 5, 7, 8],
    ("morton", 3, 3): [0, 1, 3, 4, 2, 5, 6, 7, 8],
    ("spiral", 3, 3): [0, 1, 2, 5, 8, 7, 6, 3, 4],
    ("snake", 3, 3): [0, 1, 2, 5, 4, 3, 6, 7, 8],
    # 2x4 grid: 0 1 2 3 / 4 5 6 7
    ("diagonal", 2, 4): [0, 1, 4, 2, 5, 3, 6, 7],
    ("morton", 2, 4): [0, 1, 4, 5, 2, 3, 6, 7],
    ("spiral", 2, 4): [0, 1, 2, 3, 7, 6, 5, 4],
    ("snake", 2, 4): [0, 1, 2, 3, 7, 6, 5, 4],
    # 4x2 grid: 0 1 / 2 3 / 4 5 / 6 7 (each anti-diagonal is (r, c+1), (r+1, c): raster order here)
    ("diagonal", 4, 2): [0, 1, 2, 3, 4, 5, 6, 7],
    # 3x4 grid: 0 1 2 3 / 4 5 6 7 / 8 9 10 11
    ("diagonal", 3, 4): [0, 1, 4, 2, 5, 8, 3, 6, 9, 7, 10, 11],
    ("morton", 3, 4): [0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 10, 11],
    ("spiral", 3, 4): [0, 1, 2, 3, 7, 11, 10, 9, 8, 4, 5, 6],
    ("hilbert", 3, 4): [0, 1, 5, 4, 8, 9, 10, 11, 7, 6, 2, 3],
    # 4x3 grid: 0 1 2 / 3 4 5 / 6 7 8 / 9 10 11
    ("spiral", 4, 3): [0, 1, 2, 5, 8, 11, 10, 9, 6, 3, 4, 7],
    # 4x4 grid: 0 1 2 3 / 4 5 6 7 / 8 9 10 11 / 12 13 14 15
    ("morton", 4, 4): [0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15],
    ("hilbert", 4, 4): [0, 1, 5, 4, 8, 12, 13, 9, 10, 14, 15, 11, 7, 6, 2, 3],
    # 2x2 grid: 0 1 / 2 3
    ("spiral", 2, 2): [0, 1, 3, 2],
    ("hilbert", 2, 2): [0, 2, 3, 1],
}


@pytest.mark.parametrize("name, height, width", sorted(EXPECTED))
def test_exact_permutation(name, height, width):
    assert get(name)(height, width).tolist() == EXPECTED[(name, height, width)]


@pytest.mark.parametrize("name", ["row_major", "column_major", "diagonal", "morton", "spiral", "snake", "hilbert"])
@pytest.mark.parametrize("length", [1, 2, 7])
def test_lines_are_visited_in_order(name, length):
    # A 1xN or Nx1 grid has one sensible order for every structured ordering: straight along the line.
    assert get(name)(1, length).tolist() == list(range(length))
    assert get(name)(length, 1).tolist() == list(range(length))


# --- structure and adjacency ----------------------------------------------------------------------------------

SIDES = range(1, 21)


@pytest.mark.parametrize("name", ["spiral", "snake"])
def test_spiral_and_snake_take_unit_steps(name):
    ordering = get(name)
    bad = [(h, w) for h in SIDES for w in SIDES if not unit_steps(ordering(h, w), w)]
    assert bad == []


def test_spiral_is_clockwise_from_top_left():
    # On any grid the spiral first walks the whole top row, then down the right column.
    for h, w in [(5, 7), (7, 5), (6, 6)]:
        path = cells(get("spiral")(h, w), w)
        assert path[: w + h - 1] == [(0, c) for c in range(w)] + [(r, w - 1) for r in range(1, h)]


def test_hilbert_takes_unit_steps_on_every_grid():
    """The exception set of the Hilbert ordering is empty: pinned on every grid from 1x1 to 20x20."""
    hilbert = get("hilbert")
    exceptions = {(h, w) for h in SIDES for w in SIDES if not unit_steps(hilbert(h, w), w)}
    assert exceptions == set()


def test_classic_construction_needs_a_diagonal_exactly_where_the_docstring_says():
    """Why hilbert.py ends some curves elsewhere: ending at (0, W - 1) forces one diagonal step exactly when
    the long side is odd and the short side even (and > 2); the parity argument in its docstring."""
    diagonal = set()
    for h in SIDES:
        for w in SIDES:
            out = []
            if w >= h:
                _walk(0, 0, w, 0, 0, h, out)
            else:
                _walk(0, 0, 0, h, w, 0, out)
            steps = [abs(x1 - x0) + abs(y1 - y0) for (x0, y0), (x1, y1) in zip(out, out[1:])]
            assert sorted(out) == sorted((x, y) for x in range(w) for y in range(h))
            if any(s != 1 for s in steps):
                assert sorted(steps)[-1] == 2 and steps.count(2) == 1  # a single diagonal step
                diagonal.add((h, w))
    documented = {(h, w) for h in SIDES for w in SIDES
                  if max(h, w) % 2 == 1 and min(h, w) % 2 == 0 and min(h, w) > 2}
    assert diagonal == documented


def hilbert_d2xy(n: int, d: int) -> tuple[int, int]:
    """The textbook Hilbert index -> (x, y) map on an n x n grid (n a power of two); an independent oracle."""
    x = y = 0
    s = 1
    while s < n:
        rx = 1 & (d // 2)
        ry = 1 & (d ^ rx)
        if ry == 0:
            if rx == 1:
                x, y = s - 1 - x, s - 1 - y
            x, y = y, x
        x, y = x + s * rx, y + s * ry
        d //= 4
        s *= 2
    return x, y


@pytest.mark.parametrize("n", [1, 2, 4, 8, 16, 32])
def test_hilbert_is_the_classic_curve_on_power_of_two_squares(n):
    perm = get("hilbert")(n, n)
    expected = [y * n + x for x, y in (hilbert_d2xy(n, d) for d in range(n * n))]
    assert perm.tolist() == expected
    assert unit_steps(perm, n)
    assert cells(perm, n)[0] == (0, 0)
    assert cells(perm, n)[-1] in {(0, n - 1), (n - 1, 0), (n - 1, n - 1)}


def test_hilbert_starts_at_the_origin_and_keeps_quadrants_together():
    for h, w in [(5, 4), (6, 7), (7, 56), (13, 4), (28, 28), (9, 6)]:
        path = hilbert_cells(h, w)
        assert path[0] == (0, 0)
    # Locality: on 2^k squares every aligned 2^j block is one contiguous run of the curve.
    path = hilbert_cells(16, 16)
    for block in (2, 4, 8):
        runs = [(r // block, c // block) for r, c in path]
        changes = sum(a != b for a, b in zip(runs, runs[1:]))
        assert changes == (16 // block) ** 2 - 1


def interleave(r: int, c: int, bits: int) -> int:
    return sum((((r >> b) & 1) << (2 * b + 1)) | (((c >> b) & 1) << (2 * b)) for b in range(bits))


@pytest.mark.parametrize("k", [0, 1, 2, 3, 4, 5])
def test_morton_is_bit_interleaving_on_power_of_two_grids(k):
    n = 2**k
    perm = get("morton")(n, n)
    # On a 2^k square the Morton code of the cell at position s is s itself.
    assert [interleave(r, c, k) for r, c in cells(perm, n)] == list(range(n * n))


def test_morton_sorts_existing_cells_on_other_grids():
    for h, w in [(3, 5), (6, 4), (7, 7), (1, 9)]:
        codes = [interleave(r, c, 4) for r, c in cells(get("morton")(h, w), w)]
        assert codes == sorted(codes) and len(set(codes)) == h * w


def test_diagonal_is_sorted_by_anti_diagonal_then_row():
    for h, w in [(5, 8), (8, 5), (6, 6), (1, 4), (4, 1)]:
        keys = [(r + c, r) for r, c in cells(get("diagonal")(h, w), w)]
        assert keys == sorted(keys) and len(keys) == h * w


def test_snake_alternates_row_directions():
    h, w = 5, 6
    rows = get("snake")(h, w).view(h, w)
    for r in range(h):
        expected = torch.arange(r * w, (r + 1) * w)
        assert torch.equal(rows[r], expected if r % 2 == 0 else expected.flip(0))


# --- random -------------------------------------------------------------------------------------------------

def test_random_is_seeded_and_reproducible():
    first = orderings.random_order.RandomOrder(seed=3)(6, 7)
    assert torch.equal(first, orderings.random_order.RandomOrder(seed=3)(6, 7))  # a fresh instance
    assert torch.equal(get("random", seed=3)(6, 7), first)
    assert not torch.equal(get("random", seed=4)(6, 7), first)
    assert torch.equal(get("random")(6, 7), get("random", seed=0)(6, 7))
    assert get("random", seed=3).label == "random(seed=3)" and get("random", seed=3).name == "random"
    # The global RNG is neither used nor disturbed.
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    orderings.random_order.RandomOrder(seed=9)(5, 5)
    assert torch.equal(torch.rand(3), expected_next)


def test_random_is_reproducible_across_processes():
    code = "import orderings; print(orderings.get('random', seed=11)(5, 9).tolist())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(get("random", seed=11)(5, 9).tolist())


@pytest.mark.parametrize("seed", [-1, 2.0, "3", True, None])
def test_random_rejects_bad_seeds(seed):
    with pytest.raises(OrderingError, match="seed must be an integer"):
        get("random", seed=seed)


# --- routes ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("height, width", [(3, 5), (4, 4), (1, 6), (7, 2)])
def test_row_major_cross4_equals_vmamba_cross_scan(height, width):
    x = torch.randn(2, 3, height, width)
    # VMamba's CrossScan: row flatten, column flatten (transpose(2, 3)), then both flipped.
    pair = torch.stack([x.flatten(2), x.transpose(2, 3).flatten(2)], dim=1)
    official = torch.cat([pair, pair.flip(-1)], dim=1)  # (B, 4, C, L)
    ours = torch.stack([x.flatten(2)[:, :, route] for route in routes("row_major", height, width, "cross4")], 1)
    assert torch.equal(ours, official)


def test_scheme_structure():
    h, w = 4, 6
    forward = get("spiral")(h, w)
    single, bidirectional, cross4 = (routes("spiral", h, w, s) for s in ("single", "bidirectional", "cross4"))
    assert single.shape == (1, h * w) and torch.equal(single[0], forward)
    assert torch.equal(bidirectional, torch.stack([forward, forward.flip(0)]))
    # Route 1: the spiral on the 6x4 grid, cell (r', c') there is cell (c', r') here: counter-clockwise.
    across = get("spiral")(w, h)
    assert cells(cross4[1], w) == [(int(t) % h, int(t) // h) for t in across]
    assert cells(cross4[1], w)[:h + 1] == [(r, 0) for r in range(h)] + [(h - 1, 1)]
    assert torch.equal(cross4[2], forward.flip(0)) and torch.equal(cross4[3], cross4[1].flip(0))
    assert torch.equal(orderings.transposed("row_major", h, w), get("column_major")(h, w))


def test_hilbert_transposed_route_on_non_square_grids_is_the_forward_route():
    """Hilbert is symmetric under transposition on non-square grids (its curve always runs along the long
    side), so cross4's route 1 repeats route 0 there; on squares it is the mirror image."""
    assert torch.equal(*routes("hilbert", 6, 9, "cross4")[:2])
    square = routes("hilbert", 8, 8, "cross4")
    assert not torch.equal(square[0], square[1])


def test_routes_are_cached_per_grid_scheme_and_device():
    first = routes("morton", 5, 6, "cross4")
    assert routes("morton", 5, 6, "cross4") is first
    assert routes(get("morton"), 5, 6, "cross4", device="cpu") is first
    assert routes("morton", 5, 6, "cross4", device=torch.device("cpu")) is first
    assert routes("morton", 5, 6, "bidirectional") is not first
    assert routes("morton", 6, 5, "cross4") is not first
    on_meta = routes("morton", 5, 6, "cross4", device="meta")
    assert on_meta.device.type == "meta" and on_meta.shape == first.shape
    assert routes("morton", 5, 6, "cross4", device="meta") is on_meta
    assert get("morton")(5, 6) is get("morton")(5, 6)


def test_routes_reject_bad_scheme_and_grid():
    with pytest.raises(OrderingError, match="unknown scan scheme 'cross8'; choose one of single, bidirectional"):
        routes("row_major", 4, 4, "cross8")
    routes("row_major", 2, 4)
    with pytest.raises(OrderingError, match="grid height must be an integer >= 1, got 2.5"):
        routes("row_major", 2.5, 4)  # must not hit the cached 2x4 routes


# --- user-defined orderings -----------------------------------------------------------------------------------

@orderings.register("test_reverse_raster")
class ReverseRaster(Ordering):
    def permutation(self, height, width):
        return torch.arange(height * width - 1, -1, -1)


def test_registered_subclass_is_usable_everywhere():
    assert "test_reverse_raster" in orderings.available()
    ordering = get("test_reverse_raster")
    assert isinstance(ordering, ReverseRaster) and ordering.name == "test_reverse_raster"
    assert ordering(2, 3).tolist() == [5, 4, 3, 2, 1, 0]
    assert resolve("test_reverse_raster") is ordering
    assert resolve(ReverseRaster)(2, 3).tolist() == [5, 4, 3, 2, 1, 0]
    # Transposed on 3x2 is the reversed raster of the 3x2 grid; mapped back it is reversed column-major.
    assert routes("test_reverse_raster", 2, 3, "cross4")[1].tolist() == [5, 2, 4, 1, 3, 0]


def test_hydra_target_selects_a_class_by_import_path():
    config = OmegaConf.create({"ordering": {"_target_": "orderings.examples.Tiled", "tile": 2}})
    built = instantiate(config.ordering)
    assert isinstance(built, Tiled) and built.label == "tiled(tile=2)"
    resolved = resolve(config.ordering)
    # 4x5 grid: 0..4 / 5..9 / 10..14 / 15..19, 2x2 tiles in row-major order, the last column a 2x1 tile.
    assert resolved(4, 5).tolist() == [0, 1, 5, 6, 2, 3, 7, 8, 4, 9, 10, 11, 15, 16, 12, 13, 17, 18, 14, 19]
    assert routes(resolved, 4, 5, "single")[0].tolist() == resolved(4, 5).tolist()
    assert resolve(OmegaConf.create({"name": "random", "seed": 5})) is get("random", seed=5)
    with pytest.raises(OrderingError) as info:
        resolve({"_target_": "orderings.examples.Tiled", "tile": 0})
    assert str(info.value) == ("cannot build the ordering _target_ 'orderings.examples.Tiled': "
                               "ordering 'tiled': tile must be an integer >= 1, got 0")
    with pytest.raises(OrderingError, match="cannot build the ordering _target_ 'orderings.nowhere.Nothing'"):
        resolve({"_target_": "orderings.nowhere.Nothing"})


def test_plain_function_is_an_ordering():
    def every_other_row_first(height, width):
        rows = list(range(0, height, 2)) + list(range(1, height, 2))
        return [r * width + c for r in rows for c in range(width)]

    ordering = resolve(every_other_row_first)
    assert isinstance(ordering, FunctionOrdering) and ordering.label == "every_other_row_first"
    assert ordering(3, 2).tolist() == [0, 1, 4, 5, 2, 3]
    assert routes(every_other_row_first, 3, 2, "bidirectional").tolist() == [[0, 1, 4, 5, 2, 3], [3, 2, 5, 4, 1, 0]]


def test_registry_rejects_clashes_and_non_orderings():
    with pytest.raises(OrderingError, match="'spiral' is already registered by orderings.spiral.Spiral"):
        @orderings.register("spiral")
        class OtherSpiral(Ordering):
            pass
    with pytest.raises(TypeError, match="expects a subclass of orderings.Ordering"):
        orderings.register("plain")(object)
    with pytest.raises(OrderingError, match="already registered as 'test_reverse_raster'"):
        orderings.register("another_name")(ReverseRaster)
    with pytest.raises(OrderingError, match="cannot use 42 as an ordering"):
        resolve(42)


def test_redefining_a_registered_class_replaces_it():
    # A notebook cell re-run defines a new class with the same module and qualified name.
    namespace = {"Ordering": Ordering, "register": orderings.register, "__name__": __name__}
    source = ("@register('test_redefined')\nclass Redefined(Ordering):\n"
              "    def permutation(self, h, w):\n        return list(range({}))\n")
    exec(source.format("h * w"), namespace)
    first = get("test_redefined")
    exec(source.format("h * w - 1, -1, -1"), namespace)
    assert get("test_redefined") is not first and get("test_redefined")(1, 3).tolist() == [2, 1, 0]


# --- errors ---------------------------------------------------------------------------------------------------

def bad(perm, name="mine", height=2, width=3):
    return FunctionOrdering(lambda h, w: perm, name=name), height, width


@pytest.mark.parametrize("perm, message", [
    ([0, 1, 2, 3, 4], "has length 5, expected 6 (one entry per patch); first offending position 5"),
    ([0, 1, 2, 3, 4, 5, 0], "has length 7, expected 6 (one entry per patch); first offending position 6"),
    ([0, 1, 2, 1, 4, 5], "position 3 repeats raster index 1 (first visited at position 1); raster index 3 is "
                         "never visited"),
    ([5, 4, 3, 2, 1, 5], "position 5 repeats raster index 5 (first visited at position 0); raster index 0 is "
                         "never visited"),
    ([0, 1, 2, 3, 4, 6], "position 5 holds raster index 6, outside 0..5"),
    ([0, -1, 2, 3, 4, 5], "position 1 holds raster index -1, outside 0..5"),
    ([0.0, 1, 2, 3, 4, 5], "permutation has dtype torch.float64; return integer raster indices"),
    (torch.ones(6, dtype=torch.bool), "permutation has dtype torch.bool"),
    (torch.arange(6).view(2, 3), "must be one-dimensional (length 6), got shape (2, 3); flatten it"),
    (torch.tensor(0), "must be one-dimensional (length 6), got shape ()"),
    (None, "permutation must be a sequence of integers, got NoneType"),
    (["a", "b"], "permutation must be a sequence of integers, got list of dtype <U1"),
    ([[0, 1], [2]], "permutation must be a flat sequence of integers"),
])
def test_bad_permutations_name_ordering_grid_and_position(perm, message):
    ordering, height, width = bad(perm)
    with pytest.raises(OrderingError) as info:
        ordering(height, width)
    text = str(info.value)
    assert text.startswith("ordering 'mine' on grid 2x3 (height x width): ")
    assert message in text, text


def test_validate_returns_a_contiguous_long_tensor():
    import numpy as np

    for perm in ([2, 0, 1], np.array([2, 0, 1], dtype=np.int32), torch.tensor([2, 0, 1], dtype=torch.int16)):
        out = validate(perm, 1, 3)
        assert out.dtype == torch.long and out.tolist() == [2, 0, 1] and out.is_contiguous()


@pytest.mark.parametrize("height, width, side, shown", [
    (0, 4, "height", "0"), (4, -2, "width", "-2"), (2.5, 4, "height", "2.5"),
    ("3", 4, "height", "'3'"), (True, 4, "height", "True"), (4, None, "width", "None"),
])
def test_bad_grid_sizes_are_rejected(height, width, side, shown):
    with pytest.raises(OrderingError) as info:
        get("spiral")(height, width)
    assert str(info.value).startswith(f"ordering 'spiral': grid {side} must be an integer >= 1, got {shown}")


def test_integer_like_grid_sizes_are_accepted():
    import numpy as np

    assert torch.equal(get("spiral")(np.int64(3), torch.tensor(4)), get("spiral")(3, 4))


def test_unknown_names_and_parameters():
    with pytest.raises(OrderingError) as info:
        get("zigzag")
    assert "unknown ordering 'zigzag'; available: column_major, diagonal, hilbert, morton, random" in str(info.value)
    with pytest.raises(OrderingError, match=r"ordering 'spiral' does not accept \{'seed': 1\}"):
        get("spiral", seed=1)
    with pytest.raises(OrderingError, match=r"its parameters are \(seed: int = 0\)"):
        get("random", sead=1)
