"""The model version registry: which SavedModel version of each served model is loaded, and when it changes.

TF Serving's layout and version policy: ``<base_path>/<version>/saved_model.pb`` with numeric versions,
latest only. A poller thread checks the base paths every ``poll_seconds``; a new version is loaded once
its files stop changing between two polls, warmed up, then swapped in atomically and the old one
unloaded (requests in flight finish on the version they started with). A version that fails to load is
retried ``load_retries`` times, then reported as ``END`` with the error while the previous one keeps
serving.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import grpc
from mvke_tf.serving.predict import warm_up
from mvke_tf.serving.servables import LoadedVersion
from mvke_tf.serving.status import echo, invalid, not_found
from tensorflow_serving.apis import get_model_status_pb2

# The server's one logger, whichever module logs: operators and log filters know its records by this name.
log = logging.getLogger("mvke_tf.serving.server")

_VERSION_DIR = re.compile(r"^\d+$")
_State = get_model_status_pb2.ModelVersionStatus.State


def list_versions(base_path: Path) -> list[int]:
    """Numeric version subdirectories holding a SavedModel, ascending."""
    if not base_path.is_dir():
        return []
    out = []
    for d in base_path.iterdir():
        has_model = (d / "saved_model.pb").exists() or (d / "saved_model.pbtxt").exists()
        if _VERSION_DIR.match(d.name) and d.is_dir() and has_model:
            out.append(int(d.name))
    return sorted(out)


def _snapshot(path: Path) -> tuple:
    """(relative path, size, mtime) of every file under ``path``: unchanged across polls = fully written."""
    items = []
    for root, _, files in os.walk(path):
        for f in files:
            p = Path(root) / f
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            items.append((str(p.relative_to(path)), st.st_size, st.st_mtime_ns))
    return tuple(sorted(items))


class ServedModel:
    """One model name: its base path, the loaded (latest) version and every version's status."""

    def __init__(self, name: str, base_path: str | Path, load_retries: int = 5, warmup: bool = True) -> None:
        self.name = name
        self.warmup = warmup
        self.base_path = Path(base_path)
        self.load_retries = load_retries
        self._lock = threading.Lock()
        self._current: LoadedVersion | None = None
        self._status: dict[int, get_model_status_pb2.ModelVersionStatus] = {}
        self._pending: dict[int, tuple] = {}  # version -> snapshot seen at the previous poll
        self._failures: dict[int, tuple[tuple, int]] = {}  # version -> (snapshot, attempts)

    # -- reading (request threads) -----------------------------------------------------------------

    @property
    def current(self) -> LoadedVersion | None:
        return self._current

    def resolve(self, spec: Any) -> LoadedVersion:
        """The loaded version a ``ModelSpec`` asks for, or ``NOT_FOUND``."""
        current = self._current
        which = spec.WhichOneof("version_choice")
        if which == "version":
            v = spec.version.value
            if current is None or current.version != v:
                loaded = f"loaded: {current.version}" if current else "none loaded"
                raise not_found(f"Servable not found for request: Specific({self.name}, {v}) ({loaded})")
            return current
        if which == "version_label":  # no labels are configured (TF Serving: INVALID_ARGUMENT as well)
            label = echo(spec.version_label)[1:-1]
            raise invalid(f"Unrecognized servable version label: {label} (model {self.name})")
        if current is None:
            raise not_found(f"Servable not found for request: Latest({self.name}): no version loaded yet")
        return current

    def statuses(self) -> list[get_model_status_pb2.ModelVersionStatus]:
        with self._lock:
            return [self._status[v] for v in sorted(self._status, reverse=True)]

    # -- loading (poller thread) -------------------------------------------------------------------

    def _set_status(self, version: int, state: int, error: str = "") -> None:
        st = get_model_status_pb2.ModelVersionStatus(version=version, state=state)
        if error:
            st.status.error_code = grpc.StatusCode.UNKNOWN.value[0]
            st.status.error_message = error
        with self._lock:
            self._status[version] = st

    def poll(self, wait_for_stable: bool = True) -> None:
        """Loads the newest version if it differs from the loaded one (and its files are complete)."""
        versions = list_versions(self.base_path)
        current = self._current
        if not versions:
            if current is not None:
                msg = "model %s: no versions under %s; keeping version %d"
                log.warning(msg, self.name, self.base_path, current.version)
            return
        # Newest version that has not failed for good (with unchanged files).
        target = None
        for v in reversed(versions):
            snap = _snapshot(self.base_path / str(v))
            failed = self._failures.get(v)
            if failed and failed[0] == snap and failed[1] > self.load_retries:
                continue
            target = (v, snap)
            break
        if target is None or (current is not None and current.version == target[0]):
            self._pending.clear()
            return
        v, snap = target
        if wait_for_stable and self._pending.get(v) != snap:
            self._pending = {v: snap}  # load on the next poll if nothing changed in between
            return
        self._pending.clear()
        self._load(v, snap)

    def _load(self, version: int, snap: tuple) -> None:
        path = self.base_path / str(version)
        log.info("model %s: loading version %d from %s", self.name, version, path)
        self._set_status(version, _State.LOADING)
        t0 = time.monotonic()
        try:
            loaded = LoadedVersion.load(self.name, version, path)
            if self.warmup and (n := warm_up(loaded)):
                log.info("model %s: version %d warmed up with %d requests", self.name, version, n)
        except Exception as e:  # noqa: BLE001 - any load failure keeps the old version serving
            prev_snap, attempts = self._failures.get(version, (snap, 0))
            attempts = attempts + 1 if prev_snap == snap else 1
            self._failures[version] = (snap, attempts)
            final = attempts > self.load_retries
            log.error(
                "model %s: loading version %d failed (attempt %d of %d): %s",
                self.name,
                version,
                attempts,
                self.load_retries + 1,
                e,
            )
            self._set_status(version, _State.END if final else _State.START, f"Failed to load: {e}")
            return
        self._failures.pop(version, None)
        with self._lock:
            old, self._current = self._current, loaded
        self._set_status(version, _State.AVAILABLE)
        log.info(
            "model %s: version %d AVAILABLE in %.1fs, signatures %s",
            self.name,
            version,
            time.monotonic() - t0,
            sorted(loaded.signatures),
        )
        if old is not None:
            self._set_status(old.version, _State.END)
            log.info("model %s: version %d unloaded", self.name, old.version)

    def unload(self) -> None:
        with self._lock:
            old, self._current = self._current, None
        if old is not None:
            self._set_status(old.version, _State.END)


class ModelRegistry:
    """The served models by name, and the poller thread that keeps them on their newest version."""

    def __init__(
        self,
        models: Mapping[str, str | Path],
        poll_seconds: float = 1.0,
        load_retries: int = 5,
        warmup: bool = True,
    ) -> None:
        if not models:
            raise ValueError("no models to serve: pass at least one name=base_path")
        self.models = {name: ServedModel(name, path, load_retries, warmup) for name, path in models.items()}
        self.poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def get(self, name: str) -> ServedModel:
        try:
            return self.models[name]
        except KeyError:
            raise not_found(
                f"Servable not found for request: Latest({echo(name)[1:-1]}): model {echo(name)} is not served "
                f"(served: {sorted(self.models)})"
            ) from None

    def resolve(self, spec: Any) -> LoadedVersion:
        if not spec.name:
            raise invalid("model_spec.name is required")
        return self.get(spec.name).resolve(spec)

    def load_initial(self) -> None:
        """Loads each model's newest version now (no stability wait); logs models with none."""
        for m in self.models.values():
            m.poll(wait_for_stable=False)
            if m.current is None:
                log.warning("model %s: no loadable version under %s yet; polling", m.name, m.base_path)

    def poll_once(self) -> None:
        for m in self.models.values():
            try:
                m.poll()
            except Exception:  # noqa: BLE001 - the poller must survive anything
                log.exception("model %s: poll failed", m.name)

    def start_polling(self) -> None:
        if self.poll_seconds <= 0 or self._thread is not None:
            return

        def run() -> None:
            while not self._stop.wait(self.poll_seconds):
                self.poll_once()

        self._thread = threading.Thread(target=run, name="model-version-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
