"""``python -m mvke_tf.cli``: the ``mvke-tf`` command (as ``python -m mvke_tf``)."""

import sys

from mvke_tf.cli import main

sys.exit(main())
