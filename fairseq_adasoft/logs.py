"""Reading fairseq's ``--log-format json`` output: the console lines
(``... | train_inner | {...}``) or the raw lines of ``--log-file``."""

import json
from typing import Dict, Iterable, Iterator


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


def labelled_paths(specs: Iterable[str], flag: str, example: str) -> Dict[str, str]:
    """``LABEL=PATH`` command-line arguments as an ordered label -> path map."""
    paths = {}
    for spec in specs:
        label, sep, path = spec.partition("=")
        if not sep or not label or not path:
            raise ValueError(f"{flag} takes LABEL=PATH, got {spec!r}; e.g. {example}")
        paths[label] = path
    return paths
