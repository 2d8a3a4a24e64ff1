"""Child-process side of :mod:`stsep.data.safe_decode`.

Run as ``python path/to/_decode_worker.py REQUEST_FD RESPONSE_FD``, by file
path rather than with ``-m``, so that Python imports no package first. The
process reads length-prefixed pickled requests ``(function, kwargs)`` from
one pipe, calls ``function`` (a ``"module:name"`` string) and writes the
pickled reply ``("ok", result)`` or ``("error", exception)`` to the other
pipe. It exits when the request pipe closes.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pickle
import struct
import sys
import types

_HEADER = struct.Struct("<Q")


def _read_exactly(fd: int, size: int) -> bytes | None:
    chunks = []
    while size:
        chunk = os.read(fd, min(size, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _resolve(function: str):
    module_name, _, attribute = function.partition(":")
    target = importlib.import_module(module_name)
    for part in attribute.split("."):
        target = getattr(target, part)
    return target


def _register_bare_package() -> None:
    # NOTE: ``stsep/__init__.py`` imports the models and so torch, which
    # costs seconds and hundreds of MB per decoding child (and per restart
    # after a timeout). Decoding needs none of it, so the child registers the
    # package without running its ``__init__``. Code run here must therefore
    # import from submodules (``stsep.data.decode``), not from ``stsep``.
    spec = importlib.util.find_spec("stsep")
    if spec is None or "stsep" in sys.modules:
        return
    package = types.ModuleType("stsep")
    package.__path__ = list(spec.submodule_search_locations or [])
    package.__spec__ = spec
    package.__file__ = spec.origin
    sys.modules["stsep"] = package


def serve(request_fd: int, response_fd: int) -> None:
    """Run requests and send replies until the request pipe closes."""
    functions = {}
    while True:
        header = _read_exactly(request_fd, _HEADER.size)
        if header is None:
            return
        payload = _read_exactly(request_fd, _HEADER.unpack(header)[0])
        if payload is None:
            return
        function, kwargs = pickle.loads(payload)
        try:
            if function not in functions:
                functions[function] = _resolve(function)
            reply = ("ok", functions[function](**kwargs))
        except Exception as error:  # noqa: BLE001 - every failure goes back to the parent
            reply = ("error", error)
        try:
            data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError) as error:
            data = pickle.dumps(("error", RuntimeError(f"unpicklable reply: {error!r}")))
        _write_all(response_fd, _HEADER.pack(len(data)) + data)


if __name__ == "__main__":
    # The script's own folder comes first on sys.path. Dropping it means the
    # modules beside this file are imported only as ``stsep.data.*``.
    if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
        sys.path.pop(0)
    _register_bare_package()
    serve(int(sys.argv[1]), int(sys.argv[2]))
