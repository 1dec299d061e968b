"""BIGRec's second grounding step: popularity injected into the grounding distance (off by default)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dllm2rec.io import UserError
from dllm2rec.teacher.generate import popularity_gamma
from dllm2rec.teacher.ground import item_popularity, nearest_items

# one query at the origin, four items on a line at L2 distances 1, 2, 3, 4
QUERY = torch.zeros(1, 2)
ITEMS = torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [4.0, 0.0]])


def test_item_popularity_is_min_max_scaled_train_target_counts():
    # counts 1, 5, 3, 0 (item 3 never a target) -> (c - 0) / 5
    pop = item_popularity([0, 1, 1, 1, 1, 1, 2, 2, 2], 4)
    np.testing.assert_allclose(pop, [0.2, 1.0, 0.6, 0.0])
    assert pop.dtype == np.float32
    np.testing.assert_array_equal(item_popularity([0, 1, 2], 3), [0.0, 0.0, 0.0])  # all equal: no signal


def test_popularity_reorders_by_bigrec_score():
    # scaled distances 0, 1/3, 2/3, 1; popularity 0, 0, 1, 0.
    # gamma 2: scores 0, 1/3, (2/3) / 4 = 1/6, 1 -> order 0, 2, 1, 3
    pop = np.array([0.0, 0.0, 1.0, 0.0], dtype=np.float32)
    items, dist, target = nearest_items(QUERY, ITEMS, 4, targets=[1], popularity=pop, gamma=2.0)
    assert items.tolist() == [[0, 2, 1, 3]]
    np.testing.assert_allclose(dist, [[1.0, 9.0, 4.0, 16.0]])  # squared L2 of each listed item
    np.testing.assert_allclose(target, [4.0])
    # gamma 0.5: item 2 scores (2/3) / sqrt(2) = 0.471 > 1/3: the plain order stays
    items, _, _ = nearest_items(QUERY, ITEMS, 4, popularity=pop, gamma=0.5)
    assert items.tolist() == [[0, 1, 2, 3]]


def test_gamma_zero_is_plain_grounding_bit_for_bit():
    rng = np.random.default_rng(0)
    q, it = torch.from_numpy(rng.normal(size=(7, 5)).astype(np.float32)), torch.from_numpy(rng.normal(size=(30, 5)).astype(np.float32))
    pop = rng.random(30).astype(np.float32)
    plain = nearest_items(q, it, 10, targets=list(range(7)))
    off = nearest_items(q, it, 10, targets=list(range(7)), popularity=pop, gamma=0.0)
    for a, b in zip(plain, off):
        np.testing.assert_array_equal(a, b)
    assert popularity_gamma({"grounding": {"topn": 10}}) == 0.0
    assert popularity_gamma({"grounding": {"popularity_gamma": 3}}) == 3.0


def test_popularity_missing_is_a_clear_error():
    with pytest.raises(UserError, match="popularity"):
        nearest_items(QUERY, ITEMS, 4, gamma=1.0)


def test_schema_declares_the_option_off_by_default():
    from dllm2rec.schema import config_schema

    prop = config_schema()["$defs"]["teacher"]["properties"]["grounding"]["properties"]["popularity_gamma"]
    assert prop["default"] == 0 and prop["minimum"] == 0
