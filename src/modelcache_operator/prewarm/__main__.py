"""``modelcache-prewarm`` / ``python -m modelcache_operator.prewarm``: the same CLI as prewarm.py."""

from __future__ import annotations

import sys

from modelcache_operator.prewarm.prewarm import main as _main


def main() -> None:
    sys.exit(_main())


if __name__ == "__main__":
    main()
