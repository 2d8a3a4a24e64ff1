"""Retrieval: time pooling, cosine ranking and Recall@k against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from stsep.data import decode_clip, read_manifest, to_model_input
from stsep.evaluation.loading import load_trained_model
from stsep.evaluation.metrics import parse_views
from stsep.evaluation.retrieval import pool_features, recall_at_k, recall_metrics
from stsep.evaluation.runner import EvaluationSettings, evaluate_checkpoint
from tests.test_evaluation import clip_config, tiny_data  # noqa: F401 (tiny_data is a fixture)

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


@torch.no_grad()
def test_checkpoint_recall_by_brute_force(tiny_data):
    manifest, checkpoint, model = tiny_data
    views = parse_views("1x1")
    rows = read_manifest(str(manifest)).to_dict("records")
    features = {}
    for row in rows:
        clip = decode_clip(row, clip=clip_config(views), training=False)
        per_step = model.forward_features(to_model_input(torch.as_tensor(clip)[None]))[:, 0]  # [T, D]
        features[row["video_id"]] = per_step.mean(dim=0).tolist()
    train = [row for row in rows if row["split"] == "train"]
    test = [row for row in rows if row["split"] == "test"]

    def cosine(a, b):
        return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))

    expected = {}
    for k in (1, 2, 3):
        hits = 0
        for query in test:
            ranked = sorted(train, key=lambda row: -cosine(features[query["video_id"]], features[row["video_id"]]))
            hits += any(row["label"] == query["label"] for row in ranked[:k])
        expected[k] = hits / len(test)

    report = evaluate_checkpoint(
        load_trained_model(str(checkpoint)), EvaluationSettings(views=views, engine="local", retrieval=True)
    )
    recalls = recall_at_k(
        *_features_and_labels(features, test), *_features_and_labels(features, train), ks=(1, 2, 3)
    )

    assert report.recalls[1] == pytest.approx(expected[1])
    assert recalls == pytest.approx(expected)
    assert set(report.recalls) == {1, 5, 10, 20}
    # Four train videos cover both classes, so every query finds its class within the gallery.
    assert report.recalls[20] == pytest.approx(1.0)


def _features_and_labels(features, rows):
    return torch.tensor([features[row["video_id"]] for row in rows]), [row["label"] for row in rows]
