"""Locating the repository's deployment files and the command-line checkers the tests use."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
K8S = INFRA / "k8s"
CLUSTER_CONFIG = K8S / "base" / "tollway.yaml"
#: The config path as rendered files name it (relative to the repository root).
CLUSTER_CONFIG_NAME = "infra/k8s/base/tollway.yaml"
#: Oldest Kubernetes release the manifests must validate against.
KUBERNETES_VERSION = "1.29.0"


def find_tool(name: str) -> str | None:
    """``name`` on PATH or beside the running interpreter (a virtualenv's bin/)."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    return shutil.which(name)


def load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    """Every non-empty document of a YAML file."""
    with path.open(encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a checker, capturing its output as text, with a generous timeout."""
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False, **kwargs)
