"""The vocabulary of the ``top_tags`` signature, read as ``mvke-tf tag-users`` reads its tags.

The signature itself is the user-tag family's (:mod:`mvke_tf.models.top_tags`, built by
:meth:`mvke_tf.models.families.UserTagFamily.serving_signatures`), which resolves the vocabulary it is given
(a list, a file or a data directory) with :func:`mvke_tf.data.tag_vocabulary.resolve_tag_vocabulary`, the
readers of ``tag-users``. This module keeps the names the export and the pipeline import from here.
"""

from __future__ import annotations

from mvke_tf.data.tag_vocabulary import TagVocabulary, resolve_tag_vocabulary
from mvke_tf.models.top_tags import DEFAULT_TOP_TAGS_MAX_K, K_INPUT, TOP_TAGS

__all__ = ["DEFAULT_TOP_TAGS_MAX_K", "K_INPUT", "TOP_TAGS", "TagVocabulary", "resolve_tag_vocabulary"]
