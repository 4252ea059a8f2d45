"""AWS API models trimmed to the operations the operator calls.

botocore parses a service's whole model when its first client is made, and the endpoints of
every service of every partition with it. EC2's model has more than 700 operations and the
operator calls five; the endpoints list some 300 services and it talks to two. Kept whole, they
cost about 14 MiB and 7 MiB of its memory. The loader below keeps the operations the operator
calls, the shapes they reach and those services' endpoints; a client made with it has no other
operation.
"""

from __future__ import annotations

import json
from pathlib import PurePosixPath
from typing import Any, Iterator, Mapping

import botocore.loaders

EC2_OPERATIONS = frozenset({
    "AssociateIamInstanceProfile",
    "DescribeIamInstanceProfileAssociations",
    "DescribeInstances",
    "DisassociateIamInstanceProfile",
    "ReplaceIamInstanceProfileAssociation",
})
STS_OPERATIONS = frozenset({"AssumeRole"})
OPERATIONS = {"ec2": EC2_OPERATIONS, "sts": STS_OPERATIONS}


class TrimmedLoader(botocore.loaders.Loader):
    """A botocore loader whose models of ``keep``'s services hold only the operations named there,
    and whose endpoints are those of ``keep``'s services alone."""

    def __init__(self, search_paths: list[str], keep: Mapping[str, frozenset[str]] = OPERATIONS):
        super().__init__(extra_search_paths=search_paths, include_default_search_paths=False)
        self._keep = keep

    @botocore.loaders.instance_cache  # under the key of the method it wraps: the whole model is not kept
    def load_data_with_path(self, name: str) -> tuple[Any, str]:
        data, path = super().load_data_with_path(name)
        parts = PurePosixPath(name).parts  # a model's: ec2/2016-11-15/service-2
        if len(parts) == 3 and parts[2] == "service-2" and parts[0] in self._keep:
            return trimmed(data, self._keep[parts[0]]), path
        if name == "endpoints":
            return _fresh({**data, "partitions": [
                {**partition, "services": {s: e for s, e in partition["services"].items() if s in self._keep}}
                for partition in data["partitions"]]}), path
        return data, path


def trimmed(model: Mapping[str, Any], operations: frozenset[str]) -> dict[str, Any]:
    """``model`` with only ``operations`` and the shapes they reach."""
    missing = operations - model["operations"].keys()
    if missing:
        raise KeyError(f"{model['metadata'].get('serviceId')} has no operation {', '.join(sorted(missing))}")
    kept_operations = {name: model["operations"][name] for name in sorted(operations)}
    shapes = model["shapes"]
    reached: set[str] = set()
    pending = [ref for operation in kept_operations.values() for ref in _operation_shapes(operation)]
    while pending:
        name = pending.pop()
        if name not in reached:
            reached.add(name)
            pending.extend(_member_shapes(shapes[name]))
    return _fresh({**model, "operations": kept_operations, "shapes": {name: shapes[name] for name in sorted(reached)}})


def _fresh(data: Any) -> Any:
    """A copy made of new objects: none of them holds on to the memory of the whole file's."""
    return json.loads(json.dumps(data))


def _operation_shapes(operation: Mapping[str, Any]) -> Iterator[str]:
    for part in ("input", "output"):
        if part in operation:
            yield operation[part]["shape"]
    for error in operation.get("errors", ()):
        yield error["shape"]


def _member_shapes(shape: Mapping[str, Any]) -> Iterator[str]:
    for member in shape.get("members", {}).values():
        yield member["shape"]
    for part in ("member", "key", "value"):
        if part in shape:
            yield shape[part]["shape"]
