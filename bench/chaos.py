"""A large chaos run: the suite's schedule of changes and faults at any size.

    .venv/bin/python bench/chaos.py --seed 7 --ops 2000 [--workers 2] [--staff 3]

The same run tests/test_chaos.py makes on three small fixed seeds (tests/chaos/run.py says what
it does and checks); prints the seed, the changes and faults it made, every finding and the
time to converge, and exits 1 on any finding. A failing seed replays with the same command.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.chaos.run import main

if __name__ == "__main__":
    sys.exit(main())
