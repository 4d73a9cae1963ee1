"""The ``vecdex`` command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from . import demo
from .engine import Engine


def _info(args: argparse.Namespace) -> int:
    eng = Engine(args.data)
    names = [args.collection] if args.collection else eng.list_collections()
    print(json.dumps([eng.open_collection(n).describe() for n in names], indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vecdex", description="Embedding retrieval and vector search.")
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="index the bundled sample corpus, search it, reopen it")
    d.add_argument("--data", help="directory for the collections (default: a temporary one)")
    d.set_defaults(func=lambda a: demo.run(a.data) and 0)

    i = sub.add_parser("info", help="describe the collections in a data directory")
    i.add_argument("--data", required=True)
    i.add_argument("--collection")
    i.set_defaults(func=_info)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except (ValueError, LookupError, OSError) as e:
        print(f"vecdex: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
