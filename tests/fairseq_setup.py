"""Build task, model and criterion in-process exactly as fairseq-train does."""

from fairseq import options, tasks
from fairseq.dataclass.utils import convert_namespace_to_omegaconf

import fairseq_adasoft  # noqa: F401  (registers the components)

from conftest import PLUGIN

SMALL_MODEL = ["--embed-dim", "16", "--hidden-size", "24", "--num-layers", "2"]


def build(data, *extra, arch="qrnn_lm", criterion="adaptive_softmax", task="language_modeling_freqsorted"):
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(
        parser,
        input_args=[str(data), "--user-dir", PLUGIN, "--task", task, "--arch", arch,
                    "--criterion", criterion, "--cpu", *map(str, extra)],
    )
    cfg = convert_namespace_to_omegaconf(args)
    task_obj = tasks.setup_task(cfg.task)
    model = task_obj.build_model(cfg.model)
    return task_obj, model, task_obj.build_criterion(cfg.criterion)
