"""Generate Python gRPC code from protos/ (committed script, generated output excluded from lint
and from git). Run by scripts/setup.sh and `make proto`.

Two outputs, so that dependencies run one way (docs/architecture.md, "Packages"):

* ``pura/service/_proto``  -- every proto, for the servers (A's public API and the A<->B helper);
* ``clients/pura_client/_proto`` -- the public API only (``common.proto``, ``pura.proto``), owned
  by the client SDK so that it never imports the server package. ``helper.proto`` is left out on
  purpose: a client has no business speaking A<->B.

Both register the same ``pura/v1/*.proto`` files in protobuf's default descriptor pool; identical
files are accepted twice, so a process that imports both (tests, ``pura demo``) gets one message
class per message.
"""

from __future__ import annotations

import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
SERVER_OUT = ROOT / "pura" / "service" / "_proto"
CLIENT_OUT = ROOT / "clients" / "pura_client" / "_proto"
#: The protos a client needs (the public API); the helper protocol stays server-only.
CLIENT_PROTOS = ("pura/v1/common.proto", "pura/v1/pura.proto")


def generate(out: pathlib.Path, package: str, protos: list[pathlib.Path]) -> int:
    """protoc into ``out``, then make the generated imports absolute inside ``package``:
    "from pura.v1 import x_pb2" -> "from <package>.pura.v1 import x_pb2"."""
    from grpc_tools import protoc  # dev dependency

    out.mkdir(parents=True, exist_ok=True)
    if not protos:
        return 0
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *[str(p) for p in protos],
    ]
    rc = protoc.main(args)
    if rc != 0:
        return int(rc)
    for path in [*out.rglob("*.py"), *out.rglob("*.pyi")]:
        text = path.read_text()
        fixed = re.sub(r"^from pura\.v1 import", f"from {package}.pura.v1 import", text,
                       flags=re.M)
        path.write_text(fixed)
    for d in [out, *[p for p in out.rglob("*") if p.is_dir()]]:
        (d / "__init__.py").touch()
    return 0


def main() -> int:
    protos = sorted(PROTO_ROOT.rglob("*.proto"))
    rc = generate(SERVER_OUT, "pura.service._proto", protos)
    if rc != 0:
        return rc
    client = [PROTO_ROOT / name for name in CLIENT_PROTOS]
    return generate(CLIENT_OUT, "pura_client._proto", client)


if __name__ == "__main__":
    sys.exit(main())
