"""Which nodes of an exported detector graph are the network and which the post-processing.

The dynamo exporter records each node's module scope (``pkg.torch.onnx.name_scopes`` in the
node's metadata): the network's nodes are those under the deployable module's ``model``. The
post-processing is every other node that reads, directly or not, a network output (softmax,
decode, TopK, NonMaxSuppression, the gathers, the pixel scaling); the rest is the
normalisation in front of the network.
"""

from __future__ import annotations

from typing import Any

__all__ = ["network_node_names", "post_processing_node_names"]

_SCOPES_KEY = "pkg.torch.onnx.name_scopes"


def network_node_names(model: Any) -> list[str]:
    """Names of the nodes of ``model`` (an ``onnx.ModelProto`` written by ``to_onnx``) in the
    network's name scope, in graph order."""
    names = []
    for node in model.graph.node:
        scopes = next((p.value for p in node.metadata_props if p.key == _SCOPES_KEY), "")
        if scopes.startswith("['', 'model'"):
            names.append(node.name)
    return names


def post_processing_node_names(model: Any) -> list[str]:
    """Names of the nodes outside the network that depend on its outputs, in graph order
    (a topological order, so one pass propagates the dependence)."""
    network = set(network_node_names(model))
    downstream: set[str] = set()
    names = []
    for node in model.graph.node:
        if node.name in network:
            downstream.update(node.output)
        elif any(tensor in downstream for tensor in node.input):
            downstream.update(node.output)
            names.append(node.name)
    return names
