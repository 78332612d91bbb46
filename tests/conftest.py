"Shared test helpers: project paths and the optional ../shared folder (golden fixtures and real annotations)."
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# ../shared sits beside the checkout on the development and CI machines; elsewhere tests that need it skip
SHARED = Path(os.environ.get("UNIMD_SHARED", ROOT.parent/"shared"))


def shared_path(*parts) -> Path:
    "A path under ../shared, or skip the test when it is absent (fresh clone elsewhere)."
    p = SHARED.joinpath(*parts)
    if not p.exists(): pytest.skip(f"{p} not available (needs the ../shared folder beside the checkout)")
    return p


os.environ.setdefault("MPLBACKEND", "Agg")
