"""Proof that TensorFlow's C++ runtime serves an export: every signature run through the C API.

TF Serving's binary is not installable everywhere, but the TensorFlow wheel ships the C API
(``libtensorflow_cc.so.2`` and ``tensorflow/c/c_api.h``), whose ``TF_LoadSessionFromSavedModel`` is
the SavedModel loader TF Serving uses. ``serving/native/run_signature.c`` is a small program built
on demand against the installed wheel (the machine's C compiler, no new dependency) that loads a
SavedModel with it and runs one signature's tensors. :func:`check_export` runs **every** signature
of an export on the export's own warm-up requests (``assets.extra/tf_serving_warmup_requests``, which
every export writes for each of its signatures) and compares the outputs with the Python signatures'::

    from mvke_tf.serving.capi import check_export
    report = check_export("runs/tfx/serving/1796193533")   # raises CAPIError when the C++ runtime fails
    report.max_abs_diff                                    # {signature: largest |C - Python| over outputs}

A model the C++ runtime cannot load or run (e.g. one calling ``tf.py_function``, which needs a
Python interpreter) raises :class:`CAPIError` with TensorFlow's one-line reason.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import struct
import subprocess
import sysconfig
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

SOURCE = Path(__file__).with_name("native") / "run_signature.c"
CACHE_ENV = "MVKE_TF_NATIVE_CACHE"
"""Where the built program is kept (default ``~/.cache/mvke-tf/native``)."""

_STRING = 7  # TF_STRING in tensorflow/c/tf_datatype.h


class CAPIError(RuntimeError):
    """The C API could not build, load or run the export; the message is one line."""


def _tensorflow_dir() -> Path:
    import tensorflow as tf

    return Path(tf.__file__).parent


def build_program(cache_dir: str | os.PathLike | None = None) -> Path:
    """Compiles ``run_signature.c`` against the installed wheel (once per source and wheel); its path.

    Raises:
      CAPIError: no C compiler, or the wheel lacks the C API.
    """
    tf_dir = _tensorflow_dir()
    include = tf_dir / "include"
    libs = [tf_dir / "libtensorflow_cc.so.2", tf_dir / "libtensorflow_framework.so.2"]
    if not (include / "tensorflow" / "c" / "c_api.h").is_file() or not all(p.is_file() for p in libs):
        raise CAPIError(f"the TensorFlow wheel at {tf_dir} has no C API (c_api.h, libtensorflow_cc.so.2)")
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + str(tf_dir).encode() + str(libs[0].stat().st_mtime_ns).encode()).hexdigest()[:16]
    cache = Path(cache_dir or os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "mvke-tf" / "native")
    program = cache / f"run_signature-{key}"
    if program.is_file():
        return program
    cache.mkdir(parents=True, exist_ok=True)
    compiler = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    tmp = program.with_name(f"{program.name}.tmp-{os.getpid()}")
    command = [
        *compiler.split(),
        "-O1",
        "-std=c99",
        f"-I{include}",
        str(SOURCE),
        "-o",
        str(tmp),
        f"-L{tf_dir}",
        "-l:libtensorflow_cc.so.2",
        "-l:libtensorflow_framework.so.2",
        f"-Wl,-rpath,{tf_dir}",
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    except FileNotFoundError as e:
        raise CAPIError(f"no C compiler ({compiler!r}): {e}; fix: install gcc or set CC") from e
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise CAPIError(f"compiling {SOURCE.name} failed: {last}")
    tmp.replace(program)  # atomic: parallel builds never run a half-written program
    return program


def _encode_tensor(value: np.ndarray) -> bytes:
    import tensorflow as tf

    value = np.asarray(value)
    if value.dtype.kind in "OSU":
        dtype = _STRING
        flat = [v if isinstance(v, bytes) else str(v).encode() for v in value.reshape(-1).tolist()]
        body = b"".join(struct.pack("<Q", len(v)) + v for v in flat)
    else:
        dtype = tf.as_dtype(value.dtype).as_datatype_enum
        raw = np.ascontiguousarray(value).tobytes()
        body = struct.pack("<Q", len(raw)) + raw
    head = struct.pack("<ii", dtype, value.ndim) + b"".join(struct.pack("<q", d) for d in value.shape)
    return head + body


def _decode_tensors(data: bytes, pos: int, count: int) -> tuple[list[np.ndarray], int]:
    """``count`` tensors from ``data[pos:]``; the tensors and the position after them."""
    import tensorflow as tf

    out = []
    for _ in range(count):
        dtype, rank = struct.unpack_from("<ii", data, pos)
        pos += 8
        shape = struct.unpack_from(f"<{rank}q", data, pos)
        pos += 8 * rank
        size = int(np.prod(shape)) if rank else 1
        if dtype == _STRING:
            values = []
            for _ in range(size):
                (n,) = struct.unpack_from("<Q", data, pos)
                values.append(data[pos + 8 : pos + 8 + n])
                pos += 8 + n
            out.append(np.array(values, dtype=object).reshape(shape))
        else:
            (n,) = struct.unpack_from("<Q", data, pos)
            np_dtype = tf.dtypes.as_dtype(dtype).as_numpy_dtype
            out.append(np.frombuffer(data[pos + 8 : pos + 8 + n], dtype=np_dtype).reshape(shape))
            pos += 8 + n
    return out, pos


def _op_and_index(tensor_name: str) -> tuple[str, int]:
    op, _, index = tensor_name.partition(":")
    return op, int(index or 0)


def signature_defs(export_dir: str | os.PathLike) -> dict[str, Any]:
    """The export's ``SignatureDef`` protos by name (read from ``saved_model.pb``; nothing is loaded)."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel.FromString((Path(export_dir) / "saved_model.pb").read_bytes())
    graph = next((m for m in saved.meta_graphs if "serve" in m.meta_info_def.tags), None)
    if graph is None:
        raise CAPIError(f"{export_dir}: no meta graph tagged 'serve'; fix: export with tf.saved_model.save")
    return {k: v for k, v in graph.signature_def.items() if not k.startswith("__")}


def run_signatures(
    export_dir: str | os.PathLike,
    runs: Sequence[tuple[str, Mapping[str, np.ndarray]]],
    program: str | os.PathLike | None = None,
) -> list[dict[str, np.ndarray]]:
    """Runs ``(signature name, inputs)`` pairs on the export, loaded once in the C++ runtime; each run's
    ``{output name: array}``.

    Raises:
      CAPIError: the export does not load or a signature does not run there (TensorFlow's reason).
    """
    signatures = signature_defs(export_dir)
    request = [b"MVKEREQ2", struct.pack("<I", len(runs))]
    output_names = []
    for signature_name, inputs in runs:
        signature = signatures.get(signature_name)
        if signature is None:
            raise CAPIError(f"{export_dir}: no signature {signature_name!r}; it has {sorted(signatures)}")
        missing = sorted(set(signature.inputs) - set(inputs))
        if missing:
            raise CAPIError(f"signature {signature_name!r}: inputs {missing} not given")
        request.append(struct.pack("<I", len(signature.inputs)))
        for key, info in signature.inputs.items():
            op, index = _op_and_index(info.name)
            request += [struct.pack("<I", len(op)), op.encode(), struct.pack("<i", index), _encode_tensor(inputs[key])]
        names = list(signature.outputs)
        output_names.append(names)
        request.append(struct.pack("<I", len(names)))
        for key in names:
            op, index = _op_and_index(signature.outputs[key].name)
            request += [struct.pack("<I", len(op)), op.encode(), struct.pack("<i", index)]
    program = Path(program) if program else build_program()
    with tempfile.TemporaryDirectory(prefix="mvke-capi-") as tmp:
        req, res = Path(tmp) / "request", Path(tmp) / "response"
        req.write_bytes(b"".join(request))
        done = subprocess.run(
            [str(program), str(export_dir), str(req), str(res)], capture_output=True, text=True, timeout=600
        )
        if done.returncode != 0:
            lines = [line for line in done.stderr.splitlines() if line.startswith("run_signature:")]
            reason = lines[-1] if lines else (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
            raise CAPIError(f"the C++ runtime cannot serve {export_dir}: {reason[:500]}")
        data = res.read_bytes()
    if data[:8] != b"MVKERES2":
        raise CAPIError(f"the C API program wrote no response for {export_dir}")
    out, pos = [], 12
    for names in output_names:
        (count,) = struct.unpack_from("<I", data, pos)
        tensors, pos = _decode_tensors(data, pos + 4, count)
        out.append(dict(zip(names, tensors)))
    return out


def run_signature(
    export_dir: str | os.PathLike,
    signature_name: str,
    inputs: Mapping[str, np.ndarray],
    program: str | os.PathLike | None = None,
) -> dict[str, np.ndarray]:
    """Runs one signature of the export in the C++ runtime; ``{output name: array}`` (see
    :func:`run_signatures`)."""
    return run_signatures(export_dir, [(signature_name, inputs)], program)[0]


@dataclasses.dataclass(frozen=True)
class CAPIReport:
    """What :func:`check_export` ran: per signature, the requests and the largest |C - Python| difference."""

    export_dir: str
    requests: dict[str, int]
    max_abs_diff: dict[str, float]


def check_export(export_dir: str | os.PathLike, atol: float = 1e-6, rtol: float = 1e-6) -> CAPIReport:
    """Runs every signature on the export's warm-up requests in the C++ runtime and in Python.

    Raises:
      CAPIError: the C++ runtime cannot load or run a signature, a signature has no warm-up request,
        or an output differs from Python's by more than ``atol + rtol * |python|``.
    """
    import tensorflow as tf

    from mvke_tf.export.warmup import read_warmup_requests

    export_dir = str(export_dir)
    signatures = signature_defs(export_dir)
    requests: dict[str, list[dict[str, np.ndarray]]] = {name: [] for name in signatures}
    for record in read_warmup_requests(export_dir):
        request = record.predict_log.request
        name = request.model_spec.signature_name or "serving_default"
        if name in requests:
            requests[name].append({k: tf.make_ndarray(v) for k, v in request.inputs.items()})
    without = sorted(n for n, r in requests.items() if not r)
    if without:
        raise CAPIError(f"{export_dir}: no warm-up request for signature(s) {without}; fix: export with warm-up")
    runs = [(name, inputs) for name, reqs in requests.items() for inputs in reqs]
    answers = iter(run_signatures(export_dir, runs, build_program()))  # one load for every request
    loaded = tf.saved_model.load(export_dir)
    diffs: dict[str, float] = {}
    for name, reqs in requests.items():
        worst = 0.0
        for inputs in reqs:
            native = next(answers)
            python = loaded.signatures[name](**{k: tf.constant(v) for k, v in inputs.items()})
            for key, want in python.items():
                want, got = want.numpy(), native[key]
                if want.dtype.kind in "OSU":
                    if want.tolist() != got.tolist():
                        raise CAPIError(f"{name}: output {key!r} differs between the C++ runtime and Python")
                    continue
                if got.shape != want.shape:
                    raise CAPIError(f"{name}: output {key!r} has shape {got.shape} in C, {want.shape} in Python")
                diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
                if (diff > atol + rtol * np.abs(want.astype(np.float64))).any():
                    raise CAPIError(f"{name}: output {key!r} differs by {diff.max():.3g} between C++ and Python")
                worst = max(worst, float(diff.max()) if diff.size else 0.0)
        diffs[name] = worst
    return CAPIReport(export_dir, {n: len(r) for n, r in requests.items()}, diffs)


__all__ = [
    "CAPIError",
    "CAPIReport",
    "build_program",
    "check_export",
    "run_signature",
    "run_signatures",
    "signature_defs",
]
