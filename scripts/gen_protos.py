"""Generate Python gRPC code from protos/ into pura/service/_proto/ (committed script, generated
output excluded from lint). Run by scripts/setup.sh and `make proto`."""

from __future__ import annotations

import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
OUT = ROOT / "pura" / "service" / "_proto"


def main() -> int:
    from grpc_tools import protoc  # dev dependency

    protos = sorted(PROTO_ROOT.rglob("*.proto"))
    OUT.mkdir(parents=True, exist_ok=True)
    if not protos:
        return 0
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"--python_out={OUT}",
        f"--pyi_out={OUT}",
        f"--grpc_python_out={OUT}",
        *[str(p) for p in protos],
    ]
    rc = protoc.main(args)
    if rc != 0:
        return int(rc)
    # Make imports absolute inside our package:
    # "from pura.v1 import x_pb2" -> "from pura.service._proto.pura.v1 import x_pb2"
    for path in [*OUT.rglob("*.py"), *OUT.rglob("*.pyi")]:
        text = path.read_text()
        fixed = re.sub(
            r"^from pura\.v1 import", "from pura.service._proto.pura.v1 import", text, flags=re.M
        )
        path.write_text(fixed)
    for d in [OUT, *[p for p in OUT.rglob("*") if p.is_dir()]]:
        (d / "__init__.py").touch()
    return 0


if __name__ == "__main__":
    sys.exit(main())
