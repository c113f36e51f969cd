"""Training: objectives (standard, PGD-AT, FGSM-RS, TRADES, DM, epsilon scheduling), fine-tuning set-ups
(frozen stages, linear probe, learning rates, frozen BatchNorm statistics, LP-FT), WiSE-FT weight
interpolation and the loop (atomic, verified checkpoints; interrupts at step boundaries and exact resume;
validation-based selection; JSON-lines metrics; DDP)."""

from .finetune import FinetuneConfig, prepare_finetune, train_mode
from .loop import InterruptRequests, TrainConfig, TrainResult, evaluate, learning_rate_factor, train
from .lp_ft import linear_probe_then_finetune
from .objectives import (
    DM,
    OBJECTIVES,
    TRADES,
    EpsilonScheduled,
    FastFGSM,
    Objective,
    PGDAdversarial,
    Standard,
    make_objective,
)
from .weight_interpolation import interpolate_weights

__all__ = [
    "DM", "OBJECTIVES", "TRADES", "EpsilonScheduled", "FastFGSM", "FinetuneConfig", "InterruptRequests", "Objective",
    "PGDAdversarial", "Standard", "TrainConfig", "TrainResult", "evaluate", "interpolate_weights",
    "learning_rate_factor", "linear_probe_then_finetune", "make_objective", "prepare_finetune", "train", "train_mode",
]
