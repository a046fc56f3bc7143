#!/usr/bin/env bash
# One checkpoint under five evaluation protocols, valid and test (eval.sh):
#   blocks:  fairseq's, fixed-length blocks scored independently;
#   classic: awd-lstm-lm's, contiguous streams with the hidden state carried
#            (--stateful-bptt);
#   cache:   classic plus Grave et al. 2017's continuous cache, its size,
#            theta and lambda tuned on valid first (python -m fairseq_adasoft.tune cache);
#   dynamic: classic with Krause et al. 2018's dynamic evaluation, its
#            learning rate and decay tuned on valid first (python -m
#            fairseq_adasoft.tune dynamic-eval);
#   dynamic_cache: both, each with its own tuned setting.
# A run with the cache also reports the same pass without it, so classic comes
# from the cache's runs and dynamic from dynamic_cache's: three passes per split.
#
# Hardware: any; on 2 CPU cores about 15 minutes for the main job's model, most
#           of it dynamic evaluation of test (one step per 20 tokens of one stream).
# Result:   $RESULTS_DIR/$NAME.json (default: benchmarks/results/wikitext2_protocols.json),
#           and $SAVE_DIR/protocols_phases.txt, each phase's wall seconds (record
#           reads it). eval.sh skips evaluations already done for this checkpoint, and
#           a tuning is skipped when its $SAVE_DIR/neural_cache.json or
#           dynamic_eval.json is newer than the checkpoint.
# Knobs:    SAVE_DIR (required), NAME, RECORD=0 (record nothing: run.sh records the
#           whole run in one file), common.sh's (DATA_BIN, VENV_BIN, ...).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
probe_cuda  # once, for every train.sh and eval.sh below

SAVE_DIR=${SAVE_DIR:?set SAVE_DIR to the training save dir (it must hold checkpoint_best.pt)}
NAME=${NAME:-wikitext2_protocols}
export SAVE_DIR

for TUNER in cache:neural_cache dynamic-eval:dynamic_eval; do
  if ! [ "$SAVE_DIR/${TUNER#*:}.json" -nt "$SAVE_DIR/checkpoint_best.pt" ]; then
    phase "tune_${TUNER#*:}" "$PY" -m fairseq_adasoft.tune "${TUNER%:*}" --data "$DATA_BIN" --save-dir "$SAVE_DIR"
  fi
done

for PROTOCOL in blocks cache dynamic_cache; do
  for SUBSET in valid test; do
    phase "${PROTOCOL}_$SUBSET" env PROTOCOL=$PROTOCOL SUBSET=$SUBSET bash "$HERE/eval.sh"
  done
done
printf '%s\n' "${PHASES[@]}" > "$SAVE_DIR/protocols_phases.txt"

cd "$ROOT"
[ "${RECORD:-1}" = 0 ] || "$PY" -m fairseq_adasoft.record protocols --results-dir "$RESULTS_DIR" \
  --name "$NAME" --save-dir "$SAVE_DIR" \
  --command "SAVE_DIR=$SAVE_DIR bash recipes/wikitext2/protocols.sh"
