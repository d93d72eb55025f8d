"""The package as a user installs it: a wheel built from this tree works outside the repository."""

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def run(command, **kwargs):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # nothing but what is installed
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=300, env=env,
                            **kwargs)
    assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A fresh virtual environment with the wheel installed; the dependencies are this one's."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"  # built from a copy: no build/ or egg-info in the working tree
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "-w", tmp / "dist", source])
    wheel = next((tmp / "dist").glob("patchcfg-*.whl"))
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv])
    run([sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "--quiet", "--no-deps",
         "--no-index", wheel])
    site = Path(run([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
                .strip())
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return wheel, venv, tmp


def test_the_wheel_ships_every_schema(installed):
    wheel, _, _ = installed
    names = zipfile.ZipFile(wheel).namelist()
    shipped = sorted(Path(n).name for n in names if n.startswith("patchcfg/schemas/"))
    assert shipped == sorted(p.name for p in (ROOT / "src" / "patchcfg" / "schemas").glob("*.json"))


def test_the_installed_command_validates_and_prints_the_schema_outside_the_repository(installed):
    _, venv, tmp = installed
    work = tmp / "elsewhere"
    work.mkdir()
    where = run([venv / "bin" / "python", "-c", "import patchcfg; print(patchcfg.__file__)"], cwd=work)
    assert str(venv) in where  # the installed copy, not this tree
    (work / "c.yaml").write_text("name: x\npretrain: {method: simclr, epochs: 2}\n")
    assert "ok" in run([venv / "bin" / "patchcfg", "validate", "c.yaml"], cwd=work)
    schema = run([venv / "bin" / "patchcfg", "schema"], cwd=work)
    assert '"pretrain"' in schema and '"temperature"' in schema


def test_the_installed_command_says_its_version(installed):
    """`patchcfg --version` names the version the wheel was built as, stated once in the package."""
    import patchcfg

    wheel, venv, _ = installed
    assert wheel.name.startswith(f"patchcfg-{patchcfg.__version__}-")
    assert run([venv / "bin" / "patchcfg", "--version"]).strip() == f"patchcfg, version {patchcfg.__version__}"


def test_the_wheel_ships_every_file_of_the_labelling_page(installed):
    """The page, its script, its style and its icons: a missing one is a 404 in the user's browser."""
    wheel, _, _ = installed
    names = zipfile.ZipFile(wheel).namelist()
    shipped = sorted(Path(n).name for n in names if n.startswith("patchcfg/label/static/"))
    assert shipped == sorted(p.name for p in (ROOT / "src" / "patchcfg" / "label" / "static").iterdir())
    assert {"favicon.ico", "favicon.svg", "index.html"} <= set(shipped)


def test_a_deprecation_warning_from_our_code_fails_the_suite():
    """pyproject's filterwarnings turns a DeprecationWarning or FutureWarning raised from a patchcfg
    module into an error, so one of ours cannot hide among a run's warnings; a third party's is not."""
    import warnings

    for category in (DeprecationWarning, FutureWarning):
        with pytest.raises(category):
            warnings.warn_explicit("old", category, "optim.py", 1, module="patchcfg.train.optim")
    with warnings.catch_warnings(record=True) as caught:  # the filters in force, recorded
        warnings.warn_explicit("old", DeprecationWarning, "x.py", 1, module="somelib.x")
    assert [str(w.message) for w in caught] == ["old"]
