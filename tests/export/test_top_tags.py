"""The ``top_tags`` signature: exact against ``tag-users`` and brute-force pair scoring (ties included),
``k`` out of range -> ``INVALID_ARGUMENT`` over gRPC, and the client's round trip."""

import dataclasses

import grpc
import numpy as np
import pytest
import tensorflow as tf
from model_helpers import randomize_weights
from mvke_tf.serving.client import ServingClient, ServingError
from mvke_tf.serving.server import ModelServer

from mvke_tf import tagging
from mvke_tf.data import synthetic
from mvke_tf.export import export_saved_model
from mvke_tf.export.describe import non_standard_ops
from mvke_tf.export.examples import dummy_rows, examples_from_rows
from mvke_tf.export.warmup import read_warmup_requests
from mvke_tf.models import UserTagConfig, build_model

# Three user fields (one of each kind) and 64 tag buckets: a quick export, and tags that share a bucket.
_FULL = synthetic.feature_config()
FC = dataclasses.replace(
    _FULL,
    user_fields=[f for f in _FULL.user_fields if f.name in ("gender", "clicked_tags_30d", "avg_ctr_7d")],
    tag_field=dataclasses.replace(_FULL.tag_field, hash_buckets=64),
)
CFG = synthetic.SyntheticConfig(num_rows=40, num_users=8, num_ads=10, taxonomy=(2, 2, 2), seed=5)
TASKS = ("click", "conversion")


def _colliding_tags(model, n=200):
    """Two distinct made-up tags the tag tower cannot tell apart (they share a hash bucket): an exact tie."""
    names = [f"zz{i}" for i in range(n)]
    out = model.tag_tower_outputs(tf.constant(names))["click"][0].numpy()
    seen = {}
    for name, row in zip(names, out):
        key = row.tobytes()
        if key in seen:
            return [seen[key], name]
        seen[key] = name
    raise AssertionError("no two made-up tags share a bucket")


def _users():
    """Serialized user examples: six made-up users and one with no feature at all."""
    return [*examples_from_rows(dummy_rows(FC, 6, user_only=True), FC), tf.train.Example().SerializeToString()]


# The cosine score runs another code path (FastScorer + top_k, not TFRS BruteForce): a second export, ~2 min
# on a busy machine, so it runs with the slow tests (make test-slow).
@pytest.fixture(scope="module", params=["dot", pytest.param("cosine", marks=pytest.mark.slow)])
def export(request, tmp_path_factory):
    """A tiny MVKE-mt export with random weights, its vocabulary (two tied tags, one tag listed twice), and
    the export loaded as ``tag-users`` loads it."""
    root = tmp_path_factory.mktemp(f"top_tags_{request.param}")
    tf.keras.utils.set_random_seed(7)
    config = UserTagConfig(model_type="mvke_mt", score=request.param).scaled(0.25)
    model = build_model(FC, config)
    randomize_weights(model, seed=7, stddev=0.2)
    tied = _colliding_tags(model)
    leaves = synthetic.all_tags(CFG)
    vocabulary = [leaves[0], tied[0], *leaves[1:], tied[1], leaves[2]]  # leaves[2] twice: dropped once
    # The default top_tags_max_k (100) is capped at the 10 distinct tags.
    export_saved_model(model, root / "1", feature_config=FC, tags=vocabulary)
    distinct = list(dict.fromkeys(vocabulary))
    assert len(distinct) == len(vocabulary) - 1
    tm = tagging.TaggingModel(root / "1")
    return {"dir": root / "1", "base": root, "tags": distinct, "tied": tied, "score": request.param, "tm": tm}


def test_top_tags_equals_tag_users_and_brute_force_pair_scoring(export):
    users = _users()
    tags = export["tags"]
    k = len(tags)  # every tag: both tied tags in every row
    signatures = export["tm"].loaded.signatures
    got = signatures["top_tags"](examples=tf.constant(users), k=tf.constant(k, tf.int32))
    tagger = tagging.TopKTagger(export["tm"], tags, k)
    want = tagger(users)
    # Brute force: every user x tag pair through the model's own pair scoring.
    pairs = []
    for ex in users:
        for tag in tags:
            e = tf.train.Example.FromString(ex)
            e.features.feature["tags"].bytes_list.value[:] = [tag.encode()]
            pairs.append(e.SerializeToString())
    brute = signatures["serving_default"](examples=tf.constant(pairs))
    for t in TASKS:
        names = [[n.decode() for n in row] for row in got[f"{t}_tags"].numpy()]
        scores = got[f"{t}_scores"].numpy()
        assert scores.shape == (len(users), k)
        want_scores, want_idx = want[t]
        assert names == [[tags[i] for i in row] for row in want_idx]
        np.testing.assert_array_equal(scores, want_scores)
        probs = brute[t].numpy().reshape(len(users), len(tags))
        # Stable sort by descending probability: equal scores keep the vocabulary order (lower index first).
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        np.testing.assert_allclose(scores, np.take_along_axis(probs, order, axis=1), atol=1e-5)
        assert [[tags[i] for i in row] for row in order] == names or _ties_only(probs, order, names, tags)
        # The tied tags: equal scores, the one earlier in the vocabulary first (as tag-users orders them).
        first, second = export["tied"]
        assert tags.index(first) < tags.index(second)
        for row, row_scores in zip(names, scores):
            i, j = row.index(first), row.index(second)
            assert i < j and row_scores[i] == row_scores[j]


def _ties_only(probs, order, names, tags, atol=1e-6):
    """Whether the rankings differ only where the brute-force probabilities tie (to float rounding)."""
    for u, row in enumerate(names):
        got = np.array([probs[u, tags.index(n)] for n in row])
        np.testing.assert_allclose(got, probs[u, order[u]], atol=atol)
    return True


def test_export_is_standard_ops_and_warms_up_top_tags(export):
    assert non_standard_ops(export["dir"]) == set()
    names = [r.predict_log.request.model_spec.signature_name for r in read_warmup_requests(export["dir"])]
    assert "top_tags" in names


def test_k_out_of_range_is_invalid_argument_over_grpc_and_client_round_trip(export):
    if export["score"] != "dot":
        pytest.skip("the serving path does not depend on the score")
    users = _users()
    server = ModelServer({"mvke": export["base"]}, port=0, poll_seconds=0, warmup=True)
    with server.start(), ServingClient(server.target, "mvke", timeout=30) as client:
        client.wait_until_available(60)
        got = client.top_tags(users, 3, max_batch=4)  # split into two requests, k sent with each
        want = tagging.TopKTagger(export["tm"], export["tags"], 3)(users)
        for t in TASKS:
            tags, scores = got[t]
            assert tags.shape == scores.shape == (len(users), 3)
            assert tags.tolist() == [[export["tags"][i] for i in row] for row in want[t][1]]
            np.testing.assert_allclose(scores, want[t][0], atol=1e-6)
        for bad in (0, 11, -1):
            with pytest.raises(ServingError) as err:
                client.top_tags(users, bad)
            assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT, err.value
            assert "k must be between 1 and 10" in err.value.details
