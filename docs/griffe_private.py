"""A griffe extension for the API reference: private things stay out of the public
signatures it renders.

Some public functions carry parameters only their own recursion passes
(`to_jsonable(obj, _depth=..., _path=...)`), or a private sentinel as the default that
means "not given" (`parent_run_id=_UNSET`: the current run). Users never pass the one
nor see the other, so the reference drops parameters whose name starts with `_` and
shows a private default as `...` (the docstring says what it stands for).
"""

from __future__ import annotations

from typing import Any

import griffe


class HidePrivateParameters(griffe.Extension):
    def on_function_instance(self, *, func: griffe.Function, **kwargs: Any) -> None:
        for param in list(func.parameters):
            if param.name.startswith("_") and param.name not in ("self", "cls"):
                del func.parameters[param.name]
            elif str(param.default or "").startswith("_"):
                param.default = "..."
