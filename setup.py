"""Packaging for gfa_keras.

TensorFlow is not a hard requirement on purpose: `tensorflow` and `tensorflow-cpu`
are two distributions of the same package, and requiring one makes pip install it
beside the other. Pick one through an extra, or bring your own.
"""
from setuptools import find_packages, setup

setup(
    name="gfa_keras",
    version="0.1.0",
    description=(
        "Layer-wise Gradient-Feature Alignment and other adversarial defenses for "
        "Keras 3, with a strict (AutoAttack-style) robustness evaluation."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["gfa_keras", "gfa_keras.*"]),
    install_requires=[
        "keras>=3.3",
        "numpy>=1.23",
        "scikit-learn>=1.2",  # ships the embedded default data set (8x8 digits)
        "cleverhans>=4.0",  # FGSM, PGD and MIM are used as they are
        "keras-tuner>=1.4",
        # Keras Tuner imports tensorboard inside every trial on TensorFlow and, without
        # it, marks each trial FAILED while search() returns normally.
        "tensorboard>=2.16",
        "matplotlib>=3.5",
    ],
    extras_require={
        "cpu": ["tensorflow-cpu>=2.16"],
        "gpu": ["tensorflow[and-cuda]>=2.16"],
        "tf": ["tensorflow>=2.16"],
        "tfds": ["tensorflow-datasets>=4.9", "importlib_resources"],
        # benchmarks/autoattack_speed.py: a PyTorch AutoAttack as the reference (the test suite skips
        # the benchmark's smoke tests without them).
        "bench": ["torch>=2.1", "torchattacks>=3.5"],
        "test": [
            "pytest>=7",
            "websocket-client>=1.6",  # drives headless Chromium in the HTML report test
            "tensorflow-datasets>=4.9",
            "importlib_resources",
            # keras-hub's own dependencies except tensorflow-text, which requires the full
            # `tensorflow` wheel beside tensorflow-cpu; the README's test command installs
            # keras-hub itself with --no-deps (its backbones need no tensorflow-text).
            "kagglehub",
            "regex",
            "rich",
            "sentencepiece",
            "tokenizers",
        ],
    },
    entry_points={"console_scripts": ["gfa-keras=gfa_keras.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Framework :: Keras",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
