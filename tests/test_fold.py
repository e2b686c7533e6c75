"""The extension's copy of a model has its batch norms folded into the convs
(converter/fold.py): fewer TF.js ops per captcha, the same answers."""
from __future__ import annotations

import numpy as np

from captchalens._tf import keras
from captchalens.contract import KERAS_FILE
from captchalens.converter.fold import fold_batchnorm

L = keras.layers


def _randomize_batchnorms(model, seed):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            w = layer.get_weights()
            n = w[0].shape[0]
            new = [rng.uniform(0.5, 2.0, n) if i == 0 and layer.scale else rng.normal(0, 0.5, n)
                   for i in range(len(w) - 2)]
            layer.set_weights([*new, rng.normal(0, 0.5, n), rng.uniform(0.2, 3.0, n)])


def _same(a, b, x):
    return np.abs(a(x, training=False).numpy() - b(x, training=False).numpy()).max()


def test_a_trained_model_loses_its_batch_norms_and_keeps_its_answers(tiny_model):
    model = keras.models.load_model(tiny_model / KERAS_FILE, compile=False)
    folded, n = fold_batchnorm(model)
    assert n == sum(isinstance(layer, L.BatchNormalization) for layer in model.layers) > 0
    assert not any(isinstance(layer, (L.BatchNormalization, L.ReLU)) for layer in folded.layers)
    x = np.random.default_rng(1).random((16, *model.input_shape[1:]), np.float32)
    assert _same(model, folded, x) < 1e-5


def test_every_kind_of_layer_before_a_batch_norm_is_folded():
    inp = L.Input((12, 20, 3))
    x = L.Conv2D(8, 3, padding="same", use_bias=True)(inp)
    x = L.BatchNormalization(center=False)(x)
    x = L.ReLU()(x)
    x = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", use_bias=False)(x)
    x = L.BatchNormalization()(x)
    x = L.SeparableConv2D(6, 3, padding="same", use_bias=False)(x)
    x = L.BatchNormalization()(x)
    x = L.ReLU(max_value=6.0)(x)  # not a plain ReLU: stays a layer of its own
    x = L.Reshape((12 * 20, 6))(x)
    x = L.Conv1D(5, 3, padding="same", use_bias=False)(x)
    x = L.BatchNormalization(scale=False)(x)
    x = L.Flatten()(x)
    x = L.Dense(7)(x)
    x = L.BatchNormalization()(x)
    out = L.Softmax()(x)
    model = keras.Model(inp, out)
    _randomize_batchnorms(model, seed=2)
    folded, n = fold_batchnorm(model)
    assert n == 5
    kinds = [type(layer).__name__ for layer in folded.layers]
    assert "BatchNormalization" not in kinds and kinds.count("ReLU") == 1
    x = np.random.default_rng(3).normal(size=(8, 12, 20, 3)).astype(np.float32)
    assert _same(model, folded, x) < 1e-5


def test_a_model_that_is_not_a_chain_is_left_as_it_is():
    inp = L.Input((8, 8, 2))
    a = L.BatchNormalization()(L.Conv2D(2, 3, padding="same")(inp))
    out = L.Add()([a, inp])
    model = keras.Model(inp, out)
    assert fold_batchnorm(model) == (model, 0)
