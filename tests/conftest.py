"""Fixtures shared by every test file (shared helpers are in ``helpers.py``)."""

from __future__ import annotations

import pytest
from helpers import DEVICES


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    return request.param
