"""Where a one-process rebuild spends its CPU: reading and decoding pages, applying them,
writing the working sets, on an existing store (bench/rebuild.py --generate-only makes one).

Each run rebuilds every read model of the registry in this process (no helpers), timed in
CPU seconds of this process (not the database server's), which a busy shared machine
disturbs less than wall-clock time; the best of `--repeat` runs of each page size, the
sizes taken in turn.

    python bench/rebuild_parts.py sqlite:////tmp/rbpy/rebuild-100k.db
    python bench/rebuild_parts.py "postgresql://...?schema=store_100k" --pages 1000,5000
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ledger import Ledger
from ledger.projections.catchup import CatchUp
from ledger.projections.decode import Decoder
from ledger.projections.registry import READ_MODELS, projector
from ledger.projections.runner import Projector

PARTS = {"read+decode": (Decoder, "page"), "apply": (CatchUp, "_apply"),
         "write": (CatchUp, "_write")}


@contextmanager
def timed_parts(spent: dict[str, float]) -> Iterator[None]:
    """Add each part's CPU seconds to `spent` while inside."""
    saved: list[tuple[type[Any], str, Callable[..., Any]]] = []
    for part, (cls, name) in PARTS.items():
        method = getattr(cls, name)
        saved.append((cls, name, method))

        def timed(*args: Any, _method: Callable[..., Any] = method, _part: str = part,
                  **kwargs: Any) -> Any:
            started = time.process_time()
            try:
                return _method(*args, **kwargs)
            finally:
                spent[_part] += time.process_time() - started

        setattr(cls, name, timed)
    try:
        yield
    finally:
        for cls, name, method in saved:
            setattr(cls, name, method)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--pages", default="", help="rebuild page sizes, e.g. 1000,5000 "
                        "(default: the projector's own)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sizes = [int(size) for size in args.pages.split(",") if size] or [0]
    best: dict[int, dict[str, float]] = {}
    with Ledger.open(args.url) as ledger:
        for _ in range(args.repeat):
            for size in sizes:
                p = (Projector(ledger.app, list(READ_MODELS.values()), rebuild_page=size,
                               flush_every=projector(ledger.app).flush_every)
                     if size else projector(ledger.app, jobs=1))
                spent = dict.fromkeys(PARTS, 0.0)
                with timed_parts(spent):
                    started = time.process_time()
                    p.rebuild()
                    spent["total"] = time.process_time() - started
                if spent["total"] < best.get(p.rebuild_page, {"total": float("inf")})["total"]:
                    best[p.rebuild_page] = spent
    for size, spent in best.items():
        shown = ", ".join(f"{part} {seconds:.3f}" for part, seconds in spent.items())
        print(f"page {size}: CPU s {shown}")


if __name__ == "__main__":
    main()
