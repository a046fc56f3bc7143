"""``python -m fairseq_adasoft [--help | --markdown]``: the flags listing (``list_flags.py``)."""

import sys

from fairseq_adasoft.list_flags import main

sys.exit(main())
