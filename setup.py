"""fairseq_adasoft: QRNN language models with an adaptive softmax, as a fairseq plugin."""

import os

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))

setup(
    name="fairseq_adasoft",
    version="0.1.0",
    description="QRNN language models with an adaptive softmax for fairseq",
    long_description=open(os.path.join(HERE, "README.md"), encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["fairseq_adasoft", "fairseq_adasoft.*"]),
    python_requires=">=3.8",
    install_requires=[
        "torch>=1.13",
        # Released fairseq 0.12.2 does not import on Python >= 3.11 (a dataclass
        # "mutable default" error); fairseq-fixed ships the same `fairseq` module.
        "fairseq==0.12.2; python_version < '3.11'",
        "fairseq-fixed==0.12.3.1; python_version >= '3.11'",
        "sentencepiece",
        "tensorboard",
    ],
    # matplotlib draws examples/plot_training.py's figures; the tests draw them too.
    extras_require={"plot": ["matplotlib"], "test": ["pytest", "matplotlib"]},
    entry_points={"console_scripts": ["fairseq-adasoft-train = fairseq_adasoft.launch:cli_main"]},
)
