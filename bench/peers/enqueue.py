"""`python -m bench.peers.enqueue PEER FIRST LAST`: queue one job per delivery id, before timing.

Run in a process of its own so the bench never imports the peers' libraries (their brokers are
configured at import time from the environment).
"""

from __future__ import annotations

import importlib
import sys


def main() -> None:
    peer, first, last = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    module = importlib.import_module(f"bench.peers.{peer}_app")
    module.enqueue(range(first, last + 1))


if __name__ == "__main__":
    main()
