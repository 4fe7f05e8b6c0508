"""``python -m bench.peers setup | run | memory``.

python -m bench.peers setup
python -m bench.peers run [--repeat 3] [--duration 5] [--warmup 2] [--write]
python -m bench.peers memory [--requests 20000] [--write]
"""

from __future__ import annotations

import argparse
import sys

from bench.peers import compare, install, memory


def _setup(_: argparse.Namespace) -> int:
    results = install.setup()
    for result in results:
        print(f"{result.peer}: {'ok' if result.ok else 'FAILED'}: {result.detail}")
    print(install.describe_versions())
    return 0 if all(r.ok for r in results) else 1


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("setup", help="install LiteLLM's proxy and Portkey's gateway (idempotent)")
    run = commands.add_parser("run", help="measure the upstream, Tollway and the peers")
    compare.add_arguments(run)
    mem = commands.add_parser("memory", help="peak RSS of Tollway and LiteLLM under bounded load")
    memory.add_arguments(mem)
    args = parser.parse_args(argv)
    try:
        if args.command == "setup":
            return _setup(args)
        if args.command == "run":
            compare.validate(run, args)
            return compare.run_comparison(args)
        return memory.run_memory(args)
    except KeyboardInterrupt:
        print("interrupted; child processes stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
