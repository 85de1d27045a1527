"""Regenerate the Python protobuf/gRPC modules from the .proto files here.

The generated ``*_pb2.py``, ``*_pb2_grpc.py`` and ``*_pb2.pyi`` files are
committed alongside the ``.proto`` files, so importing ``petcd.rpc.pb`` needs
no build step.  After editing any ``.proto`` file, regenerate them with::

    python -m petcd.rpc.pb.generate        # or: python rpc/pb/generate.py

and commit the result.  ``--check`` regenerates into a temporary directory and
exits non-zero if the committed files differ; the test suite
(``tests/test_protos.py``) runs the same check, so the two cannot drift apart.
The output depends on the grpcio-tools version (it is stamped into the
generated code), so regenerate with the version pinned for the project.

The protos import each other as ``petcd/rpc/pb/<name>.proto``; this script
lays them out under that path in a temporary directory so that protoc emits
``from petcd.rpc.pb import kv_pb2``-style imports.
"""

from __future__ import annotations

import argparse
import difflib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PB_DIR = Path(__file__).resolve().parent
PACKAGE_PATH = Path("petcd", "rpc", "pb")
GENERATED_SUFFIXES = ("_pb2.py", "_pb2_grpc.py", "_pb2.pyi")


def proto_files() -> list[Path]:
    """The .proto sources, in a stable order."""
    return sorted(PB_DIR.glob("*.proto"))


def _is_generated(name: str) -> bool:
    return name.endswith(GENERATED_SUFFIXES)


def generate(out_dir: Path) -> dict[str, bytes]:
    """Compile every .proto file and return {file name: contents}.

    Nothing in PB_DIR is touched.  ``out_dir`` is a scratch directory.
    """
    import grpc_tools  # noqa: PLC0415  (only needed when generating)

    src_root = out_dir / "src"
    gen_root = out_dir / "gen"
    src_pkg = src_root / PACKAGE_PATH
    src_pkg.mkdir(parents=True)
    gen_root.mkdir()
    protos = proto_files()
    if not protos:
        raise RuntimeError(f"no .proto files in {PB_DIR}")
    for proto in protos:
        shutil.copyfile(proto, src_pkg / proto.name)

    well_known = Path(grpc_tools.__file__).resolve().parent / "_proto"
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"--proto_path={src_root}",
        f"--proto_path={well_known}",
        f"--python_out={gen_root}",
        f"--grpc_python_out={gen_root}",
        f"--pyi_out={gen_root}",
        *(str(PACKAGE_PATH / p.name) for p in protos),
    ]
    proc = subprocess.run(cmd, cwd=src_root, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(
            f"protoc failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}"
        )

    gen_pkg = gen_root / PACKAGE_PATH
    result = {
        p.name: p.read_bytes()
        for p in sorted(gen_pkg.iterdir())
        if p.is_file() and _is_generated(p.name)
    }
    expected = {
        p.stem + suffix for p in protos for suffix in GENERATED_SUFFIXES
    }
    missing = expected - result.keys()
    if missing:
        raise RuntimeError(f"protoc did not produce: {sorted(missing)}")
    return result


def committed() -> dict[str, bytes]:
    """The generated files currently present in PB_DIR."""
    return {
        p.name: p.read_bytes()
        for p in sorted(PB_DIR.iterdir())
        if p.is_file() and _is_generated(p.name)
    }


def check() -> list[str]:
    """Return a list of problems; empty means the committed code is in step."""
    with tempfile.TemporaryDirectory(prefix="petcd-pb-") as tmp:
        fresh = generate(Path(tmp))
    present = committed()
    problems: list[str] = []
    for name in sorted(fresh.keys() | present.keys()):
        if name not in present:
            problems.append(f"{name}: missing (not generated yet)")
        elif name not in fresh:
            problems.append(f"{name}: stale (no .proto produces it any more)")
        elif fresh[name] != present[name]:
            diff = difflib.unified_diff(
                present[name].decode(errors="replace").splitlines(),
                fresh[name].decode(errors="replace").splitlines(),
                f"committed/{name}",
                f"regenerated/{name}",
                lineterm="",
                n=1,
            )
            excerpt = "\n".join(list(diff)[:20])
            problems.append(f"{name}: differs from regenerated output\n{excerpt}")
    return problems


def write() -> list[str]:
    """Regenerate into PB_DIR; return the names of files changed or removed."""
    with tempfile.TemporaryDirectory(prefix="petcd-pb-") as tmp:
        fresh = generate(Path(tmp))
    changed = []
    for name, data in fresh.items():
        target = PB_DIR / name
        if not target.exists() or target.read_bytes() != data:
            target.write_bytes(data)
            changed.append(name)
    for name in committed().keys() - fresh.keys():
        (PB_DIR / name).unlink()
        changed.append(name)
    return sorted(changed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Regenerate petcd's protobuf/gRPC Python modules."
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="only verify the committed files match the .proto sources",
    )
    args = parser.parse_args(argv)
    if args.check:
        problems = check()
        if problems:
            print("generated protobuf code is out of date:", file=sys.stderr)
            for problem in problems:
                print(f"  {problem}", file=sys.stderr)
            print(
                "run `python -m petcd.rpc.pb.generate` and commit the result",
                file=sys.stderr,
            )
            return 1
        print("generated protobuf code is up to date")
        return 0
    changed = write()
    if changed:
        for name in changed:
            print(f"wrote {PB_DIR / name}")
    else:
        print("generated protobuf code already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
