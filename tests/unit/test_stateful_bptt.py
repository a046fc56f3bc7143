"""Stateful truncated BPTT in-process: stream batching, the carried state, errors."""

import pytest
import torch

from helpers import SMALL_MODEL, build
from references import target_positions

NO_DROPOUT = ["--dropout", "0", "--dropout-input", "0", "--dropout-hidden", "0",
              "--dropout-embed", "0", "--weight-drop", "0"]
T = 16  # --tokens-per-sample


def stateful_task(data_bin, *extra):
    task, model, criterion = build(data_bin, *SMALL_MODEL, *NO_DROPOUT, "--stateful-bptt",
                                   "--tokens-per-sample", T, "--adaptive-softmax-cutoff", "20,60", *extra)
    return task, model.eval(), criterion


def shard_batches(task, split, streams_per_shard, num_shards, shard_id):
    itr = task.get_batch_iterator(task.dataset(split), max_sentences=streams_per_shard,
                                  num_shards=num_shards, shard_id=shard_id)
    return itr.dataset, list(itr.next_epoch_itr(shuffle=True))  # shuffle must be ignored


@pytest.mark.parametrize("num_shards,streams_per_shard", [(1, 3), (2, 2), (3, 5)])
def test_every_token_is_a_target_exactly_once_across_processes(data_bin, num_shards, streams_per_shard):
    task, _, _ = stateful_task(data_bin)
    task.load_dataset("valid")
    tokens = task.dataset("valid").tokens.long()  # N
    eos, pad = task.dictionary.eos(), task.dictionary.pad()
    seen = torch.zeros(len(tokens), dtype=torch.long)
    lengths = set()
    for shard in range(num_shards):
        batches, samples = shard_batches(task, "valid", streams_per_shard, num_shards, shard)
        lengths.add(len(samples))
        for k, sample in enumerate(samples):
            assert sample["net_input"]["stream"]["batch"] == k  # in order
            pos = target_positions(batches, k)  # B x T, -1 at padding
            real = pos.ge(0)
            assert sample["ntokens"] == int(real.sum())
            assert torch.equal(sample["target"][real], tokens[pos[real]])
            assert sample["target"][~real].eq(pad).all()
            # The input of position p is token p-1 (eos before the first token).
            previous = torch.where(pos[real] > 0, tokens[(pos[real] - 1).clamp(min=0)], torch.tensor(eos))
            assert torch.equal(sample["net_input"]["src_tokens"][real], previous)
            seen.index_add_(0, pos[real], torch.ones_like(pos[real]))
    assert seen.eq(1).all()
    assert len(lengths) == 1  # DDP needs the same number of batches on every rank


def test_carried_state_equals_one_forward_over_each_whole_stream(data_bin):
    task, model, _ = stateful_task(data_bin)
    task.load_dataset("valid")
    batches, samples = shard_batches(task, "valid", 3, 1, 0)
    with torch.no_grad():
        chunked = torch.cat([model(**s["net_input"])[0] for s in samples], dim=1)  # B x L x C
        whole = model(batches.inputs.long())[0]  # B x L x C: each stream in one forward
        without_state = torch.cat([model(s["net_input"]["src_tokens"])[0] for s in samples], dim=1)
    real = batches.targets.ne(task.dictionary.pad())
    torch.testing.assert_close(chunked[real], whole[real], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(without_state[real], whole[real], atol=1e-3)  # the state matters


def test_carried_state_is_saved_and_restored_with_the_weights(data_bin):
    task, model, _ = stateful_task(data_bin)
    task.load_dataset("valid")
    _, samples = shard_batches(task, "valid", 3, 1, 0)
    with torch.no_grad():
        model(**samples[0]["net_input"])
    state = model.state_dict()
    assert state["decoder.carried.valid.c0"].shape == (3, 24)
    assert state["decoder.carried.valid.x0"].shape == (3, 16)  # window 2: the last input
    _, fresh, _ = stateful_task(data_bin)
    fresh.load_state_dict(state)  # strict, as fairseq loads checkpoints
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(**samples[1]["net_input"])[0], model(**samples[1]["net_input"])[0])
    # Another number of streams cannot continue this state.
    other = dict(samples[1]["net_input"], stream=dict(samples[1]["net_input"]["stream"], num_streams=4))
    with pytest.raises(ValueError, match="same|--batch-size x processes.*--reset-dataloader"):
        fresh(**other)


def test_ddp_ranks_share_their_rows_for_the_checkpoint(data_bin, monkeypatch):
    """Rank 0 saves the checkpoint: the all-reduce the task hands the model gives it every rank's rows."""
    from fairseq.distributed import utils as distributed_utils

    task, model, criterion = stateful_task(data_bin)
    task.load_dataset("valid")
    _, rank0 = shard_batches(task, "valid", 2, 2, 0)
    _, rank1 = shard_batches(task, "valid", 2, 2, 1)
    _, other, _ = stateful_task(data_bin)
    other.load_state_dict(model.state_dict())
    with torch.no_grad():
        other(**rank1[0]["net_input"])  # "rank 1" computes rows 2-3
    rank1_rows = [t.clone() for t in other.carried_stream_state("valid")]

    def fake_all_reduce(tensor, group, op="sum"):  # the sum over ranks 0 and 1
        return tensor + torch.cat([t.float().flatten() for t in rank1_rows])

    monkeypatch.setattr(distributed_utils, "get_data_parallel_world_size", lambda: 2)
    monkeypatch.setattr(distributed_utils, "get_data_parallel_group", lambda: None)
    monkeypatch.setattr(distributed_utils, "all_reduce", fake_all_reduce)
    with torch.no_grad():
        model(**rank0[0]["net_input"])
    mine = [t.clone() for t in model.carried_stream_state("valid")]
    task._share_stream_state(model, rank0[0]["net_input"]["stream"])
    for shared, own, theirs in zip(model.carried_stream_state("valid"), mine, rank1_rows):
        assert torch.equal(shared[:2], own[:2]) and torch.equal(shared[2:], theirs[2:])
        assert shared[2:].abs().sum() > 0


def test_batch_zero_starts_the_streams_afresh(data_bin):
    task, model, _ = stateful_task(data_bin)
    task.load_dataset("valid")
    _, samples = shard_batches(task, "valid", 3, 1, 0)
    with torch.no_grad():
        first = model(**samples[0]["net_input"])[0]
        model(**samples[1]["net_input"])
        again = model(**samples[0]["net_input"])[0]  # a new epoch or validation pass
    torch.testing.assert_close(first, again, rtol=0, atol=0)


def test_model_that_cannot_carry_state_is_refused(data_bin):
    with pytest.raises(ValueError, match="--stateful-bptt needs a model that carries its hidden state"):
        build(data_bin, "--stateful-bptt", "--decoder-layers", "1", arch="lstm_lm", criterion="cross_entropy")


def test_bad_stream_settings_name_the_flag(data_bin):
    task, _, _ = stateful_task(data_bin)
    task.load_dataset("valid")
    with pytest.raises(ValueError, match="set --batch-size"):
        task.get_batch_iterator(task.dataset("valid"), max_tokens=512)
    with pytest.raises(ValueError, match="lower --batch-size"):
        task.get_batch_iterator(task.dataset("valid"), max_sentences=10 ** 6)
    with pytest.raises(ValueError, match="drop one of the two"):
        task.eval_lm_dataloader(task.dataset("valid"), context_window=8)
