"""Regenerates the gRPC stubs in ``server/pb/`` from ``proto/vecdex/v1/*.proto`` (``make proto``).

Runs ``grpc_tools.protoc`` (pinned in the dev extra, so the output is byte-for-byte reproducible)
with ``--python_out``, ``--grpc_python_out`` and ``--pyi_out``, then moves the files flat into the
output directory and turns protoc's absolute import (``from vecdex.v1 import vecdex_pb2``) into a
package-relative one (``from . import vecdex_pb2``): the import name ``vecdex`` is not ours to
take, and ``proto`` belongs to proto-plus. The descriptors keep their canonical file names
(``vecdex/v1/vecdex.proto``), which is what reflection and grpcurl see.

Usage: ``python server/protogen.py [OUT_DIR]`` (default ``server/pb``). Run by path, it does not
import the ``server`` package, so it works when the stubs are missing or stale.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PACKAGE_DIR = "vecdex/v1"
DEFAULT_OUT = ROOT / "server" / "pb"
SUFFIXES = ("_pb2.py", "_pb2_grpc.py", "_pb2.pyi")
_ABS_IMPORT = re.compile(r"^from vecdex\.v1 import (\w+_pb2)", re.MULTILINE)


def proto_files() -> list[Path]:
    return sorted((PROTO_ROOT / PACKAGE_DIR).glob("*.proto"))


def generate(out: Path = DEFAULT_OUT) -> list[Path]:
    """Writes the stubs for every proto file into ``out``; returns the files written.

    Raises:
        RuntimeError: protoc failed (its message is included).
    """
    import grpc_tools
    from grpc_tools import protoc

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{well_known}",
            f"--python_out={tmp}",
            f"--grpc_python_out={tmp}",
            f"--pyi_out={tmp}",
            *(str(p.relative_to(PROTO_ROOT)) for p in proto_files()),
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed: {' '.join(args)}")
        for src in sorted((Path(tmp) / PACKAGE_DIR).iterdir()):
            if not src.name.endswith(SUFFIXES):
                continue
            text = _ABS_IMPORT.sub(r"from . import \1", src.read_text())
            dst = out / src.name
            dst.write_text(text)
            written.append(dst)
    init = out / "__init__.py"
    if not init.exists():
        init.write_text('"""Generated gRPC stubs (``make proto``); do not edit."""\n')
    return written


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else DEFAULT_OUT
    for path in generate(out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
