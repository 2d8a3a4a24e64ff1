"""Evaluation of trained STSep models: multi-view accuracy, retrieval,
activation maps, and firing rates, synaptic operations and energy per run."""

from stsep.evaluation.metrics import (
    ClassificationResult,
    ViewSpec,
    aggregate_views,
    classification_result,
    confusion_matrix,
    parse_views,
    per_class_accuracy,
    topk_accuracy,
)
from stsep.evaluation.multiview import ViewLogits, collect_view_logits, evaluate_multiview
from stsep.evaluation.retrieval import VideoFeatures, extract_video_features, pool_features, recall_at_k

__all__ = [
    "ClassificationResult",
    "VideoFeatures",
    "ViewLogits",
    "ViewSpec",
    "aggregate_views",
    "classification_result",
    "collect_view_logits",
    "confusion_matrix",
    "evaluate_multiview",
    "extract_video_features",
    "parse_views",
    "per_class_accuracy",
    "pool_features",
    "recall_at_k",
    "topk_accuracy",
]
