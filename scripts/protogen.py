"""Generate the Python code of protos/keyscope/v1/*.proto, or check it is fresh.

Run from anywhere through scripts/gen-protos. The generated modules sit beside
their .proto files so that they import as `keyscope.v1` (pyproject.toml maps the
package `keyscope` to protos/keyscope).
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import sysconfig
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
PACKAGE_DIR = PROTO_ROOT / "keyscope" / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def _plugin(name: str) -> str:
    path = Path(sysconfig.get_path("scripts")) / name
    if not path.exists():
        raise SystemExit(f"{name} not found in {path.parent}; run scripts/bootstrap")
    return str(path)


def generate(out_root: Path) -> list[Path]:
    """Write the generated modules under out_root/keyscope/v1 and list them."""
    protos = sorted(PACKAGE_DIR.glob("*.proto"))
    well_known = resources.files("grpc_tools") / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *(str(p.relative_to(PROTO_ROOT)) for p in protos),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    out_dir = out_root / "keyscope" / "v1"
    return sorted(p for p in out_dir.iterdir() if p.name.endswith(GENERATED_SUFFIXES))


def stale_files() -> list[str]:
    """Names of generated files that differ from, or are missing beside, the protos."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = {p.name: p for p in generate(Path(tmp))}
        current = {p.name: p for p in PACKAGE_DIR.iterdir() if p.name.endswith(GENERATED_SUFFIXES)}
        stale = [name for name in fresh if name not in current]
        stale += [name for name in current if name not in fresh]
        stale += [
            name for name in fresh if name in current and not filecmp.cmp(fresh[name], current[name], shallow=False)
        ]
        return sorted(stale)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the generated code is stale")
    options = parser.parse_args()
    if options.check:
        stale = stale_files()
        if stale:
            print("stale generated code, run scripts/gen-protos:", *stale, sep="\n  ")
            return 1
        print("generated code is up to date")
        return 0
    for old in PACKAGE_DIR.iterdir():
        if old.name.endswith(GENERATED_SUFFIXES):
            old.unlink()
    with tempfile.TemporaryDirectory() as tmp:
        for path in generate(Path(tmp)):
            shutil.copy2(path, PACKAGE_DIR / path.name)
            print(f"wrote {(PACKAGE_DIR / path.name).relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
