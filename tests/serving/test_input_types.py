"""The typing rule for a model's inputs: a client's examples rewritten to the types the export parses."""

import pytest
import tensorflow as tf

from mvke_tf.config import CATEGORICAL, MULTI_VALUED, NUMERIC, FeatureConfig, FieldSpec
from mvke_tf.export.input_types import (
    library_input_types,
    read_input_types,
    retype_examples,
    spec_input_types,
    write_input_types,
)

FC = FeatureConfig(
    user_fields=(FieldSpec("age", CATEGORICAL, hash_buckets=8), FieldSpec("spend", NUMERIC, boundaries=(1.0,))),
    tag_field=FieldSpec("genres", MULTI_VALUED, hash_buckets=8, max_values=3),
    labels=("liked",),
    user_id="member",
)


def _example(**columns) -> bytes:
    f = {}
    for name, values in columns.items():
        if isinstance(values[0], bytes):
            f[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
        elif isinstance(values[0], float):
            f[name] = tf.train.Feature(float_list=tf.train.FloatList(value=values))
        else:
            f[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=values))
    return tf.train.Example(features=tf.train.Features(feature=f)).SerializeToString()


def test_ids_and_numbers_come_either_way(tmp_path):
    # A pipeline model trained on CSV: age INT, spend INT (whole amounts), genres one joined string per row.
    spec = {
        "age": tf.io.FixedLenFeature([], tf.int64),
        "spend": tf.io.VarLenFeature(tf.float32),
        "genres": tf.io.FixedLenFeature([], tf.string),
    }
    types = spec_input_types(spec, FC)
    assert types == {
        "age": {"dtype": "int64"},
        "genres": {"dtype": "string", "joined": "|"},
        "spend": {"dtype": "float32"},
    }
    write_input_types(tmp_path, types)
    assert read_input_types(tmp_path) == types and read_input_types(tmp_path / "none") is None
    client = _example(age=[b"25"], spend=[3], genres=[b"drama", b"docs"], member=[7])
    (out,) = retype_examples([client], types)
    parsed = tf.io.parse_single_example(out, spec)
    assert int(parsed["age"]) == 25 and parsed["genres"].numpy() == b"drama|docs"
    assert parsed["spend"].values.numpy().tolist() == [3.0]
    assert retype_examples([out], types) == [out]  # already right: the same bytes
    # The library's export: ids as strings, numbers as floats.
    (lib,) = retype_examples([_example(age=[25], spend=[3])], library_input_types(FC))
    parsed = tf.io.parse_single_example(lib, {"age": tf.io.FixedLenFeature([], tf.string)})
    assert parsed["age"].numpy() == b"25"
    with pytest.raises(ValueError, match=r"column age: 'twenty' is not an integer id.*fix: send an integer id"):
        retype_examples([_example(age=[b"twenty"])], types)


def test_the_client_sends_examples_in_the_types_the_served_model_parses(tmp_path):
    """Over gRPC: the tiny model parses ``x`` as a float; a client holding ``x`` as an integer is answered
    once it knows the export's input types, and is refused (INVALID_ARGUMENT) without them."""
    import grpc
    from mvke_tf.serving.client import ServingClient, ServingError
    from mvke_tf.serving.server import ModelServer
    from tiny_servable import export_tiny

    base = export_tiny(tmp_path / "tiny")
    write_input_types(base / "1", {"x": {"dtype": "float32"}})
    as_int = [_example(x=[3]), _example(x=[-2])]
    server = ModelServer({"tiny": base}, port=0, poll_seconds=0, warmup=False).start()
    try:
        with ServingClient(server.target, "tiny", retries=0, timeout=20, input_types=base / "1") as typed:
            assert typed.score(as_int)["y"].tolist() == [6.0, -4.0]
        with ServingClient(server.target, "tiny", retries=0, timeout=20) as plain:
            with pytest.raises(ServingError) as err:
                plain.score(as_int)
            assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        server.stop(0)
    with pytest.raises(ValueError, match=r"no assets.extra/input_types.json there; fix: give the export's version"):
        ServingClient("localhost:1", "tiny", input_types=tmp_path)
