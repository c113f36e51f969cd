"""Training: objectives (standard, PGD-AT, FGSM-RS, TRADES, DM), fine-tuning set-ups and the loop
(atomic, verified checkpoints; interrupts at step boundaries and exact resume; validation-based
selection; JSON-lines metrics; DDP)."""

from .finetune import FinetuneConfig, prepare_finetune, train_mode
from .loop import InterruptRequests, TrainConfig, TrainResult, evaluate, learning_rate_factor, train
from .objectives import DM, OBJECTIVES, TRADES, FastFGSM, Objective, PGDAdversarial, Standard, make_objective

__all__ = [
    "DM", "OBJECTIVES", "TRADES", "FastFGSM", "FinetuneConfig", "InterruptRequests", "Objective", "PGDAdversarial",
    "Standard", "TrainConfig", "TrainResult", "evaluate", "learning_rate_factor", "make_objective", "prepare_finetune",
    "train", "train_mode",
]
