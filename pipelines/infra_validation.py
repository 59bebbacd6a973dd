"""``CppInfraValidator``: blesses only a model that TensorFlow's C++ runtime loads and answers.

TFX's ``InfraValidator`` starts TF Serving in Docker or Kubernetes, which a local run may not have.
This component stands in its place before the Pusher: it loads the trained SavedModel with the C API's
``TF_LoadSessionFromSavedModel`` (the loader TF Serving uses, :mod:`mvke_tf.serving.capi`), runs every
signature on the export's own warm-up requests, compares the outputs with Python's, and writes the
``InfraBlessing`` the Pusher takes, as the stock InfraValidator does (``INFRA_BLESSED`` or
``INFRA_NOT_BLESSED`` in the artifact directory, the ``blessed`` custom property). A model Python
serves but the C++ runtime cannot -- a ``tf.py_function``, an op outside the C++ library -- is not
blessed, the Pusher pushes nothing and the versions already pushed stay; the reason is one line in
the artifact's ``reason`` property and in the run's report.
"""

import os

from absl import logging
from tfx import v1 as tfx
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact
from tfx.utils import io_utils, path_utils

BLESSED_FILE = "INFRA_BLESSED"  # the names TFX's InfraValidator writes
NOT_BLESSED_FILE = "INFRA_NOT_BLESSED"
REASON = "reason"  # custom property: why the model was not blessed, or what was checked


@tfx.dsl.components.component
def CppInfraValidator(  # noqa: N802 - TFX component naming
    model: InputArtifact[tfx.types.standard_artifacts.Model],
    blessing: OutputArtifact[tfx.types.standard_artifacts.InfraBlessing],
) -> None:
    """Runs every signature of the model in the C++ runtime; blesses it when all answer as in Python."""
    from mvke_tf.serving.capi import CAPIError, check_export

    export_dir = path_utils.serving_model_path(model.uri, path_utils.is_old_model_artifact(model))
    try:
        report = check_export(export_dir)
    except CAPIError as e:
        reason = str(e).splitlines()[0]
        logging.warning("CppInfraValidator: not blessed: %s", reason)
        io_utils.write_string_file(os.path.join(blessing.uri, NOT_BLESSED_FILE), reason)
        blessing.set_int_custom_property("blessed", 0)
        blessing.set_string_custom_property(REASON, reason)
        return
    worst = max(report.max_abs_diff.values(), default=0.0)
    checked = f"{len(report.requests)} signature(s) answer as in Python (largest difference {worst:.1g})"
    logging.info("CppInfraValidator: blessed: %s", checked)
    io_utils.write_string_file(os.path.join(blessing.uri, BLESSED_FILE), checked)
    blessing.set_int_custom_property("blessed", 1)
    blessing.set_string_custom_property(REASON, checked)
