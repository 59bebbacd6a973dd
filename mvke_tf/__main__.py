import sys

from mvke_tf.cli import main

sys.exit(main())
