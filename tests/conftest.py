"""Fixtures and hooks only; the helpers that tests share live in tests/helpers.py."""
from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import torch

from tests.helpers import BundleFactory


def pytest_report_header(config):
    from bsmfusion.precision import cpu_capability, resolve_precision

    return (f"bsmfusion: CPU capability {cpu_capability()}; precision {resolve_precision('auto').describe()}; "
            "tests pin fp32 and repeat numeric comparisons in bf16 where it is native")


def pytest_configure(config):
    """A pytest-xdist worker (`make test`: one per core) computes on one thread, and so does every process it
    starts (OMP_NUM_THREADS): two workers running torch's default of a thread per core each would oversubscribe
    the cores (measured on 2 cores: 60% more CPU time for the suite, no faster than one worker)."""
    if hasattr(config, "workerinput"):
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(items):
    """`make test` runs two pytest workers (`-n auto --dist loadgroup`): every test that starts a local Ray runs on
    one of them, one module after the other, so no two Ray clusters start on the machine at once."""
    for item in items:
        if "ray_local" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("ray"))


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


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray with 2 CPUs, started once for the module and shut down after it (about 7 s on 2 cores: every test
    that needs it is marked slow)."""
    from bsmfusion.errors import ConfigError
    from bsmfusion.inference.ray_predict import require_ray

    try:
        ray = require_ray()
    except ConfigError as err:
        pytest.skip(f"ray cannot be imported: {err}")
    from ray.data import DataContext

    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False,
             object_store_memory=200 * 1024 ** 2, configure_logging=False)
    context = DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    yield ray
    ray.shutdown()
