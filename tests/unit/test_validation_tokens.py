"""Every validation token is scored by fairseq-train, and every test token by
fairseq-eval-lm, under every batching mode (fairseq's batch_by_size drops a
last batch that is not a multiple of --required-batch-size-multiple)."""

import numpy as np
import pytest
from fairseq import tasks
from fairseq.data import data_utils
from fairseq.trainer import Trainer

import fairseq_adasoft  # noqa: F401  (registers the components)
from helpers import SMALL_MODEL, training_config

# 506 valid tokens in blocks of 20: 26 blocks, not a multiple of 8 (nor of 4).
TOKENS_PER_SAMPLE = ["--tokens-per-sample", "20"]
BATCHING = {
    "batch-size, default multiple 8": ["--batch-size", "10"],
    "batch-size, multiple 4": ["--batch-size", "6", "--required-batch-size-multiple", "4"],
    "batch-size, multiple 1": ["--batch-size", "10", "--required-batch-size-multiple", "1"],
    "max-tokens, default multiple 8": ["--max-tokens", "50"],
    "max-tokens, multiple 1": ["--max-tokens", "200", "--required-batch-size-multiple", "1"],
    "stateful-bptt streams": ["--stateful-bptt", "--batch-size", "3"],
}


def trainer_for(data, *extra):
    """fairseq-train's task, model, criterion and Trainer, built in-process."""
    cfg = training_config(data, "--optimizer", "adam", "--lr", "1e-3", "--num-workers", "0",
                          *SMALL_MODEL, *TOKENS_PER_SAMPLE, *extra)
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    return task, Trainer(cfg, task, model, task.build_criterion(cfg.criterion))


def split_tokens(data, split, task):
    dataset = data_utils.load_indexed_dataset(str(data / split), task.dictionary)
    return int(np.sum(dataset.sizes))  # while ``dataset`` holds the mmap its sizes view


def scored_tokens(task, trainer, batches):
    """Tokens the criterion scored (its logged ntokens) over ``batches``."""
    model, criterion = trainer.get_model(), trainer.get_criterion()
    model.eval()
    total = 0
    for sample in batches:
        if sample:  # fairseq pads an uneven shard with empty batches
            _, _, log = task.valid_step(sample, model, criterion)
            total += log["ntokens"]
    return total


@pytest.mark.parametrize("batching", BATCHING.values(), ids=BATCHING.keys())
def test_fairseq_train_validation_scores_every_token(data_bin, batching):
    task, trainer = trainer_for(data_bin, *batching)
    task.load_dataset("valid", combine=False, epoch=1)  # as fairseq_cli.train does
    batches = trainer.get_valid_iterator("valid").next_epoch_itr(shuffle=False, set_dataset_epoch=False)
    assert scored_tokens(task, trainer, batches) == split_tokens(data_bin, "valid", task)


EVAL_LM_BATCHING = {k: BATCHING[k] for k in ("batch-size, default multiple 8", "max-tokens, default multiple 8",
                                             "stateful-bptt streams")}


@pytest.mark.parametrize("batching", EVAL_LM_BATCHING.values(), ids=EVAL_LM_BATCHING.keys())
def test_fairseq_eval_lm_scores_every_test_token(data_bin, batching):
    task, trainer = trainer_for(data_bin, *batching)
    task.load_dataset("test")
    args = trainer.cfg.dataset
    batches = task.eval_lm_dataloader(  # as fairseq_cli.eval_lm calls it
        dataset=task.dataset("test"), max_tokens=args.max_tokens or 36000, batch_size=args.batch_size,
        max_positions=trainer.get_model().max_positions(), num_workers=0)
    assert scored_tokens(task, trainer, batches) == split_tokens(data_bin, "test", task)


def test_training_batches_keep_fairseqs_multiple(data_bin):
    """Training keeps fairseq's batching (the remainder is a different random
    set of blocks each epoch): every batch a multiple of 8."""
    task, trainer = trainer_for(data_bin, "--batch-size", "10")
    sizes = [len(b) for b in trainer.get_train_iterator(epoch=1).frozen_batches]
    assert sizes and all(n % 8 == 0 for n in sizes)
