"""The command line starts without the heavy libraries: ``import funnelbench``, ``funnelbench
--version``, ``parse`` and ``presets`` load none of torch, Optuna, Matplotlib, pandas or
SQLAlchemy (the names that need them are imported on first use); the public names still work.
Each check runs in a fresh interpreter, since this one has long imported them all.
(benchmarks/bench_startup.py measures the time it saves.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "optuna", "matplotlib", "pandas", "sqlalchemy")


def loaded_after(code: str) -> dict:
    """Run ``code`` in a fresh interpreter (this checkout's package first on the path); return
    which of HEAVY it left in ``sys.modules`` and what the command printed."""
    probe = (
        "import sys, json, contextlib, io\nout = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        + "".join(f"    {line}\n" for line in code.splitlines())
        + f"print(json.dumps({{'heavy': [m for m in {HEAVY!r} if m in sys.modules], 'out': out.getvalue()}}))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def run_cli(*args: str) -> str:
    return f"from funnelbench.cli import main\nsys.argv = ['funnelbench', *{list(args)!r}]\ntry:\n    main()\nexcept SystemExit as end:\n    assert not end.code, end.code"


def test_import_funnelbench_loads_nothing_heavy():
    assert loaded_after("import funnelbench")["heavy"] == []


@pytest.mark.parametrize(
    "args, shown",
    [
        (["--version"], "funnelbench 0.1.0"),
        (["parse", "B12(197)"], "B12(197)"),
        (["parse", "B6(197)-6(99)", "--json"], '"layout": "B6(197)-6(99)"'),
        (["presets", "deit-*"], "deit-s"),
    ],
)
def test_light_commands_load_nothing_heavy(args, shown):
    result = loaded_after(run_cli(*args))
    assert shown in result["out"]
    assert result["heavy"] == []


def test_every_public_name_works_after_a_light_import():
    code = (
        "import funnelbench as fb\nfrom funnelbench import *\n"
        "missing = [n for n in fb.__all__ if getattr(fb, n, None) is None or globals()[n] is not getattr(fb, n)]\n"
        "assert not missing, missing\nassert set(fb.__all__) <= set(dir(fb))\n"
        "assert callable(fb.train) and callable(fb.search)\n"
        "from funnelbench.training import __all__ as names\nimport funnelbench.training as t\n"
        "assert all(getattr(t, n) is not None for n in names)\nprint('ok')"
    )
    result = loaded_after(code)
    assert result["out"] == "ok\n"
    assert "torch" in result["heavy"] and "optuna" in result["heavy"]  # loaded when asked for


def test_train_and_search_stay_functions_when_their_modules_are_imported():
    # funnelbench/train.py (the compatibility module) and the funnelbench.search package share
    # the names of two functions; importing either module must not replace the function.
    code = (
        "import funnelbench as fb\nfrom funnelbench.train import Trainer, TrainConfig\n"
        "import funnelbench.search.space\nimport funnelbench.training\n"
        "from funnelbench.training.api import train\nfrom funnelbench.search.study import search\n"
        "assert fb.train is train and fb.search is search, (fb.train, fb.search)\n"
        "assert sys.modules['funnelbench.train'].Trainer is Trainer\nprint('ok')"
    )
    assert loaded_after(code)["out"] == "ok\n"


def test_unknown_names_are_attribute_errors():
    import funnelbench
    import funnelbench.search
    import funnelbench.training

    # (funnelbench.search, the attribute, is the function: the package is in sys.modules)
    for module in (funnelbench, funnelbench.training, sys.modules["funnelbench.search"]):
        with pytest.raises(AttributeError, match="no_such_name"):
            module.no_such_name  # noqa: B018
