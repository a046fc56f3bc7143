"""One-off: add the derived metrics lm_throughput's and large_vocab's goals hooks now write (each setup's words/s over
lstm_lm + adaptive_loss's; each variant's over_a, a_state_over_this, valid_ppl_gap_vs_a) to their converted files.
Run once, then deleted; provenance and figures unchanged."""

import json
import os

from benchmarks import large_vocab, lm_throughput
from fairseq_adasoft.provenance import validate

DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
for name, module in (("lm_throughput", lm_throughput), ("lm_throughput_avx2", lm_throughput),
                     ("large_vocab", large_vocab), ("large_vocab_side_by_side", large_vocab)):
    path = os.path.join(DIR, f"{name}.json")
    record = json.load(open(path))
    goals = module.goals(record["cases"])
    assert [(g["name"], g["value"], g["met"]) for g in goals] == [
        (g["name"], g["value"], g["met"]) for g in record["goals"]], name  # the same judgements
    assert not validate(record), name
    with open(path, "w") as f:
        json.dump(record, f, indent=2)
        f.write("\n")
