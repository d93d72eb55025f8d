"""The one registry of names every extension point uses: backbones, augmentation ops, query
strategies, pretraining methods, stages and loss-expression terms.

A :class:`Registry` maps names to what is registered under them. Its built-in entries are the
modules of one package, discovered when the registry is first asked (adding an entry is adding a
file): every module imported then, or, with ``lazy=True``, only named from its module and imported
when its entry is asked for (pretraining methods: listing them imports no TensorFlow). Listings are
computed when asked, so an entry registered at any time shows everywhere. Registering a name twice
is an error that says where each registration stands.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from patchcfg.errors import UserError

#: every registry made so far (the config schema reads the entries registered from outside patchcfg)
REGISTRIES: list[Registry] = []


class DuplicateName(UserError, ValueError):
    """A name registered twice in one registry."""


def _place(stacklevel: int) -> tuple[str, str]:
    """(module, ``file:line``) of the frame ``stacklevel`` frames above the caller of this function."""
    frame = sys._getframe(stacklevel + 1)
    return frame.f_globals.get("__name__", "?"), f"{frame.f_code.co_filename}:{frame.f_lineno}"


class Registry(Mapping):
    """Names -> registered objects, the built-ins being the modules of ``package``.

    Args:
        kind: what an entry is, in messages (``"pretraining method"``).
        package: the package whose modules register the built-ins (None: no built-in modules).
        lazy: name each built-in after its module and import the module only when the entry is
            asked for (else every module is imported when the registry is first used).
        shared: modules of ``package`` that hold shared code, not entries.
        order: sort key of an entry's (name, object) in :meth:`names` (default: by name).
        on_register: called as ``on_register(name, obj)`` before an object is registered (checks,
            or giving a class its name).
        schema: ``(schema file, "module:function")``: ``function(schema) -> schema`` writes the
            entries of this registry into that schema file's contents (its generated part), or
            ``function() -> schema`` writes all of it; named, not imported, as the function may
            read the registry's package.
        home: the modules whose registrations are patchcfg's own (default: ``package``'s).
    """

    def __init__(self, kind: str, package: str | None = None, *, lazy: bool = False, shared: tuple[str, ...] = (),
                 order: Callable[[str, Any], Any] | None = None,
                 on_register: Callable[[str, Any], None] | None = None,
                 schema: tuple[str, str] | None = None, home: str | None = None):
        self.kind, self.package, self.lazy, self.shared = kind, package, lazy, set(shared)
        self.home = home or package
        self.order, self.on_register, self.schema = order, on_register, schema
        self._entries: dict[str, Any] = {}
        self._places: dict[str, tuple[str, str]] = {}
        self._loaded = package is None
        #: changes with every registration: what is computed from the entries can be cached by it
        self.version = 0
        REGISTRIES.append(self)

    # ------------------------------------------------------------------ registering
    def add(self, name: str, obj: Any, *, stacklevel: int = 1) -> Any:
        """Register ``obj`` as ``name``; the place of the registration is the frame ``stacklevel``
        above this call (1: the caller). The very same object registered again is kept."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} needs a non-empty name, got {name!r}")
        module, where = _place(stacklevel)
        self._load_builtins()
        if name not in self._entries and self._builtin_module(name) not in (None, module):
            importlib.import_module(self._builtin_module(name))  # the built-in takes its name first
        if name in self._entries:
            if self._entries[name] is obj:
                return obj
            first_module, first_where = self._places[name]
            raise DuplicateName(f"{self.kind} {name!r} is registered twice: first in {first_module} "
                                f"({first_where}), again in {module} ({where}); rename one of them")
        if self.on_register is not None:
            self.on_register(name, obj)
        self._entries[name], self._places[name] = obj, (module, where)
        self.version += 1
        return obj

    def register(self, name: str) -> Callable[[Any], Any]:
        """Decorator: register the decorated object as ``name``."""
        return lambda obj: self.add(name, obj, stacklevel=2)

    def unregister(self, name: str) -> None:
        """Forget ``name`` (an entry registered at run time, e.g. by a test)."""
        if self._entries.pop(name, None) is not None:
            del self._places[name]
            self.version += 1

    # ------------------------------------------------------------------ built-ins
    def _modules(self) -> list[str]:
        if self.package is None:
            return []
        path = importlib.import_module(self.package).__path__
        return [info.name for info in pkgutil.iter_modules(path)
                if not info.ispkg and not info.name.startswith("_") and info.name not in self.shared]

    def _builtin_module(self, name: str) -> str | None:
        """The module that registers the built-in ``name`` (lazy registries; None when it is none)."""
        if self.lazy and name in self._modules():
            return f"{self.package}.{name}"
        return None

    def _load_builtins(self) -> None:
        if self._loaded:
            return
        self._loaded = True  # first: a module that registers while being imported comes back here
        if not self.lazy:
            for module in self._modules():
                importlib.import_module(f"{self.package}.{module}")

    def write_schema(self, schemas: dict[str, dict]) -> None:
        """Write the entries registered from outside patchcfg into their schema, in ``schemas``
        (file name -> contents, the files as shipped)."""
        import inspect

        name, function = self.schema
        module, _, attribute = function.partition(":")
        write = getattr(importlib.import_module(module), attribute)
        schemas[name] = write(schemas[name]) if inspect.signature(write).parameters else write()

    # ------------------------------------------------------------------ asking
    def names(self) -> list[str]:
        """Every name, built-in or registered (in ``order``)."""
        self._load_builtins()
        names = set(self._entries) | (set(self._modules()) if self.lazy else set())
        if self.order is None:
            return sorted(names)
        return sorted(names, key=lambda name: self.order(name, self.get(name)))

    def get(self, name: str) -> Any:
        """The object registered as ``name`` (its built-in module imported when needed); KeyError
        naming the closest names when there is none."""
        self._load_builtins()
        if name not in self._entries and self._builtin_module(name) is not None:
            importlib.import_module(self._builtin_module(name))
        if name not in self._entries:
            known = self.names()
            close = difflib.get_close_matches(str(name), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise KeyError(f"unknown {self.kind} {name!r}{hint}; known: {', '.join(known)}")
        return self._entries[name]

    def where(self, name: str) -> str:
        """``module (file:line)`` of the registration of ``name``."""
        self.get(name)
        module, where = self._places[name]
        return f"{module} ({where})"

    def external(self) -> list[str]:
        """Names registered from outside the registry's package (plugins, tests), as registered."""
        inside = f"{self.home}."
        return [n for n, (module, _) in self._places.items() if not f"{module}.".startswith(inside)]

    def __getitem__(self, name: str) -> Any:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        self._load_builtins()
        return isinstance(name, str) and (name in self._entries or self._builtin_module(name) is not None)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())
