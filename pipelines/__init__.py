"""TFX 1.16 pipeline for mvke-tf: ExampleGen -> Transform -> Trainer -> Evaluator -> Pusher.

Installed as ``mvke_tf.pipelines`` from the repository's ``pipelines/`` folder. The library's own
modules never import it (nor TFX); the environment TFX needs (Keras 2) is set by ``mvke_tf``'s
``__init__``, which Python runs before any module here.
"""
