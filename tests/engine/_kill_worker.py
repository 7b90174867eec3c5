"""Run by tests/engine/test_cli.py: train, and SIGKILL this very process halfway through
writing its second checkpoint (after some bytes reached the temporary file)."""

import io
import os
import signal
import sys

import torch
from helpers import tiny_config

from ssd_ext.engine.config import save_config
from ssd_ext.engine.train import fit

real_save = torch.save
calls = 0


def save_then_die(obj, stream, *args, **kwargs):
    global calls
    calls += 1
    if calls < 2:
        return real_save(obj, stream, *args, **kwargs)
    buffer = io.BytesIO()
    real_save(obj, buffer)
    stream.write(buffer.getvalue()[: buffer.tell() // 2])
    stream.flush()
    os.kill(os.getpid(), signal.SIGKILL)


torch.save = save_then_die
config = tiny_config(sys.argv[1])
save_config(config, sys.argv[1] + ".json")
fit(config)
