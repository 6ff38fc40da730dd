"""Copy the R reference cases the tests use from the shared reference folder.

The shared folder (``../shared/reference`` beside the checkout) is where new R
results arrive; the tests read only the copies under ``tests/reference`` so
that a fresh clone passes on its own.  Run this after the shared folder
changes, review the diff, and commit it::

    python tests/reference/sync.py [path/to/shared/reference]

The list of cases is ``MANIFEST`` in ``tests/reference/make.R`` (one source
for both scripts).
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA_FILES = ["cbpp.csv", "Orthodont.csv", "Ovary.csv", "spatial_gaus_sim.csv"]  # read directly by tests (test_emmeans, test_gls)


def manifest() -> list[str]:
    text = (HERE / "make.R").read_text()
    block = re.search(r"MANIFEST <- c\((.*?)\)", text, re.S)
    if block is None:
        raise SystemExit("make.R has no MANIFEST")
    return re.findall(r'"([^"]+)"', block.group(1))


def main(argv: list[str]) -> int:
    source = Path(argv[1]) if len(argv) > 1 else HERE.parents[2] / "shared" / "reference"
    for case_id in manifest():
        shutil.copy2(source / "cases" / f"{case_id}.json", HERE / "cases" / f"{case_id}.json")
    for name in DATA_FILES:
        shutil.copy2(source / "data" / name, HERE / "data" / name)
    print(f"copied {len(manifest())} cases and {len(DATA_FILES)} data files from {source}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
