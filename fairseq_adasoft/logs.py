"""Reading fairseq's ``--log-format json`` output: the console lines
(``... | train_inner | {...}``) or the raw lines of ``--log-file``."""

import json
from typing import Iterable, Iterator


def json_records(lines: Iterable[str]) -> Iterator[dict]:
    """The JSON object on each line that holds one; other lines are skipped."""
    for line in lines:
        brace = line.find("{")
        if brace < 0:
            continue
        try:
            record = json.loads(line[brace:])
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            yield record
