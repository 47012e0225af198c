"""horovod_huffcomp: entropy-coded (Huffman-family) gradient compression for Horovod."""
from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
BENCH = ["torch>=2.1", "scikit-learn>=1.3", "zstandard>=0.22", "tqdm>=4.60", "matplotlib>=3.7"]

setup(
    name="horovod_huffcomp",
    version="0.1.0",
    description="Entropy-coded gradient compression (QSGD/TernGrad/top-k + Huffman) for Horovod",
    long_description=(here / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9",
    packages=find_packages(include=["horovod_huffcomp", "horovod_huffcomp.*"]),
    install_requires=["numpy>=1.24", "numba>=0.59"],
    # the GPU backend compiles these at run time (gpu_backend.cuda_dir finds them)
    data_files=[("share/horovod_huffcomp/cuda", [str(p) for p in sorted(Path("cuda").glob("*.cu*"))])],
    extras_require={
        "torch": ["torch>=2.1"],
        "tensorflow": ["tensorflow-cpu>=2.15", "tf-keras>=2.15"],
        "gpu": ["cupy-cuda13x>=13"],
        "bench": BENCH,
        "test": ["pytest>=7", "hypothesis>=6.80"] + BENCH,
    },
    entry_points={
        "console_scripts": [
            "horovod-huffcomp-bench=horovod_huffcomp.bench.__main__:main",
            "horovod-huffcomp-fuzz=horovod_huffcomp.fuzz:main",
        ]
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "Topic :: System :: Distributed Computing",
    ],
)
