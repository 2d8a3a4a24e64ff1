"""Evaluate trained checkpoints: multi-view accuracy, retrieval, energy and activation maps.

Each CHECKPOINT is a checkpoint directory or `checkpoint.pt` (local or
s3://), `runs:/<run_id>`, or a bare MLflow run id, whose
`checkpoints/best/checkpoint.pt` artifact is then downloaded. The model is
rebuilt from the checkpoint's variant and config and tested on every view
(clips x crops) of the manifest's test split, or its val split when there is
no test split. The logits of a video's views are averaged (`--aggregation
softmax` averages probabilities instead). Results are printed as a table,
written under `--output`, and logged to the checkpoint's MLflow run as
metrics `<split>_top1_<views>`, `<split>_top5_<views>` and artifacts under
`evaluation/<split>_<views>/`.

    python pipelines/evaluate.py runs:/<run_id> --views 4x3
    python pipelines/evaluate.py <run_id> --views 1x1 --retrieval --profile
    python pipelines/evaluate.py <run_id> --activation-maps --compare <vanilla run_id> --stage 3
    python pipelines/evaluate.py <split1> <split2> <split3> --all-splits --views 4x3

`--all-splits` takes three checkpoints of UCF101 or HMDB51, one per official
split, and also reports the mean over the splits.
"""

from __future__ import annotations

import argparse
import logging
import re
import statistics
import sys
from pathlib import Path

from _common import configure_logging, init_ray

from stsep.config import resolve_tracking_uri
from stsep.evaluation.batches import ENGINES
from stsep.evaluation.metrics import VIEW_AGGREGATIONS, parse_views
from stsep.evaluation.runner import EvaluationSettings

logger = logging.getLogger("stsep.pipelines.evaluate")

THREE_SPLIT_DATASETS = ("ucf101", "hmdb51")
DEFAULT_OUTPUT = Path("evaluation")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "checkpoints", nargs="+", metavar="CHECKPOINT", help="checkpoint path, s3:// URI, runs:/<run_id> or run id"
    )

    # Protocol.
    parser.add_argument(
        "--views", default=None,
        help="clips x crops per video, such as 1x1 or 4x3 (default: the checkpoint config's)",
    )
    parser.add_argument(
        "--aggregation", choices=VIEW_AGGREGATIONS, default="logits",
        help="average logits (default) or softmax probabilities over the views of a video",
    )
    parser.add_argument(
        "--split", choices=("test", "val"), default=None,
        help="split to evaluate (default: test if the manifest has it, else val)",
    )
    parser.add_argument(
        "--manifest", action="append", default=None,
        help="manifest path or URI, once per checkpoint (default: the checkpoint config's)",
    )
    parser.add_argument(
        "--all-splits", action="store_true",
        help="three checkpoints of UCF101 or HMDB51 splits 1, 2, 3: also report the mean over splits",
    )
    parser.add_argument("--limit-per-class", type=int, default=None, help="evaluate at most this many videos per class")

    # Extra evidence.
    parser.add_argument(
        "--retrieval", action="store_true", help="also compute Recall@1/5/10/20 of test videos against train videos"
    )
    parser.add_argument(
        "--profile", action="store_true",
        help="also log firing rates, synaptic operations and estimated energy per clip",
    )
    parser.add_argument("--activation-maps", action="store_true", help="also draw per-frame activation maps of --stage")
    parser.add_argument(
        "--compare", default=None, metavar="CHECKPOINT",
        help="second checkpoint drawn beside the first in the activation maps",
    )
    parser.add_argument(
        "--stage", type=int, choices=(1, 2, 3, 4), default=3, help="stage whose activation maps are drawn"
    )
    parser.add_argument(
        "--videos", nargs="+", default=None, metavar="VIDEO_ID",
        help="videos for the activation maps (default: the first video of each of the first --num-videos classes)",
    )
    parser.add_argument(
        "--num-videos", type=int, default=2, help="videos for the activation maps when --videos is not given"
    )

    # Execution.
    parser.add_argument("--batch-size", type=int, default=8, help="views per forward pass")
    parser.add_argument(
        "--engine", choices=ENGINES, default="ray", help="decode with Ray Data (default) or in a local child process"
    )
    parser.add_argument(
        "--ray-address", default=None,
        help="Ray cluster to join for --engine ray; 'local' starts a new local instance "
        "(default: RAY_ADDRESS, else join or start a local instance)",
    )
    parser.add_argument(
        "--num-cpus", type=int, default=None, help="CPUs of a newly started local Ray instance (default: this machine's)"
    )
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")

    # Output.
    parser.add_argument(
        "--tracking-uri", default=None,
        help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the working directory)",
    )
    parser.add_argument(
        "--run-id", default=None, help="MLflow run to log to, for a single checkpoint (default: the checkpoint's run)"
    )
    parser.add_argument("--no-log", action="store_true", help="do not log to MLflow")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="directory for the result files")
    return parser.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    """Reject inconsistent options with a message naming the fix."""
    if args.manifest is not None and len(args.manifest) != len(args.checkpoints):
        raise ValueError(
            f"got {len(args.manifest)} --manifest values for {len(args.checkpoints)} checkpoints; "
            "give one per checkpoint or none"
        )
    if args.all_splits and len(args.checkpoints) != 3:
        raise ValueError(f"--all-splits needs three checkpoints (splits 1, 2, 3), got {len(args.checkpoints)}")
    if args.run_id is not None and len(args.checkpoints) != 1:
        raise ValueError("--run-id applies to a single checkpoint; leave it out to log to each checkpoint's own run")
    if args.compare is not None and not args.activation_maps:
        raise ValueError("--compare is only used by --activation-maps; add --activation-maps")
    if args.num_videos < 1:
        raise ValueError(f"--num-videos must be at least 1, got {args.num_videos}")
    if args.views is not None:
        parse_views(args.views)


def check_three_splits(loaded_checkpoints) -> None:
    """Check that three checkpoints cover splits 1, 2 and 3 of one three-split dataset."""
    datasets = {loaded.config.data.dataset for loaded in loaded_checkpoints}
    splits = sorted(loaded.config.data.split for loaded in loaded_checkpoints)
    if len(datasets) != 1 or not datasets <= set(THREE_SPLIT_DATASETS):
        raise ValueError(
            f"--all-splits needs checkpoints of one of {', '.join(THREE_SPLIT_DATASETS)}, got datasets {sorted(datasets)}"
        )
    if splits != [1, 2, 3]:
        raise ValueError(f"--all-splits needs one checkpoint per split 1, 2, 3, got splits {splits}")


def format_table(reports) -> str:
    """Format evaluation reports as a Markdown table."""
    lines = [
        "| variant | split | views | videos | top-1 | top-5 | recall@1 | energy (mJ/clip) | run |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for report in reports:
        recall = f"{report.recalls[1]:.4f}" if report.recalls else "n/a"
        energy = f"{report.energy.energy_mj:.4g}" if report.energy else "n/a"
        lines.append(
            f"| {report.variant} | {report.split} | {report.views.label} | {report.result.num_videos} | "
            f"{report.result.top1:.4f} | {report.result.top5:.4f} | {recall} | {energy} | {report.run_id or 'n/a'} |"
        )
    return "\n".join(lines)


def activation_map_videos(manifest_path: str, *, split: str, video_ids: list[str] | None, count: int):
    """Return the manifest rows to draw: `video_ids`, or the first video of each of the first `count` classes."""
    from stsep.data import select_split

    rows = select_split(manifest_path, split=split)
    rows = rows[rows["readable"]]
    if video_ids:
        missing = sorted(set(video_ids) - set(rows["video_id"]))
        if missing:
            raise ValueError(f"videos {missing} are not readable rows of split {split!r} in {manifest_path}")
        return rows.set_index("video_id", drop=False).loc[video_ids]
    return rows.sort_values("video_id").groupby("label", sort=True).head(1).head(count)


def draw_activation_maps(loaded, compare, report, args, output_dir: Path) -> list[Path]:
    """Write one activation-map PNG per chosen video and return the paths."""
    from stsep.data import decode_clip, to_model_input
    from stsep.evaluation.activation_maps import compute_activation_maps, save_activation_maps
    from stsep.evaluation.metrics import ViewSpec
    from stsep.evaluation.runner import clip_config_for

    models = {loaded.variant: loaded.model}
    if compare is not None:
        label = compare.variant
        if label == loaded.variant:
            label = f"{compare.variant} ({compare.run_id or 'compare'})"
        models[label] = compare.model
    clip = clip_config_for(loaded, ViewSpec(num_clips=1, num_crops=1))
    rows = activation_map_videos(report.manifest, split=report.split, video_ids=args.videos, count=args.num_videos)
    paths = []
    for row in rows.to_dict("records"):
        frames = decode_clip(row, clip=clip, training=False)  # [T, H, W, 3]
        maps = compute_activation_maps(
            models, frames, stage=args.stage, to_input=to_model_input, video_id=str(row["video_id"])
        )
        # Video ids may contain path separators (probe windows such as "clip@0-16/forward").
        file_stem = re.sub(r"[^A-Za-z0-9_.@-]+", "_", str(row["video_id"]))
        paths.append(save_activation_maps(maps, output_dir / f"stage{args.stage}_{file_stem}.png"))
    return paths


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging()
    try:
        check_args(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    import torch
    from mlflow.tracking import MlflowClient

    from stsep.evaluation.loading import load_trained_model
    from stsep.evaluation.runner import evaluate_checkpoint, log_evaluation, write_evaluation_artifacts

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    tracking_uri = resolve_tracking_uri(args.tracking_uri)
    try:
        loaded_checkpoints = [
            load_trained_model(source, tracking_uri=tracking_uri, device=device) for source in args.checkpoints
        ]
        compare = load_trained_model(args.compare, tracking_uri=tracking_uri, device=device) if args.compare else None
        if args.all_splits:
            check_three_splits(loaded_checkpoints)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    if args.engine == "ray":
        init_ray(address=args.ray_address, num_cpus=args.num_cpus)
    client = None if args.no_log else MlflowClient(tracking_uri=tracking_uri)
    reports = []
    for index, loaded in enumerate(loaded_checkpoints):
        data = loaded.config.data
        views = parse_views(args.views or f"{data.num_clips}x{data.num_crops}")
        settings = EvaluationSettings(
            views=views, split=args.split, manifest=args.manifest[index] if args.manifest else None,
            aggregation=args.aggregation, batch_size=args.batch_size, engine=args.engine,
            limit_per_class=args.limit_per_class, retrieval=args.retrieval, profile=args.profile, device=device,
        )
        try:
            report = evaluate_checkpoint(loaded, settings)
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        reports.append(report)

        run_id = args.run_id or report.run_id
        output_dir = args.output / f"{loaded.variant}-{run_id or index}" / f"{report.split}_{views.label}"
        write_evaluation_artifacts(report, output_dir)
        if args.activation_maps and index == 0:
            draw_activation_maps(loaded, compare, report, args, output_dir / "activation_maps")
        if client is not None:
            if run_id is None:
                logger.warning("checkpoint %s names no MLflow run; pass --run-id to log its results", loaded.source)
            else:
                log_evaluation(client, run_id, report, output_dir)
        print(f"results of {loaded.source}: {output_dir}")

    print(format_table(reports))
    if args.all_splits:
        print_split_mean(reports, client=client)
    return 0


def print_split_mean(reports, *, client) -> None:
    """Print the mean top-1 and top-5 over the three splits and log them to each split's run."""
    top1 = statistics.mean(report.result.top1 for report in reports)
    top5 = statistics.mean(report.result.top5 for report in reports)
    label = reports[0].views.label
    print(f"mean over splits 1-3 ({label} views): top-1 {top1:.4f}, top-5 {top5:.4f}")
    if client is None:
        return
    metrics = {
        f"{reports[0].split}_top1_{label}_mean_over_splits": top1,
        f"{reports[0].split}_top5_{label}_mean_over_splits": top5,
    }
    for report in reports:
        if report.run_id is not None:
            for key, value in metrics.items():
                client.log_metric(report.run_id, key, value)


if __name__ == "__main__":
    sys.exit(main())
