"""One ``Registry`` class: maps a name to a builder, refuses duplicates and explains unknown names."""

from __future__ import annotations

from typing import Callable, Dict, Iterator, Optional, TypeVar

T = TypeVar("T")


class Registry:
    """A named table of builders (classes or functions).

    Use ``@REGISTRY.register()`` (name = the object's ``__name__``) or ``@REGISTRY.register("name")``.
    """

    def __init__(self, family: str):
        self.family = family
        self._entries: Dict[str, Callable] = {}

    def register(self, name: Optional[str] = None) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            key = name or obj.__name__
            if key in self._entries:
                raise KeyError(f"{self.family}: '{key}' is already registered")
            self._entries[key] = obj
            return obj

        return decorator

    def get(self, name: str) -> Callable:
        try:
            return self._entries[name]
        except KeyError:
            valid = ", ".join(sorted(self._entries)) or "(none registered)"
            raise KeyError(f"unknown {self.family} '{name}'; valid names: {valid}") from None

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list:
        return sorted(self._entries)
