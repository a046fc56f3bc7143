#!/usr/bin/env bash
# Find, verify and binarize WikiText-103 (Merity et al. 2016): the WikiText-2
# recipe's prepare.sh with WIKITEXT=103. Checks the published token counts
# (train 103,227,021, valid 217,646, test 245,569) and binarizes with
# fairseq-preprocess --workers WORKERS (default: every core).
#
# Hardware: any CPU with ~4 GB of memory; tens of minutes on a few cores.
# Result:   $DATA_BIN (default data-bin/wikitext-103) with a 267,744-entry dictionary.
# Knobs:    WIKITEXT103_DIR, DOWNLOAD_DIR, WIKITEXT_URL (file:// for a local
#           archive), EXPECTED_TOKENS, WORKERS; see recipes/wikitext2/prepare.sh.
set -euo pipefail
WIKITEXT=103 exec bash "$(dirname "${BASH_SOURCE[0]}")/../wikitext2/prepare.sh" "$@"
