"""Tests for the cluster configs: ray_cluster.yaml, the KubeRay manifests and the runtime env.

The launcher config goes through the same `prepare_config` and
`validate_config` calls that `ray up` makes in Ray 2.60. The KubeRay manifests
and the launcher config must describe the same node types, and the GPU node
type must host one trial of each dataset preset.
"""

from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path

import pytest
import ray
import ray.train
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config
from ray.runtime_env import RuntimeEnv

from stsep.config import load_config
from stsep.storage import S3Settings, runtime_env_vars

ROOT = Path(__file__).resolve().parents[1]
LAUNCHER = ROOT / "ray_cluster.yaml"
RAYCLUSTER = ROOT / "cluster" / "raycluster.yaml"
RAYJOB = ROOT / "cluster" / "rayjob.yaml"
RUNTIME_ENV = ROOT / "cluster" / "runtime_env.yaml"
DOCKERFILE = ROOT / "cluster" / "Dockerfile"

# Launcher node type -> KubeRay worker group.
WORKER_GROUPS = {"cpu_worker": "cpu-workers", "gpu_worker": "gpu-workers"}
SECRET_VARS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "RAY_AUTH_TOKEN"}


@pytest.fixture(scope="module")
def launcher():
    return yaml.safe_load(LAUNCHER.read_text())


@pytest.fixture(scope="module")
def kuberay():
    documents = list(yaml.safe_load_all(RAYCLUSTER.read_text()))
    return {document["kind"]: document for document in documents}


@pytest.fixture(scope="module")
def rayjob():
    return yaml.safe_load(RAYJOB.read_text())


@pytest.fixture(scope="module")
def runtime_env():
    return yaml.safe_load(RUNTIME_ENV.read_text())


def _trial_bundles(preset: str) -> tuple[dict[str, float], int]:
    """Return one Train worker's resource bundle and the worker count of a preset's trial."""
    config = load_config(preset, overrides=["data.root=s3://bucket/data", "resources.use_gpu=true"])
    scaling = ray.train.ScalingConfig(
        num_workers=config.resources.num_workers,
        use_gpu=True,
        resources_per_worker={"CPU": config.resources.cpus_per_worker},
    )
    bundle = {"CPU": scaling.num_cpus_per_worker, "GPU": scaling.num_gpus_per_worker}
    return bundle, config.resources.num_workers


def _fits(request: dict[str, float], resources: dict[str, float]) -> bool:
    return all(resources.get(name, 0) >= amount for name, amount in request.items() if amount > 0)


def _ray_containers(group: dict) -> list[dict]:
    return [container for container in group["template"]["spec"]["containers"] if container["name"].startswith("ray-")]


# ------------------------------------------------------------------ launcher


def test_launcher_passes_ray_validation(launcher):
    prepared = prepare_config(copy.deepcopy(launcher))

    validate_config(prepared)

    assert prepared["provider"]["type"] == "aws"


def test_launcher_rejects_unknown_field(launcher):
    broken = copy.deepcopy(launcher)
    broken["available_node_types"]["gpu_worker"]["min_worker"] = 0

    with pytest.raises(Exception, match="min_worker"):
        validate_config(prepare_config(broken))


def test_launcher_worker_types_scale_from_zero(launcher):
    node_types = launcher["available_node_types"]

    assert launcher["head_node_type"] == "head"
    assert launcher["idle_timeout_minutes"] > 0
    for name in WORKER_GROUPS:
        assert node_types[name]["min_workers"] == 0, name
        assert node_types[name]["max_workers"] >= 1, name
    assert node_types["gpu_worker"]["resources"]["GPU"] >= 1
    assert "GPU" not in node_types["cpu_worker"]["resources"]
    assert sum(node_types[name]["max_workers"] for name in WORKER_GROUPS) <= launcher["max_workers"]


@pytest.mark.parametrize("preset", ["demo", "ucf101", "hmdb51", "ssv2"])
def test_gpu_worker_hosts_one_trial(launcher, preset):
    node_types = launcher["available_node_types"]
    gpu_resources = node_types["gpu_worker"]["resources"]
    bundle, num_workers = _trial_bundles(preset)

    bundles_per_node = min(gpu_resources["CPU"] // bundle["CPU"], gpu_resources["GPU"] // bundle["GPU"])

    assert _fits(bundle, gpu_resources), (bundle, gpu_resources)
    assert bundles_per_node * node_types["gpu_worker"]["max_workers"] >= num_workers


def test_cpu_worker_hosts_trainable_and_decoding(launcher):
    from stsep.training.tuning import TRAINABLE_CPUS

    node_types = launcher["available_node_types"]
    trainable = {"CPU": TRAINABLE_CPUS}
    decode_task = {"CPU": 1}

    assert _fits(trainable, node_types["cpu_worker"]["resources"])
    assert _fits(decode_task, node_types["cpu_worker"]["resources"])
    # The head advertises no CPUs, so trials and decoding never land on it.
    assert not _fits(trainable, node_types["head"]["resources"])


def test_launcher_installs_synced_project(launcher):
    remote_paths = [remote for remote, local in launcher["file_mounts"].items() if local == "."]

    assert remote_paths == ["~/stsep"]
    assert any(f"pip install --quiet -e {remote_paths[0]}" in command for command in launcher["setup_commands"])


def test_launcher_start_commands_enable_auth(launcher):
    head = " ".join(launcher["head_start_ray_commands"])
    workers = " ".join(launcher["worker_start_ray_commands"])

    assert "RAY_AUTH_MODE=token" in head
    assert "RAY_AUTH_MODE=token" in workers
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in head
    assert "~/.ray/auth_token" in launcher["file_mounts"]
    assert "mlflow server --host 0.0.0.0 --port 5000" in head
    assert "MLFLOW_TRACKING_URI=http://$RAY_HEAD_IP:5000" in workers


def test_images_match_installed_ray(launcher):
    images = [launcher["docker"]["head_image"], launcher["docker"]["worker_image"],
              launcher["available_node_types"]["gpu_worker"]["docker"]["worker_image"]]
    dockerfile_base = re.search(r"^ARG RAY_IMAGE=(\S+)$", DOCKERFILE.read_text(), re.MULTILINE).group(1)

    for image in [*images, dockerfile_base]:
        assert image.startswith(f"rayproject/ray:{ray.__version__}-py311-"), image
    assert images[2].endswith("-gpu")


# ------------------------------------------------------------------- KubeRay


def test_raycluster_structure(kuberay):
    cluster = kuberay["RayCluster"]
    spec = cluster["spec"]

    assert cluster["apiVersion"] == "ray.io/v1"
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["rayVersion"] == ray.__version__
    assert [group["groupName"] for group in spec["workerGroupSpecs"]] == list(WORKER_GROUPS.values())
    for group in spec["workerGroupSpecs"]:
        assert group["minReplicas"] == 0, group["groupName"]
        assert group["replicas"] == 0, group["groupName"]


def test_raycluster_matches_launcher(kuberay, launcher):
    spec = kuberay["RayCluster"]["spec"]
    node_types = launcher["available_node_types"]
    groups = {group["groupName"]: group for group in spec["workerGroupSpecs"]}

    assert int(spec["headGroupSpec"]["rayStartParams"]["num-cpus"]) == node_types["head"]["resources"]["CPU"]
    assert spec["autoscalerOptions"]["idleTimeoutSeconds"] == launcher["idle_timeout_minutes"] * 60
    for node_type, group_name in WORKER_GROUPS.items():
        group = groups[group_name]
        (container,) = _ray_containers(group)
        limits = container["resources"]["limits"]
        expected = node_types[node_type]
        assert int(limits["cpu"]) == expected["resources"]["CPU"], group_name
        assert int(limits.get("nvidia.com/gpu", 0)) == expected["resources"].get("GPU", 0), group_name
        assert limits == container["resources"]["requests"], group_name
        assert group["maxReplicas"] == expected["max_workers"], group_name
        assert group["minReplicas"] == expected["min_workers"], group_name


def test_raycluster_pods_share_settings(kuberay):
    spec = kuberay["RayCluster"]["spec"]
    head_pod = spec["headGroupSpec"]["template"]["spec"]
    pods = [head_pod, *(group["template"]["spec"] for group in spec["workerGroupSpecs"])]
    head_ports = {port["name"]: port["containerPort"] for port in head_pod["containers"][0]["ports"]}

    assert head_ports["mlflow"] == 5000
    for pod in pods:
        assert pod["serviceAccountName"] == kuberay["ServiceAccount"]["metadata"]["name"]
        for container in pod["containers"]:
            env = {item["name"]: item.get("value") for item in container["env"]}
            assert env["RAY_AUTH_MODE"] == "token", container["name"]
            assert env["MLFLOW_TRACKING_URI"] == f"http://{kuberay['RayCluster']['metadata']['name']}-head-svc:5000"
            assert not SECRET_VARS & {item["name"] for item in container["env"] if "value" in item}


def test_rayjob_runs_ablation(rayjob, kuberay, runtime_env):
    spec = rayjob["spec"]
    arguments = shlex.split(spec["entrypoint"])
    job_env = yaml.safe_load(spec["runtimeEnvYAML"])
    overrides = [arguments[index + 1] for index, argument in enumerate(arguments) if argument == "--set"]

    assert rayjob["apiVersion"] == "ray.io/v1"
    assert rayjob["kind"] == "RayJob"
    assert spec["clusterSelector"]["ray.io/cluster"] == kuberay["RayCluster"]["metadata"]["name"]
    assert arguments[:4] == ["python", "pipelines/ablation.py", "--config", "ucf101"]
    assert "resources.use_gpu=true" in overrides
    assert load_config("ucf101", overrides=overrides).resources.use_gpu is True
    assert job_env["env_vars"] == runtime_env["env_vars"]
    assert job_env["excludes"] == runtime_env["excludes"]
    # The working dir exists only in the image, so Ray validates the rest here.
    assert f"WORKDIR {job_env['working_dir']}" in DOCKERFILE.read_text()
    RuntimeEnv(**{key: value for key, value in job_env.items() if key != "working_dir"})


# -------------------------------------------------------------- runtime env


def test_runtime_env_is_valid_and_keyless(runtime_env):
    env_vars = runtime_env["env_vars"]

    RuntimeEnv(**runtime_env)
    settings = S3Settings.from_env(env_vars)

    assert settings.region == "us-west-2"
    assert not SECRET_VARS & set(env_vars)
    assert "working_dir" not in runtime_env  # `ray job submit --working-dir .` sets it


def test_runtime_env_s3_compatible_example():
    commented = dict(
        re.match(r"#\s*([A-Z0-9_]+):\s*(\S+)", line.strip()).groups()
        for line in RUNTIME_ENV.read_text().splitlines()
        if re.match(r"\s*#\s*[A-Z0-9_]+:\s*\S+", line)
    )
    settings = S3Settings.from_env(commented)
    expected = runtime_env_vars(settings)

    assert settings.endpoint_url == "http://minio.minio.svc:9000"
    assert settings.addressing_style == "path"
    assert commented == expected
