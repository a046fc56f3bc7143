"""fairseq_adasoft: QRNN language models with an adaptive softmax, as a fairseq plugin."""

import os
import re

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def version() -> str:
    """``__version__`` of the package, read without importing it (that needs torch)."""
    with open(os.path.join(HERE, "fairseq_adasoft", "__init__.py"), encoding="utf-8") as f:
        return re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)


setup(
    name="fairseq_adasoft",
    version=version(),
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
    # matplotlib draws examples/plot_training.py's figures; the tests draw them too. triton runs
    # --qrnn-kernel triton on GPUs, and the tests run its kernels on CPU through its interpreter;
    # pytest-xdist runs the suite on every core.
    extras_require={"plot": ["matplotlib"], "gpu": ["triton"],
                    "test": ["pytest", "pytest-xdist", "matplotlib", "triton; platform_system == 'Linux'"]},
)
