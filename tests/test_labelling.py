"""lasagna_core.labelling: components and growth on label images made here."""

from __future__ import annotations

import numpy as np

from lasagna_core.labelling import boundaries, components, grow, neighbour_pairs


def spiral(n: int) -> np.ndarray:
    """A square spiral corridor of 1 px (the path a pixel-wise propagation needs n^2 / 2 sweeps for)."""
    wall = np.zeros((n, n), bool)
    top, left, bottom, right = 0, 0, n - 1, n - 1
    while top <= bottom and left <= right:
        wall[top, left:right + 1] = wall[top:bottom + 1, right] = wall[bottom, left:right + 1] = True
        wall[top + 2:bottom + 1, left] = True
        top, left, bottom, right = top + 2, left + 2, bottom - 2, right - 2
        if top <= bottom:
            wall[top - 1, left] = True
    return wall


def test_components_label_each_4_connected_piece_once_in_raster_order():
    classes = np.array([[0, 0, 1, -1],
                        [1, 0, 1, 1],
                        [1, -1, 0, 0],
                        [1, 1, 0, 1]])
    labels = components(classes)
    assert labels.tolist() == [[0, 0, 1, -1],
                               [2, 0, 1, 1],
                               [2, -1, 3, 3],
                               [2, 2, 3, 4]]
    corridor = spiral(41)
    labels = components(np.where(corridor, 0, -1))
    assert labels.max() == 0 and (labels[corridor] == 0).all()
    assert components(np.full((3, 3), -1)).tolist() == [[-1] * 3] * 3


def test_components_agree_with_a_flood_fill_on_random_pictures():
    rng = np.random.default_rng(0)
    for _ in range(30):
        classes = rng.integers(-1, 3, tuple(rng.integers(1, 20, 2)))
        labels = components(classes)
        h, w = classes.shape
        for y, x in zip(*np.nonzero(classes >= 0)):  # every 4-neighbour pair: same label iff same class
            for ny, nx in ((y + 1, x), (y, x + 1)):
                if ny < h and nx < w and classes[ny, nx] >= 0:
                    assert (labels[y, x] == labels[ny, nx]) == (classes[y, x] == classes[ny, nx])
        flood = 0
        seen = np.zeros(classes.shape, bool)
        for y, x in zip(*np.nonzero(classes >= 0)):
            if not seen[y, x]:
                seen |= labels == labels[y, x]
                flood += 1
        assert flood == (labels.max() + 1 if (classes >= 0).any() else 0)


def test_grow_fills_ring_by_ring_through_open_pixels_only():
    labels = np.array([[0, -1, -1, -1, 1]] * 3)
    into = np.ones(labels.shape, bool)
    into[:, [0, 4]] = False
    assert grow(labels, into).tolist() == [[0, 0, 0, 1, 1]] * 3  # the middle goes to the first seen (left)
    assert grow(labels, into, rings=1).tolist() == [[0, 0, -1, 1, 1]] * 3
    walled = into.copy()
    walled[:, 2] = False  # not open: stays unlabelled, and nothing grows through it
    assert grow(labels, walled).tolist() == [[0, 0, -1, 1, 1]] * 3
    assert grow(np.array([[0, -1, 7, -1, 1]] * 3), walled).tolist() == [[0, 0, 7, 7, 1]] * 3  # a label given is a source
    assert grow(np.full((2, 2), -1), np.ones((2, 2), bool)).tolist() == [[-1, -1], [-1, -1]]


def test_grow_takes_the_least_cost_neighbour_and_else_the_first():
    labels = np.array([[0, -1, 1]])  # the middle pixel is reached from both sides in the same ring
    into = labels < 0
    assert grow(labels, into)[0, 1] == 0  # no cost: the first neighbour looked at (left before right)
    assert grow(labels, into, cost=np.array([[0.6, 0.5, 0.2]]))[0, 1] == 1  # the less inked side
    assert grow(labels, into, cost=np.array([[0.1, 0.5, 0.2]]))[0, 1] == 0


def test_boundaries_mark_both_sides_of_a_label_change_but_not_the_canvas_edge():
    labels = np.array([[0, 0, 1], [0, 0, 1], [2, 2, 2]])
    assert boundaries(labels).astype(int).tolist() == [[0, 1, 1], [1, 1, 1], [1, 1, 1]]
    assert not boundaries(np.zeros((3, 3), int)).any()


def test_neighbour_pairs_list_every_touching_pixel_pair_both_ways():
    a, b = neighbour_pairs(np.array([[0, 0, 1], [2, 2, 1]]))
    assert sorted(zip(a.tolist(), b.tolist())) == sorted([(0, 1), (1, 0), (2, 1), (1, 2), (0, 2), (2, 0), (0, 2), (2, 0)])
