"""Packaging: the data edgekit needs at run time (device YAMLs, recipes, the demo apps' templates) lives inside the
package under edgekit/resources, is found through importlib.resources, and every file of it goes into a wheel."""

from __future__ import annotations

import fnmatch
import glob
import shutil
import subprocess
import sys
import zipfile
from importlib.resources import files
from pathlib import Path

import pytest

import edgekit
from edgekit.demo import APPS, apps_dir
from edgekit.profile.devices import load_devices, targets_dir

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "edgekit"
RESOURCES = PACKAGE / "resources"
# what building a demo app leaves in its folder: pyproject's exclude-package-data keeps it out of a wheel
BUILD_OUTPUTS = {"build", ".gradle", ".idea", "DerivedData", "xcuserdata", "local.properties", ".DS_Store"}


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def package_data(src: Path = PACKAGE) -> set[str]:
    """The files under `src` that setuptools puts in a wheel as edgekit's package data, as paths relative to `src`.

    setuptools globs each package-data pattern recursively (hidden names only where the pattern spells the dot) and
    drops what an exclude-package-data pattern matches with fnmatch, whose `*` spans folders."""
    tool = pyproject()["tool"]["setuptools"]
    found = {
        p
        for pattern in tool["package-data"]["edgekit"]
        for p in glob.glob(pattern, root_dir=src, recursive=True)
        if (src / p).is_file()
    }
    excluded = {
        p for pattern in tool.get("exclude-package-data", {}).get("edgekit", []) for p in fnmatch.filter(found, pattern)
    }
    return found - excluded


def is_build_output(rel: Path) -> bool:
    return bool(BUILD_OUTPUTS & set(rel.parts)) or any(p.endswith((".xcodeproj", ".iml")) for p in rel.parts)


def test_resources_are_found_through_importlib_resources(monkeypatch):
    monkeypatch.delenv("EDGEKIT_TARGETS", raising=False)
    monkeypatch.delenv("EDGEKIT_APPS", raising=False)
    resources = Path(str(files("edgekit") / "resources"))
    if Path(edgekit.__file__).resolve().parent == PACKAGE.resolve():  # an editable install: the source tree's
        assert resources.resolve() == RESOURCES.resolve()
    assert targets_dir() == resources / "targets"
    yamls = sorted((resources / "targets").glob("*.yaml"))
    assert yamls and len(load_devices()) == len(yamls)
    assert apps_dir() == resources / "apps"
    for app in APPS.values():
        assert (apps_dir() / app["dir"] / "README.md").is_file()
    assert (resources / "recipes" / "quickstart.yaml").is_file()


def test_environment_overrides_still_win(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGEKIT_TARGETS", str(tmp_path / "t"))
    monkeypatch.setenv("EDGEKIT_APPS", str(tmp_path / "a"))
    assert targets_dir() == tmp_path / "t" and apps_dir() == tmp_path / "a"


def test_top_level_paths_link_into_the_package():
    """`targets/`, `recipes/`, `android_demo/`, `ios_demo/` stay where the README names them, as links."""
    for old, new in [
        ("targets", "targets"),
        ("recipes", "recipes"),
        ("android_demo", "apps/android_demo"),
        ("ios_demo", "apps/ios_demo"),
    ]:
        link = ROOT / old
        assert link.is_symlink() and link.resolve() == (RESOURCES / new).resolve(), old
        assert not Path(link.readlink()).is_absolute(), f"{old} must be a relative link"


def test_package_data_globs_match_every_resource_file():
    shipped = package_data()
    on_disk = {p.relative_to(PACKAGE).as_posix() for p in RESOURCES.rglob("*") if p.is_file()}
    missing = {p for p in on_disk - shipped if not is_build_output(Path(p))}
    assert not missing, f"files under edgekit/resources that a wheel would leave out: {sorted(missing)}"
    assert {p for p in shipped if is_build_output(Path(p))} == set(), "build outputs would go into a wheel"
    # dotfiles and the gradle files, which a plain `*` misses or a careless pattern drops
    assert {
        "resources/apps/android_demo/.gitignore",
        "resources/apps/ios_demo/.gitignore",
        "resources/apps/android_demo/gradle/wrapper/gradle-wrapper.properties",
        "resources/apps/android_demo/settings.gradle.kts",
        "profile/report.schema.json",
    } <= shipped


def test_build_outputs_in_an_app_folder_are_left_out(tmp_path):
    apps = tmp_path / "resources" / "apps"
    made = [
        "android_demo/README.md",
        "android_demo/.gitignore",
        "android_demo/app/build/intermediates/a.dex",
        "android_demo/build/x.txt",
        "android_demo/local.properties",
        "android_demo/.gradle/8.0/f.lock",
        "ios_demo/README.md",
        "ios_demo/EdgekitDemo.xcodeproj/project.pbxproj",
        "ios_demo/.DS_Store",
        "ios_demo/DerivedData/Build/x.o",
    ]
    for rel in made:
        (apps / rel).parent.mkdir(parents=True, exist_ok=True)
        (apps / rel).write_text("")
    assert package_data(tmp_path) == {
        "resources/apps/android_demo/README.md",
        "resources/apps/android_demo/.gitignore",
        "resources/apps/ios_demo/README.md",
    }


def test_one_version_source():
    project = pyproject()
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "edgekit.version.__version__"}
    assert edgekit.__version__


def test_wheel_carries_the_resources(tmp_path):
    """A wheel built from the source holds every resource file, the report schema and the licence (a few seconds:
    no build isolation, the venv's setuptools)."""
    pytest.importorskip("setuptools", minversion="77")  # pyproject's build-system requirement
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        (src / name).write_bytes((ROOT / name).read_bytes())
    shutil.copytree(PACKAGE, src / "edgekit", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            str(src),
            "-w",
            str(tmp_path / "dist"),
        ],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    (wheel,) = (tmp_path / "dist").glob("edgekit-*.whl")
    assert wheel.name.startswith(f"edgekit-{edgekit.__version__}-")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"edgekit/{p}" for p in package_data()} <= names
    assert {f"edgekit/resources/targets/{p.name}" for p in (RESOURCES / "targets").glob("*.yaml")} <= names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
