"""compressreid: distil, prune and quantize ReID models into fast INT8 students, gated on retrieval metrics."""

from setuptools import find_packages, setup

# teachers/ and students/ install as compressreid.teachers / compressreid.students, so no generic
# top-level package names land in site-packages.
packages = find_packages(include=["compressreid", "compressreid.*"])
packages += ["compressreid.teachers", "compressreid.students"]

setup(
    name="compressreid",
    version="0.1.0",
    description=__doc__,
    python_requires=">=3.10",
    packages=packages,
    package_dir={"compressreid.teachers": "teachers", "compressreid.students": "students"},
    install_requires=[
        # torch 2.14 with torchvision 0.29: the machine-local torch 2.13 CPU wheel cannot import torchvision
        "torch==2.14.1",
        "torchvision==0.29.2",
        "timm>=1.0.20",
        "torch-pruning>=1.6",
        "onnx>=1.20",
        "onnxruntime>=1.22",
        "onnxscript>=0.5",
        "yacs>=0.1.8",
        "numpy>=1.26",
        "scipy>=1.11",
        "scikit-learn>=1.4",
        "h5py>=3.10",
        "tensorboard>=2.15",
        "faiss-cpu>=1.9",
        "pillow>=10",
        "matplotlib>=3.8",
        "tqdm>=4.66",
        "pyyaml>=6",
    ],
    # Optional runtimes are extras, never import-time needs: the openvino target imports openvino when used.
    # test: what the suite runs (every shipped target judged in its own runtime, the BoxMOT contract with OpenCV's
    # resize; termcolor and tabulate: what fastreid, installed --no-deps by `make test` for parity tests, imports).
    # bench: the peer comparison in benchmarks/peer_nncf.py.
    extras_require={
        "openvino": ["openvino>=2025.0"],
        "test": ["pytest>=8", "pytest-xdist>=3.5", "hypothesis>=6.100", "termcolor>=2", "tabulate>=0.9",
                 "openvino>=2025.0", "opencv-python-headless>=4.8"],
        "bench": ["openvino>=2025.0", "nncf>=3.4"],
    },
)
