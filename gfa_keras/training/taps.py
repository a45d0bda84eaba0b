"""Which layer inputs GFA aligns ("taps"), and the model that exposes them.

A tap is the input h_l of a layer l. `resolve_tapped_layers` turns the user's
`layers=` argument into layer names; `build_feature_extractor` builds one
multi-output model `x -> [h_1, ..., h_N, y_pred]` over the SAME layer objects
(weights shared), as a fresh graph: tapping through `layer.input` would reuse the
graph nodes from the model's first call, which go stale after `load_model` (the
gradient through them comes back None).
"""
from __future__ import annotations

import keras
# Public API has no Functional class to test against; clone_model itself uses this one.
from keras.src.models.functional import Functional

__all__ = [
    "MODEL_INPUT",
    "is_graph_model",
    "weighted_layers",
    "resolve_tapped_layers",
    "build_feature_extractor",
]

# The tap name for "the model's own input", used for subclassed models, which have
# no layer graph to walk.
MODEL_INPUT = "model_input"

# Layers that carry trainable weights but are not the paper's "weighted layers":
# normalisation rescales features, it does not mix them.
_NORMALIZATION_TYPES = (
    keras.layers.BatchNormalization,
    keras.layers.LayerNormalization,
    keras.layers.GroupNormalization,
    keras.layers.UnitNormalization,
)


def is_graph_model(model) -> bool:
    """True for Sequential and Functional models (those with a walkable layer graph)."""
    return isinstance(model, (keras.Sequential, Functional))


def weighted_layers(model) -> list:
    """The model's top-level layers that carry trainable weights, in graph order,
    normalisation layers excluded."""
    return [
        layer
        for layer in model.layers
        if layer.trainable_weights and not isinstance(layer, _NORMALIZATION_TYPES)
    ]


def resolve_tapped_layers(model, layers) -> tuple:
    """Turns `layers=` (an int N, or names / layer objects) into a tuple of layer names.

    Args:
        model: A built Keras model.
        layers: N > 0 for the inputs of the first N weighted layers (N=1 is the input
            image itself, the paper's FIRST; N=3 the paper's DEEP), or a list of layer
            names or layer objects of `model`.

    Returns:
        The tapped layer names, in graph order for graph models.

    Raises:
        ValueError: For N out of range, unknown names, duplicates, or inner layers of a
            subclassed model.
    """
    graph = is_graph_model(model)
    if isinstance(layers, bool) or not isinstance(layers, (int, list, tuple)):
        raise ValueError(
            "`layers` must be a positive int or a list of layer names or layer objects. "
            f"Received: layers={layers!r}"
        )
    if isinstance(layers, int):
        if layers <= 0:
            raise ValueError(f"`layers` must be at least 1. Received: layers={layers}")
        if not graph:
            if layers != 1:
                raise ValueError(
                    f"Model '{model.name}' is a subclassed model: it has no layer graph, so only its "
                    "input can be tapped. Expected layers=1 (alignment at the input image), or rebuild "
                    f"the model with the Functional or Sequential API. Received: layers={layers}"
                )
            return (MODEL_INPUT,)
        candidates = weighted_layers(model)
        if layers > len(candidates):
            raise ValueError(
                f"`layers` asks for more weighted layers than model '{model.name}' has. Expected at "
                f"most {len(candidates)} ({[layer.name for layer in candidates]}). Received: layers={layers}"
            )
        return tuple(layer.name for layer in candidates[:layers])

    if not layers:
        raise ValueError("`layers` must name at least one layer. Received: layers=[]")
    names = [layer.name if isinstance(layer, keras.layers.Layer) else layer for layer in layers]
    if not all(isinstance(name, str) for name in names):
        raise ValueError(
            f"`layers` must hold layer names or layer objects. Received: layers={layers!r}"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"`layers` names a layer twice. Received: layers={names}")
    if not graph:
        if names != [MODEL_INPUT]:
            raise ValueError(
                f"Model '{model.name}' is a subclassed model: it has no layer graph, so the inputs of "
                f"its inner layers cannot be tapped. Expected layers=1 or layers=['{MODEL_INPUT}'], or "
                f"rebuild the model with the Functional or Sequential API. Received: layers={names}"
            )
        return (MODEL_INPUT,)
    # An InputLayer is never "called", so it has no input to tap.
    existing = [layer.name for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    unknown = [name for name in names if name not in existing]
    if unknown:
        raise ValueError(
            f"No such layer: {unknown[0]}. Existing layers are: {existing}. Received: layers={names}"
        )
    by_name = {layer.name: layer for layer in model.layers if layer.name in existing}
    for given, name in zip(layers, names):
        if isinstance(given, keras.layers.Layer) and given is not by_name[name]:
            raise ValueError(
                f"Layer object '{name}' does not belong to model '{model.name}'. "
                f"Existing layers are: {existing}"
            )
    # Keep graph order whatever order the user gave.
    return tuple(name for name in existing if name in names)


def build_feature_extractor(model, tapped_layers) -> keras.Model:
    """A model `x -> [h_1, ..., h_N, y_pred]` sharing `model`'s layers.

    Raises:
        ValueError: If a tapped layer is called more than once, takes several inputs, or
            takes a non-floating (not differentiable) input.
    """
    if tuple(tapped_layers) == (MODEL_INPUT,) and not is_graph_model(model):
        raise ValueError("Subclassed models are tapped at their input; they need no feature extractor.")
    wanted = set(tapped_layers)
    taps = {}

    def record(layer, *args, **kwargs):
        if layer.name in wanted:
            if layer.name in taps:
                raise ValueError(
                    f"Layer '{layer.name}' is called more than once in model '{model.name}', so its "
                    "input is ambiguous. Expected a layer that is called once."
                )
            if len(args) != 1 or not isinstance(args[0], keras.KerasTensor):
                raise ValueError(
                    f"Layer '{layer.name}' takes several inputs; GFA taps layers with one input tensor."
                )
            taps[layer.name] = args[0]
        return layer(*args, **kwargs)

    if isinstance(model, keras.Sequential):
        inputs = [keras.Input(batch_shape=t.shape, dtype=t.dtype, name=t.name) for t in model.inputs]
        h = inputs[0]
        for layer in model.layers:
            h = record(layer, h)
        outputs = h
    else:
        clone = keras.models.clone_model(model, clone_function=lambda layer: layer, call_function=record)
        inputs, outputs = clone.inputs, clone.outputs
        outputs = outputs[0] if len(outputs) == 1 else outputs

    for name in tapped_layers:
        dtype = keras.backend.standardize_dtype(taps[name].dtype)
        if "float" not in dtype:
            raise ValueError(
                f"The input of layer '{name}' is not differentiable (dtype {dtype}): GFA needs the loss "
                "gradient with respect to it. Tap layers after any Embedding or integer input. "
                f"Received: layers={list(tapped_layers)}"
            )
    features = [taps[name] for name in tapped_layers]
    return keras.Model(inputs, [features, outputs], name=f"{model.name}_gfa_taps")
