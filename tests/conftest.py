"""Shared fixtures: the corpus directory when ../shared exists, and generated context files always."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def corpus_dir() -> Path | None:
    """The Deal-or-No-Deal corpus directory, or None on machines without it."""
    path = SHARED_DATA / "dealornodeal"
    return path if (path / "val.txt").is_file() else None


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
