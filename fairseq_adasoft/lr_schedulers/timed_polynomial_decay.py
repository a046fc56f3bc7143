"""``timed_polynomial_decay``: fairseq's polynomial learning-rate decay, timed
by training seconds instead of updates, so that it ends exactly when
``--stop-time-hours`` stops training.

A schedule over updates has to guess how many updates fit a time budget. That
guess differs by machine (the same model trains much faster in bf16 on a CPU
with bf16 instructions than in fp32 on an AVX2 CPU), so a fixed epoch count
either leaves part of the hour unused or is cut by the guard before its
learning rate has decayed.
"""

import time
from dataclasses import dataclass, field
from typing import List

import torch
import torch.distributed as dist
from fairseq.dataclass import FairseqDataclass
from fairseq.optim.lr_scheduler import FairseqLRScheduler, register_lr_scheduler
from omegaconf import II

SECONDS_PER_HOUR = 3600.0


@dataclass
class TimedPolynomialDecayConfig(FairseqDataclass):
    warmup_updates: int = field(
        default=0, metadata={"help": "scale the learning rate up linearly over the first N updates"}
    )
    end_learning_rate: float = field(
        default=0.0, metadata={"help": "learning rate reached when --stop-time-hours runs out"}
    )
    power: float = field(default=1.0, metadata={"help": "decay exponent (1: linear in training time)"})
    time_budget_hours: float = II("optimization.stop_time_hours")
    lr: List[float] = II("optimization.lr")


def training_progress(elapsed_s: float, budget_s: float) -> float:
    """The fraction of the time budget spent, in [0, 1]."""
    return min(max(elapsed_s / budget_s, 0.0), 1.0)


@register_lr_scheduler("timed_polynomial_decay", dataclass=TimedPolynomialDecayConfig)
class TimedPolynomialDecaySchedule(FairseqLRScheduler):
    """Polynomial decay (fairseq's ``polynomial_decay``) from ``--lr`` to
    ``--end-learning-rate`` over ``--stop-time-hours`` of training time, as
    in time-budgeted training (Li, Yumer & Ramanan 2020, "Budgeted Training:
    Rethinking Deep Neural Network Training Under Resource Constraints", who
    find linear decay to the end of the budget the best of the simple
    schedules). The first ``--warmup-updates`` updates scale it linearly.

    Training time is counted as fairseq's guard counts it: from the start of
    this run, plus the time stored in the checkpoint it resumed from. Under
    DDP every rank takes rank 0's clock, so replicas keep one learning rate.
    The schedule depends on the machine's speed, so two runs match update for
    update only on equally fast machines.
    """

    def __init__(self, cfg: TimedPolynomialDecayConfig, optimizer, clock=time.monotonic):
        super().__init__(cfg, optimizer)
        if not cfg.time_budget_hours or cfg.time_budget_hours <= 0:
            raise ValueError(
                "--lr-scheduler timed_polynomial_decay decays the learning rate over the training "
                f"time budget, but --stop-time-hours is {cfg.time_budget_hours}: set it to the hours "
                "of training wanted (e.g. --stop-time-hours 0.98 for an hour's run with room for "
                "the last validation)"
            )
        if len(cfg.lr) != 1:
            raise ValueError(
                f"--lr-scheduler timed_polynomial_decay takes one --lr, got {list(cfg.lr)}: "
                "give a single peak learning rate"
            )
        self.peak_lr = cfg.lr[0]
        self.budget_s = cfg.time_budget_hours * SECONDS_PER_HOUR
        self.clock = clock
        self.started = clock()
        self.elapsed_before_s = 0.0  # training time of the runs this one resumes
        self.optimizer.set_lr(self.lr_at(0, 0.0))

    def elapsed_s(self) -> float:
        return self.elapsed_before_s + self.clock() - self.started

    def shared_elapsed_s(self) -> float:
        """Rank 0's training time on every rank (a collective under DDP)."""
        elapsed = self.elapsed_s()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
            t = torch.tensor([elapsed], dtype=torch.float64, device=device)
            dist.broadcast(t, src=0)
            elapsed = t.item()
        return elapsed

    def lr_at(self, num_updates: int, elapsed_s: float) -> float:
        remaining = 1.0 - training_progress(elapsed_s, self.budget_s)
        lr = (self.peak_lr - self.cfg.end_learning_rate) * remaining ** self.cfg.power + self.cfg.end_learning_rate
        if self.cfg.warmup_updates > 0 and num_updates < self.cfg.warmup_updates:
            lr *= num_updates / self.cfg.warmup_updates
        return lr

    def state_dict(self):
        return {**super().state_dict(), "elapsed_s": self.elapsed_s()}

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        # A checkpoint of another schedule has no clock: its run's time is unknown, so count from here.
        self.elapsed_before_s = state_dict.get("elapsed_s", 0.0)
        self.started = self.clock()

    def step_update(self, num_updates):
        self.optimizer.set_lr(self.lr_at(num_updates, self.shared_elapsed_s()))
        return self.optimizer.get_lr()
