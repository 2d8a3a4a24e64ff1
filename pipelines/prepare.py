"""Prepare a dataset manifest: read the layout, probe every video once, write Parquet.

    python pipelines/prepare.py --dataset ucf101 --root /data/ucf101 --split 1 --output manifests/ucf101-1.parquet
    python pipelines/prepare.py --dataset ssv2 --root s3://datasets/ssv2 --output s3://datasets/manifests/ssv2.parquet
    python pipelines/prepare.py --dataset demo --output manifests/demo.parquet

``--root`` may be a local folder or an ``s3://bucket/prefix``, and the S3
endpoint comes from ``AWS_ENDPOINT_URL`` when it is set. Probing runs on Ray
Data: the command joins the cluster in ``RAY_ADDRESS`` or starts a local
one. Exit status: 0 on success, 2 for invalid arguments or a missing
dataset layout (one line on stderr), 1 when probing fails.
"""

from __future__ import annotations

import argparse
import logging
import sys

from _common import EXIT_CONFIG_ERROR, configure_logging, init_ray

logger = logging.getLogger("stsep.pipelines.prepare")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line instead of usage + message
        sys.stderr.write(f"error: {message}\n")
        raise SystemExit(EXIT_CONFIG_ERROR)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    from stsep.data import DATASETS

    parser = _Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, choices=DATASETS, help="dataset layout or probe task")
    parser.add_argument(
        "--root", default=None,
        help="dataset folder or s3://bucket/prefix; for 'manifest' the CSV or Parquet list of videos; "
        "optional for 'demo', where it adds videos to the sample clips",
    )
    parser.add_argument("--split", type=int, default=1, help="official split of ucf101 and hmdb51: 1, 2 or 3 (default: 1)")
    parser.add_argument("--output", required=True, help="manifest file to write: local path or s3:// URI (.parquet)")
    parser.add_argument(
        "--window", type=int, default=None,
        help="frames per probe window for arrow, speed and demo (default: 16, 32 for speed)",
    )
    parser.add_argument(
        "--test-fraction", type=float, default=0.25,
        help="share of each source video used for probe test windows (default: 0.25)",
    )
    parser.add_argument(
        "--val-fraction", type=float, default=0.2,
        help="share of each class put in the val split of a folder layout (default: 0.2)",
    )
    parser.add_argument("--probe-concurrency", type=int, default=2, help="parallel probing actors, one CPU each (default: 2)")
    parser.add_argument(
        "--probe-timeout", type=float, default=120.0,
        help="seconds one video may take to probe before it counts as unreadable (default: 120)",
    )
    parser.add_argument(
        "--ray-address", default=None,
        help="Ray cluster to join; 'local' always starts a new local instance "
        "(default: RAY_ADDRESS, else join or start a local instance)",
    )
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of a newly started local Ray instance")
    args = parser.parse_args(argv)

    if args.probe_concurrency < 1:
        parser.error(f"invalid value {args.probe_concurrency} for --probe-concurrency: expected >= 1")
    if args.probe_timeout <= 0:
        parser.error(f"invalid value {args.probe_timeout} for --probe-timeout: expected seconds > 0")
    if args.window is not None and args.window < 1:
        parser.error(f"invalid value {args.window} for --window: expected frames >= 1")
    return args


def _fail(message: object) -> int:
    sys.stderr.write("error: " + " ".join(str(message).split()) + "\n")
    return EXIT_CONFIG_ERROR


def main(argv: list[str] | None = None) -> int:
    """Run the command line and return the exit status."""
    args = parse_args(argv)
    configure_logging()

    import ray

    from stsep.data import _filesystem, prepare_manifest, summarize_manifest
    from stsep.data.prepare import check_arguments

    try:
        check_arguments(args.dataset, root=args.root, split=args.split)
        if args.root is not None and not _filesystem.exists(args.root):
            return _fail(f"--root {args.root!r} not found")
    except ValueError as error:
        return _fail(error)

    if not ray.is_initialized():
        init_ray(address=args.ray_address, num_cpus=args.num_cpus)
    try:
        manifest = prepare_manifest(
            args.dataset,
            root=args.root,
            split=args.split,
            output=args.output,
            window=args.window,
            test_fraction=args.test_fraction,
            val_fraction=args.val_fraction,
            probe_concurrency=args.probe_concurrency,
            probe_timeout_s=args.probe_timeout,
        )
    except ValueError as error:
        return _fail(error)
    print(summarize_manifest(manifest))
    print(f"manifest: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
