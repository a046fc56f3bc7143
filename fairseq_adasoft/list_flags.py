"""The flags listing, ``python -m fairseq_adasoft [--markdown]`` (``__main__.py``
runs it): every flag the plugin adds to fairseq, grouped by component, with its
type, default and help, read from the components' dataclasses (``--markdown``
renders docs/flags.md).

fairseq's own ``--help`` prints before it adds the model's and the task's
flags, so it cannot show these.
"""

import dataclasses
import sys
import textwrap
from typing import List, NamedTuple, Optional

from fairseq_adasoft.flag_ranges import flag_name

USAGE = "usage: python -m fairseq_adasoft [--help | --markdown]"
REGENERATE = "python -m fairseq_adasoft --markdown > docs/flags.md"


class Flag(NamedTuple):
    name: str
    type: str
    default: str
    help: str


class Component(NamedTuple):
    title: str
    how: str  # the fairseq flag that selects it
    note: str
    flags: List[Flag]
    reads: List[str]  # fairseq flags it takes its values from


def flag_of(f: dataclasses.Field) -> Flag:
    """A dataclass field as fairseq's parser exposes it."""
    from fairseq.dataclass.utils import interpret_dc_type

    kind = interpret_dc_type(f.type)
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    name = flag_name(f.name)
    help_text = f.metadata.get("help", "")
    if kind is bool:
        # fairseq turns a bool field into store_true, or store_false when it defaults to True.
        return Flag(name, "switch", "on: passing the flag turns it off" if default else "off", help_text)
    return Flag(name, getattr(kind, "__name__", str(kind)), "unset" if default is None else str(default), help_text)


def component(title: str, how: str, config, base=None, note: str = "") -> Component:
    """The flags of ``config`` that ``base`` (the fairseq config it extends) lacks."""
    inherited = {f.name for f in dataclasses.fields(base)} if base else set()
    flags, reads = [], []
    for f in dataclasses.fields(config):
        if f.name.startswith("_") or f.name in inherited:
            continue
        if isinstance(f.default, str) and f.default.startswith("${"):  # II("group.name"): another flag's value
            reads.append(flag_name(f.default[2:-1].split(".")[-1]))
        else:
            flags.append(flag_of(f))
    return Component(title, how, note, flags, reads)


def components() -> List[Component]:
    from fairseq.criterions.cross_entropy import CrossEntropyCriterionConfig
    from fairseq.tasks.language_modeling import LanguageModelingConfig

    from fairseq_adasoft.lr_schedulers.timed_polynomial_decay import TimedPolynomialDecayConfig
    from fairseq_adasoft.models.qrnn_lm import QRNNLanguageModelConfig
    from fairseq_adasoft.presets import ARCHITECTURES
    from fairseq_adasoft.tasks.language_modeling_freqsorted import FreqSortedLanguageModelingConfig

    arches = ", ".join(["qrnn_lm", *ARCHITECTURES])
    return [
        component("model qrnn_lm", f"--arch {{{arches}}}", QRNNLanguageModelConfig),
        component("task language_modeling_freqsorted", "--task language_modeling_freqsorted",
                  FreqSortedLanguageModelingConfig, LanguageModelingConfig,
                  note="it also takes every flag of fairseq's language_modeling task"),
        component("criterion adaptive_softmax", "--criterion adaptive_softmax", CrossEntropyCriterionConfig),
        component("lr scheduler timed_polynomial_decay", "--lr-scheduler timed_polynomial_decay",
                  TimedPolynomialDecayConfig),
    ]


def presets_lines() -> List[tuple]:
    """(name, the flags it sets) of each named architecture."""
    from fairseq_adasoft.presets import ARCHITECTURES

    return [(name, " ".join(f"--{k.replace('_', '-')} {v}" for k, v in flags.items()))
            for name, flags in ARCHITECTURES.items()]


def wrap(text: str, indent: str) -> List[str]:
    return textwrap.wrap(text, 94, initial_indent=indent, subsequent_indent=" " * 6, break_on_hyphens=False)


def render_text() -> str:
    from fairseq_adasoft import __version__

    out = [f"fairseq_adasoft {__version__}: the flags this plugin adds to fairseq-train, fairseq-eval-lm",
           "and fairseq-generate when given --user-dir fairseq_adasoft (or the installed package's path).", ""]
    for c in components():
        out.append(f"{c.title} ({c.how}{'; ' + c.note if c.note else ''})")
        for f in c.flags:
            out.append(f"  {f.name} {f.type.upper()}  (default: {f.default})")
            out.extend(wrap(f.help, " " * 6))
        if not c.flags:
            out.append("  no flags of its own")
        if c.reads:
            out.append(f"  reads {', '.join(c.reads)}")
        out.append("")
    out.append("architectures (each sets these flags unless the command line gives them):")
    for name, flags in presets_lines():
        out.extend(wrap(f"{name}: {flags}", "  "))
    return "\n".join(out) + "\n"


def render_markdown() -> str:
    out = [f"_Generated from the dataclass help strings by `{REGENERATE}`; do not edit by hand._", "",
           "# Flags", "",
           "Every flag the plugin adds to fairseq (`--user-dir fairseq_adasoft`), by component. "
           "`python -m fairseq_adasoft --help` prints the same list.", ""]
    for c in components():
        out += [f"## {c.title}", "", f"Selected by `{c.how}`{'; ' + c.note if c.note else ''}.", ""]
        if c.flags:
            out += ["| flag | type | default | help |", "|---|---|---|---|"]
            out += [f"| `{f.name}` | {f.type} | {f.default} | {f.help.replace('|', '&#124;')} |" for f in c.flags]
        else:
            out.append("No flags of its own.")
        if c.reads:
            out += ["", f"Reads {', '.join(f'`{r}`' for r in c.reads)}."]
        out.append("")
    out += ["## Architectures", "", "Each named `--arch` sets these flags unless the command line gives them "
            "(`fairseq_adasoft/presets.py`):", ""]
    out += [f"- `{name}`: `{flags}`" for name, flags in presets_lines()]
    return "\n".join(out) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv in ([], ["--help"], ["-h"]):
        sys.stdout.write(render_text())
    elif argv == ["--markdown"]:
        sys.stdout.write(render_markdown())
    else:
        print(USAGE, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
