"""Evaluation: multi-view aggregation, accuracy and confusion matrices, checked by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from stsep.evaluation.metrics import (
    aggregate_views,
    classification_result,
    confusion_matrix,
    parse_views,
    per_class_accuracy,
    topk_accuracy,
)


def test_aggregate_logits_mean_per_video():
    # Views of videos "a" and "b" interleaved, as a distributed loader may return them.
    logits = torch.tensor([[1.0, 0.0, 2.0], [4.0, 1.0, 0.0], [3.0, 3.0, 3.0], [0.0, 5.0, 1.0]])
    video_ids = ["a", "b", "a", "b"]
    labels = [2, 1, 2, 1]

    ids, scores, video_labels = aggregate_views(logits, video_ids, labels)

    assert ids == ["a", "b"]
    assert scores[0].tolist() == pytest.approx([2.0, 1.5, 2.5])
    assert scores[1].tolist() == pytest.approx([2.0, 3.0, 0.5])
    assert video_labels.tolist() == [2, 1]


def test_aggregate_softmax_mean_per_video():
    logits = torch.tensor([[0.0, 0.0], [2.0, 0.0]])

    _, scores, _ = aggregate_views(logits, ["v", "v"], [0, 0], mode="softmax")

    p = math.exp(2.0) / (math.exp(2.0) + 1.0)
    assert scores[0].tolist() == pytest.approx([(0.5 + p) / 2, (0.5 + 1 - p) / 2])


def test_aggregate_rejects_label_mismatch():
    with pytest.raises(ValueError, match="different labels"):
        aggregate_views(torch.zeros(2, 3), ["v", "v"], [0, 1])


def test_aggregate_rejects_unknown_mode():
    with pytest.raises(ValueError, match="logits, softmax"):
        aggregate_views(torch.zeros(1, 3), ["v"], [0], mode="max")


def test_topk_accuracy_by_hand():
    scores = torch.tensor(
        [
            [0.9, 0.1, 0.0, 0.0, 0.0, 0.0],  # label 0: top-1 hit
            [0.0, 0.1, 0.2, 0.3, 0.4, 0.5],  # label 1: rank 5 -> top-5 hit only
            [0.0, 0.1, 0.2, 0.3, 0.4, 0.5],  # label 0: rank 6 -> miss
            [0.0, 0.0, 0.0, 1.0, 0.0, 0.0],  # label 2: rank 4 (ties ranked by index) -> top-5 hit
        ]
    )
    labels = torch.tensor([0, 1, 0, 2])

    accuracy = topk_accuracy(scores, labels, ks=(1, 5))

    assert accuracy[1] == pytest.approx(1 / 4)
    assert accuracy[5] == pytest.approx(3 / 4)


def test_topk_larger_than_classes_counts_all():
    assert topk_accuracy(torch.tensor([[0.0, 1.0]]), torch.tensor([0]), ks=(5,))[5] == 1.0


def test_confusion_and_per_class_accuracy():
    predictions = torch.tensor([0, 1, 1, 2, 0])
    labels = torch.tensor([0, 1, 0, 2, 0])

    matrix = confusion_matrix(predictions, labels, num_classes=4)

    expected = np.zeros((4, 4), dtype=int)
    expected[0, 0], expected[0, 1], expected[1, 1], expected[2, 2] = 2, 1, 1, 1
    np.testing.assert_array_equal(matrix, expected)
    class_accuracy = per_class_accuracy(matrix)
    assert class_accuracy[:3].tolist() == pytest.approx([2 / 3, 1.0, 1.0])
    assert math.isnan(class_accuracy[3])


def test_classification_result_rejects_wrong_width():
    with pytest.raises(ValueError, match="num_classes is 5"):
        classification_result(torch.zeros(2, 3), torch.tensor([0, 1]), ["a", "b"], num_classes=5)


@pytest.mark.parametrize(("text", "clips", "crops"), [("1x1", 1, 1), ("4x3", 4, 3), (" 2X1 ", 2, 1)])
def test_parse_views(text, clips, crops):
    views = parse_views(text)

    assert (views.num_clips, views.num_crops) == (clips, crops)
    assert views.num_views == clips * crops


@pytest.mark.parametrize("text", ["3", "0x1", "axb", "1x2x3", "-1x2"])
def test_parse_views_rejects(text):
    with pytest.raises(ValueError, match="clips"):
        parse_views(text)
