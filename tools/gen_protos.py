"""Generate Python code from protos/ into schedcore/gen/ (`make proto`).

protoc writes imports as `from scheduler.v1 import x_pb2` (or scheduler.internal.v1), which
only resolve when the output folder is on sys.path. We rewrite them to `schedcore.gen.scheduler...`
so the generated code is an ordinary subpackage of the shared package and nothing touches sys.path
at run time.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUT = ROOT / "schedcore" / "gen"
IMPORT = re.compile(r"^(from|import) scheduler\.((?:internal\.)?v1)\b", re.MULTILINE)


def main() -> int:
    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    include = str(Path(protoc.__file__).parent / "_proto")
    rc = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTOS}",
            f"-I{include}",
            f"--python_out={OUT}",
            f"--pyi_out={OUT}",
            f"--grpc_python_out={OUT}",
            *sources,
        ]
    )
    if rc != 0:
        print("protoc failed", file=sys.stderr)
        return rc
    for path in OUT.rglob("*.py*"):
        text = path.read_text()
        fixed = IMPORT.sub(r"\1 schedcore.gen.scheduler.\2", text)
        if fixed != text:
            path.write_text(fixed)
    for folder in [OUT, *(p for p in OUT.rglob("*") if p.is_dir())]:
        (folder / "__init__.py").touch()
    print(f"generated {len(sources)} proto files into {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
