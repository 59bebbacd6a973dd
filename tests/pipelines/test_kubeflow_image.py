"""The Kubeflow component image (``pipelines/Dockerfile``) holds everything the compiled pipeline runs.

There is no Docker engine in the test environment, so the image is replayed instead of built: the
Dockerfile's COPY lines copy the files git knows (tracked, or new and not ignored: build outputs,
caches and virtual environments never count) into a scratch root; its ``pip install`` line installs
that copy into a scratch virtual environment that sees this environment's dependencies (a plain path
line in a ``.pth`` file, which does not run that directory's ``.pth`` files, so this checkout's own
editable install stays invisible); its Python build step runs there with its ENV. Then every module,
class and function the compiled ``pipeline.json`` names is imported in that environment, from a
directory outside the checkout, and the ``CppInfraValidator`` executor the spec names checks a small
export there with no C compiler reachable, as the program built at image-build time makes unneeded.

What cannot be replayed: ``apt-get`` and the base image. That the image has a C compiler is only
read from the Dockerfile (its ``apt-get install`` line and ``CC``); that the program compiles with
it is checked with this machine's compiler of the same name.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pytest
import tensorflow as tf
from mvke_tf.serving.capi import CACHE_ENV

from mvke_tf.export.warmup import write_warmup_requests

pytestmark = pytest.mark.slow  # a pip install, a C build and three TensorFlow start-ups: about 1-2 minutes

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "pipelines" / "Dockerfile"
DOCKERFILE_NAME = "pipelines/Dockerfile"  # in messages
# The packages of this repository (import name: folder); the scratch environment must find each in the image's
# copy, never here.
PACKAGES = {"mvke_tf": "mvke_tf", "mvke_tf.pipelines": "pipelines", "mvke_tf.serving": "serving"}
# A dotted Python name as TFX records executors, module functions (preprocessing_fn, run_fn) and `-m` targets.
DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")
MISSING_COMPILER = "no-such-c-compiler"


# ------------------------------------------------------------------ the Dockerfile, read


@dataclass
class Dockerfile:
    """The instructions this test replays, in order; container paths are absolute POSIX paths."""

    env: dict[str, str] = field(default_factory=dict)  # as the image's processes see it (the last ENV wins)
    workdir: PurePosixPath = PurePosixPath("/")  # the final WORKDIR
    # ("COPY", (sources, dest, dest is a directory), WORKDIR) or ("RUN", command text, WORKDIR)
    steps: list[tuple[str, object, PurePosixPath]] = field(default_factory=list)

    @property
    def runs(self) -> list[tuple[str, PurePosixPath]]:
        return [(command, workdir) for keyword, command, workdir in self.steps if keyword == "RUN"]


def _instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction: continuation lines joined, comment lines dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue  # Docker drops comment lines, inside a continued instruction too
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, args = (pending + stripped).partition(" ")
        pending = ""
        out.append((keyword.upper(), args.strip()))
    assert not pending, f"{DOCKERFILE_NAME}: the last instruction ends with a line continuation; fix: remove the '\\'"
    return out


def _container_path(workdir: PurePosixPath, path: str) -> PurePosixPath:
    return PurePosixPath(path) if path.startswith("/") else workdir / path


def read_dockerfile(path: Path = DOCKERFILE) -> Dockerfile:
    spec = Dockerfile()
    for keyword, args in _instructions(path.read_text()):
        assert "$" not in args or keyword == "RUN", (
            f"{DOCKERFILE_NAME}: {keyword} {args}: variables are not replayed by this test; fix: write the value"
        )
        if keyword == "ENV":
            pairs = shlex.split(args)
            assert all("=" in p for p in pairs), f"{DOCKERFILE_NAME}: ENV {args}: use the KEY=VALUE form"
            spec.env.update(p.split("=", 1) for p in pairs)
        elif keyword == "WORKDIR":
            spec.workdir = _container_path(spec.workdir, args)
        elif keyword == "COPY":
            words = json.loads(args) if args.startswith("[") else shlex.split(args)
            words = [w for w in words if not w.startswith("--")]  # --chown / --chmod do not change what is copied
            assert len(words) >= 2, f"{DOCKERFILE_NAME}: COPY {args}: needs a source and a destination"
            *sources, dest = words
            is_dir = dest.endswith("/") or len(sources) > 1
            spec.steps.append(("COPY", (sources, _container_path(spec.workdir, dest), is_dir), spec.workdir))
        elif keyword == "RUN":
            spec.steps.append(("RUN", args, spec.workdir))
        elif keyword in ("ADD", "VOLUME", "USER"):
            raise AssertionError(
                f"{DOCKERFILE_NAME}: {keyword} is not replayed by this test; fix: use COPY, ENV and RUN"
            )
    return spec


def _git_files() -> list[str]:
    """What a clean build context holds: the files git tracks or would track (ignored ones left out)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return sorted({f for f in listed.split("\0") if f and (REPO / f).is_file()})


# ------------------------------------------------------------------ the image, replayed


@dataclass
class Image:
    dockerfile: Dockerfile
    root: Path  # the container's "/"
    python: Path  # the scratch environment's interpreter
    env: dict[str, str]  # the Dockerfile's ENV, container paths mapped under root
    outside: Path  # a working directory outside the repository and the image

    def host(self, container_path: PurePosixPath | str) -> Path:
        return self.root / str(container_path).lstrip("/")

    @property
    def workdir(self) -> Path:
        return self.host(self.dockerfile.workdir)

    def run(self, argv: list[str], cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess:
        """Runs the image's Python (``-I``: no PYTHONPATH, no user site, no script directory on sys.path)."""
        assert argv[0] == "python", argv
        full_env = {"PATH": os.environ["PATH"], "HOME": str(self.root / "root"), "TF_CPP_MIN_LOG_LEVEL": "2"}
        return subprocess.run(
            [str(self.python), "-I", *argv[1:]],
            cwd=cwd or self.outside,
            env={**full_env, **self.env, **env},
            capture_output=True,
            text=True,
            timeout=900,
        )


def _copy(files: list[str], sources: list[str], dest: PurePosixPath, dest_is_dir: bool, root: Path) -> None:
    """One COPY instruction, from the build context ``files`` to the container root ``root``."""
    for source in sources:
        assert not any(c in source for c in "*?["), f"COPY {source}: globs are not replayed; fix: name the path"
        prefix = source.rstrip("/")
        prefix = "" if prefix in ("", ".") else prefix
        matched = [f for f in files if not prefix or f == prefix or f.startswith(prefix + "/")]
        assert matched, f"{DOCKERFILE_NAME}: COPY {source}: not in the repository; fix: the path relative to its root"
        for f in matched:
            if f == prefix:  # a single file
                target = dest / PurePosixPath(f).name if dest_is_dir else dest
            else:
                target = dest / PurePosixPath(f).relative_to(prefix) if prefix else dest / f
            host = root / str(target).lstrip("/")
            host.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, host)


def _pip_install_args(command: str) -> list[str] | None:
    """The arguments of the ``pip install`` in a RUN line (None: it has none)."""
    if command.startswith("["):
        return None
    for part in command.split("&&"):
        words = shlex.split(part)
        if words[:2] == ["pip", "install"] or words[:4] == ["python", "-m", "pip", "install"]:
            return words[words.index("install") + 1 :]
    return None


def _pip_install(image: Image, args: list[str], workdir: PurePosixPath) -> None:
    """The image's ``pip install '.[pipeline]'``, of the copy only: the dependencies the image installs at the
    lock file's versions are the ones this environment already has."""
    targets = [a for a in args if re.fullmatch(r"\.(\[[\w,]+\])?", a)]
    assert targets == [".[pipeline]"], (
        f"{DOCKERFILE_NAME}: pip installs {targets}; fix: install the package with its pipeline extra, '.[pipeline]'"
    )
    editable = ["-e"] if "-e" in args or "--editable" in args else []
    local = ["--no-deps", "--no-build-isolation", "--ignore-installed", "--no-index", "--no-cache-dir"]
    done = image.run(
        ["python", "-m", "pip", "install", "-q", "--disable-pip-version-check", *local, *editable, ".[pipeline]"],
        cwd=image.host(workdir),
    )
    assert done.returncode == 0, f"pip install of the image's copy failed:\n{done.stdout}\n{done.stderr}"


def _build_image(root: Path, spec: Dockerfile) -> Image:
    venv = root.parent / "venv"
    # --without-pip: the environment's pip is this one's, seen through the path line below.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, capture_output=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-I", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    deps = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    assert deps, f"no site-packages on sys.path ({sys.path}); fix: run the tests with the project's environment"
    # A plain path line: the directory joins sys.path, its .pth files (the checkout's editable install) do not run.
    Path(site, "_dependencies.pth").write_text("\n".join(deps) + "\n")
    env = {k: str(root / v.lstrip("/")) if v.startswith("/") else v for k, v in spec.env.items()}
    outside = root.parent / "elsewhere"
    outside.mkdir()
    (root / "root").mkdir(parents=True, exist_ok=True)
    image = Image(spec, root, python, env, outside)

    files = _git_files()
    installed = False
    for keyword, payload, workdir in spec.steps:  # in the Dockerfile's order: a COPY after the install is missed
        if keyword == "COPY":
            _copy(files, *payload, root)
        elif (args := _pip_install_args(payload)) is not None:
            _pip_install(image, args, workdir)
            installed = True
        elif payload.startswith("[") and json.loads(payload)[0] == "python":  # exec form: no shell to replay
            done = image.run(json.loads(payload), cwd=image.host(workdir))
            assert done.returncode == 0, f"{DOCKERFILE_NAME}: RUN {payload} failed in the image:\n{done.stderr[-3000:]}"
        # other RUN lines (apt-get) change the base image, which is not replayed
    assert installed, f"{DOCKERFILE_NAME}: no RUN installs the package with pip; fix: RUN pip install '.[pipeline]'"
    return image


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Image:
    root = tmp_path_factory.mktemp("kubeflow-image") / "root"
    assert REPO not in root.parents, f"scratch directory {root} is inside the repository"
    return _build_image(root, read_dockerfile())


# ------------------------------------------------------------------ the compiled pipeline


def _compile(out: Path, config: Path | None) -> dict:
    """``mvke-tf pipeline compile --target kubeflow`` as the docs run it, with a cloud root (nothing is read)."""
    from mvke_tf.cli import main

    argv = ["pipeline", "compile", "--target", "kubeflow", "--root", "gs://BUCKET/mvke"]
    argv += ["--data-root", "gs://BUCKET/data", "--image", "REGISTRY/mvke-tf-pipeline:1", "--output", str(out)]
    argv += ["--config", str(config.relative_to(REPO))] if config else []
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(REPO)  # the configs name their schema relative to the repository root, as `make` runs it
        assert main(argv) == 0, f"compiling {config or 'the defaults'} failed"
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def specs(tmp_path_factory) -> dict[str, dict]:
    """The compiled spec of the flags' defaults and of every checked-in config."""
    out = tmp_path_factory.mktemp("compiled")
    configs = [None, *sorted((REPO / "pipelines" / "configs").glob("*.yaml"))]
    return {(c.name if c else "defaults"): _compile(out / f"{c.stem if c else 'defaults'}.json", c) for c in configs}


def _walk(node):
    yield node
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
    for child in children:
        yield from _walk(child)


def _constants(spec: dict):
    """The spec's constant string parameters (component arguments recorded at compile time)."""
    for node in _walk(spec["pipelineSpec"]):
        if isinstance(node, dict) and isinstance(node.get("constantValue"), dict):
            value = node["constantValue"].get("stringValue")
            if isinstance(value, str) and value:
                yield value


def _json_modules(text: str):
    """Code a JSON parameter names by module: a TFMA metric config's ``module`` (+ ``class_name``)."""
    try:
        data = json.loads(text)
    except ValueError:
        return
    for node in _walk(data):
        if isinstance(node, dict) and isinstance(node.get("module"), str) and node["module"]:
            yield f"{node['module']}.{node['class_name']}" if node.get("class_name") else node["module"]


def named_code(spec: dict) -> set[str]:
    """Every module, class or function a container of the spec imports: ``-m`` targets, executor classes,
    constant parameters that are dotted names (``preprocessing_fn``, ``run_fn``, module paths), and the
    modules JSON parameters name (the Evaluator's custom metrics)."""
    names = set()
    for node in _walk(spec["pipelineSpec"]["deploymentSpec"]):
        if isinstance(node, dict) and isinstance(node.get("command"), list):
            command, args = node["command"], node.get("args", [])
            names.update(command[i + 1] for i, w in enumerate(command[:-1]) if w == "-m")
            names.update(args[i + 1] for i, w in enumerate(args[:-1]) if w == "--executor_class_path")
    for value in _constants(spec):
        if DOTTED.fullmatch(value):
            names.add(value)
        names.update(_json_modules(value))
    return names


def _is_repo_file(value: str) -> bool:
    if value.startswith("/") or "://" in value or "\n" in value:
        return False
    try:
        return (REPO / value).is_file()
    except OSError:  # a JSON parameter, too long to be a file name
        return False


def relative_files(spec: dict) -> set[str]:
    """Constant parameters that are repository files named relative to the compiling directory (a curated
    schema): the components open them relative to theirs, the image's WORKDIR."""
    return {value for value in _constants(spec) if _is_repo_file(value)}


IMPORT_SCRIPT = textwrap.dedent(
    """
    import importlib, json, sys

    def load(name):
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name or "." not in name:
                raise
            module, _, attr = name.rpartition(".")
            return getattr(load(module), attr)

    result = {"imports": {}, "files": {}, "sys_path": sys.path}
    for name in json.loads(sys.argv[1]):
        try:
            load(name)
            result["imports"][name] = "ok"
        except Exception as e:
            result["imports"][name] = f"{type(e).__name__}: {e}"
    for package in json.loads(sys.argv[2]):
        try:
            result["files"][package] = importlib.import_module(package).__file__
        except Exception as e:
            result["files"][package] = f"{type(e).__name__}: {e}"
    print("RESULT " + json.dumps(result))
    """
)


def _result(done: subprocess.CompletedProcess) -> dict:
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    error = done.stderr[done.stderr.rfind("Traceback") :] if "Traceback" in done.stderr else done.stderr[-4000:]
    assert done.returncode == 0 and lines, f"the image's Python failed (exit {done.returncode}):\n{error}"
    return json.loads(lines[-1][len("RESULT ") :])


# ------------------------------------------------------------------ the tests


def test_the_image_installs_a_c_compiler_and_builds_the_c_api_program():
    """Read, not run: the apt-get line cannot run here. The build step it serves is replayed by ``image``."""
    spec = read_dockerfile()
    installs = [w for command, _ in spec.runs if "apt-get" in command for w in shlex.split(command.replace(";", " "))]
    for package in ("gcc", "libc6-dev"):  # the compiler, and the C library's headers and start files it links with
        assert package in installs, (
            f"{DOCKERFILE_NAME}: no RUN apt-get install of {package}; fix: install gcc libc6-dev"
        )
    assert spec.env.get("CC") == "gcc", (
        f"{DOCKERFILE_NAME}: ENV CC is {spec.env.get('CC')!r}; fix: ENV CC=gcc (the compiler serving/capi.py runs; "
        "the base image's Python may name one it does not ship)"
    )
    cache = spec.env.get(CACHE_ENV, "")
    assert cache.startswith("/"), f"{DOCKERFILE_NAME}: ENV {CACHE_ENV} is {cache!r}; fix: an absolute directory"
    builds = [c for c, _ in spec.runs if c.startswith("[") and "build_program" in c]
    assert builds, f'{DOCKERFILE_NAME}: no RUN ["python", ...] calls mvke_tf.serving.capi.build_program; fix: add one'


def test_every_module_the_compiled_pipeline_names_imports_from_the_image(image, specs):
    names = set().union(*(named_code(s) for s in specs.values()))
    # The spec must name the repository's code, or this test proves nothing about the image.
    for expected in (
        "mvke_tf.pipelines.preprocessing.preprocessing_fn",
        "mvke_tf.pipelines.trainer.run_fn",
        "mvke_tf.pipelines.infra_validation.CppInfraValidator_Executor",
        "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor",
    ):
        assert expected in names, f"{expected} is not in the compiled spec; names: {sorted(names)}"
    done = image.run(["python", "-c", IMPORT_SCRIPT, json.dumps(sorted(names)), json.dumps(sorted(PACKAGES))])
    result = _result(done)
    failed = {n: why for n, why in result["imports"].items() if why != "ok"}
    assert not failed, f"the image cannot import what pipeline.json names: {failed}; fix: COPY it in {DOCKERFILE_NAME}"
    assert sorted(result["imports"]) == sorted(names)
    for package, file in result["files"].items():
        folder = PACKAGES[package]
        assert Path(file).is_absolute(), (
            f"the image cannot import {package} ({file}); fix: COPY {folder}/ {folder}/ in {DOCKERFILE_NAME}"
        )
        assert Path(file).is_relative_to(image.workdir / folder), (
            f"{package} is imported from {file}, not from the image's copy under {image.workdir / folder}; "
            f"fix: COPY {folder}/ in {DOCKERFILE_NAME}"
        )
    checkout = {REPO, *(REPO / folder for folder in PACKAGES.values())}
    on_path = [entry for entry in result["sys_path"] if entry and Path(entry).resolve() in checkout]
    assert not on_path, f"the repository itself is on the image's sys.path: {on_path}"

    for name, spec in specs.items():
        for relative in relative_files(spec):
            assert (image.workdir / relative).is_file(), (
                f"{name}'s pipeline names {relative} relative to the WORKDIR, which the image lacks; "
                f"fix: COPY it in {DOCKERFILE_NAME}"
            )


class _Scorer(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve(self, examples):
        x = tf.io.parse_example(examples, {"x": tf.io.FixedLenFeature([], tf.float32, default_value=0.0)})["x"]
        return {"click": tf.sigmoid(2.0 * x)}


VALIDATE_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    from tfx.types import standard_artifacts
    from tfx.utils import import_utils

    executor_class = import_utils.import_class_by_path(sys.argv[1])  # as kubeflow_v2_run_executor loads it
    model = standard_artifacts.Model()
    model.uri = sys.argv[2]
    blessing = standard_artifacts.InfraBlessing()
    blessing.uri = sys.argv[3]
    os.makedirs(blessing.uri, exist_ok=True)
    executor_class().Do({"model": [model]}, {"blessing": [blessing]}, {})
    print("RESULT " + json.dumps({
        "blessed": blessing.get_int_custom_property("blessed"),
        "reason": blessing.get_string_custom_property("reason"),
        "files": sorted(os.listdir(blessing.uri)),
    }))
    """
)


def test_the_infra_validator_blesses_an_export_in_the_image_without_a_compiler_at_run_time(image, specs, tmp_path):
    executors = {
        a[i + 1]
        for s in specs.values()
        for node in _walk(s["pipelineSpec"]["deploymentSpec"])
        if isinstance(node, dict) and isinstance(a := node.get("args"), list)
        for i, w in enumerate(a[:-1])
        if w == "--executor_class_path" and a[i + 1].endswith("CppInfraValidator_Executor")
    }
    assert len(executors) == 1, f"the compiled specs name CppInfraValidator executors {executors}, expected one"

    model_uri = tmp_path / "model"
    export_dir = model_uri / "Format-Serving"  # where the Trainer writes the SavedModel
    module = _Scorer()
    tf.saved_model.save(module, str(export_dir), signatures={"serving_default": module.serve})
    example = tf.train.Example()
    example.features.feature["x"].float_list.value.append(0.7)
    write_warmup_requests(export_dir, {"serving_default": {"examples": [example.SerializeToString(), b""]}})

    # No compiler at run time: the component uses the program the image's build step compiled.
    done = image.run(
        ["python", "-c", VALIDATE_SCRIPT, executors.pop(), str(model_uri), str(tmp_path / "blessing")],
        CC=MISSING_COMPILER,
    )
    result = _result(done)
    assert result["blessed"] == 1, f"the image's CppInfraValidator did not bless the export: {result['reason']}"
    assert result["files"] == ["INFRA_BLESSED"], result
    assert "1 signature(s) answer as in Python" in result["reason"], result["reason"]
