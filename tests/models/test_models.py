import numpy as np
import pytest
import tensorflow as tf

from mvke_tf.config import ConfigError, FeatureConfig
from mvke_tf.data import synthetic
from mvke_tf.data.dataset import make_dataset
from mvke_tf.export import export_saved_model
from mvke_tf.layers.experts import SoftmaxGate
from mvke_tf.layers.mvke import VirtualKernelExperts, VirtualKernelGate
from mvke_tf.models import USER_TAG_MODEL_NAMES, UserTagConfig, build_model
from mvke_tf.models.fast import FastScorer, score_all_pairs
from mvke_tf.models.interpret import vkg_weights_table

TINY = dict(embedding_dim=8, dnn_units=(16,), top_units=(16, 8), tag_units=(16, 8))
FC = synthetic.feature_config()
TAGS = ["t0_0_0", "t0_1_3", "t3_2_1", "t17_4_19", "t5_0_7", "t9_3_3", "unknown_tag"]


def tiny(model_type, **kw):
    return UserTagConfig(model_type=model_type, **{**TINY, **kw})


@pytest.fixture(scope="module")
def batch(small_data):
    out, _ = small_data
    x, y = next(iter(make_dataset(out / "eval", FeatureConfig.from_yaml(out / "features.yaml"), batch_size=6)))
    return x, y


def expected_s(mc):
    if mc.model_type == "mvke_mt":
        return {t: len(s) for t, s in mc.assignment().items()}
    if mc.model_type == "mvke_st":
        return {t: mc.st_num_kernels for t in mc.tasks}
    return {t: 1 for t in mc.tasks}


@pytest.mark.parametrize("model_type", USER_TAG_MODEL_NAMES)
def test_shapes(model_type, batch):
    x, _ = batch
    mc = tiny(model_type)
    model = build_model(FC, mc)
    y = model(x)
    assert set(y) == {"click", "conversion"} and all(v.shape == (6,) for v in y.values())
    experts = model.user_tower_outputs(x)
    tags = model.tag_tower_outputs(tf.constant(TAGS))
    for t, s in expected_s(mc).items():
        assert experts[t].shape == (6, s, 8)
        e, w = tags[t]
        assert e.shape == (len(TAGS), 8) and w.shape == (len(TAGS), s)
        np.testing.assert_allclose(w.numpy().sum(axis=1), 1.0, rtol=1e-5)


def test_layer_configs_round_trip():
    layers = (
        VirtualKernelExperts(4, activation="tanh", kernel_stddev=0.2),
        VirtualKernelGate("attention", 6),
        VirtualKernelGate("cosine", scale=10.0),
        SoftmaxGate(3),
    )
    for layer in layers:
        clone = type(layer).from_config(layer.get_config())
        assert clone.get_config() == layer.get_config()
    model = build_model(FC, tiny("mvke_mt", gate="attention", score="cosine"))
    clone = type(model).from_config(model.get_config())
    assert clone.model_config == model.model_config and clone.feature_config == model.feature_config


def test_vke_attention_and_residual():
    layer = VirtualKernelExperts(3)
    fields = tf.random.normal([2, 5, 4])
    out = layer(fields)
    assert out.shape == (2, 5, 3, 4)
    att = layer.attention(fields)
    np.testing.assert_allclose(att.numpy().sum(axis=1), 1.0, rtol=1e-5)  # softmax over the fields
    # Reference computation of kernel 1's output.
    v = layer.value(fields).numpy()
    x = att.numpy()[:, :, 1, None] * v + fields.numpy()
    eps = layer.norm.epsilon  # gamma = 1, beta = 0 at initialisation
    ref = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps)
    np.testing.assert_allclose(out[:, :, 1, :].numpy(), ref, rtol=1e-4, atol=1e-5)


def test_vkg_dot_gate_matches_reference():
    gate = VirtualKernelGate("dot")
    tag, kernels = tf.random.normal([3, 4]), tf.random.normal([2, 4])
    ref = tf.nn.softmax(tag @ tf.transpose(kernels), axis=-1)
    np.testing.assert_allclose(gate((tag, kernels)).numpy(), ref.numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="gate='dot' needs"):
        VirtualKernelGate("dot")((tf.zeros([1, 3]), tf.zeros([2, 4])))


def test_vkg_scaled_and_cosine_gates_match_reference():
    tag, kernels = tf.random.normal([3, 4]), tf.random.normal([2, 4])
    dot = tag.numpy() @ kernels.numpy().T
    scaled = VirtualKernelGate("dot", scale=5.0)
    np.testing.assert_allclose(scaled((tag, kernels)).numpy(), tf.nn.softmax(5.0 * dot).numpy(), rtol=1e-5)
    cosine = VirtualKernelGate("cosine", scale=10.0)
    cos = dot / np.outer(np.linalg.norm(tag, axis=1), np.linalg.norm(kernels, axis=1))
    np.testing.assert_allclose(cosine((tag, kernels)).numpy(), tf.nn.softmax(10.0 * cos).numpy(), rtol=1e-5)
    # The scale is learned: one gradient step on a loss that wants sharper weights raises it.
    with tf.GradientTape() as tape:
        w = cosine((tag, kernels))
        loss = -tf.reduce_sum(tf.reduce_max(w, axis=-1))
    (grad,) = tape.gradient(loss, [cosine.log_scale])
    assert float(grad) < 0
    with pytest.raises(ValueError, match="needs a scale"):
        VirtualKernelGate("cosine")
    with pytest.raises(ValueError, match="scale must be > 0"):
        VirtualKernelGate("dot", scale=0.0)


def test_gate_options_in_model_config():
    model = build_model(FC, tiny("mvke_mt", gate="cosine", gate_scale=10, kernel_stddev=0.2))
    kernels = model.user_tower.vke["shared"].virtual_kernels.numpy()
    assert 0.1 < kernels.std() < 0.3  # N(0, 0.2), not the code's N(0, 0.01)
    assert all(g.scale == 10.0 for g in model.gates.values())
    with pytest.raises(ConfigError, match="needs gate_scale"):
        tiny("mvke_mt", gate="cosine")
    with pytest.raises(ConfigError, match="gate_scale='big' must be a number"):
        tiny("mvke_mt", gate_scale="big")
    with pytest.raises(ConfigError, match="kernel_stddev=0.0 must be > 0"):
        tiny("mvke_mt", kernel_stddev=0)


def _pair_scores(model, x, tags):
    """Reference: the full model on every (user, tag) pair, one tag per row."""
    n_u = int(x["gender"].shape[0])
    idx = np.repeat(np.arange(n_u), len(tags))
    feats = {k: tf.gather(v, idx) for k, v in x.items()}
    max_tags = FC.tag_field.max_values
    feats["tags"] = tf.constant([[t] + [""] * (max_tags - 1) for t in tags] * n_u)
    out = model(feats)
    return {t: out[t].numpy().reshape(n_u, len(tags)) for t in model.tasks}


@pytest.mark.parametrize(
    "model_type, options",
    [
        ("mvke_mt", {}),
        ("mvke_mt", {"score": "cosine"}),
        ("mvke_mt", {"gate": "attention", "vke_activation": "tanh"}),
        ("mvke_mt", {"gate": "cosine", "gate_scale": 5.0, "score": "cosine"}),
        ("mvke_st", {"score": "cosine"}),
        ("mmoe", {}),
        ("two_tower", {"score": "cosine"}),
    ],
)
def test_fast_prediction_equals_full_model(model_type, options, batch):
    x, _ = batch
    tf.keras.utils.set_random_seed(3)
    model = build_model(FC, tiny(model_type, **options))
    # Random (non-initial) weights so the gates and scores are far from uniform.
    for v in model.trainable_variables:
        v.assign(tf.random.normal(v.shape, stddev=0.3))
    fast = score_all_pairs(model, x, TAGS)
    full = _pair_scores(model, x, TAGS)
    for t in model.tasks:
        assert fast[t].shape == (6, len(TAGS))
        np.testing.assert_allclose(fast[t], full[t], atol=1e-5, rtol=0)
    scores, idx = FastScorer.from_model(model, TAGS).top_k("click", model.user_tower_outputs(x)["click"], k=3)
    np.testing.assert_allclose(scores, np.sort(full["click"], axis=1)[:, ::-1][:, :3], atol=1e-5)
    assert idx.shape == (6, 3)


@pytest.mark.parametrize("model_type", ["mvke_mt", "mvke_st"])
def test_gradient_reaches_every_virtual_kernel(model_type, batch):
    x, y = batch
    model = build_model(FC, tiny(model_type))
    kernels = [layer.virtual_kernels for layer in model.user_tower.vke.values()]
    with tf.GradientTape() as tape:
        out = model(x, training=True)
        loss = sum(tf.keras.losses.binary_crossentropy(y[t], out[t]) for t in model.tasks)
    grads = tape.gradient(loss, kernels)
    for vk, g in zip(kernels, grads):
        assert g is not None
        assert np.all(np.abs(g.numpy()).sum(axis=1) > 0), f"a kernel of {vk.name} gets no gradient"


def test_assignment_validation():
    with pytest.raises(ConfigError, match="leaves expert\\(s\\) \\[4\\] unused"):
        UserTagConfig(model_type="mvke_mt", expert_assignment=((0, 1), (2, 3)))
    with pytest.raises(ConfigError, match="task 'conversion' holds \\[5\\]"):
        UserTagConfig(model_type="mvke_mt", expert_assignment=((0, 1, 2), (3, 4, 5)))
    with pytest.raises(ConfigError, match="task 'click' is empty"):
        UserTagConfig(model_type="cgc", expert_assignment=((), (0, 1, 2, 3, 4)))
    with pytest.raises(ConfigError, match="2 sets for 1 tasks"):
        UserTagConfig(model_type="mvke_mt", tasks=("click",), expert_assignment=((0, 1, 2), (1, 2, 3, 4)))
    with pytest.raises(ConfigError, match="gate='dot' compares"):
        UserTagConfig(model_type="mvke_mt", embedding_dim=16)
    UserTagConfig(model_type="mvke_mt", embedding_dim=16, gate="attention")  # the paper's gate projects


def test_vkg_weights_table(batch):
    model = build_model(FC, tiny("mvke_mt"))
    table = vkg_weights_table(model, TAGS[:3])
    assert len(table) == 3 * (3 + 4)
    sums = table.groupby(["tag", "task"])["weight"].sum().to_numpy()
    np.testing.assert_allclose(sums, 1.0, rtol=1e-5)
    assert sorted(table[table.task == "conversion"].vke.unique()) == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="no virtual-kernel gates"):
        vkg_weights_table(build_model(FC, tiny("mmoe")), TAGS)


def test_savedmodel_round_trip(batch, tmp_path, small_data):
    x, _ = batch
    model = build_model(FC, tiny("mvke_mt"))
    path = export_saved_model(model, tmp_path / "sm")
    loaded = tf.saved_model.load(str(path))
    assert set(loaded.signatures) == {"serving_default", "user_tower", "tag_tower"}
    # serving_default takes serialized tf.Examples: read the same rows from the TFRecord split.
    out, _ = small_data
    files = sorted(str(p) for p in (out / "eval").glob("*.tfrecord.gz"))
    serialized = next(iter(tf.data.TFRecordDataset(files, compression_type="GZIP").batch(6)))
    got = loaded.signatures["serving_default"](examples=serialized)
    want = model(x)
    for t in model.tasks:
        np.testing.assert_allclose(got[t].numpy(), want[t].numpy(), atol=1e-6)
    user = loaded.signatures["user_tower"](examples=serialized)  # the same contract as serving_default
    tag = loaded.signatures["tag_tower"](tags=tf.constant(TAGS))
    ref_user, ref_tag = model.user_tower_outputs(x), model.tag_tower_outputs(tf.constant(TAGS))
    for t in model.tasks:
        np.testing.assert_allclose(user[f"{t}_experts"].numpy(), ref_user[t].numpy(), atol=1e-6)
        np.testing.assert_allclose(tag[f"{t}_embedding"].numpy(), ref_tag[t][0].numpy(), atol=1e-6)
        np.testing.assert_allclose(tag[f"{t}_gate"].numpy(), ref_tag[t][1].numpy(), atol=1e-6)


def test_fast_prediction_is_a_mips_problem_for_tfrs_bruteforce(batch):
    """The packed tag rows index directly into a TFRS BruteForce top-K layer."""
    import tensorflow_recommenders as tfrs

    from mvke_tf.models.fast import pack_users

    x, _ = batch
    model = build_model(FC, tiny("mvke_mt"))
    scorer = FastScorer.from_model(model, TAGS)
    users = pack_users(model.user_tower_outputs(x)["click"])
    index = tfrs.layers.factorized_top_k.BruteForce(k=3)
    index.index(scorer.tables["click"].packed, tf.constant(TAGS))
    scores, names = index(users)
    want, want_idx = scorer.top_k("click", model.user_tower_outputs(x)["click"], k=3)
    np.testing.assert_allclose(tf.sigmoid(scores + scorer.tables["click"].bias).numpy(), want, atol=1e-5)
    assert [[n.decode() for n in row] for row in names.numpy()] == [[TAGS[i] for i in row] for row in want_idx]
