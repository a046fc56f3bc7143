"""fairseq-eval-lm before (a, 6ccfa01) and after (b) target-aware scoring, with (c) lstm_lm + adaptive_loss and (d)
a full softmax: a one-off comparison. The benchmark that ran it lives in git (last at 663587b); its file is kept."""

SECTIONS = [dict(title="fairseq-eval-lm: target-aware scoring", command="python -m benchmarks.eval_lm (at 663587b)",
                 files=["eval_lm"], columns={k: k for k in ("corpus", "protocol", "variant")} | {
                     "words/s": "words_per_s:,.0f", "peak RSS, MB": "peak_rss_mb:,.0f", "perplexity": "perplexity",
                     "(b) / (a)": "b_over_a:.2f", "same as (a)": "same_as_a"},
                 text="(a) the plugin before target-aware scoring (6ccfa01), on (b)'s checkpoint; (b) target-aware "
                      "scoring; (c) fairseq's lstm_lm + adaptive_loss; (d) qrnn_lm, full softmax. At V = 267,744 (a) "
                      "runs with `--softmax-batch 2048` to fit in memory. Models trained briefly, so the perplexities "
                      "only show that (a) and (b) agree. How it works: [scoring.md](scoring.md).")]
