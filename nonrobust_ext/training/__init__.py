"""Training: objectives (standard, PGD-AT, FGSM-RS, TRADES, DM), fine-tuning set-ups and the loop
(atomic checkpoints, exact resume, validation-based selection, JSON-lines metrics, DDP)."""

from .finetune import FinetuneConfig, prepare_finetune, train_mode
from .loop import TrainConfig, TrainResult, evaluate, learning_rate_factor, train
from .objectives import DM, OBJECTIVES, TRADES, FastFGSM, Objective, PGDAdversarial, Standard, make_objective

__all__ = [
    "DM", "OBJECTIVES", "TRADES", "FastFGSM", "FinetuneConfig", "Objective", "PGDAdversarial", "Standard",
    "TrainConfig", "TrainResult", "evaluate", "learning_rate_factor", "make_objective", "prepare_finetune", "train",
    "train_mode",
]
