"""Sample text from a trained qrnn_lm checkpoint, one word at a time.

    python examples/sample.py checkpoints/wikitext2_main/checkpoint_best.pt \
        --data data-bin/wikitext-2 --prefix "The meaning of" --words 40

The QRNN state travels through fairseq's incremental state, so each new word
costs one QRNN step, not a pass over the whole prefix.
"""

import argparse
import os

import torch
from fairseq import checkpoint_utils

import fairseq_adasoft  # noqa: F401  (registers qrnn_lm and its task)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a checkpoint written by fairseq-train")
    parser.add_argument("--data", required=True, help="the fairseq-preprocess --destdir the model was trained on")
    parser.add_argument("--prefix", default="", help="text to continue (words outside the vocabulary become <unk>)")
    parser.add_argument("--words", type=int, default=40, help="how many words to sample")
    parser.add_argument("--temperature", type=float, default=1.0, help="softmax temperature (> 0)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if not os.path.isfile(args.checkpoint):
        raise ValueError(f"checkpoint {args.checkpoint!r} not found: pass the path of a fairseq-train checkpoint")
    if args.temperature <= 0:
        raise ValueError(f"--temperature must be > 0, got {args.temperature}")

    torch.manual_seed(args.seed)
    models, _, task = checkpoint_utils.load_model_ensemble_and_task(
        [args.checkpoint], arg_overrides={"data": args.data}
    )
    model = models[0].eval()
    d = task.target_dictionary
    # A document starts after an end-of-line, as in training.
    prefix = [d.eos()] + [d.index(w) for w in args.prefix.split()]
    tokens = torch.tensor([prefix])  # 1 x T
    state = {}
    words = []
    with torch.no_grad():
        for _ in range(args.words):
            out = model.decoder(tokens, incremental_state=state)
            logits = model.get_normalized_probs(out, log_probs=True)[0, -1] / args.temperature  # V
            logits[d.pad()] = logits[d.bos()] = float("-inf")  # never generated in training data
            next_id = torch.multinomial(logits.softmax(-1), 1).item()
            words.append("\n" if next_id == d.eos() else d[next_id])
            tokens = torch.cat([tokens, tokens.new_tensor([[next_id]])], dim=1)
    print(" ".join([args.prefix] + words).replace(" \n ", "\n"))


if __name__ == "__main__":
    main()
