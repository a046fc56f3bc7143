"""``--lr-scheduler timed_polynomial_decay``: fairseq's polynomial decay with
training seconds in place of updates, checked against fairseq's own schedule,
across a resume, under DDP and through fairseq-train."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from fairseq.optim import FairseqOptimizer
from fairseq.optim.lr_scheduler.polynomial_decay_schedule import (
    PolynomialDecayLRSchedule,
    PolynomialDecayLRScheduleConfig,
)

from helpers import TRAIN, saved, train, train_interval_values
from fairseq_adasoft.lr_schedulers.timed_polynomial_decay import (
    TimedPolynomialDecayConfig,
    TimedPolynomialDecaySchedule,
)

PEAK, END = 0.006, 1e-4


class PlainSGD(FairseqOptimizer):
    def __init__(self):
        super().__init__(None)
        self._optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)


class Clock:
    def __init__(self, now=0.0):
        self.now = now

    def __call__(self):
        return self.now


def timed(budget_hours=1.0, warmup=0, power=1.0, clock=None, lr=(PEAK,)):
    cfg = TimedPolynomialDecayConfig(warmup_updates=warmup, end_learning_rate=END, power=power,
                                     time_budget_hours=budget_hours, lr=list(lr))
    return TimedPolynomialDecaySchedule(cfg, PlainSGD(), clock=clock or Clock())


@pytest.mark.parametrize("power", [1.0, 2.0])
def test_equals_fairseqs_polynomial_decay_at_a_steady_pace(power):
    """When every update takes the same time, the budget holds a known number of
    updates, and the timed schedule is fairseq's schedule over that many."""
    updates, seconds_per_update = 40, 90.0
    clock = Clock()
    ours = timed(budget_hours=updates * seconds_per_update / 3600, power=power, clock=clock)
    theirs = PolynomialDecayLRSchedule(
        PolynomialDecayLRScheduleConfig(warmup_updates=0, end_learning_rate=END, power=power,
                                        total_num_update=updates, lr=[PEAK]), PlainSGD())
    for n in range(updates + 5):
        clock.now = n * seconds_per_update
        assert ours.step_update(n) == pytest.approx(theirs.step_update(n), rel=1e-12, abs=1e-15), n
    assert ours.step_update(updates + 5) == END


def test_warmup_scales_the_first_updates():
    clock = Clock()
    s = timed(warmup=4, clock=clock)
    assert s.optimizer.get_lr() == 0.0  # fairseq's polynomial_decay also starts at 0
    assert [s.step_update(n) for n in range(6)] == pytest.approx([0, PEAK / 4, PEAK / 2, 3 * PEAK / 4, PEAK, PEAK])
    clock.now = 1800.0  # half the hour: half-way from PEAK to END
    assert s.step_update(2) == pytest.approx((END + (PEAK - END) / 2) / 2)


def test_a_resumed_run_continues_the_clock_from_its_checkpoint():
    clock = Clock()
    first = timed(clock=clock)
    clock.now = 2700.0  # three quarters of the budget
    state = first.state_dict()
    assert state["elapsed_s"] == 2700.0
    assert first.step_update(500) == pytest.approx(END + (PEAK - END) / 4)

    later = Clock(now=1e6)  # another process: its clock has another origin
    resumed = timed(clock=later)
    resumed.load_state_dict(state)
    assert resumed.step_update(500) == pytest.approx(END + (PEAK - END) / 4)
    later.now += 900.0
    assert resumed.step_update(600) == END and resumed.state_dict()["elapsed_s"] == 3600.0

    # polynomial_decay's checkpoint holds no clock: the resumed run counts from zero.
    fresh = timed(clock=later)
    fresh.load_state_dict({"best": 3.0})
    assert fresh.step_update(500) == pytest.approx(PEAK) and fresh.best == 3.0


@pytest.mark.parametrize("budget", [0.0, -1.0])
def test_refuses_a_run_without_a_time_budget(budget):
    with pytest.raises(ValueError, match=r"--stop-time-hours is .*set it to the hours"):
        timed(budget_hours=budget)


def test_refuses_several_learning_rates():
    with pytest.raises(ValueError, match="takes one --lr"):
        timed(lr=(0.1, 0.01))


WORLD = 2


def ddp_worker(rank, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    clock = Clock(now=1000.0 * rank)  # rank 1's clock starts elsewhere and runs 1.5x as fast
    s = timed(clock=clock)
    lrs = []
    for n, t in enumerate([0.0, 900.0, 1800.0]):
        clock.now = 1000.0 * rank + t * (1 + rank / 2)
        lrs.append(s.step_update(n))
    torch.save(lrs, os.path.join(out_dir, f"lrs{rank}.pt"))
    # Without it one rank may tear gloo down while the other still talks, and abort
    # ("terminate called without an active exception", SIGABRT; seen once in CI).
    dist.barrier()
    dist.destroy_process_group()


def test_ddp_ranks_follow_rank_0s_clock(tmp_path):
    mp.spawn(ddp_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    rank0, rank1 = (torch.load(tmp_path / f"lrs{r}.pt") for r in range(WORLD))
    assert rank1 == rank0
    assert rank0 == pytest.approx([PEAK, END + 0.75 * (PEAK - END), END + 0.5 * (PEAK - END)])


@pytest.mark.slow
def test_fairseq_train_decays_over_stop_time_hours_and_resumes_the_clock(data_bin, tmp_path):
    budget_s = 30.0
    save = tmp_path / "ckpt"
    timed_flags = ["--lr-scheduler", "timed_polynomial_decay", "--end-learning-rate", "0",
                   "--log-interval", "1", "--save-dir", save, "--no-epoch-checkpoints"]
    lr = float(TRAIN[TRAIN.index("--lr") + 1])
    # The schedule's clock starts when fairseq builds the optimizer, after the guard's
    # (which also counts loading the data): the last update's lr is the schedule's at its
    # own clock, a step or so before the checkpoint's: within 8% of the range (2.4 s of 30)
    # on a busy machine.
    step_tolerance = 0.08 * lr

    def clocks():
        state = saved(save / "checkpoint_last.pt")
        elapsed = state["optimizer_history"][-1]["lr_scheduler_state"]["elapsed_s"]
        return elapsed, state["extra_state"]["previous_training_time"]  # fairseq's own training clock

    _, out = train(data_bin, *timed_flags, "--stop-time-hours", str(budget_s / 3600))
    lrs = train_interval_values(out, "lr")
    assert lrs[0] == pytest.approx(lr, rel=0.05)  # fairseq logs each update's lr after the update
    assert all(b <= a for a, b in zip(lrs, lrs[1:]))
    elapsed, guard = clocks()
    assert guard > budget_s and budget_s / 2 < elapsed <= guard  # the guard stopped it, the schedule nearly done
    assert lrs[-1] == pytest.approx(lr * (1 - elapsed / budget_s), abs=step_tolerance)

    # Resumed with a budget half as long again: the clock goes on from the
    # checkpoint, so the learning rate carries on from there, not from the peak.
    _, out = train(data_bin, *timed_flags, "--stop-time-hours", str(1.5 * budget_s / 3600))
    resumed = train_interval_values(out, "lr")
    assert resumed[0] == pytest.approx(lr * (1 - elapsed / (1.5 * budget_s)), abs=step_tolerance)
    assert all(b <= a for a, b in zip(resumed, resumed[1:]))
    elapsed, guard = clocks()
    assert guard > 1.5 * budget_s and resumed[-1] == pytest.approx(lr * (1 - elapsed / (1.5 * budget_s)),
                                                                  abs=step_tolerance)
