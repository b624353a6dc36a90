"""What Lightning may print: only what a user of this project can act on.

Logs go to stderr in one format (conf/hydra/job_logging/stderr.yaml); here Lightning's
advertisements and messages about things this project does not use are dropped, wherever
`train` runs (train.py, a test, a notebook).
"""

from __future__ import annotations

import logging
import warnings

# Prefixes of Lightning's messages to drop: its "💡 Tip: ... litlogger / litmodels" advertisements,
# the TPU line on machines without one (the GPU line stays: it says where training runs), the
# max_steps stop, which would land on the progress bar's line (the run's last log line gives the steps),
# and the notice that our own ModelSummary replaces the default one (training/run.py).
_DROPPED = (
    "💡 Tip:",
    "TPU available: False",
    "`Trainer.fit` stopped: `max_steps=",
    "Trainer already configured with model summary callbacks",
)


class _DropLightningNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_DROPPED)


def quiet_lightning() -> None:
    """Install the filters (once; calling again changes nothing)."""
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")  # rank_zero_info's logger
    if not any(isinstance(f, _DropLightningNoise) for f in logger.filters):
        logger.addFilter(_DropLightningNoise())
    # With trainer.enable_model_summary=true under bf16/16-mixed: the size estimate assumes 32 bits. Harmless.
    warnings.filterwarnings("ignore", message=r"Precision .* is not supported by the model summary")
