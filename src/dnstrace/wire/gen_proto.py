"""Regenerate ``dnstrace_pb2.py`` / ``dnstrace_pb2_grpc.py`` from ``dnstrace.proto`` (needs grpcio-tools).

Run ``python src/dnstrace/wire/gen_proto.py`` after editing the .proto; ``--out DIR`` writes
elsewhere (the up-to-date unit test compares a fresh generation with the committed one).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO = "dnstrace.proto"


def generate(out_dir: Path) -> list[Path]:
    from grpc_tools import protoc

    out_dir.mkdir(parents=True, exist_ok=True)
    code = protoc.main(["protoc", f"-I{HERE}", f"--python_out={out_dir}", f"--grpc_python_out={out_dir}",
                        str(HERE / PROTO)])
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")
    grpc_file = out_dir / "dnstrace_pb2_grpc.py"
    # protoc writes an absolute-style import; the generated modules live inside a package.
    text = grpc_file.read_text()
    text = re.sub(r"^import dnstrace_pb2 as", "from dnstrace.wire import dnstrace_pb2 as", text, flags=re.M)
    grpc_file.write_text(text)
    return [out_dir / "dnstrace_pb2.py", grpc_file]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path, file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
