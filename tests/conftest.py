"""Fixtures and hooks only; the helpers that tests share live in tests/helpers.py."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers import BundleFactory


def pytest_report_header(config):
    from bsmfusion.precision import cpu_capability, resolve_precision

    return (f"bsmfusion: CPU capability {cpu_capability()}; precision {resolve_precision('auto').describe()}; "
            "tests pin fp32 and repeat numeric comparisons in bf16 where it is native")


@pytest.fixture(scope="session")
def tokenizer():
    from bsmfusion.data.text import load_tokenizer
    from bsmfusion.resources import minilm_path

    return load_tokenizer(minilm_path())


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture(scope="session")
def bundle_factory(tmp_path_factory):
    """`bundle_factory(fusion, signal=..., rows=..., epochs=..., settings=...)` → a `TrainedBundle`, trained once per
    session for each distinct spec (tests/helpers.py `BundleFactory`). Shared: copy it (`.copy_to(tmp_path / "m")`)
    before changing it; the session ends with a check that no shared bundle changed."""
    factory = BundleFactory(tmp_path_factory.mktemp("bundles"))
    yield factory
    factory.check_unchanged()
