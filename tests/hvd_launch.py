"""Runs a script under a real 2-worker ``horovodrun`` (Gloo, CPU) for the adapter tests."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def horovodrun_path():
    # installed beside the interpreter; PATH may lack it (e.g. a pyenv shim not yet rehashed)
    path = Path(sys.executable).parent / "horovodrun"
    if path.exists():
        return str(path)
    return shutil.which("horovodrun")


def require(module: str) -> None:
    """Skip the calling test module unless ``module`` imports and horovodrun exists. Checked
    in a child process: the frameworks are only ever loaded by the horovodrun workers."""
    r = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True,
                       text=True)
    if r.returncode != 0:
        pytest.skip(f"{module} does not import: {r.stderr.strip().splitlines()[-1:]}",
                    allow_module_level=True)
    if horovodrun_path() is None:
        pytest.skip("horovodrun is not installed", allow_module_level=True)


def horovodrun(script, *args, env=None, timeout=600):
    cmd = [horovodrun_path(), "-np", "2", "-H", "localhost:2", "--gloo", sys.executable,
           str(script), *map(str, args)]
    env = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def failure(r) -> str:
    return r.stdout[-4000:] + r.stderr[-4000:]
