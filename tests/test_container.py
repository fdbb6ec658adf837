"""The container images and the GPU check as a specification (docs/containers.md): the Dockerfiles
install requirements.txt and the package and nothing else, the cluster profiles run the CUDA image
of the project's version, the build context leaves the venv, data and outputs out, and the GPU
check refuses, at once and without writing anything, to run where there is no CUDA device.
No Docker daemon is needed: the files are read, and the script is run."""
from __future__ import annotations

import fnmatch
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = {"cpu": ROOT / "docker/Dockerfile", "cuda": ROOT / "docker/Dockerfile.cuda"}
PROFILES = ROOT / "workflow/profiles"
GPU_CHECK = ROOT / "scripts/gpu_check.sh"
VENV = "/opt/nuwa-pipeline/.venv"
# pip options that take a value (the value is not a package to install).
PIP_VALUE_OPTIONS = {"-r", "--requirement", "-e", "--editable", "-c", "--constraint", "-i", "--index-url",
                     "--extra-index-url", "-f", "--find-links", "-t", "--target", "--prefix", "--root"}
SEPARATORS = {"&&", "||", ";", "|", "then", "else", "fi", "do", "done", "{", "}"}


def project_version() -> str:
    """pyproject.toml's `version = "..."` line (the one the Dockerfiles check their NUWA_VERSION against)."""
    return re.search(r'^version = "([^"]+)"$', (ROOT / "pyproject.toml").read_text(), re.M).group(1)


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile: continuation lines joined, comments dropped."""
    out, pending = [], ""
    for line in dockerfile.read_text().splitlines():
        if line.lstrip().startswith("#") or not (line.strip() or pending):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        word, _, rest = pending.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        pending = ""
    return out


def pip_installs(command: str) -> list[list[str]]:
    """The arguments after `install` of every pip call in a RUN command."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    calls, words, redirected = [], [], False
    for token in [*lexer, ";"]:
        if set(token) <= set("<>&") and set(token) & set("<>"):  # a redirection (2>&1, > /dev/null, &>):
            if words and words[-1].isdigit():                       # neither it nor its target is an argument
                words.pop()
            redirected = True
            continue
        if redirected:
            redirected = False
            continue
        if token not in SEPARATORS:
            words.append(token)
            continue
        for i, word in enumerate(words[:-1]):
            if os.path.basename(word) in ("pip", "pip3") and words[i + 1] == "install":
                calls.append(words[i + 2:])
                break
        words = []
    return calls


def what_pip_installs(args: list[str]) -> tuple[list[str], list[str]]:
    """(requirement files, anything else to install: packages, paths, editables) of one pip call."""
    files, targets, i = [], [], 0
    while i < len(args):
        arg = args[i]
        if arg in PIP_VALUE_OPTIONS:
            (files if arg in ("-r", "--requirement") else targets if arg in ("-e", "--editable") else []).append(args[i + 1])
            i += 2
            continue
        if not arg.startswith("-"):
            targets.append(arg)
        i += 1
    return files, targets


def arg_defaults(dockerfile: Path) -> dict[str, str]:
    return dict(a.split("=", 1) for kind, a in instructions(dockerfile) if kind == "ARG" and "=" in a)


# ---- the images ----------------------------------------------------------------------------------
@pytest.mark.parametrize("image", DOCKERFILES)
def test_each_image_installs_exactly_requirements_txt_and_the_package(image):
    """The pins are requirements.txt's, copied in before they are installed; the package itself
    comes from the copied repository (`.`); no other package or version is named."""
    steps = instructions(DOCKERFILES[image])
    copied_requirements = next(i for i, (kind, a) in enumerate(steps) if kind == "COPY" and "requirements.txt" in a.split())
    copied_repository = next(i for i, (kind, a) in enumerate(steps) if kind == "COPY" and a.split()[-2:] == [".", "."])
    files, packages = [], []
    for i, (kind, args) in enumerate(steps):
        if kind != "RUN":
            continue
        for call in pip_installs(args):
            f, targets = what_pip_installs(call)
            if f:
                assert i > copied_requirements, f"{image}: pip install -r before requirements.txt is copied"
            if "." in targets:
                assert i > copied_repository, f"{image}: the package is installed before the repository is copied"
            files += f
            packages += targets
    assert files == ["requirements.txt"], f"{image}: requirement files installed: {files}"
    assert set(packages) == {"."}, f"{image}: installs {packages} besides requirements.txt and the package"


@pytest.mark.parametrize("image", DOCKERFILES)
def test_each_image_has_the_checkout_and_venv_the_workflow_expects_and_runs_as_a_user(image):
    """Snakemake runs `python` inside a container (rule scripts, Kubernetes jobs): the image's venv
    must come first on PATH. The workflow's own paths (.venv/bin/snakemake) hold in WORKDIR."""
    steps = instructions(DOCKERFILES[image])
    assert ("WORKDIR", "/opt/nuwa-pipeline") in steps
    assert any(kind == "RUN" and "-m venv .venv" in a for kind, a in steps)
    env = " ".join(a for kind, a in steps if kind == "ENV")
    assert f"PATH={VENV}/bin:" in env
    users = [a for kind, a in steps if kind == "USER"]
    assert users and users[-1] not in ("root", "0"), f"{image}: runs as {users[-1:] or 'root'}"
    assert arg_defaults(DOCKERFILES[image])["NUWA_VERSION"] == project_version()


def test_the_cpu_image_takes_cpu_wheels_and_the_cuda_image_the_cuda_runtime_of_the_torch_wheel():
    """CPU: PyTorch's CPU index (no multi-GB CUDA libraries). CUDA: PyPI's wheel, the one this
    venv has when it came from PyPI too, on an NVIDIA runtime base of the same CUDA release."""
    cpu, cuda = arg_defaults(DOCKERFILES["cpu"]), arg_defaults(DOCKERFILES["cuda"])
    assert cpu["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    assert '--extra-index-url "${TORCH_INDEX_URL}"' in DOCKERFILES["cpu"].read_text()
    assert "index-url" not in DOCKERFILES["cuda"].read_text()
    base = cuda["BASE_IMAGE"]
    name, _, tag = base.partition(":")
    assert name == "nvidia/cuda" and "-runtime-ubuntu" in tag, base
    import torch

    if torch.version.cuda is None:
        pytest.skip(f"torch {torch.__version__} here is a CPU build: nothing to compare the base with")
    assert tag.split(".")[:2] == torch.version.cuda.split(".")[:2], f"{base} for torch built with CUDA {torch.version.cuda}"


def test_the_build_context_leaves_out_the_venv_data_and_outputs_and_keeps_the_code():
    patterns = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]
    excluded = {p.rstrip("/") for p in patterns if not p.startswith("!")}
    assert {".venv", ".git", "models", "logs", "benchmarks", "results", ".dvc/cache", ".snakemake"} <= excluded
    assert "data/*" in excluded and "!data/*.dvc" in patterns  # the data, not DVC's pointers to it

    def ignored(path: str) -> bool:
        parts = path.split("/")
        return any(fnmatch.fnmatch("/".join(parts[:n]), p) for p in excluded for n in range(1, len(parts) + 1))

    for needed in ("requirements.txt", "pyproject.toml", "README.md", "nuwa/cli.py", "nuwa/subtasks/cifar10.yaml",
                   "workflow/Snakefile", "workflow/rules/derive.smk", "params.yaml", "scripts/setup.sh"):
        assert not ignored(needed), needed
    assert ignored(".venv/bin/python") and ignored("models/test/bases") and ignored("data/fashion-mnist")


# ---- the cluster profiles ------------------------------------------------------------------------
def snakemake_args(profile: str):
    """The options Snakemake reads from a profile (its own parser, plugins' options included)."""
    get_argument_parser = pytest.importorskip("snakemake.cli").get_argument_parser

    return get_argument_parser([str(PROFILES / profile)]).parse_args([])


def test_the_kubernetes_profile_runs_the_cuda_image_tagged_with_the_project_version():
    image = yaml.safe_load((PROFILES / "kubernetes/config.yaml").read_text())["container-image"]
    assert image.rpartition(":")[2] == f"cuda-{project_version()}"
    assert snakemake_args("kubernetes").container_image == image
    # How to make it, in the docs and next to the setting.
    for text in ((ROOT / "docs/containers.md").read_text(), (PROFILES / "kubernetes/config.yaml").read_text()):
        assert f"docker build -f docker/Dockerfile.cuda -t {image} ." in text
        assert f"docker push {image}" in text


def test_the_slurm_profile_runs_jobs_in_apptainer_with_the_gpus():
    args = snakemake_args("slurm")
    from snakemake.settings.types import DeploymentMethod

    assert DeploymentMethod.APPTAINER in args.software_deployment_method
    assert "--nv" in shlex.split(args.apptainer_args)


def test_the_snakefile_names_the_image_the_kubernetes_profile_runs():
    """Apptainer (slurm) takes the image from the Snakefile's global `container:`: the same image."""
    import re

    image = yaml.safe_load((PROFILES / "kubernetes/config.yaml").read_text())["container-image"]
    found = re.findall(r'^container:\s*"([^"]+)"', (ROOT / "workflow/Snakefile").read_text(), re.M)
    assert found == [f"docker://{image}"]


# ---- the GPU check -------------------------------------------------------------------------------
def test_the_gpu_check_is_valid_bash():
    proc = subprocess.run(["bash", "-n", str(GPU_CHECK)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_the_gpu_check_refuses_without_cuda_in_one_line_and_writes_nothing(tmp_path):
    """Run in a copy (its own scripts/ and the project's .venv), with every GPU hidden: exit 2,
    one line on stderr, nothing on stdout, and no file or folder made, there or in results/gpu."""
    (tmp_path / "scripts").mkdir()
    shutil.copy2(GPU_CHECK, tmp_path / "scripts/gpu_check.sh")
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parents[1])
    before = sorted(tmp_path.rglob("*"))
    ours = sorted((ROOT / "results/gpu").rglob("*")) if (ROOT / "results/gpu").exists() else None
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run(["bash", "scripts/gpu_check.sh"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu_check: ") and "CUDA" in lines[0], proc.stderr
    assert proc.stdout == ""
    assert sorted(tmp_path.rglob("*")) == before
    assert (sorted((ROOT / "results/gpu").rglob("*")) if (ROOT / "results/gpu").exists() else None) == ours
