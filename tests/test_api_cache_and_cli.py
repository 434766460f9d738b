"""Where compiled kernels are cached (kernels/cpu/_jit.choose_cache_dir), and the `fastopt` command."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest

import fastopt
from fastopt.kernels.cpu import _jit

PKG = "/opt/site-packages/fastopt/kernels/cpu"
PYCACHE = os.path.join(PKG, "__pycache__")


class Writable:
    """A fake ``writable(path)`` answering from a set, and recording what was asked."""

    def __init__(self, *ok):
        self.ok = set(ok)
        self.asked = []

    def __call__(self, path):
        self.asked.append(path)
        return path in self.ok


# ---------------------------------------------------------------------------
# choose_cache_dir: a pure function of (package_dir, environ, writable).
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("pkg_writable", [True, False])
def test_numba_cache_dir_wins(pkg_writable):
    w = Writable(PYCACHE) if pkg_writable else Writable()
    env = {"NUMBA_CACHE_DIR": "/custom/cache", "XDG_CACHE_HOME": "/xdg"}
    assert _jit.choose_cache_dir(PKG, env, w) == "/custom/cache"
    assert w.asked == []  # decided without touching the file system


def test_empty_numba_cache_dir_is_ignored():
    w = Writable(PYCACHE)
    assert _jit.choose_cache_dir(PKG, {"NUMBA_CACHE_DIR": ""}, w) is None


def test_writable_package_dir_keeps_numbas_choice():
    w = Writable(PYCACHE, "/xdg/fastopt/numba")
    assert _jit.choose_cache_dir(PKG, {"XDG_CACHE_HOME": "/xdg"}, w) is None
    assert w.asked == [PYCACHE]


def test_read_only_package_uses_xdg_cache_home():
    w = Writable("/xdg/fastopt/numba")
    assert _jit.choose_cache_dir(PKG, {"XDG_CACHE_HOME": "/xdg"}, w) == os.path.join("/xdg", "fastopt", "numba")
    assert w.asked == [PYCACHE, "/xdg/fastopt/numba"]


@pytest.mark.parametrize("env", [{}, {"XDG_CACHE_HOME": ""}], ids=["unset", "empty"])
def test_read_only_package_without_xdg_uses_home_cache(env, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))  # expanduser reads the process environment
    expected = os.path.join(str(tmp_path), ".cache", "fastopt", "numba")
    w = Writable(expected)
    assert _jit.choose_cache_dir(PKG, env, w) == expected


def test_nothing_writable_falls_back_to_temp_dir():
    w = Writable()
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    got = _jit.choose_cache_dir(PKG, {"XDG_CACHE_HOME": "/xdg"}, w)
    assert got == os.path.join(tempfile.gettempdir(), f"fastopt-numba-{uid}")
    assert w.asked == [PYCACHE, "/xdg/fastopt/numba"]


def test_real_writable_helper(tmp_path):
    assert _jit._writable(str(tmp_path)) is True
    assert _jit._writable(str(tmp_path / "not" / "yet" / "there")) is True  # nearest existing parent


def test_writable_helper_below_a_regular_file(tmp_path):
    """A folder cannot be created below a regular file (e.g. ~/.cache being a file): not writable,
    so that choose_cache_dir moves on instead of os.makedirs failing at `import fastopt`."""
    f = tmp_path / "file"
    f.write_text("x")
    assert _jit._writable(str(f / "fastopt" / "numba")) is False


def test_reported_cache_dir_in_this_process():
    assert isinstance(_jit.cache_dir, str) and _jit.cache_dir
    if os.environ.get("NUMBA_CACHE_DIR"):
        assert _jit.cache_dir == os.environ["NUMBA_CACHE_DIR"]


# ---------------------------------------------------------------------------
# The read-only install, for real, in a subprocess.
# ---------------------------------------------------------------------------
_READ_ONLY_SCRIPT = r"""
import json, os, sys
pkg = os.path.realpath(sys.argv[1])
real_access = os.access

def fake_access(path, mode, *args, **kwargs):
    # We run as root, so chmod would not stop writes: report the package's kernel folder as read-only.
    rp = os.path.realpath(path)
    if rp == pkg or rp.startswith(pkg + os.sep):
        return False
    return real_access(path, mode, *args, **kwargs)

os.access = fake_access
import numpy as np
import fastopt
from fastopt.kernels.cpu import _jit
p = np.ones(5); g = np.full(5, 0.5); m = np.zeros(5); v = np.zeros(5)
info = fastopt.adam_step(p, g, m, v, step=1, lr=0.1)
print(json.dumps({"cache_dir": _jit.cache_dir, "applied": info.applied, "p": p.tolist()}))
"""


def test_read_only_install_caches_in_user_dir(tmp_path):
    pkg_dir = os.path.dirname(os.path.abspath(_jit.__file__))
    xdg = tmp_path / "xdg"
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["XDG_CACHE_HOME"] = str(xdg)
    out = subprocess.run([sys.executable, "-c", _READ_ONLY_SCRIPT, pkg_dir], capture_output=True, text=True,
                         env=env, timeout=180)
    assert out.returncode == 0, f"STDOUT:\n{out.stdout}\nSTDERR:\n{out.stderr}"
    res = json.loads(out.stdout.strip().splitlines()[-1])
    expected = xdg / "fastopt" / "numba"
    assert res["applied"] is True
    assert all(x < 1.0 for x in res["p"])
    assert os.path.realpath(res["cache_dir"]) == os.path.realpath(expected)
    index_files = list(expected.rglob("*.nbi"))
    assert index_files, f"no Numba cache index under {expected}: {list(xdg.rglob('*'))}"
    assert list(expected.rglob("*.nbc")), "no compiled kernel cached"


def test_cache_is_reused_by_a_second_process(tmp_path):
    """NUMBA_CACHE_DIR set: the first process writes the cache, the second loads it (no new index)."""
    cache = tmp_path / "numba-cache"
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))
    code = textwrap.dedent("""
        import json, numpy as np, fastopt
        from fastopt.kernels.cpu import _jit
        p = np.ones(3, np.float32); g = np.ones(3, np.float32)
        fastopt.sgd_step(p, g, lr=0.25)
        print(json.dumps({"cache_dir": _jit.cache_dir, "p": p.tolist()}))
    """)
    runs = []
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=180)
        assert out.returncode == 0, out.stderr
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        if len(runs) == 1:
            first = {f: f.stat().st_mtime_ns for f in cache.rglob("*.nb*")}
    assert runs[0]["cache_dir"] == runs[1]["cache_dir"] == str(cache)
    assert runs[0]["p"] == runs[1]["p"] == [0.75, 0.75, 0.75]
    assert first, "nothing was cached"
    second = {f: f.stat().st_mtime_ns for f in cache.rglob("*.nb*")}
    assert second == first, "the second process recompiled instead of loading the cache"


def test_sources_stamp_covers_every_file_of_the_package(tmp_path):
    """A kernel carries the compiled code of the other modules it calls: its cache key is all of them."""
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "b.py").write_text("y = 2\n")
    before = _jit.sources_stamp(str(tmp_path))
    (tmp_path / "b.py").write_text("y = 3\n")
    changed = _jit.sources_stamp(str(tmp_path))
    (tmp_path / "b.py").write_text("y = 2\n")
    assert changed != before
    assert _jit.sources_stamp(str(tmp_path)) == before  # contents, not times
    (tmp_path / "c.py").write_text("")
    assert _jit.sources_stamp(str(tmp_path)) != before  # a new module too


def test_package_kernels_use_the_package_locator(tmp_path):
    fastopt.sgd_step(np.ones(3), np.ones(3), lr=0.5)
    from fastopt.kernels.cpu import optim
    locator = optim.sgd.serial._cache._impl._locator
    assert isinstance(locator, _jit._PackageStamp)
    assert locator.get_source_stamp() == _jit.sources_stamp()
    outside = tmp_path / "other.py"
    outside.write_text("def f():\n    return 1\n")
    assert _jit._PackageInTreeLocator.from_function(test_package_kernels_use_the_package_locator, str(outside)) is None


_STAMP_SCRIPT = r"""
import json, sys
from fastopt.kernels.cpu import _jit
if sys.argv[1] == "changed":  # as if another module of the package had been edited
    _jit.sources_stamp = lambda package_dir=None: b"another version of the package"
import numpy as np, fastopt
from fastopt.kernels.cpu import optim
fastopt.sgd_step(np.ones(3), np.ones(3), lr=0.5)
stats = optim.sgd.serial.stats
print(json.dumps({"hits": sum(stats.cache_hits.values()), "misses": sum(stats.cache_misses.values())}))
"""


def test_a_change_to_any_module_recompiles_the_kernels(tmp_path):
    """End to end: the cached kernel is reused while the package is unchanged, recompiled when it is not."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    runs = []
    for version in ("same", "same", "changed"):
        out = subprocess.run([sys.executable, "-c", _STAMP_SCRIPT, version], capture_output=True, text=True,
                             env=env, timeout=180)
        assert out.returncode == 0, out.stderr
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    assert runs[0] == {"hits": 0, "misses": 1}
    assert runs[1] == {"hits": 1, "misses": 0}
    assert runs[2] == {"hits": 0, "misses": 1}


# ---------------------------------------------------------------------------
# The CLI.
# ---------------------------------------------------------------------------
def _run(args, timeout=120):
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


def test_python_m_fastopt_info():
    out = _run([sys.executable, "-m", "fastopt", "info"])
    assert out.returncode == 0, out.stderr
    text = out.stdout
    lines = text.splitlines()
    assert lines[0] == f"fastopt {fastopt.__version__}"
    assert any(line.startswith("numba threading layer: ") for line in lines), text
    assert any(line.startswith("kernel cache: ") for line in lines), text
    backends = next(line for line in lines if line.startswith("backends: "))
    assert backends.startswith("backends: cpu")
    ok, reason = fastopt.gpu_status()
    if ok:
        assert "gpu (" in backends
    else:
        assert "gpu unavailable: " in backends
        # the reason is the library's own, e.g. "CuPy ... is installed but no CUDA device is usable"
        assert reason.split(" (")[0] in backends
    cache_line = next(line for line in lines if line.startswith("kernel cache: "))
    assert cache_line[len("kernel cache: "):].strip()


def test_info_reports_numba_cache_dir():
    env = dict(os.environ, NUMBA_CACHE_DIR=os.path.join(tempfile.gettempdir(), "fastopt-cli-test-cache"))
    out = subprocess.run([sys.executable, "-m", "fastopt", "info"], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"kernel cache: {env['NUMBA_CACHE_DIR']}" in out.stdout.splitlines()


def test_console_script_exists_and_runs():
    script = Path(sys.executable).parent / "fastopt"
    assert script.is_file(), f"no console script at {script}"
    assert os.access(script, os.X_OK)
    out = _run([str(script), "info"])
    assert out.returncode == 0, out.stderr
    assert "backends: cpu" in out.stdout


@pytest.mark.parametrize("argv", [[], ["bogus"], ["info", "--nope"]], ids=["none", "unknown", "bad-flag"])
def test_cli_usage_errors_exit_2(argv):
    out = _run([sys.executable, "-m", "fastopt", *argv])
    assert out.returncode == 2
    assert "usage: fastopt" in out.stderr


def test_main_in_process(capsys):
    from fastopt import cli

    assert cli.main(["info"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed == cli.info_lines()
