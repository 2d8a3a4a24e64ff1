"""Training on Ray: the per-worker loop, checkpoints, optimizers and the Tune grid.

- `loop.train_loop_per_worker`: the function each Ray Train worker runs.
- `trainer.build_trainer`: one trial's `TorchTrainer` with its clip datasets.
- `tuning.run_grid`: the ablation grid on Ray Tune.
- `checkpoint.load_checkpoint`: read a trial checkpoint from a path or ``s3://``.
"""

from stsep.training.checkpoint import CHECKPOINT_FILE, load_checkpoint, write_checkpoint
from stsep.training.optim import build_optimizer, build_scheduler, lr_factor

__all__ = [
    "CHECKPOINT_FILE",
    "build_optimizer",
    "build_scheduler",
    "load_checkpoint",
    "lr_factor",
    "write_checkpoint",
]
