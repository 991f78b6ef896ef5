"""PyTorch modules: weights as safetensors plus a small JSON entry, or a TorchScript program.

Two formats, both described by the entry file ``model.json``:

- ``state_dict`` (any ``torch.nn.Module`` whose class can be imported): the weights and
  buffers go to ``model.safetensors``; ``model.json`` names the class (``module:qualname``)
  and the keyword arguments that build it. Loading imports that class from the installed
  code, builds it, loads the tensors (safetensors holds only tensors: nothing is unpickled)
  and switches it to eval mode. The keyword arguments come from the module's
  ``init_kwargs`` attribute (a JSON-able dict, set by the user or by the class itself); a
  class whose constructor needs no argument needs none.
- ``torchscript`` (a ``torch.jit.ScriptModule``, e.g. ``torch.jit.script(model)``): the
  program goes to ``model.pt`` through ``torch.jit.save``. Loading (``torch.jit.load``) needs
  no Python class: the archive holds the compiled TorchScript code and the tensors, read by
  TorchScript's own loader, which builds only TorchScript objects (it imports no Python
  module and unpickles no Python object); the model's TorchScript code then runs in the
  TorchScript interpreter. Use it for a module whose class is not importable where the
  model is loaded.

A module whose class is defined in ``__main__`` or inside a function is refused with a
message saying to move the class into a module or to register ``torch.jit.script(model)``:
storing TorchScript behind the user's back could change what the model computes (scripting
can fail or differ from eager mode), so the choice is the user's.

``predict`` runs under ``torch.no_grad()``: a DataFrame, array or list becomes a tensor of the
module's floating dtype (or of its ``input_dtype`` attribute, e.g. ``torch.long`` for token
ids), the output tensor (the first element of a tuple) comes back as a numpy array.
The rule for probabilities, decided when the model is saved and recorded in ``model.json``:

1. a class that defines ``predict_proba`` (taking and returning tensors) has it, and a class
   that defines ``predict`` uses it instead of ``forward``;
2. an ``nn.Sequential`` whose last layer is ``nn.Softmax`` or ``nn.Sigmoid`` outputs
   probabilities: ``predict_proba`` is that output (a one-unit sigmoid gives two columns,
   ``1 - p`` and ``p``) and ``predict`` the class (argmax, or ``p >= 0.5``);
3. otherwise ``predict`` is the forward output (a last dimension of 1 is dropped, as
   scikit-learn regressors return one value per row) and there is no ``predict_proba``.
"""

from __future__ import annotations

import importlib
import io
import json
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import InvalidInput
from ._common import class_from, require

__all__ = ["TorchFlavor", "TorchModel"]

_EXTRA = "torch"
_WEIGHTS = "model.safetensors"
_PROGRAM = "model.pt"
_FORMAT_VERSION = 1


def _torch(purpose: str | None = None) -> Any:
    return require("torch", package="torch", extra=_EXTRA, purpose=purpose)


def _safetensors(purpose: str | None = None) -> Any:
    return require("safetensors.torch", package="safetensors", extra=_EXTRA, purpose=purpose)


class TorchModel:
    """A loaded ``torch.nn.Module`` in eval mode (``.native``), answering ``predict`` on
    tables and arrays; :func:`load` gives it ``predict_proba`` when the model has one."""

    def __init__(self, module: Any, spec: Mapping[str, Any]) -> None:
        self.native = module
        self.spec = dict(spec)
        torch = _torch()
        self._torch = torch
        name = str(spec.get("input_dtype") or "float32")
        self._input_dtype = getattr(torch, name, None)
        if not isinstance(self._input_dtype, torch.dtype):
            raise InvalidInput(f"model.json's input_dtype {name!r} is not a torch dtype")
        self._output = str(spec.get("output", "values"))

    def describe(self) -> dict[str, str | None]:
        """``algorithm``, ``framework``, ``framework_version`` as recorded in ``model.json``."""
        return {
            "algorithm": self.spec.get("algorithm"),
            "framework": "pytorch",
            "framework_version": self.spec.get("torch"),
        }

    def predict(self, data: Any) -> Any:
        import numpy as np  # heavy: loaded on first use so `import modelledger` stays fast

        if self._output == "predict":
            return self._call(self.native.predict, data)
        out = self._call(self.native, data)
        if self._output == "softmax":
            return np.asarray(out).argmax(axis=-1)
        if self._output == "sigmoid":
            labels = (np.asarray(out) >= 0.5).astype(np.int64)
            return labels.reshape(-1) if labels.ndim == 2 and labels.shape[1] == 1 else labels
        arr = np.asarray(out)
        return arr.reshape(-1) if arr.ndim == 2 and arr.shape[1] == 1 else arr

    def _call(self, fn: Callable[[Any], Any], data: Any) -> Any:
        torch = self._torch
        tensor = self._tensor(data)
        try:
            with torch.no_grad():
                out = fn(tensor)
        except (RuntimeError, TypeError, ValueError, IndexError) as exc:
            # torch reports a wrong shape or dtype as a RuntimeError naming the operator
            text = " ".join(str(exc).split())[:500]
            raise InvalidInput(f"the torch module refused the input {tuple(tensor.shape)}: {text}") from exc
        if isinstance(out, (tuple, list)):
            out = out[0]
        if not isinstance(out, torch.Tensor):
            raise InvalidInput(f"the torch module returned a {type(out).__name__}, not a tensor")
        out = out.detach().cpu()
        if out.dtype == torch.bfloat16:
            out = out.float()  # numpy has no bfloat16
        return out.numpy()

    def _tensor(self, data: Any) -> Any:
        import numpy as np  # heavy: loaded on first use so `import modelledger` stays fast
        import pandas as pd  # heavy: loaded on first use so `import modelledger` stays fast

        torch = self._torch
        if isinstance(data, torch.Tensor):
            return data.to(self._input_dtype)
        if isinstance(data, (pd.DataFrame, pd.Series)):
            data = data.to_numpy()
        try:
            arr = np.asarray(data)
            if arr.dtype == object:
                arr = arr.astype(np.float64)
            tensor = torch.from_numpy(np.ascontiguousarray(arr))
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"cannot turn the input into a tensor: {exc}") from exc
        return tensor.to(self._input_dtype)


class TorchClassifier(TorchModel):
    """A loaded module with class probabilities (see the module's rule)."""

    def predict_proba(self, data: Any) -> Any:
        import numpy as np  # heavy: loaded on first use so `import modelledger` stays fast

        if self.spec.get("proba") == "method":
            return self._call(self.native.predict_proba, data)
        out = np.asarray(self._call(self.native, data))
        if self._output == "sigmoid" and out.ndim == 2 and out.shape[1] == 1:
            return np.hstack([1 - out, out])
        return out


class TorchFlavor:
    """``torch.nn.Module`` objects (``model.json`` + ``model.safetensors``, or ``model.pt``)."""

    name = "pytorch"
    entry = "model.json"
    extra: str | None = _EXTRA
    runs_pickle = False

    def matches(self, obj: Any) -> bool:
        return class_from(obj, "torch", ("Module",)) is not None

    def save(self, obj: Any, folder: Path) -> None:
        torch = _torch("saving a pytorch model")
        spec: dict[str, Any] = {
            "format_version": _FORMAT_VERSION,
            "algorithm": _algorithm(obj, torch),
            "torch": torch.__version__,
            "input_dtype": _input_dtype(obj, torch),
            **_behaviour(obj, torch),
        }
        if isinstance(obj, torch.jit.ScriptModule):
            buffer = io.BytesIO()
            try:
                with _torchscript_quietly():
                    torch.jit.save(obj, buffer)
            except Exception as exc:  # TorchScript reports what it cannot save in many ways
                raise InvalidInput(f"cannot save the TorchScript module: {exc}") from exc
            (folder / _PROGRAM).write_bytes(buffer.getvalue())
            spec.update(format="torchscript", program=_PROGRAM)
        else:
            spec.update(
                format="state_dict",
                weights=_WEIGHTS,
                **{"class": _class_ref(obj)},
                init_kwargs=_init_kwargs(obj),
            )
            tensors, aliases = _state(obj, torch)
            safetensors = _safetensors("saving a pytorch model")
            (folder / _WEIGHTS).write_bytes(safetensors.save(tensors, metadata={"format": "pt"}))
            spec["aliases"] = aliases
        (folder / self.entry).write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n")

    def describe(self, obj: Any) -> dict[str, str | None]:
        torch = _torch("saving a pytorch model")
        return {
            "algorithm": _algorithm(obj, torch),
            "framework": "pytorch",
            "framework_version": torch.__version__,
        }

    def loaded_facts(self, loaded: TorchModel) -> dict[str, Any]:
        """What ``model.json`` records of the module (for a folder's manifest); no signature."""
        return loaded.describe()

    def load(self, read: Callable[[str], bytes], entry: str) -> Any:
        torch = _torch()
        if entry.endswith((".pt", ".pth")):
            # a folder registered with a TorchScript file as its entry and no model.json:
            # what model.json would record is read from the loaded program
            module = _jit_load(torch, read(entry))
            spec: dict[str, Any] = {
                "format": "torchscript",
                "program": entry,
                "algorithm": _algorithm(module, torch),
                "torch": torch.__version__,
                "input_dtype": _input_dtype(module, torch),
                **_behaviour(module, torch),
            }
        else:
            spec = _read_spec(read(entry), entry)
            fmt = spec.get("format")
            if fmt == "torchscript":
                module = _jit_load(torch, read(str(spec.get("program", _PROGRAM))))
            elif fmt == "state_dict":
                module = _build(spec, read, torch)
            else:
                raise InvalidInput(f"{entry} has format {fmt!r}: expected 'state_dict' or 'torchscript'")
        module.eval()
        if spec.get("output") in {"softmax", "sigmoid"} or spec.get("proba") == "method":
            return TorchClassifier(module, spec)
        return TorchModel(module, spec)


@contextmanager
def _torchscript_quietly() -> Iterator[None]:
    """PyTorch 2.9+ deprecates TorchScript and warns on every save and load. It is still the
    one format that stores a module without its Python class AND loads without unpickling
    (``torch.export.load`` unpickles), so the flavor keeps it, and its users are told in the
    docs rather than on every load."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated", DeprecationWarning)
        yield


def _jit_load(torch: Any, data: bytes) -> Any:
    with _torchscript_quietly():
        return torch.jit.load(io.BytesIO(data), map_location="cpu")


def _read_spec(data: bytes, entry: str) -> dict[str, Any]:
    try:
        spec = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"{entry} is not the JSON a pytorch model is described by: {exc}") from exc
    if not isinstance(spec, dict):
        raise InvalidInput(f"{entry} is not the JSON a pytorch model is described by: not an object")
    if int(spec.get("format_version", 1)) > _FORMAT_VERSION:
        raise InvalidInput(f"{entry} was written by a newer modelledger: upgrade modelledger to load it")
    return spec


def _build(spec: Mapping[str, Any], read: Callable[[str], bytes], torch: Any) -> Any:
    ref = str(spec.get("class", ""))
    cls = _import_class(ref)
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise InvalidInput(f"{ref} is not a torch.nn.Module class")
    kwargs = spec.get("init_kwargs") or {}
    try:
        module = cls(**kwargs)
    except Exception as exc:  # the user's constructor may raise anything
        raise InvalidInput(f"cannot build {ref}(**{kwargs!r}): {type(exc).__name__}: {exc}") from exc
    safetensors = _safetensors()
    tensors = dict(safetensors.load(read(str(spec.get("weights", _WEIGHTS)))))
    for alias, name in (spec.get("aliases") or {}).items():
        tensors[alias] = tensors[name]  # tied weights are stored once
    try:
        module.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        text = " ".join(str(exc).split())[:500]
        raise InvalidInput(
            f"the stored weights do not fit {ref}(**{kwargs!r}): {text}; if the constructor's "
            "arguments decide the layers, set model.init_kwargs to them before registering"
        ) from exc
    return module


def _import_class(ref: str) -> Any:
    module_name, _, qualname = ref.partition(":")
    if not module_name or not qualname:
        raise InvalidInput(f"the model's class reference {ref!r} is not 'module:qualname'")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidInput(
            f"cannot import {module_name!r} for the model's class {ref}: install the code that defines it"
        ) from exc
    for part in qualname.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise InvalidInput(f"{module_name!r} has no {qualname!r}: the model's class {ref} is gone")
    return target


def _class_ref(obj: Any) -> str:
    """``module:qualname`` of ``obj``'s class, checked to import back to the same class."""
    cls = type(obj)
    ref = f"{cls.__module__}:{cls.__qualname__}"
    advice = (
        "move the class into an importable module, or register torch.jit.script(model) "
        "(TorchScript needs no class to load)"
    )
    if cls.__module__ == "__main__" or "<locals>" in cls.__qualname__:
        where = "in __main__" if cls.__module__ == "__main__" else "inside a function"
        raise InvalidInput(
            f"the {cls.__name__} class is defined {where}, so it cannot be imported to load it: {advice}"
        )
    try:
        found = _import_class(ref)
    except InvalidInput as exc:
        raise InvalidInput(f"{exc.message}; {advice}") from exc
    if found is not cls:
        raise InvalidInput(f"{ref} imports as a different class than the model's: {advice}")
    return ref


# torch's containers are built from the layers handed to them, which model.json cannot record
_CONTAINERS = frozenset({"Sequential", "ModuleList", "ModuleDict", "ParameterList", "ParameterDict"})


def _init_kwargs(obj: Any) -> dict[str, Any]:
    """The keyword arguments that build ``obj``'s class again: its ``init_kwargs``, or none."""
    import inspect  # only saving a pytorch model inspects its constructor

    cls = type(obj)
    if cls.__module__.startswith("torch.nn.") and cls.__name__ in _CONTAINERS:
        raise InvalidInput(
            f"an nn.{cls.__name__} is built from the layers given to it, which cannot be recorded: "
            f"register torch.jit.script(model), or wrap it in a module class of your own"
        )

    kwargs = getattr(obj, "init_kwargs", None)
    if kwargs is None:
        required = [
            p.name
            for p in inspect.signature(type(obj).__init__).parameters.values()
            if p.name != "self"
            and p.default is inspect.Parameter.empty
            and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        ]
        if required:
            raise InvalidInput(
                f"{type(obj).__name__}() needs {', '.join(required)} to be built again: set "
                f"model.init_kwargs = {{{', '.join(repr(r) + ': ...' for r in required)}}} (JSON values) "
                "before registering, or register torch.jit.script(model)"
            )
        return {}
    if not isinstance(kwargs, Mapping):
        raise InvalidInput(f"{type(obj).__name__}.init_kwargs must be a dict, got {type(kwargs).__name__}")
    try:
        text = json.dumps(dict(kwargs), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{type(obj).__name__}.init_kwargs must hold JSON values: {exc}") from exc
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def _state(obj: Any, torch: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """The state dict as contiguous CPU tensors, each shared tensor once, and the names that
    alias a kept one (tied weights)."""
    tensors: dict[str, Any] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple[int, int, tuple[int, ...], str], str] = {}
    for name, value in obj.state_dict().items():
        if not isinstance(value, torch.Tensor):
            raise InvalidInput(
                f"the state dict entry {name!r} is a {type(value).__name__}, not a tensor: "
                "safetensors stores tensors only; register torch.jit.script(model)"
            )
        key = (
            value.untyped_storage().data_ptr(),
            value.storage_offset(),
            tuple(value.shape),
            str(value.dtype),
        )
        if value.numel() and key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        tensors[name] = value.detach().to("cpu").contiguous()
    return tensors, aliases


def _algorithm(obj: Any, torch: Any) -> str:
    if isinstance(obj, torch.jit.ScriptModule):
        return f"torchscript:{getattr(obj, 'original_name', type(obj).__name__)}"
    cls = type(obj)
    return f"{cls.__module__}:{cls.__qualname__}"


def _input_dtype(obj: Any, torch: Any) -> str:
    given = getattr(obj, "input_dtype", None)
    if isinstance(given, torch.dtype):
        return str(given).removeprefix("torch.")
    for tensor in obj.parameters():
        if tensor.is_floating_point():
            return str(tensor.dtype).removeprefix("torch.")
    return "float32"


def _behaviour(obj: Any, torch: Any) -> dict[str, Any]:
    """What ``predict`` and ``predict_proba`` do (the module docstring's rule)."""
    has = {name: callable(getattr(obj, name, None)) for name in ("predict", "predict_proba")}
    out: dict[str, Any] = {"output": "values"}
    if has["predict"]:
        out["output"] = "predict"
    if has["predict_proba"]:
        out["proba"] = "method"
    if not has["predict"] and not has["predict_proba"]:
        last = _last_layer(obj, torch)
        if last in {"Softmax", "Sigmoid"}:
            out["output"] = last.lower()
    return out


def _last_layer(obj: Any, torch: Any) -> str | None:
    """The class name of a Sequential's last layer (TorchScript keeps it as ``original_name``)."""
    name = (
        getattr(obj, "original_name", None) if isinstance(obj, torch.jit.ScriptModule) else type(obj).__name__
    )
    if name != "Sequential" and not isinstance(obj, torch.nn.Sequential):
        return None
    children = list(obj.children())
    if not children:
        return None
    last = children[-1]
    return str(getattr(last, "original_name", None) or type(last).__name__)
