"""A tiny training config shared by the engine tests (seconds on 2 CPU cores)."""

from __future__ import annotations

from ssd_ext.engine.config import Config
from ssd_ext.engine.presets import get_preset


def tiny_config(output_dir: str, **changes) -> Config:
    """ssd_small of width 8 on 48 synthetic 64-pixel pictures, 2 epochs of 6 iterations; 16
    validation and 16 test pictures. ``section__field=value`` changes a field."""
    config = get_preset("synthetic_small")
    config.output_dir = str(output_dir)
    config.model.kwargs = {"width": 8}
    synthetic = config.data.synthetic
    synthetic.train_images, synthetic.val_images, synthetic.test_images = 48, 16, 16
    synthetic.source_size = 64
    config.train.batch_size = 8
    config.train.progress = False
    config.train.tensorboard = False
    config.train.log_every = 2
    config.train.num_threads = 1
    config.data.num_workers = 0
    config.schedule.epochs = 2
    config.schedule.warmup_iters = 3
    config.checkpoint.every = 4
    config.checkpoint.keep_last = 10
    config.eval.every_epochs = 0
    config.eval.at_end = False
    config.eval.num_pictures = 0
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            setattr(getattr(config, section), field, value)
        else:
            setattr(config, section, value)
    return config
