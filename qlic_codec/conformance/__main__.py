"""``python -m qlic_codec.conformance generate [--out DIR]``: write the conformance streams.

Regenerating is a deliberate act (see ``generate.py``); ``qlic verify`` checks them.
"""

import argparse
import sys
from pathlib import Path

from ..errors import QlicError
from . import manifest


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qlic_codec.conformance",
                                     description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("generate", help="encode the conformance streams again")
    gen.add_argument("--out", type=Path, default=None,
                     help=f"folder to write (default: ${manifest.FOLDER_ENV}, else conformance/ "
                          "in the source tree)")
    args = parser.parse_args(argv)
    from .generate import generate

    where = args.out or manifest.folder()
    try:
        entries = generate(where)
    except QlicError as exc:
        print(f"qlic: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    total = sum(entry["bytes"] for entry in entries)
    print(f"wrote {len(entries)} streams ({total} bytes) and {manifest.MANIFEST} to {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
