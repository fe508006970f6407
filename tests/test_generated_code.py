"""The generated code is fresh, typed, and imports as `keyscope.v1`: the tests fail when it is stale."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIR = ROOT / "protos" / "keyscope" / "v1"
PROTOS = sorted(p.stem for p in PACKAGE_DIR.glob("*.proto"))


def test_protos_are_the_contract() -> None:
    assert PROTOS == ["apis", "audit", "keys", "permissions", "roles"]


def run_check(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(root / "scripts" / "protogen.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=root,
    )


def test_generated_code_is_not_stale() -> None:
    result = run_check(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "generated code is up to date" in result.stdout


def test_check_fails_on_stale_or_missing_code(tmp_path: Path) -> None:
    # The check above is only worth something if it can fail: run it on a copy with one file edited, one gone.
    shutil.copytree(ROOT / "protos", tmp_path / "protos")
    shutil.copytree(ROOT / "scripts", tmp_path / "scripts")
    copy = tmp_path / "protos" / "keyscope" / "v1"
    with (copy / "keys_pb2.py").open("a") as f:
        f.write("# edited by hand\n")
    (copy / "roles_pb2_grpc.pyi").unlink()
    result = run_check(tmp_path)
    assert result.returncode == 1
    assert result.stdout.split() == [
        "stale",
        "generated",
        "code,",
        "run",
        "scripts/gen-protos:",
        "keys_pb2.py",
        "roles_pb2_grpc.pyi",
    ]


@pytest.mark.parametrize("proto", PROTOS)
@pytest.mark.parametrize("suffix", ["_pb2", "_pb2_grpc"])
def test_module_imports_from_keyscope_v1_with_typed_stub(proto: str, suffix: str) -> None:
    module = importlib.import_module(f"keyscope.v1.{proto}{suffix}")
    # The module is the one beside the .proto (not a stray copy elsewhere on the path).
    assert Path(module.__file__ or "").resolve() == PACKAGE_DIR / f"{proto}{suffix}.py"
    assert (PACKAGE_DIR / f"{proto}{suffix}.pyi").is_file()


@pytest.mark.parametrize("proto", PROTOS)
def test_descriptor_is_registered_under_its_package_path(proto: str) -> None:
    # Package-qualified imports: the file is registered as keyscope/v1/<name>.proto in package keyscope.v1.
    module = importlib.import_module(f"keyscope.v1.{proto}_pb2")
    assert module.DESCRIPTOR.name == f"keyscope/v1/{proto}.proto"
    assert module.DESCRIPTOR.package == "keyscope.v1"


@pytest.mark.parametrize("proto", ["apis", "keys", "roles"])
def test_grpc_module_imports_messages_package_qualified(proto: str) -> None:
    # grpc_tools writes `import apis_pb2` for flat layouts; ours must say `from keyscope.v1 import ...`.
    text = (PACKAGE_DIR / f"{proto}_pb2_grpc.py").read_text()
    assert f"from keyscope.v1 import {proto}_pb2" in text


def test_packages_are_typed() -> None:
    assert (ROOT / "protos" / "keyscope" / "py.typed").is_file()
    assert (ROOT / "keyscope_server" / "py.typed").is_file()
