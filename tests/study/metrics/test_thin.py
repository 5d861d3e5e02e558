"""Guo–Hall thinning of stacks against scikit-image's ``thin`` as the oracle."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from skimage.morphology import thin

from study.metrics._thin import thin_stack


def _blobs(rng: np.random.Generator, shape: tuple[int, ...], sigma: float, level: float):
    axes = (0,) * (len(shape) - 2) + (sigma, sigma)
    return gaussian_filter(rng.normal(size=shape), axes) > level


@pytest.mark.parametrize("seed", range(6))
def test_each_map_is_thinned_as_scikit_image_thins_it(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(25):
        height, width = (int(n) for n in rng.integers(1, 140, 2))
        image = _blobs(rng, (height, width), rng.uniform(0, 3), rng.uniform(-0.8, 0.8))
        np.testing.assert_array_equal(thin_stack(image), thin(image))


def test_a_stack_is_thinned_map_by_map() -> None:
    """Maps that converge early stay put while others of the stack still thin."""
    rng = np.random.default_rng(7)
    field = gaussian_filter(rng.normal(size=(40, 130)), 2.5)
    stack = np.stack([field > level for level in np.linspace(-1, 1, 9)]).reshape(3, 3, 40, 130)
    thinned = thin_stack(stack)
    assert thinned.shape == stack.shape
    for index in np.ndindex(3, 3):
        np.testing.assert_array_equal(thinned[index], thin(stack[index]))


@pytest.mark.parametrize("width", [63, 64, 65, 128])
def test_lines_across_word_boundaries(width: int) -> None:
    """Pixels packed 64 to a word: a thick band crossing a word's edge thins to one line."""
    band = np.zeros((9, width), dtype=bool)
    band[2:7, :] = True
    band[:, width // 2] = True
    np.testing.assert_array_equal(thin_stack(band), thin(band))
    assert thin_stack(band)[4].sum() >= width - 4  # the band's middle row remains


def test_empty_and_full_maps() -> None:
    for image in (np.zeros((5, 70), bool), np.ones((5, 70), bool), np.ones((1, 1), bool)):
        np.testing.assert_array_equal(thin_stack(image), thin(image))
