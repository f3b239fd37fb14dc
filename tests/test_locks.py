"""The process lock names its holder to every process it refuses."""

from __future__ import annotations

import os

import pytest

from tuneforge.errors import UserError
from tuneforge.locks import hold


def test_every_refusal_names_the_holder(tmp_path):
    # flock conflicts between two opens of the file even within one process: a stand-in for two processes.
    with hold(tmp_path, "the index"):
        for _ in range(2):  # the first refusal must not erase the holder's name for the next one
            with pytest.raises(UserError, match=f"the index is in use by pid {os.getpid()} "), \
                    hold(tmp_path, "the index"):
                pass
    with hold(tmp_path, "the index"):  # released at the end of the block
        pass
