"""Tests of the experiment config: presets, overrides, smoke mode and rejected input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stsep.config import (
    PRESETS,
    SMOKE_OVERRIDES,
    ConfigError,
    ExperimentConfig,
    config_from_dict,
    load_config,
    parse_override,
    resolve_tracking_uri,
)
from stsep.variants import DEFAULT_VARIANTS

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path, monkeypatch):
    """Resolve relative paths (storage, SQLite store) inside the test's temp dir."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_loads(preset):
    overrides = [] if preset == "demo" else [f"data.root={REPO_ROOT}"]

    config = load_config(preset, overrides=overrides)

    assert isinstance(config, ExperimentConfig)
    assert config.name == preset
    assert config.grid.variants == DEFAULT_VARIANTS
    assert Path(config.storage_path).is_absolute()
    assert config.tracking.experiment == f"stsep-{preset}"


def test_overrides_parse_yaml_values():
    config = load_config(
        "demo",
        overrides=["train.epochs=3", "train.lr=0.01", "grid.seeds=[1, 2]", "model.learnable_tau=true",
                   "data.limit_per_class=null"],
    )

    assert config.train.epochs == 3
    assert config.train.lr == 0.01
    assert config.grid.seeds == (1, 2)
    assert config.model.learnable_tau is True
    assert config.data.limit_per_class is None


def test_sweep_override_keeps_dotted_key():
    config = load_config("demo", overrides=["grid.sweep.model.stsep_lambda=[0.25, 0.5]"])

    assert dict(config.grid.sweep) == {"model.stsep_lambda": (0.25, 0.5)}


def test_smoke_shrinks_any_preset():
    config = load_config("ucf101", overrides=[f"data.root={REPO_ROOT}"], smoke=True)

    assert config.data.num_frames == SMOKE_OVERRIDES["data.num_frames"] == 4
    assert 32 <= config.data.crop_size <= 48
    assert config.model.width <= 1 / 16
    assert config.train.epochs == 1
    assert config.grid.variants == ("vanilla", "ns4", "stsep-s34-state")
    assert config.grid.seeds == (0,)
    assert config.resources.use_gpu is False


def test_override_after_smoke_wins():
    config = load_config("demo", smoke=True, overrides=["train.epochs=2"])

    assert config.train.epochs == 2


def test_dict_round_trip_is_identical():
    config = load_config("demo", overrides=["grid.sweep.train.lr=[0.1, 0.01]"])

    again = config_from_dict(yaml.safe_load(config.to_yaml()))

    assert again == config


def test_s3_section_overrides_environment(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9001")
    monkeypatch.setenv("AWS_REGION", "us-east-1")

    overrides = ["s3.endpoint_url=http://127.0.0.1:9002", "s3.addressing_style=path"]
    settings = load_config("demo", overrides=overrides).s3_settings()

    assert settings.endpoint_url == "http://127.0.0.1:9002"
    assert settings.addressing_style == "path"
    assert settings.region == "us-east-1"  # unset in the section, so the environment's


def test_s3_endpoint_with_credentials_rejected_without_echoing_them():
    with pytest.raises(ConfigError) as raised:
        load_config("demo", overrides=["s3.endpoint_url=http://admin:topsecret@127.0.0.1:9000"])

    assert "contains credentials" in str(raised.value)
    assert "topsecret" not in str(raised.value)


def test_local_artifact_location_becomes_file_uri(tmp_path):
    config = load_config("demo", overrides=["tracking.artifact_location=artifacts"])

    assert config.tracking.artifact_location == (tmp_path / "artifacts").as_uri()


def test_tracking_uri_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")

    assert load_config("demo").tracking.uri == "http://127.0.0.1:5999"


def test_relative_sqlite_uri_becomes_absolute(tmp_path):
    uri = resolve_tracking_uri("sqlite:///stores/mlflow.db")

    assert uri == f"sqlite:///{tmp_path / 'stores' / 'mlflow.db'}"
    assert uri.startswith("sqlite:////")


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["grid.variants=[vanilla, ns9]"], "grid.variants"),
        (["train.epochs=-1"], "train.epochs"),
        (["data.num_frames=0"], "data.num_frames"),
        (["data.dataset=ucf101", "data.root=/no/such/dataset"], "data.root"),
        (["train.bogus=1"], "train.bogus"),
        (["bogus=1"], "bogus"),
        (["train.optimizer=lbfgs"], "train.optimizer"),
        (["train.lr=fast"], "train.lr"),
        (["resources.use_gpu=sometimes"], "resources.use_gpu"),
        (["tune.scheduler=pbt"], "tune.scheduler"),
        (["train.global_batch_size=5", "resources.num_workers=2"], "train.global_batch_size"),
        (["grid.sweep.model.depth=[18, 50]"], "model.depth"),
        (["data.dataset=ucf101"], "data.root"),
        (["train.amp_dtype=int8"], "train.amp_dtype"),
        (["s3.addressing_style=diagonal"], "s3.addressing_style"),
        (["s3.endpoint_url=minio:9000"], "s3 section"),
        (["s3.secret_access_key=abc"], "s3.secret_access_key"),
        (["grid.sweep.s3.region=[eu-west-1]"], "s3.region"),
    ],
)
def test_invalid_value_names_key(overrides, expected):
    with pytest.raises(ConfigError) as raised:
        load_config("demo", overrides=overrides)

    message = str(raised.value)
    assert expected in message
    assert "\n" not in message


def test_unknown_preset_lists_presets():
    with pytest.raises(ConfigError, match="demo, ucf101, hmdb51, ssv2"):
        load_config("kinetics")


def test_override_without_equals_rejected():
    with pytest.raises(ConfigError, match="dotted.key=value"):
        parse_override("train.epochs")


# --------------------------------------------------------------- entry points


@pytest.mark.parametrize(
    ("script", "arguments", "expected"),
    [
        ("ablation.py", ["--set", "grid.variants=[vanilla, sideways]"], "grid.variants"),
        ("ablation.py", ["--set", "nonsense.key=1"], "nonsense"),
        ("ablation.py", ["--set", "train.epochs=-2"], "train.epochs"),
        ("ablation.py", ["--set", "data.num_frames=0"], "data.num_frames"),
        ("ablation.py", ["--set", "data.dataset=folder", "--set", "data.root=/no/such/videos"], "data.root"),
        ("train.py", ["--variant", "ns7"], "--variant"),
        ("train.py", ["--set", "train.epochs=-2"], "train.epochs"),
    ],
)
def test_entry_point_rejects_config_before_ray(tmp_path, script, arguments, expected):
    ray_temp = tmp_path / "ray-temp"
    env = dict(os.environ, RAY_TMPDIR=str(ray_temp))

    completed = subprocess.run(
        [sys.executable, str(REPO_ROOT / "pipelines" / script), "--config", "demo", *arguments],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )

    stderr_lines = [line for line in completed.stderr.splitlines() if line.strip()]
    assert completed.returncode == 2, completed.stderr
    assert len(stderr_lines) == 1, completed.stderr
    assert stderr_lines[0].startswith("error: ")
    assert expected in stderr_lines[0]
    assert not ray_temp.exists(), "a Ray session was started for an invalid config"


def test_unreachable_tracking_server_fails_fast(tmp_path):
    from tests.plugins.servers import free_port

    ray_temp = tmp_path / "ray-temp"
    env = dict(os.environ, RAY_TMPDIR=str(ray_temp), MLFLOW_TRACKING_URI=f"http://127.0.0.1:{free_port()}")
    completed = subprocess.run(
        [sys.executable, str(REPO_ROOT / "pipelines" / "ablation.py"), "--smoke"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )

    assert completed.returncode == 1
    assert "unreachable" in completed.stderr
    # Failing before Ray starts is the property; the subprocess timeout catches a
    # job that waits on retries instead, without a wall-clock bound that load breaks.
    assert not ray_temp.exists()
