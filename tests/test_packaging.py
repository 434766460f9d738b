"""The built wheel holds one package, fastopt, with kernels/ mapped to fastopt.kernels.

No top-level ``kernels`` may land in site-packages, and the CUDA sources ship as
package data. Builds a real wheel from the repository (a few seconds).
"""
import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _build_wheel(out: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(REPO)]
    if importlib.util.find_spec("setuptools") is not None:
        cmd.insert(5, "--no-build-isolation")  # use the installed setuptools: no download
    subprocess.run(cmd, check=True, cwd=out, env=dict(os.environ, PIP_NO_INPUT="1"))
    (wheel,) = out.glob("fastopt-*.whl")
    return wheel


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory):
    if not (REPO / "pyproject.toml").exists():
        pytest.skip("not running from a source checkout")
    with zipfile.ZipFile(_build_wheel(tmp_path_factory.mktemp("wheel"))) as zf:
        return zf.namelist()


def test_only_the_fastopt_package_is_installed(wheel_names):
    tops = {name.split("/")[0] for name in wheel_names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"fastopt"}, sorted(tops)


def test_kernels_are_mapped_under_fastopt(wheel_names):
    for needed in ("fastopt/kernels/__init__.py", "fastopt/kernels/reference.py", "fastopt/kernels/cpu/optim.py",
                   "fastopt/kernels/cpu/_jit.py", "fastopt/kernels/gpu/optim.py"):
        assert needed in wheel_names, needed


def test_cuda_sources_ship_as_package_data(wheel_names):
    sources = sorted(p.name for p in (REPO / "kernels" / "gpu").glob("*.cu"))
    assert sources, "kernels/gpu has no .cu file"
    for name in sources:
        assert f"fastopt/kernels/gpu/{name}" in wheel_names, name
