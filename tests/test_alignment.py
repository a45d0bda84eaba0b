"""The GFA penalty against an independent NumPy computation."""
import numpy as np
import pytest
import tensorflow as tf

from gfa_keras.training.alignment import alignment_penalty, gradient_feature_alignment

RNG = np.random.default_rng(7)
G1 = RNG.normal(size=(4, 3, 2)).astype("float32")
H1 = RNG.normal(size=(4, 3, 2)).astype("float32")
G2 = RNG.normal(size=(4, 5)).astype("float32")
H2 = RNG.normal(size=(4, 5)).astype("float32")


def numpy_cosines(g, h, eps=1e-12):
    g = g.reshape(len(g), -1).astype("float64")
    h = h.reshape(len(h), -1).astype("float64")
    return (g * h).sum(1) / (np.linalg.norm(g, axis=1) * np.linalg.norm(h, axis=1) + eps)


def test_cosine_matches_numpy_per_example():
    got = np.asarray(gradient_feature_alignment(G1, H1))
    np.testing.assert_allclose(got, numpy_cosines(G1, H1), rtol=1e-5, atol=1e-6)


def test_cosine_is_one_for_parallel_and_minus_one_for_antiparallel():
    got = np.asarray(gradient_feature_alignment(np.stack([2 * H2[0], -3 * H2[1]]), H2[:2]))
    np.testing.assert_allclose(got, [1.0, -1.0], atol=1e-6)


def test_penalty_and_per_layer_alignment_match_numpy():
    penalty, alignments = alignment_penalty([G1, G2], [H1, H2])
    c1, c2 = numpy_cosines(G1, H1), numpy_cosines(G2, H2)
    np.testing.assert_allclose(float(penalty), np.mean((1 - c1) + (1 - c2)), rtol=1e-5)
    np.testing.assert_allclose([float(a) for a in alignments], [c1.mean(), c2.mean()], rtol=1e-5, atol=1e-6)


def test_sample_weight_gives_a_weighted_mean():
    w = np.array([1.0, 0.0, 2.0, 1.0], "float32")
    penalty, alignments = alignment_penalty([G2], [H2], sample_weight=w)
    c = numpy_cosines(G2, H2)
    np.testing.assert_allclose(float(penalty), np.sum((1 - c) * w) / w.sum(), rtol=1e-5)
    np.testing.assert_allclose(float(alignments[0]), np.sum(c * w) / w.sum(), rtol=1e-5)


def test_zero_gradient_or_feature_gives_zero_cosine_and_finite_second_order_gradient():
    h = tf.Variable(np.concatenate([np.zeros((1, 5)), H2[1:2]]).astype("float32"))
    g = tf.Variable(np.concatenate([G2[:1], np.zeros((1, 5))]).astype("float32"))
    with tf.GradientTape() as tape:
        penalty, _ = alignment_penalty([g], [h])
    cos = gradient_feature_alignment(g, h).numpy()
    np.testing.assert_array_equal(cos, [0.0, 0.0])
    for grad in tape.gradient(penalty, [g, h]):
        assert np.all(np.isfinite(grad.numpy()))


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="same shape"):
        gradient_feature_alignment(G1, H2)
    with pytest.raises(ValueError, match="one gradient per feature"):
        alignment_penalty([G1], [H1, H2])
    with pytest.raises(ValueError, match="one gradient per feature"):
        alignment_penalty([], [])
