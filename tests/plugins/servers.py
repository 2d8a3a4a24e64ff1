"""Real servers on loopback for the tests: a Ray head node, an MLflow tracking
server and an S3-compatible store (moto in server mode).

Every server binds to 127.0.0.1 on a free port picked at run time and is
stopped when its fixture ends. The Ray head runs under `ray start --block`, so
terminating that one process stops the whole head without `ray stop`, which
would stop every other Ray instance of the user on the machine.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["RayHead", "free_port", "start_mlflow_server", "start_ray_head", "wait_for_http"]

FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "AKIAFAKETESTKEY00000",
    "AWS_SECRET_ACCESS_KEY": "fake-secret-key-for-loopback-tests-only",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free at the time of the call."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, *, timeout_s: float, process: subprocess.Popen | None = None) -> None:
    """Poll `url` until it returns any HTTP status, or raise `TimeoutError` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server for {url} exited with status {process.returncode} before it answered")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError, socket.timeout):
            time.sleep(0.3)
    raise TimeoutError(f"no answer from {url} within {timeout_s:.0f} s")


def _stop(process: subprocess.Popen, *, grace_s: float = 20.0) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


# --------------------------------------------------------------------------- S3


@pytest.fixture(scope="session")
def s3_server():
    """Start moto in server mode on loopback and point the AWS variables at it.

    Yields the endpoint URL. Fake credentials go into the environment for the
    whole session, so boto3, pyarrow and Ray workers started by the tests find
    them through the standard AWS chain.
    """
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    saved = {key: os.environ.get(key) for key in [*FAKE_AWS_ENV, "AWS_ENDPOINT_URL"]}
    try:
        wait_for_http(endpoint, timeout_s=30, process=process)
        os.environ.update(FAKE_AWS_ENV)
        os.environ["AWS_ENDPOINT_URL"] = endpoint
        yield endpoint
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        _stop(process)


@pytest.fixture
def s3_bucket(s3_server):
    """Create a fresh, empty bucket on the loopback S3 server and yield its name."""
    import boto3

    name = f"stsep-test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=name)
    yield name


# ------------------------------------------------------------------------ MLflow


def start_mlflow_server(root: Path, *, artifacts_destination: str | None = None) -> tuple[subprocess.Popen, str]:
    """Start `mlflow server` on loopback with a SQLite store under `root`.

    Returns the process and the tracking URI. Artifacts are proxied by the
    server and stored under `root/artifacts` unless `artifacts_destination`
    (for example an s3:// URI) is given.
    """
    port = free_port()
    destination = artifacts_destination or str(root / "artifacts")
    process = subprocess.Popen(
        [
            "mlflow", "server",
            "--host", "127.0.0.1",
            "--port", str(port),
            "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination", destination,
            "--workers", "1",
        ],
        stdout=open(root / "mlflow-server.log", "ab"),
        stderr=subprocess.STDOUT,
        cwd=root,
    )
    uri = f"http://127.0.0.1:{port}"
    wait_for_http(f"{uri}/health", timeout_s=90, process=process)
    return process, uri


@pytest.fixture
def mlflow_server(tmp_path_factory):
    """Yield the tracking URI of a fresh MLflow server on loopback."""
    root = tmp_path_factory.mktemp("mlflow")
    process, uri = start_mlflow_server(root)
    try:
        yield uri
    finally:
        _stop(process)


# --------------------------------------------------------------------------- Ray


@dataclass(frozen=True)
class RayHead:
    """A Ray head node on loopback, started by `start_ray_head`."""

    address: str
    dashboard_url: str
    env: dict[str, str]
    temp_dir: str
    process: subprocess.Popen


def start_ray_head(*, num_cpus: int = 4, extra_env: dict[str, str] | None = None) -> RayHead:
    """Start `ray start --head --block` on 127.0.0.1 with token authentication.

    `extra_env` reaches every Ray process of the head, and so every job, trial
    and worker started on it.
    """
    env = dict(os.environ)
    env.update(extra_env or {})
    env["RAY_AUTH_MODE"] = "token"
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    subprocess.run(["ray", "get-auth-token", "--generate"], env=env, check=True, capture_output=True)

    port, dashboard_port = free_port(), free_port()
    # Ray's socket paths must stay short, so the temp dir lives directly under /tmp.
    temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    process = subprocess.Popen(
        [
            "ray", "start", "--head", "--block",
            "--node-ip-address", "127.0.0.1",
            "--port", str(port),
            "--dashboard-host", "127.0.0.1",
            "--dashboard-port", str(dashboard_port),
            # Fixed defaults (52365 for the job agent) clash with any other Ray
            # instance on the machine, and a head whose agent cannot bind
            # rejects every job with "No available agent".
            "--dashboard-agent-listen-port", str(free_port()),
            "--dashboard-agent-grpc-port", str(free_port()),
            "--runtime-env-agent-port", str(free_port()),
            "--metrics-export-port", str(free_port()),
            "--num-cpus", str(num_cpus),
            "--temp-dir", temp_dir,
            "--disable-usage-stats",
        ],
        env=env,
        stdout=open(Path(temp_dir) / "ray-start.log", "ab"),
        stderr=subprocess.STDOUT,
    )
    dashboard_url = f"http://127.0.0.1:{dashboard_port}"
    wait_for_http(dashboard_url, timeout_s=120, process=process)
    env["RAY_ADDRESS"] = f"127.0.0.1:{port}"
    _wait_for_job_agent(dashboard_url, env=env, timeout_s=300)
    return RayHead(
        address=f"127.0.0.1:{port}",
        dashboard_url=dashboard_url,
        env=env,
        temp_dir=temp_dir,
        process=process,
    )


def _wait_for_job_agent(dashboard_url: str, *, env: dict[str, str], timeout_s: float) -> None:
    """Submit a no-op job until the head's job agent accepts it.

    The dashboard serves HTTP before its job agent registers. A job submitted in
    between fails with "No available agent to submit job" (Ray 2.60), which
    happens on a loaded machine.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        result = subprocess.run(
            ["ray", "job", "submit", "--address", dashboard_url, "--no-wait", "--", "true"],
            env=env, capture_output=True, text=True, timeout=120,
        )
        if result.returncode == 0:
            return
        output = result.stdout + result.stderr
        if "No available agent" not in output or time.monotonic() > deadline:
            raise RuntimeError(f"Ray job agent at {dashboard_url} is not ready: {output[-2000:]}")
        time.sleep(2)


def stop_ray_head(head: RayHead) -> None:
    """Stop a head started by `start_ray_head` and remove its temp dir."""
    _stop(head.process, grace_s=60)
    shutil.rmtree(head.temp_dir, ignore_errors=True)


@pytest.fixture
def ray_head():
    """Yield a fresh `RayHead` on loopback (about 10 s to start on 2 cores)."""
    head = start_ray_head()
    try:
        yield head
    finally:
        stop_ray_head(head)
