"""Which layer inputs GFA aligns ("taps"), and the model that exposes them.

A tap is the input h_l of a layer l. Taps reach into nested models: a backbone
inside a classifier (`keras.Model(i, Dense(10)(backbone(i)))`), a KerasHub backbone
inside its task model. Every Functional or Sequential model met while walking the
graph is expanded into its own layers (unless it overrides `call`, in which case its
graph is not what runs), and a layer inside it is named by its path, e.g.
`"resnet50v2/conv1_conv"`; top-level layers keep their plain names. A nested model's
own name taps its input.

`resolve_tapped_layers` turns the user's `layers=` argument into such paths;
`build_feature_extractor` builds one multi-output model `x -> [h_1, ..., h_N, y_pred]`
over the SAME layer objects (weights shared), as a fresh graph: tapping through
`layer.input` would reuse the graph nodes from the model's first call, which go
stale after `load_model` (the gradient through them comes back None).
"""
from __future__ import annotations

import dataclasses
import weakref

import keras
from keras import tree
# Public API has no Functional class to test against; clone_model itself uses this one.
from keras.src.models.functional import Functional

__all__ = [
    "MODEL_INPUT",
    "SEPARATOR",
    "is_graph_model",
    "layer_paths",
    "weighted_layers",
    "resolve_tapped_layers",
    "build_feature_extractor",
]

# The tap name for "the model's own input", used for subclassed models, which have
# no layer graph to walk.
MODEL_INPUT = "model_input"

# Joins a nested model's name and the name of a layer inside it.
SEPARATOR = "/"

# Layers that carry weights but are not the paper's "weighted layers": normalisation
# rescales features, it does not mix them.
_NORMALIZATION_TYPES = (
    keras.layers.BatchNormalization,
    keras.layers.LayerNormalization,
    keras.layers.GroupNormalization,
    keras.layers.UnitNormalization,
    keras.layers.Normalization,
)


def is_graph_model(model) -> bool:
    """True for Sequential and Functional models (those with a walkable layer graph)."""
    return isinstance(model, (keras.Sequential, Functional))


def _expandable(layer) -> bool:
    """A nested model whose call runs its layer graph, so its layers can be tapped."""
    if isinstance(layer, keras.Sequential):
        return type(layer).call is keras.Sequential.call
    return isinstance(layer, Functional) and type(layer).call is Functional.call


def _is_weighted(layer) -> bool:
    # Plain operations (`x + y` on symbolic tensors) appear in the graph but have no weights.
    if not isinstance(layer, keras.layers.Layer) or isinstance(layer, _NORMALIZATION_TYPES) \
            or _expandable(layer):
        return False
    # A frozen layer (transfer learning) has no trainable weights but is still a
    # weighted layer whose input can be aligned.
    return bool(layer.trainable_weights) if layer.trainable else bool(layer.weights)


@dataclasses.dataclass
class _Call:
    path: str
    layer: object
    args: tuple
    outputs: list
    nested: bool


class _Trace:
    """The model's graph rebuilt on fresh inputs, every nested graph model expanded.

    Attributes:
        inputs: Fresh `keras.Input`s shaped like the model's inputs.
        outputs: The rebuilt output (one tensor, or a structure for several outputs).
        calls: One `_Call` per layer call, in call (topological) order; nested models
            appear as a call too (`nested=True`), before their own layers.
        live: The calls the outputs depend on.
    """

    def __init__(self, model):
        self.calls = []
        self.inputs = [keras.Input(batch_shape=t.shape, dtype=t.dtype, name=t.name) for t in model.inputs]
        self.outputs = self._run(model, self.inputs, prefix="")
        reachable = _ancestors(tree.flatten(self.outputs))
        self.live = [c for c in self.calls if any(id(t) in reachable for t in c.outputs)]

    def _run(self, model, inputs, prefix):
        if isinstance(model, keras.Sequential):
            h = inputs[0] if len(inputs) == 1 else inputs
            for layer in model.layers:
                h = self._call(layer, prefix, (h,), {})
            return h
        result = model._run_through_graph(
            inputs, call_fn=lambda op, *args, **kwargs: self._call(op, prefix, args, kwargs))
        flat = tree.flatten(result)
        return flat[0] if len(flat) == 1 else result

    def _call(self, layer, prefix, args, kwargs):
        path = prefix + layer.name
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        if _expandable(layer) and set(kwargs) <= {"training"}:
            # An explicit `training=` on the nested call is dropped: Keras 3 itself
            # overrides it with the outer model's `training` (functional.operation_fn).
            call = _Call(path, layer, args, [], nested=True)
            self.calls.append(call)
            outputs = self._run(layer, tree.flatten(args), prefix=path + SEPARATOR)
        else:
            call = _Call(path, layer, args, [], nested=False)
            self.calls.append(call)
            outputs = layer(*args, **kwargs)
        call.outputs = tree.flatten(outputs)
        return outputs


# One trace per model: resolving the taps and building the extractor walk the same graph
# (a Functional graph cannot change once built), and a ResNet50's walk takes about a second.
_TRACES = weakref.WeakKeyDictionary()


def _trace(model) -> _Trace:
    trace = _TRACES.get(model)
    if trace is None:
        trace = _TRACES[model] = _Trace(model)
    return trace


def _ancestors(outputs) -> set:
    """ids of every symbolic tensor that `outputs` are computed from."""
    seen, stack = set(), list(outputs)
    while stack:
        t = stack.pop()
        if id(t) in seen or not isinstance(t, keras.KerasTensor):
            continue
        seen.add(id(t))
        history = getattr(t, "_keras_history", None)
        if history is None:
            continue
        node = history.operation._inbound_nodes[history.node_index]
        stack.extend(node.input_tensors)
    return seen


def _tappable_paths(trace):
    """Every path a tap may name, in call order (InputLayers are never called; plain
    operations such as `x + y` are not layers)."""
    return list(dict.fromkeys(c.path for c in trace.calls if isinstance(c.layer, keras.layers.Layer)
                              and not isinstance(c.layer, keras.layers.InputLayer)))


def layer_paths(model) -> list:
    """The names `layers=` accepts for `model`: top-level layer names, and
    `"<nested model>/<layer>"` paths for layers inside nested models, in call order.

    Example:

    >>> inputs = keras.Input((4,))
    >>> backbone = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d")],
    ...                             name="backbone")
    >>> model = keras.Model(inputs, keras.layers.Dense(2, name="head")(backbone(inputs)))
    >>> layer_paths(model)
    ['backbone', 'backbone/d', 'head']
    """
    if not is_graph_model(model):
        return [MODEL_INPUT]
    return _tappable_paths(_trace(model))


def weighted_layers(model) -> list:
    """The paths of the layers with weights (normalisation excluded) that the model's
    output depends on, in call order, reaching into nested models."""
    return list(dict.fromkeys(c.path for c in _trace(model).live if _is_weighted(c.layer)))


def resolve_tapped_layers(model, layers) -> tuple:
    """Turns `layers=` (an int N, or names / layer objects) into a tuple of layer paths.

    Args:
        model: A built Keras model.
        layers: N > 0 for the inputs of the first N weighted layers, counted through
            nested models in call order (N=1 is the input image itself, the paper's
            FIRST; N=3 the paper's DEEP), or a list of layer names (a layer inside a
            nested model by its path, `"backbone/conv1"`) or layer objects of `model`.

    Returns:
        The tapped layer paths, in call order for graph models.

    Raises:
        ValueError: For N out of range, unknown names (the error lists the valid ones),
            duplicates, layers the output does not depend on, or inner layers of a
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
                f"most {len(candidates)} ({candidates}). Received: layers={layers}"
            )
        return tuple(candidates[:layers])

    if not layers:
        raise ValueError("`layers` must name at least one layer. Received: layers=[]")
    if not all(isinstance(layer, (str, keras.layers.Layer)) for layer in layers):
        raise ValueError(
            f"`layers` must hold layer names or layer objects. Received: layers={layers!r}"
        )
    if not graph:
        names = [layer.name if isinstance(layer, keras.layers.Layer) else layer for layer in layers]
        if names != [MODEL_INPUT]:
            raise ValueError(
                f"Model '{model.name}' is a subclassed model: it has no layer graph, so the inputs of "
                f"its inner layers cannot be tapped. Expected layers=1 or layers=['{MODEL_INPUT}'], or "
                f"rebuild the model with the Functional or Sequential API. Received: layers={names}"
            )
        return (MODEL_INPUT,)

    trace = _trace(model)
    existing = _tappable_paths(trace)
    names = []
    for given in layers:
        if isinstance(given, str):
            names.append(given)
            continue
        paths = [c.path for c in trace.calls if c.layer is given]
        if not paths:
            raise ValueError(
                f"Layer object '{given.name}' does not belong to model '{model.name}'. "
                f"Existing layers are: {existing}"
            )
        names.append(paths[0])
    if len(set(names)) != len(names):
        raise ValueError(f"`layers` names a layer twice. Received: layers={names}")
    unknown = [name for name in names if name not in existing]
    if unknown:
        raise ValueError(
            f"No such layer: {unknown[0]}. Existing layers are: {existing} (a layer inside a nested "
            f"model is named by its path, e.g. 'backbone{SEPARATOR}conv1'). Received: layers={names}"
        )
    live = {c.path for c in trace.live}
    dead = [name for name in names if name not in live]
    if dead:
        raise ValueError(
            f"The output of model '{model.name}' does not depend on layer '{dead[0]}' (it sits on a "
            "branch that no output uses), so the loss has no gradient with respect to its input. "
            f"Expected layers on the path from the input to the output. Received: layers={names}"
        )
    # Keep call order whatever order the user gave.
    return tuple(name for name in existing if name in names)


def build_feature_extractor(model, tapped_layers) -> keras.Model:
    """A model `x -> [h_1, ..., h_N, y_pred]` sharing `model`'s layers.

    Args:
        model: A built Functional or Sequential model.
        tapped_layers: Layer paths, as returned by `resolve_tapped_layers`.

    Raises:
        ValueError: If a tapped layer does not exist, is not used by the output, is
            called more than once, takes several inputs, or takes a non-floating (not
            differentiable) input.
    """
    if tuple(tapped_layers) == (MODEL_INPUT,) and not is_graph_model(model):
        raise ValueError("Subclassed models are tapped at their input; they need no feature extractor.")
    trace = _trace(model)
    live = {c.path for c in trace.live}
    taps = {}
    for name in tapped_layers:
        calls = [c for c in trace.calls if c.path == name]
        if not calls:
            raise ValueError(
                f"No such layer: {name}. Existing layers are: {_tappable_paths(trace)}. "
                f"Received: layers={list(tapped_layers)}"
            )
        if name not in live:
            raise ValueError(
                f"The output of model '{model.name}' does not depend on layer '{name}', so the loss has "
                f"no gradient with respect to its input. Received: layers={list(tapped_layers)}"
            )
        if len(calls) > 1:
            raise ValueError(
                f"Layer '{name}' is called more than once in model '{model.name}', so its "
                "input is ambiguous. Expected a layer that is called once."
            )
        args = tree.flatten(calls[0].args)
        if len(args) != 1 or not isinstance(args[0], keras.KerasTensor):
            raise ValueError(
                f"Layer '{name}' takes several inputs; GFA taps layers with one input tensor."
            )
        dtype = keras.backend.standardize_dtype(args[0].dtype)
        if "float" not in dtype:
            raise ValueError(
                f"The input of layer '{name}' is not differentiable (dtype {dtype}): GFA needs the loss "
                "gradient with respect to it. Tap layers after any Embedding or integer input. "
                f"Received: layers={list(tapped_layers)}"
            )
        taps[name] = args[0]
    features = [taps[name] for name in tapped_layers]
    inputs = trace.inputs[0] if len(trace.inputs) == 1 else trace.inputs
    return keras.Model(inputs, [features, trace.outputs], name=f"{model.name}_gfa_taps")
