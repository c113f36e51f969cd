"""Bad input to every public entry point of training, models and data: refused where it enters.

Each row is a call, the exception it must raise (TypeError for a wrong type, ValueError for a wrong
value, as everywhere: ``nonrobust_ext._validate``) and a regex that the message must match — naming
the argument. NaN and infinite values, empty data and wrong types included. A row that passes
silently is a failure: the count of silent accepts stays at zero.

The last section covers faults that only show while training: a loss that becomes NaN stops the run
with a clear error naming the step, and no checkpoint holding a NaN is ever written.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from _helpers import pattern_task

from nonrobust_ext import data, models, training
from nonrobust_ext.data import TensorData
from nonrobust_ext.training import FinetuneConfig, TrainConfig
from nonrobust_ext.training import loop as training_loop

NAN, INF = math.nan, math.inf


class Tiny(torch.nn.Module):
    """The smallest model with the interface the training side relies on (fc, stages, reset_head)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(4)
        self.fc = torch.nn.Linear(4, 4)
        self.feature_dim = 4

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor, return_features: bool = False) -> Any:
        features = self.forward_features(x)
        logits = self.fc(features)
        return (features, logits) if return_features else logits

    def stages(self) -> list[torch.nn.Module]:
        return [torch.nn.Sequential(self.conv, self.bn)]

    def reset_head(self, num_classes: int) -> None:
        self.fc = torch.nn.Linear(self.feature_dim, num_classes)


def _set(n: int = 32, seed: int = 1) -> TensorData:
    x, y = pattern_task(n, seed=seed)
    return TensorData(x, y, ["a", "b", "c", "d"])


SET = _set()
X, Y = SET.x, SET.y
X_NAN = X.clone()
X_NAN[3, 0, 2, 2] = NAN
X_INF = X.clone()
X_INF[0, 0, 0, 0] = INF
EMPTY = SET.subset(torch.zeros(0, dtype=torch.int64))
OK = TrainConfig(steps=1, batch_size=8)


def _train(**kwargs: Any) -> Any:
    args = {"model": Tiny(), "objective": training.Standard(), "data": SET, "config": OK, "progress": False}
    args.update(kwargs)
    return training.train(args.pop("model"), args.pop("objective"), args.pop("data"), **args)


def _mutated_set() -> TensorData:
    d = _set()
    d.x[0, 0, 0, 0] = NAN  # changed in place after it was checked
    return d


Row = tuple[str, Callable[[], Any], type[Exception], str]

TRAINING: list[Row] = [
    # TrainConfig
    ("TrainConfig epochs and steps", lambda: TrainConfig(epochs=1, steps=1), ValueError, "exactly one of epochs"),
    ("TrainConfig steps float", lambda: TrainConfig(steps=1.5), TypeError, "^steps must be an int"),
    ("TrainConfig steps 0", lambda: TrainConfig(steps=0), ValueError, "^steps must be >= 1"),
    ("TrainConfig epochs bool", lambda: TrainConfig(epochs=True), TypeError, "^epochs must be an int"),
    ("TrainConfig checkpoint_every 0", lambda: TrainConfig(steps=1, checkpoint_every=0), ValueError,
     "^checkpoint_every must be >= 1"),
    ("TrainConfig batch_size -1", lambda: TrainConfig(steps=1, batch_size=-1), ValueError, "^batch_size must be >= 1"),
    ("TrainConfig batch_size str", lambda: TrainConfig(steps=1, batch_size="8"), TypeError, "^batch_size"),
    ("TrainConfig lr inf", lambda: TrainConfig(steps=1, lr=INF), ValueError, "^lr must be finite"),
    ("TrainConfig lr nan", lambda: TrainConfig(steps=1, lr=NAN), ValueError, "^lr must be finite"),
    ("TrainConfig lr 0", lambda: TrainConfig(steps=1, lr=0.0), ValueError, "^lr must be > 0"),
    ("TrainConfig lr str", lambda: TrainConfig(steps=1, lr="0.1"), TypeError, "^lr must be a number"),
    ("TrainConfig momentum nan", lambda: TrainConfig(steps=1, momentum=NAN), ValueError, "^momentum must be finite"),
    ("TrainConfig momentum 1", lambda: TrainConfig(steps=1, momentum=1.0), ValueError, r"^momentum must be in \[0, 1\)"),
    ("TrainConfig momentum -0.1", lambda: TrainConfig(steps=1, momentum=-0.1), ValueError, "^momentum"),
    ("TrainConfig nesterov 1", lambda: TrainConfig(steps=1, nesterov=1), TypeError, "^nesterov must be True or False"),
    ("TrainConfig nesterov no momentum", lambda: TrainConfig(steps=1, nesterov=True, momentum=0.0), ValueError,
     "nesterov=True needs momentum"),
    ("TrainConfig weight_decay inf", lambda: TrainConfig(steps=1, weight_decay=INF), ValueError,
     "^weight_decay must be finite"),
    ("TrainConfig weight_decay -1", lambda: TrainConfig(steps=1, weight_decay=-1.0), ValueError, "^weight_decay"),
    ("TrainConfig optimizer", lambda: TrainConfig(steps=1, optimizer="lbfgs"), ValueError, "^optimizer must be one of"),
    ("TrainConfig schedule", lambda: TrainConfig(steps=1, schedule="linear"), ValueError, "^schedule must be one of"),
    ("TrainConfig milestones nan", lambda: TrainConfig(steps=1, milestones=(NAN,)), ValueError,
     r"^milestones\[0\] must be finite"),
    ("TrainConfig milestones 1", lambda: TrainConfig(steps=1, milestones=(0.5, 1.0)), ValueError, r"^milestones\[1\]"),
    ("TrainConfig milestones float", lambda: TrainConfig(steps=1, milestones=0.5), TypeError,
     "^milestones must be a list or tuple"),
    ("TrainConfig gamma inf", lambda: TrainConfig(steps=1, gamma=INF), ValueError, "^gamma must be finite"),
    ("TrainConfig gamma 0", lambda: TrainConfig(steps=1, gamma=0.0), ValueError, "^gamma must be > 0"),
    ("TrainConfig warmup_steps -1", lambda: TrainConfig(steps=1, warmup_steps=-1), ValueError, "^warmup_steps"),
    ("TrainConfig warmup_steps float", lambda: TrainConfig(steps=1, warmup_steps=0.5), TypeError, "^warmup_steps"),
    ("TrainConfig seed -1", lambda: TrainConfig(steps=1, seed=-1), ValueError, "^seed must be >= 0"),
    ("TrainConfig seed float", lambda: TrainConfig(steps=1, seed=0.0), TypeError, "^seed must be an int"),
    ("TrainConfig select", lambda: TrainConfig(steps=1, select="best"), ValueError, "^select must be one of"),
    # FinetuneConfig
    ("FinetuneConfig mode", lambda: FinetuneConfig(mode="partial"), ValueError, "^mode must be one of"),
    ("FinetuneConfig freeze_stages float", lambda: FinetuneConfig(mode="freeze", freeze_stages=1.5), TypeError,
     "^freeze_stages must be an int"),
    ("FinetuneConfig freeze_stages without mode", lambda: FinetuneConfig(freeze_stages=2), ValueError,
     "^freeze_stages=2 needs mode='freeze'"),
    ("FinetuneConfig head_lr nan", lambda: FinetuneConfig(head_lr=NAN), ValueError, "^head_lr must be finite"),
    ("FinetuneConfig backbone_lr inf", lambda: FinetuneConfig(backbone_lr=INF), ValueError,
     "^backbone_lr must be finite"),
    ("FinetuneConfig backbone_lr 0", lambda: FinetuneConfig(backbone_lr=0.0), ValueError, "^backbone_lr must be > 0"),
    ("FinetuneConfig head_lr str", lambda: FinetuneConfig(head_lr="0.1"), TypeError, "^head_lr must be a number"),
    ("FinetuneConfig num_classes 0", lambda: FinetuneConfig(num_classes=0), ValueError, "^num_classes must be >= 1"),
    ("FinetuneConfig num_classes float", lambda: FinetuneConfig(num_classes=2.0), TypeError, "^num_classes"),
    # prepare_finetune
    ("prepare_finetune config dict", lambda: training.prepare_finetune(Tiny(), {"mode": "full"}), TypeError,
     "^config must be a FinetuneConfig"),
    ("prepare_finetune no fc", lambda: training.prepare_finetune(torch.nn.Linear(2, 2), FinetuneConfig()),
     TypeError, "linear head `fc`"),
    ("prepare_finetune too many stages",
     lambda: training.prepare_finetune(Tiny(), FinetuneConfig(mode="freeze", freeze_stages=3)), ValueError,
     "^freeze_stages=3 but the model has 1 stages"),
    # objectives: the same mistake, the same exception as the attacks' (pgd(steps=1.5) is a TypeError)
    ("PGDAdversarial steps float", lambda: training.PGDAdversarial(steps=1.5), TypeError, "^steps must be an int"),
    ("PGDAdversarial steps 0", lambda: training.PGDAdversarial(steps=0), ValueError, "^steps must be >= 1"),
    ("PGDAdversarial eps nan", lambda: training.PGDAdversarial(eps=NAN), ValueError, "^eps must be finite"),
    ("PGDAdversarial eps inf", lambda: training.PGDAdversarial(eps=INF), ValueError, "^eps must be finite"),
    ("PGDAdversarial eps -1", lambda: training.PGDAdversarial(eps=-1.0), ValueError, "^eps must be >= 0"),
    ("PGDAdversarial eps str", lambda: training.PGDAdversarial(eps="8/255"), TypeError, "^eps must be a number"),
    ("PGDAdversarial alpha nan", lambda: training.PGDAdversarial(alpha=NAN), ValueError, "^alpha must be finite"),
    ("PGDAdversarial norm", lambda: training.PGDAdversarial(norm="l1"), ValueError, "^norm must be one of"),
    ("FastFGSM eps inf", lambda: training.FastFGSM(eps=INF), ValueError, "^eps must be finite"),
    ("FastFGSM alpha -1", lambda: training.FastFGSM(alpha=-1.0), ValueError, "^alpha must be >= 0"),
    ("FastFGSM eps bool", lambda: training.FastFGSM(eps=True), TypeError, "^eps must be a number"),
    ("TRADES beta nan", lambda: training.TRADES(beta=NAN), ValueError, "^beta must be finite"),
    ("TRADES beta -1", lambda: training.TRADES(beta=-1.0), ValueError, "^beta must be >= 0"),
    ("TRADES steps str", lambda: training.TRADES(steps="3"), TypeError, "^steps must be an int"),
    ("DM beta inf", lambda: training.DM(beta=INF), ValueError, "^beta must be finite"),
    ("DM eps nan", lambda: training.DM(eps=NAN), ValueError, "^eps must be finite"),
    ("make_objective name", lambda: training.make_objective("madry"), ValueError, "^objective must be one of"),
    ("make_objective name type", lambda: training.make_objective(3), TypeError, "^objective must be a str"),
    ("make_objective unknown", lambda: training.make_objective("pgd", gamma=1), ValueError, r"unknown \['gamma'\]"),
    ("make_objective nan", lambda: training.make_objective("trades", beta=NAN), ValueError, "^beta must be finite"),
    # train()
    ("train model", lambda: _train(model="resnet8"), TypeError, "^model must be a torch.nn.Module"),
    ("train objective", lambda: _train(objective="pgd"), TypeError, "^objective must be"),
    ("train config", lambda: _train(config={"steps": 1}), TypeError, "^config must be a TrainConfig"),
    ("train data type", lambda: _train(data=X), TypeError, "^data must be a nonrobust_ext.data.TensorData"),
    ("train data empty", lambda: _train(data=EMPTY), ValueError, "^data holds no samples"),
    ("train data empty pair", lambda: _train(data=(X[:0], Y[:0])), ValueError, "^data holds no samples"),
    ("train data nan pair", lambda: _train(data=(X_NAN, Y)), ValueError, "^data x holds 1 NaN value"),
    ("train data inf pair", lambda: _train(data=(X_INF, Y)), ValueError, "^data x holds 1 infinite value"),
    ("train data nan set", lambda: _train(data=_mutated_set()), ValueError, r"^data\.x holds 1 NaN value"),
    ("train data float labels", lambda: _train(data=(X, Y.float())), TypeError, "^data y must be an integer"),
    ("train data negative labels", lambda: _train(data=(X, Y - 1)), ValueError, "^data y must hold class labels"),
    ("train data lengths", lambda: _train(data=(X, Y[:-1])), ValueError, "^data y has 31 labels for 32 inputs"),
    ("train data uint8", lambda: _train(data=((X * 255).to(torch.uint8), Y)), TypeError, "^data x must be a floating"),
    ("train val_data nan", lambda: _train(val_data=(X_NAN, Y)), ValueError, "^val_data x holds 1 NaN"),
    ("train val_data empty", lambda: _train(val_data=EMPTY), ValueError, "^val_data holds no samples"),
    ("train val_attack type", lambda: _train(val_data=SET, val_attack=0.1), TypeError, "^val_attack must be a dict"),
    ("train val_attack eps nan", lambda: _train(val_data=SET, val_attack={"eps": NAN}), ValueError,
     r"^val_attack\['eps'\] must be finite"),
    ("train select needs val_data", lambda: _train(config=TrainConfig(steps=1, select="val_accuracy")), ValueError,
     "select='val_accuracy' needs val_data"),
    ("train resume int", lambda: _train(resume=1), TypeError, "^resume must be True or False"),
    ("train progress str", lambda: _train(progress="no"), TypeError, "^progress must be True or False"),
    ("train out_dir int", lambda: _train(out_dir=3), TypeError, "^out_dir must be a str"),
    ("train device bogus", lambda: _train(device="bogus"), ValueError, "^device must name a device"),
    ("train device int", lambda: _train(device=0.5), TypeError, "^device must be a torch.device or a device name"),
    ("train frozen model", lambda: _train(model=Tiny().requires_grad_(False)), ValueError,
     "no parameters that require grad"),
    # evaluate()
    ("evaluate empty", lambda: training.evaluate(Tiny(), EMPTY), ValueError, "^data holds no samples"),
    ("evaluate nan", lambda: training.evaluate(Tiny(), (X_NAN, Y)), ValueError, "^data x holds 1 NaN"),
    ("evaluate batch_size -1", lambda: training.evaluate(Tiny(), SET, batch_size=-1), ValueError,
     "^batch_size must be >= 1"),
    ("evaluate batch_size float", lambda: training.evaluate(Tiny(), SET, batch_size=2.5), TypeError, "^batch_size"),
    ("evaluate attack eps inf", lambda: training.evaluate(Tiny(), SET, attack={"eps": INF}), ValueError,
     r"^attack\['eps'\] must be finite"),
    ("evaluate attack type", lambda: training.evaluate(Tiny(), SET, attack="pgd"), TypeError,
     "^attack must be a dict"),
    ("evaluate model", lambda: training.evaluate("model", SET), TypeError, "^model must be a torch.nn.Module"),
    # learning_rate_factor
    ("learning_rate_factor step -1", lambda: training.learning_rate_factor(OK, -1, 10), ValueError,
     "^step must be >= 0"),
    ("learning_rate_factor total 0", lambda: training.learning_rate_factor(OK, 0, 0), ValueError,
     "^total must be >= 1"),
    ("learning_rate_factor config", lambda: training.learning_rate_factor({}, 0, 1), TypeError, "^config must be"),
]


def _weights_file(tmp: Path) -> Path:
    return models.save_weights(models.create("resnet8", num_classes=4, in_channels=1), tmp / "w.pt")


MODELS: list[Row] = [
    ("create name type", lambda: models.create(18, num_classes=10), TypeError, "^name must be a str"),
    ("create name unknown", lambda: models.create("resnet9000", num_classes=10), ValueError, "unknown model name"),
    ("create num_classes 0", lambda: models.create("resnet8", num_classes=0), ValueError,
     "^num_classes must be >= 1"),
    ("create num_classes float", lambda: models.create("resnet8", num_classes=10.0), TypeError, "^num_classes"),
    ("create num_classes nan", lambda: models.create("resnet8", num_classes=NAN), TypeError, "^num_classes"),
    ("create in_channels bool", lambda: models.create("resnet8", num_classes=2, in_channels=True), TypeError,
     "^in_channels"),
    ("create input_size 0", lambda: models.create("resnet8", num_classes=2, input_size=0), ValueError,
     "^input_size must be >= 1"),
    ("create input_size float", lambda: models.create("resnet8", num_classes=2, input_size=32.0), TypeError,
     "^input_size"),
    ("create mean nan", lambda: models.create("resnet8", num_classes=2, mean=[NAN, 0, 0]), ValueError,
     "^mean must be finite"),
    ("create std inf", lambda: models.create("resnet8", num_classes=2, std=INF), ValueError, "^std must be finite"),
    ("create std 0", lambda: models.create("resnet8", num_classes=2, std=[0.0, 1, 1]), ValueError,
     "^std must be > 0"),
    ("create mean str", lambda: models.create("resnet8", num_classes=2, mean="0.5"), TypeError, "^mean must be"),
    ("create dropout nan", lambda: models.create("wrn16_4", num_classes=2, dropout=NAN), ValueError,
     "^dropout must be finite"),
    ("create dropout 1", lambda: models.create("wrn16_4", num_classes=2, dropout=1.0), ValueError, "^dropout"),
    ("create dropout str", lambda: models.create("wrn16_4", num_classes=2, dropout="0.1"), TypeError, "^dropout"),
    ("create zero_init_residual", lambda: models.create("resnet8", num_classes=2, zero_init_residual="yes"),
     TypeError, "^zero_init_residual must be True or False"),
    ("create unknown option", lambda: models.create("resnet8", num_classes=2, dropout=0.1), ValueError,
     "does not take 'dropout'"),
    ("ResNet layers", lambda: models.ResNet(models.BasicBlock, (2, 0), num_classes=2, widths=(8, 16)), ValueError,
     r"^layers\[1\] must be >= 1"),
    ("ResNet layers float", lambda: models.ResNet(models.BasicBlock, (2.0,), num_classes=2, widths=(8,)), TypeError,
     r"^layers\[0\] must be an int"),
    ("ResNet widths length", lambda: models.ResNet(models.BasicBlock, (1, 1), num_classes=2, widths=(8,)), ValueError,
     "^layers and widths must be equally long"),
    ("ResNet stem", lambda: models.ResNet(models.BasicBlock, (1,), num_classes=2, widths=(8,), stem="tiny"),
     ValueError, "^stem must be one of"),
    ("WideResNet depth", lambda: models.WideResNet(15, 2, num_classes=2), ValueError, "^depth must be 6n \\+ 4"),
    ("WideResNet widen_factor", lambda: models.WideResNet(16, 2.5, num_classes=2), TypeError, "^widen_factor"),
    ("Normalize empty", lambda: models.Normalize([], [1.0]), ValueError, "^mean must hold at least one value"),
    ("Normalize std nan", lambda: models.Normalize(None, [NAN]), ValueError, "^std must be finite"),
    ("reset_head 0", lambda: models.create("resnet8", num_classes=2).reset_head(0), ValueError,
     "^num_classes must be >= 1"),
    ("reset_head float", lambda: models.create("resnet8", num_classes=2).reset_head(2.0), TypeError, "^num_classes"),
    ("canonical_name", lambda: models.canonical_name(None), TypeError, "^name must be a str"),
    ("load_weights model", lambda: models.load_weights("resnet8", {}), TypeError, "^model must be an nn.Module"),
    ("load_weights source type", lambda: models.load_weights(Tiny(), 3), TypeError, "^path_or_state_dict"),
    ("load_weights format", lambda: models.load_weights(Tiny(), Tiny().state_dict(), format="timm"), ValueError,
     "^format must be one of"),
    ("load_weights strict", lambda: models.load_weights(Tiny(), Tiny().state_dict(), strict="no"), TypeError,
     "^strict must be True or False"),
    ("load_weights exclude_head", lambda: models.load_weights(Tiny(), Tiny().state_dict(), exclude_head=1),
     TypeError, "^exclude_head must be True or False"),
    ("load_weights nan", lambda: models.load_weights(Tiny(), {**Tiny().state_dict(), "fc.bias": torch.full((4,), NAN)}),
     ValueError, r"fc\.bias holds 4 NaN values"),
    ("load_weights empty", lambda: models.load_weights(Tiny(), {}), ValueError, "no state dict found"),
    ("save_weights model", lambda: models.save_weights("model", "w.pt"), TypeError, "^model must be an nn.Module"),
    ("save_weights path", lambda: models.save_weights(Tiny(), 3), TypeError, "^path must be a str"),
]


DATA: list[Row] = [
    # TensorData
    ("TensorData x nan", lambda: TensorData(X_NAN, Y, ["a", "b", "c", "d"]), ValueError,
     r"^TensorData\.x holds 1 NaN value"),
    ("TensorData x inf", lambda: TensorData(X_INF, Y, ["a", "b", "c", "d"]), ValueError,
     r"^TensorData\.x holds 1 infinite value"),
    ("TensorData x list", lambda: TensorData([[0.5]], Y, ["a"]), TypeError, r"^TensorData\.x must be a tensor"),
    ("TensorData x uint8", lambda: TensorData(X.to(torch.uint8), Y, list("abcd")), TypeError, r"^TensorData\.x"),
    ("TensorData y float", lambda: TensorData(X, Y.float(), list("abcd")), TypeError, r"^TensorData\.y must be an int64"),
    ("TensorData y range", lambda: TensorData(X, Y, ["a"]), ValueError, r"^TensorData\.y must hold labels in 0\.\.0"),
    ("TensorData classes str", lambda: TensorData(X, Y, "abcd"), TypeError, r"^TensorData\.classes"),
    ("TensorData subset float", lambda: SET.subset(torch.tensor([0.5])), TypeError, "^index must be an integer"),
    # synthetic
    ("synthetic n 0", lambda: data.synthetic(0), ValueError, "^n must be >= 1"),
    ("synthetic n float", lambda: data.synthetic(10.0), TypeError, "^n must be an int"),
    ("synthetic num_classes 1", lambda: data.synthetic(10, num_classes=1), ValueError, "^num_classes must be >= 2"),
    ("synthetic noise nan", lambda: data.synthetic(10, noise=NAN), ValueError, "^noise must be finite"),
    ("synthetic noise inf", lambda: data.synthetic(10, noise=INF), ValueError, "^noise must be finite"),
    ("synthetic noise -1", lambda: data.synthetic(10, noise=-1.0), ValueError, "^noise must be >= 0"),
    ("synthetic shape 2", lambda: data.synthetic(10, shape=(28, 28)), ValueError, r"^shape must be \(C, H, W\)"),
    ("synthetic shape 0", lambda: data.synthetic(10, shape=(1, 0, 28)), ValueError, r"^shape\[1\] must be >= 1"),
    ("synthetic shape str", lambda: data.synthetic(10, shape="1x28x28"), TypeError, "^shape must be a list or tuple"),
    ("synthetic seed float", lambda: data.synthetic(10, seed=1.0), TypeError, "^seed must be an int"),
    ("synthetic seed huge", lambda: data.synthetic(10, seed=2**70), ValueError, "^seed must be <="),
    # load
    ("load name type", lambda: data.load(3), TypeError, "^name must be a str"),
    ("load name unknown", lambda: data.load("imagenet"), ValueError, "^name must be one of"),
    ("load train str", lambda: data.load("synthetic", train="yes"), TypeError, "^train must be True or False"),
    ("load root type", lambda: data.load("synthetic", root=3), TypeError, "^root must be a str"),
    ("load synthetic n 0", lambda: data.load("synthetic", n=0), ValueError, "^n must be >= 1"),
    ("load synthetic noise nan", lambda: data.load("synthetic", n=8, noise=NAN), ValueError, "^noise must be finite"),
    ("load synthetic seed", lambda: data.load("synthetic", n=8, seed="0"), TypeError, "^seed must be an int"),
    ("load kwargs", lambda: data.load("cifar10", size=3), TypeError, "takes no extra keyword"),
    # batches, epoch_order, num_batches
    ("batches d", lambda: data.batches((X, Y), 4, shuffle=True), TypeError, "^d must be TensorData"),
    ("batches batch_size 0", lambda: data.batches(SET, 0, shuffle=True), ValueError, "^batch_size must be >= 1"),
    ("batches batch_size float", lambda: data.batches(SET, 4.0, shuffle=True), TypeError, "^batch_size must be an int"),
    ("batches shuffle", lambda: data.batches(SET, 4, shuffle="yes"), TypeError, "^shuffle must be True or False"),
    ("batches seed", lambda: data.batches(SET, 4, shuffle=True, seed=0.5), TypeError, "^seed must be an int"),
    ("batches epoch", lambda: data.batches(SET, 4, shuffle=True, epoch=-1), ValueError, "^epoch must be >= 0"),
    ("batches rank", lambda: data.batches(SET, 4, shuffle=True, rank=2, world_size=2), ValueError,
     "^rank must be < world_size"),
    ("batches world_size", lambda: data.batches(SET, 4, shuffle=True, world_size=0), ValueError,
     "^world_size must be >= 1"),
    ("batches drop_last", lambda: data.batches(SET, 4, shuffle=True, drop_last=None), TypeError,
     "^drop_last must be True or False"),
    ("epoch_order n", lambda: data.epoch_order(-1, shuffle=True), ValueError, "^n must be >= 0"),
    ("num_batches batch_size", lambda: data.num_batches(10, 0), ValueError, "^batch_size must be >= 1"),
    ("num_batches n", lambda: data.num_batches(10.5, 2), TypeError, "^n must be an int"),
    # splits
    ("split train type", lambda: data.source_target_split((X, Y), SET, source_classes=[0], target_classes=[1]),
     TypeError, "^train and test must be TensorData"),
    ("split classes str", lambda: data.source_target_split(SET, SET, source_classes="01", target_classes=[2]),
     TypeError, "^source_classes must be a sequence"),
    ("split classes float", lambda: data.source_target_split(SET, SET, source_classes=[0.0], target_classes=[2]),
     TypeError, r"^source_classes\[0\] must be an int"),
    ("split classes negative", lambda: data.source_target_split(SET, SET, source_classes=[-1], target_classes=[2]),
     ValueError, r"^source_classes"),
    ("split target empty", lambda: data.source_target_split(SET, SET, source_classes=[0], target_classes=[]),
     ValueError, "^target_classes must not be empty"),
    ("split shots float", lambda: data.source_target_split(SET, SET, source_classes=[0], target_classes=[1],
                                                           shots_per_class=2.5), TypeError, "^shots_per_class"),
    ("split shots 0", lambda: data.source_target_split(SET, SET, source_classes=[0], target_classes=[1],
                                                       shots_per_class=0), ValueError, "^shots_per_class must be >= 1"),
    ("split val negative", lambda: data.source_target_split(SET, SET, source_classes=[0], target_classes=[1],
                                                            val_per_class=-1), ValueError, "^val_per_class must be >= 0"),
    ("split val pair", lambda: data.source_target_split(SET, SET, source_classes=[0], target_classes=[1],
                                                        val_per_class=(1, 2, 3)), ValueError, "^val_per_class as a pair"),
    ("split seed", lambda: data.source_target_split(SET, SET, source_classes=[0], target_classes=[1], seed=None),
     TypeError, "^seed must be an int"),
    ("few_shot shots", lambda: data.few_shot(SET, 0), ValueError, "^shots_per_class must be >= 1"),
    ("few_shot seed", lambda: data.few_shot(SET, 1, seed=1.5), TypeError, "^seed must be an int"),
    ("few_shot d", lambda: data.few_shot((X, Y), 1), TypeError, "^d must be TensorData"),
    # loaders
    ("image_folder root", lambda: data.image_folder(3), TypeError, "^root must be a str"),
    ("image_folder channels", lambda: data.image_folder(".", channels=2), ValueError, "^channels must be 1"),
    ("image_folder channels float", lambda: data.image_folder(".", channels=3.0), TypeError, "^channels"),
    ("image_folder size 0", lambda: data.image_folder(".", size=0), ValueError, "^size must be >= 1"),
    ("image_folder size triple", lambda: data.image_folder(".", size=(1, 2, 3)), ValueError, "^size as a sequence"),
    ("image_folder size str", lambda: data.image_folder(".", size="32"), TypeError, "^size must be an int"),
    ("fashion_mnist root", lambda: data.fashion_mnist(3), TypeError, "^root must be a str"),
    ("fashion_mnist train", lambda: data.fashion_mnist(None, train="test"), TypeError, "^train must be True or False"),
    ("cifar name", lambda: data.cifar(None, name=10), TypeError, "^name must be a str"),
    ("cifar name value", lambda: data.cifar(None, name="cifar5"), ValueError, "^name must be 'cifar10'"),
    ("cifar train", lambda: data.cifar(None, train=0), TypeError, "^train must be True or False"),
    ("read_idx path", lambda: data.read_idx(3), TypeError, "path must be a str"),
]


@pytest.mark.parametrize("call, error, match", [pytest.param(c, e, m, id=i) for i, c, e, m in TRAINING])
def test_training_refuses_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("call, error, match", [pytest.param(c, e, m, id=i) for i, c, e, m in MODELS])
def test_models_refuse_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("call, error, match", [pytest.param(c, e, m, id=i) for i, c, e, m in DATA])
def test_data_refuses_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_files_refuse_bad_input(tmp_path):
    """Rows that need files: an out_dir that is a file, empty and corrupt data files."""
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(ValueError, match="out_dir .*file.* is a file, not a folder"):
        _train(out_dir=tmp_path / "file")
    path = _weights_file(tmp_path)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (tmp_path / "bad.pt").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"bad\.pt.*corrupt"):
        models.load_weights(models.create("resnet8", num_classes=4, in_channels=1), tmp_path / "bad.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.pt.*corrupt or not a checkpoint"):
        models.load_weights(Tiny(), tmp_path / "empty.pt")


def test_fashion_mnist_files_without_images_are_refused(tmp_path):
    """An IDX pair holding no images is a set no accuracy can be computed over: refused when read."""
    import struct

    (tmp_path / "train-images-idx3-ubyte").write_bytes(struct.pack(">BBBBIII", 0, 0, 8, 3, 0, 28, 28))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(struct.pack(">BBBBI", 0, 0, 8, 1, 0))
    with pytest.raises(ValueError, match="train-images-idx3-ubyte holds no images"):
        data.fashion_mnist(tmp_path)


# ----------------------------------------------------------------------------- faults during training


class NaNAfter(training.Standard):
    """Cross-entropy that turns NaN from its n-th call on (as a diverging run's would)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        object.__setattr__(self, "_n", n)

    def __call__(self, net, module, x, y, *, seed):
        loss, logits = super().__call__(net, module, x, y, seed=seed)
        calls = getattr(module, "_calls", 0) + 1
        module._calls = calls
        return (loss * NAN if calls >= self._n else loss), logits


def _all_finite(path: Path) -> bool:
    def finite(obj: Any) -> bool:
        if isinstance(obj, torch.Tensor):
            return not obj.is_floating_point() or bool(torch.isfinite(obj).all())
        if isinstance(obj, dict):
            return all(finite(v) for v in obj.values())
        if isinstance(obj, (list, tuple)):
            return all(finite(v) for v in obj)
        return not isinstance(obj, float) or math.isfinite(obj)

    return finite(torch.load(path, weights_only=True))


def test_a_loss_that_becomes_nan_stops_the_run_naming_the_step(tmp_path):
    config = TrainConfig(steps=6, batch_size=8, checkpoint_every=1)
    with pytest.raises(FloatingPointError, match=r"loss is nan at step 4 .*checkpoint of step 3 .*lower lr"):
        training.train(Tiny(), NaNAfter(4), SET, config=config, out_dir=tmp_path, progress=False)
    saved = torch.load(tmp_path / training_loop.CHECKPOINT, weights_only=True)
    assert saved["step"] == 3 and _all_finite(tmp_path / training_loop.CHECKPOINT)


def test_a_huge_learning_rate_never_writes_a_nan_checkpoint(tmp_path):
    """lr is finite, but the first update already overflows: the run stops at once, the checkpoint on
    disk (if any) holds only finite numbers."""
    torch.manual_seed(0)
    config = TrainConfig(steps=20, batch_size=8, lr=1e38, checkpoint_every=1, momentum=0.0, weight_decay=0.0)
    with pytest.raises(FloatingPointError, match="training diverged"):
        training.train(Tiny(), training.Standard(), SET, config=config, out_dir=tmp_path, progress=False)
    checkpoint = tmp_path / training_loop.CHECKPOINT
    assert not checkpoint.exists() or _all_finite(checkpoint)


def test_an_evaluation_never_reports_an_accuracy_over_zero_samples():
    with pytest.raises(ValueError, match="no samples"):
        training.evaluate(Tiny(), EMPTY)
    accuracy = training.evaluate(Tiny(), SET)["val_accuracy"]
    assert 0.0 <= accuracy <= 1.0
