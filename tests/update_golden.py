"""Regenerate tests/golden/*.metrics from the running exporter: `make golden`."""

from __future__ import annotations

import tempfile
from pathlib import Path

from tests.support.golden_metrics import GOLDEN, GOLDEN_TREES, golden_path, normalise, scrape_tree


def main() -> None:
    GOLDEN.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in GOLDEN_TREES:
            golden_path(name).write_text(normalise(scrape_tree(name, Path(tmp))))
            print(f"wrote {golden_path(name)}")


if __name__ == "__main__":
    main()
