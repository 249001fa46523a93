"""megatron_spirit: open training of SpiRit-LM-style speech+text language models on megatron-core."""
from setuptools import find_packages, setup

CORE = [
    "megatron-core==0.16.1",
    "torch>=2.6",
    "sentencepiece>=0.2",
    "protobuf",
    "numpy",
    "pyyaml",
    "tqdm",
    "transformers>=4.40",
    "safetensors",
    "psutil",  # megatron-core's distributed checkpoint writer needs it and does not declare it
    "matplotlib",  # statistics and loss-curve plots
    "tensorboard",
    "xxhash",  # checkpoint checksums (checkpoint.checksums): ~3x faster than zlib.crc32
]
EXTRAS = {
    "audio": ["soundfile", "soxr", "scipy", "amfm_decompy", "faiss-cpu", "joblib"],
    "gpu": ["transformer-engine[pytorch]"],
    # No "align" extra: `spirit-units align` needs only torch + transformers (core) and the audio extra. NeMo's
    # .nemo models are not supported: nemo_toolkit[asr] 3.0 pulls ~90 packages (lightning, hydra, lhotse, wandb,
    # ...) and pins packaging 24.2, and only its emissions would be used (its Viterbi is the one ours equals).
    "dev": ["pytest", "pytest-xdist", "pytest-timeout", "hypothesis", "praatio", "import-linter"],
}

setup(
    name="megatron_spirit",
    version="0.1.0",
    description="Train SpiRit-LM-style interleaved speech+text language models on megatron-core",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["megatron_spirit", "megatron_spirit.*"]),
    install_requires=CORE,
    extras_require=EXTRAS,
    entry_points={
        "console_scripts": [
            "spirit-make-tokenizer=megatron_spirit.cli.make_tokenizer:main",
            "spirit-train=megatron_spirit.cli.train:main",
            "spirit-torchrun=megatron_spirit.cli.torchrun:main",
            "spirit-data=megatron_spirit.cli.data:main",
            "spirit-units=megatron_spirit.cli.units:main",
            "spirit-convert=megatron_spirit.cli.convert:main",
            "spirit-plan=megatron_spirit.cli.plan:main",
            "spirit-eval=megatron_spirit.cli.eval:main",
        ]
    },
)
