"""Storage preflight from the command line: ``python -m stsep.storage s3://bucket/runs``.

Checks each location as `stsep.storage.preflight` does and prints one line
per location, or one error line and exit status 1 on the first failure.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from stsep.storage.preflight import StoragePreflightError, preflight
from stsep.storage.settings import S3Settings, mlflow_env


def main(argv: Sequence[str] | None = None) -> int:
    """Check S3 locations from the command line; exit 1 with one line on the first failure."""
    parser = argparse.ArgumentParser(
        prog="python -m stsep.storage",
        description="Write, read back and delete one object through boto3, pyarrow and MLflow under each location.",
    )
    parser.add_argument("uris", nargs="*", metavar="URI", help="s3:// locations the run writes to")
    parser.add_argument("--read-only", action="append", default=[], metavar="URI",
                        help="s3:// location the run only reads, such as a dataset root (repeatable)")
    parser.add_argument("--endpoint-url", default=None, help="S3-compatible endpoint (default: the AWS variables)")
    parser.add_argument("--addressing-style", default=None, help="auto, path or virtual")
    args = parser.parse_args(argv)
    if not args.uris and not args.read_only:
        parser.error("name at least one location, for example s3://bucket/runs")

    try:
        settings = S3Settings.from_config(
            {"endpoint_url": args.endpoint_url, "addressing_style": args.addressing_style}
        )
    except ValueError as error:
        parser.error(str(error))
    # MLflow reads its endpoint from the environment only.
    os.environ.update(mlflow_env(settings))
    try:
        results = preflight(args.uris, settings, read_only_uris=args.read_only)
    except (StoragePreflightError, ValueError) as error:
        sys.stderr.write(f"error: {error}\n")
        return 1
    for result in results:
        print(f"ok {result.uri} ({', '.join(result.clients)}) in {result.elapsed_s:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
