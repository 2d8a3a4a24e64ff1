"""Retrieval: time pooling, cosine ranking and Recall@k against hand-worked answers."""

from __future__ import annotations

import math

import pytest
import torch

from stsep.evaluation.retrieval import pool_features, recall_at_k, recall_metrics

# Train videos (the gallery) in 2-D, with classes chosen so each query's rank is easy to follow.
GALLERY = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
GALLERY_LABELS = [0, 1, 2, 1]

# Test videos: the nearest train video by cosine similarity is given for each.
QUERIES = torch.tensor(
    [
        [1.0, 0.1],  # class 0: ranks g0 (0), g2 (2), g1 (1), g3 (1)  -> hit at 1
        [0.1, 1.0],  # class 2: ranks g1 (1), g2 (2), ...            -> miss at 1, hit at 2
        [-1.0, -0.2],  # class 1: ranks g3 (1) first                  -> hit at 1
        [0.0, -1.0],  # class 3: no train video of class 3            -> never a hit
    ]
)
QUERY_LABELS = [0, 2, 1, 3]


def test_recall_at_k_hand_worked():
    recalls = recall_at_k(QUERIES, QUERY_LABELS, GALLERY, GALLERY_LABELS, ks=(1, 2, 5, 20))

    assert recalls[1] == pytest.approx(2 / 4)
    assert recalls[2] == pytest.approx(3 / 4)
    # k above the gallery size uses the whole gallery; the class-3 query still misses.
    assert recalls[5] == pytest.approx(3 / 4)
    assert recalls[20] == pytest.approx(3 / 4)


def test_recall_three_queries():
    recalls = recall_at_k(QUERIES[:3], QUERY_LABELS[:3], GALLERY, GALLERY_LABELS, ks=(1, 5))

    assert recalls[1] == pytest.approx(2 / 3)
    assert recalls[5] == pytest.approx(1.0)


def test_recall_ignores_feature_scale():
    scaled = QUERIES * torch.tensor([[3.0], [0.5], [10.0], [2.0]])

    assert recall_at_k(scaled, QUERY_LABELS, GALLERY * 7, GALLERY_LABELS, ks=(1,)) == recall_at_k(
        QUERIES, QUERY_LABELS, GALLERY, GALLERY_LABELS, ks=(1,)
    )


def test_recall_metric_names():
    assert recall_metrics({5: 0.25, 1: 0.5}) == {"recall_at_1": 0.5, "recall_at_5": 0.25}


def test_pool_features_mean_then_unit_length():
    # [T=2, B=1, D=2]: the mean over time is [3, 4], whose unit vector is [0.6, 0.8].
    features = torch.tensor([[[2.0, 4.0]], [[4.0, 4.0]]])

    pooled = pool_features(features)

    assert pooled.shape == (1, 2)
    assert pooled[0].tolist() == pytest.approx([0.6, 0.8])
    assert math.isclose(float(pooled.norm()), 1.0, rel_tol=1e-6)


@pytest.mark.parametrize(
    ("query", "gallery", "message"),
    [
        (torch.zeros(2, 3), torch.zeros(4, 2), "widths differ"),
        (torch.zeros(0, 2), torch.zeros(4, 2), "at least one query"),
        (torch.zeros(2, 2, 1), torch.zeros(4, 2), r"\[N, D\]"),
    ],
)
def test_recall_rejects_bad_shapes(query, gallery, message):
    with pytest.raises(ValueError, match=message):
        recall_at_k(query, [0] * query.shape[0], gallery, [0] * gallery.shape[0])


def test_pool_features_rejects_batch_layout():
    with pytest.raises(ValueError, match=r"\[T, B, D\]"):
        pool_features(torch.zeros(4, 8))
