"""The README's quickstart runs as written (with fewer training steps) and its numbers make sense."""
from __future__ import annotations

import pathlib
import re
import warnings

from numba.core.errors import NumbaWarning

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_quickstart_runs():
    block = re.search(r"## Quickstart\n\n```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S).group(1)
    block = block.replace("range(1000)", "range(100)").replace("run(200)", "run(20)")
    scope = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")            # the quickstart must not warn (ill-conditioning included)
        warnings.filterwarnings("ignore", category=NumbaWarning)   # compiler notes of a cold kernel cache
        exec(compile(block, str(README), "exec"), scope)
    assert scope["out"].u.shape[0] == 3 and scope["out"].basis.shape[2] == 20
    # Deep Ritz for u'' = -pi^2 sin(pi x): the energy's minimum is -pi^2/4
    assert abs(scope["history"]["loss"][-1] + 2.4674) < 0.05
