"""Run by tests/engine/test_train.py under torchrun: a tiny fit on each rank, weights saved per rank."""

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from helpers import tiny_config

from ssd_ext.engine.train import fit

out = Path(sys.argv[1])
config = tiny_config(out / "run", schedule__epochs=2, eval__at_end=True, checkpoint__every=100)
config.train.batch_size = 4
config.data.synthetic.train_images = 24
config.train.device = "cpu"
summary = fit(config)
torch.save(summary["model"].state_dict(), out / f"rank{dist.get_rank()}.pt")
dist.destroy_process_group()
