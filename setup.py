"""fdm: diffusion models whose architecture makes structure appear (FDM, NeRF lifting)."""
from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "jax[cpu]>=0.10.2,<0.11",
    "jaxlib>=0.10.2,<0.11",
    "flax>=0.12.8,<0.13",
    "optax>=0.2.8,<0.3",
    "orbax-checkpoint>=0.12.8,<0.13",
    "chex>=0.1.92,<0.2",
    "ml-collections>=1.1.0,<1.2",
    "clu==0.0.12",
    "absl-py>=2.1,<3",
    "numpy>=2.4,<2.5",
    "scipy>=1.17,<1.18",
    "tensorflow-cpu>=2.21,<2.22",
    "tensorboard>=2.21,<2.22",
    "tensorflow-datasets>=4.9.10,<4.10",
    "dm-pix>=0.4.5,<0.5",
    "pillow>=13,<14",
    "imageio>=2.38,<3",
    "tqdm>=4.66,<5",
]

TEST_REQUIRES = [
    "pytest>=9.2,<10",
    "pytest-xdist>=3.8,<4",
    "torch==2.13.0",
    "diffusers>=0.42,<0.43",
    "safetensors>=0.8,<0.9",
    "nbclient>=0.11,<0.12",
    "nbformat>=5.11,<6",
    "ipykernel>=7.4,<8",
    "hilbertcurve>=2.0.5,<3",      # reference Hilbert curve (tests/test_lmconv_orders.py)
    # CLIP references (tests/test_clip_vision.py): transformers' CLIPVisionModelWithProjection
    # and OpenAI's clip/model.py. Not open-clip-torch: it needs torchvision, whose PyPI
    # wheels are CUDA builds that cannot be imported next to the CPU torch above.
    "transformers>=5.23,<5.25",
    "openai-clip==1.0.1",
]

# Segmentation baselines (fdm.baselines): k-means (sklearn) and GrabCut (OpenCV).
BASELINES_REQUIRES = [
    "scikit-learn>=1.9,<1.10",
    "opencv-python-headless>=5.0,<5.1",
]

setup(
    name="fdm",
    version="0.1.0",
    description=__doc__,
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["fdm", "fdm.*", "experiments", "configs"]),
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": TEST_REQUIRES + BASELINES_REQUIRES, "baselines": BASELINES_REQUIRES},
)
