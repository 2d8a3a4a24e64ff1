"""Evaluation of trained STSep models: multi-view accuracy, retrieval,
activation maps, and firing rates, synaptic operations and energy per run.

`load_trained_model` rebuilds a model from a checkpoint path, s3:// URI or
MLflow run, and `evaluate_checkpoint` tests it with the given `EvaluationSettings`.
`pipelines/evaluate.py` is the command-line front end.
"""

from stsep.evaluation.activation_maps import ActivationMaps, compute_activation_maps, save_activation_maps
from stsep.evaluation.energy import EnergyProfile, profile_energy
from stsep.evaluation.loading import LoadedCheckpoint, load_trained_model
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
from stsep.evaluation.runner import EvaluationReport, EvaluationSettings, evaluate_checkpoint

__all__ = [
    "ActivationMaps",
    "ClassificationResult",
    "EnergyProfile",
    "EvaluationReport",
    "EvaluationSettings",
    "LoadedCheckpoint",
    "VideoFeatures",
    "ViewLogits",
    "ViewSpec",
    "aggregate_views",
    "classification_result",
    "collect_view_logits",
    "compute_activation_maps",
    "confusion_matrix",
    "evaluate_checkpoint",
    "evaluate_multiview",
    "extract_video_features",
    "load_trained_model",
    "parse_views",
    "per_class_accuracy",
    "pool_features",
    "profile_energy",
    "recall_at_k",
    "save_activation_maps",
    "topk_accuracy",
]
