"""Frozen settings objects read from environment variables, each variable declared once on its field.

A field declared with :func:`setting` names its variable, the parser of its text and its default;
:func:`from_environ` reads them all. payrun's :class:`shared.settings.Settings` and the simulator's
``SimConfig`` are both built this way. An unset or blank variable takes the default; a value the parser
refuses raises the caller's error class with a message that names the variable.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from decimal import InvalidOperation
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T")
D = TypeVar("D", bound="DataclassInstance")


def setting(
    env: str,
    parse: Callable[[str], T],
    default: T,
    *,
    meaning: str = "",
    shown: str | None = None,
    repr: bool = True,
) -> T:
    """A dataclass field read from the variable `env` with `parse`. `meaning` and `shown` (the default as a
    --help text shows it, when its repr will not do) are for help texts."""
    metadata = {"env": env, "parse": parse, "meaning": meaning, "shown": shown}
    return dataclasses.field(default=default, repr=repr, metadata=metadata)


def read(
    environ: Mapping[str, str],
    name: str,
    parse: Callable[[str], T],
    default: T,
    error: Callable[[str], Exception],
) -> T:
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return parse(raw.strip())
    except InvalidOperation:  # decimal's, which is no ValueError
        raise error(f"{name}={raw!r} is not valid: not a number") from None
    except (TypeError, ValueError) as exc:
        raise error(f"{name}={raw!r} is not valid: {exc}") from None


def variables(cls: type[DataclassInstance]) -> tuple[dataclasses.Field[Any], ...]:
    """The fields of `cls` that are read from a variable, in declaration order."""
    return tuple(f for f in dataclasses.fields(cls) if "env" in f.metadata)


def from_environ(cls: type[D], environ: Mapping[str, str] | None, error: Callable[[str], Exception]) -> D:
    env = os.environ if environ is None else environ
    return cls(
        **{
            f.name: read(env, f.metadata["env"], f.metadata["parse"], f.default, error)
            for f in variables(cls)
        }
    )
