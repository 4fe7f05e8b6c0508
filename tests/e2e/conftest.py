"""End-to-end tests: the gateway and the workers run in processes of their own.

SDK clients that a test makes and leaves to the garbage collector hold keep-alive
sockets to those processes. Collected at some later moment, their finalizers warn
(``ResourceWarning: unclosed socket``) inside whatever test runs then, where
``filterwarnings = error`` turns the warning into that unrelated test's failure.
Each end-to-end test therefore ends with a collection of its own leftovers, their
warnings ignored: they are the test client's sockets, never the product's (the
product runs in the child processes, where this cannot hide anything).
"""

from __future__ import annotations

import gc
import warnings
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _collect_client_leftovers() -> Iterator[None]:
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
