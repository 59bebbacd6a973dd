"""mvke-tf: MVKE, MMoE/ESMM and M3oE in TensorFlow/Keras with a TFX pipeline and TF Serving."""

from setuptools import find_packages, setup

# Exact versions come from requirements/lock.txt (a constraints file); these are the
# direct requirements and the ranges the library supports.
CORE = [
    "tensorflow==2.16.2",
    "tf-keras==2.16.0",
    "tensorflow-recommenders==0.7.7",
    # The warm-up requests of every export are tensorflow_serving.apis.prediction_log_pb2 records.
    "tensorflow-serving-api==2.16.1",
    # mvke-tf tag-users writes Parquet (its default --format).
    "pyarrow==10.0.1",
    "numpy>=1.23,<2",
    "pyyaml>=6",
    "tqdm>=4.60",
]
EXTRAS = {
    "pipeline": ["tfx[kfp]==1.16.0", "dill==0.3.1.1", "apache-beam==2.74.0"],
    "serving": ["grpcio>=1.60"],
    # mvke-tf tag-users --runner beam (mvke_tf.tagging.beam); the pipeline runs its components on Beam too.
    "beam": ["apache-beam==2.74.0"],
    "notebooks": ["matplotlib>=3.7", "nbclient>=0.9", "nbformat>=5.9", "ipykernel>=6"],
    # cryptography: the TLS tests make a CA and certificates at run time.
    "dev": ["pytest>=8", "pytest-xdist>=3.6", "ruff>=0.6", "cryptography>=42"],
}
NAMESPACED = ("pipelines", "serving")  # repository folders installed as mvke_tf.<name>

EXTRAS["all"] = sorted({r for reqs in EXTRAS.values() for r in reqs})

setup(
    name="mvke-tf",
    version="0.1.0",
    description=__doc__,
    python_requires=">=3.10,<3.11",
    # Everything installs under the project's namespace: the library, and the repository's pipelines/ and
    # serving/ folders as mvke_tf.pipelines and mvke_tf.serving. benchmarks/ is not installed (it runs from a
    # source checkout: python -m benchmarks.<name>, mvke-tf bench).
    packages=find_packages(include=["mvke_tf", "mvke_tf.*"]) + [f"mvke_tf.{pkg}" for pkg in NAMESPACED],
    package_dir={f"mvke_tf.{pkg}": pkg for pkg in NAMESPACED},
    package_data={
        "mvke_tf.pipelines": ["configs/*.yaml", "configs/beam/*.yaml", "schemas/*.pbtxt", "Dockerfile"],
        "mvke_tf.serving": ["deploy/*", "native/*.c"],
    },
    install_requires=CORE,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["mvke-tf=mvke_tf.cli:main"]},
)
