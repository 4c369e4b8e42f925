"""The interpreters the Django tests run under, and how to build them.

`python tests/django_venvs.py` (run by `.ci/run`) makes each venv under `.venvs/` with its
pinned Django and this checkout installed (editable, so a venv built once stays current); a
venv whose pins and pyproject.toml are unchanged is kept. The Python for each comes from
pyenv, or from PATH (`python3.12`, `python3.11`). It exits non-zero, naming the venv, when
one cannot be built.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOME = ROOT / ".venvs"

#: name -> (Python version, requirements). Django 6 needs Python 3.12; Django 5.2 LTS gets
#: `django.tasks` from the backport, tested on the oldest Python pgqueue supports.
VENVS: dict[str, tuple[str, tuple[str, ...]]] = {
    "django6-py312": ("3.12", ("Django>=6.1,<6.2",)),
    "django52-py311": ("3.11", ("Django>=5.2,<5.3", "django-tasks>=0.12,<0.13")),
}


def python_of(venv: str) -> Path:
    return HOME / venv / "bin" / "python"


def find_python(version: str) -> str | None:
    """A `python{version}`: pyenv's newest of that minor version, else one on PATH."""
    root = os.environ.get("PYENV_ROOT") or str(Path.home() / ".pyenv")
    versions = Path(root) / "versions"
    if versions.is_dir():
        found = sorted(
            (p for p in versions.iterdir() if p.name.startswith(f"{version}.")),
            key=lambda p: [int(x) if x.isdigit() else 0 for x in p.name.split(".")],
        )
        for candidate in reversed(found):
            python = candidate / "bin" / "python3"
            if python.exists():
                return str(python)
    return shutil.which(f"python{version}")


def build(venv: str) -> None:
    version, requirements = VENVS[venv]
    target = HOME / venv
    stamp = target / ".pgqueue-requirements"
    # pgqueue's own dependencies come from pyproject.toml: a change there rebuilds too.
    pyproject = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    wanted = "\n".join([*requirements, pyproject]) + "\n"
    if python_of(venv).exists() and stamp.exists() and stamp.read_text() == wanted:
        return
    python = find_python(version)
    if python is None:
        raise SystemExit(f"cannot build {venv}: no Python {version} (pyenv or python{version})")
    shutil.rmtree(target, ignore_errors=True)
    subprocess.run([python, "-m", "venv", str(target)], check=True)
    pip = [str(python_of(venv)), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, *requirements, "psycopg[binary]>=3.2", "-e", str(ROOT)], check=True)
    stamp.write_text(wanted)


if __name__ == "__main__":
    for name in sys.argv[1:] or list(VENVS):
        print(f"django test venv {name} ...", flush=True)
        build(name)
