"""The base of every settings model: unknown keys forbidden, no silent type coercion.

pydantic's lax mode turns YAML ``true`` into 1 and ``"2"`` into 2; a campaign that says
``seed: true`` or ``steps: "2"`` almost certainly holds a mistake, so numbers must be written
as numbers (an integer is still accepted where a float is expected).
"""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator


def _kinds(annotation: Any) -> set[type]:
    """The plain types a field's annotation admits (Optional / unions unwrapped)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        out: set[type] = set()
        for a in typing.get_args(annotation):
            out |= _kinds(a)
        return out
    if origin is typing.Annotated:
        return _kinds(typing.get_args(annotation)[0])
    return {annotation} if isinstance(annotation, type) else set()


def _check(value: Any, annotation: Any) -> None:
    kinds = _kinds(annotation)
    if value is None or not kinds & {int, float} or kinds & {str, bool}:
        origin = typing.get_origin(annotation)
        if origin in (tuple, list) and isinstance(value, (list, tuple)):
            args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
            for i, item in enumerate(value):
                if args:
                    _check(item, args[min(i, len(args) - 1)])
        return
    what = "an integer" if int in kinds and float not in kinds else "a number"
    if isinstance(value, bool):
        raise ValueError(f"expected {what}, got the boolean {str(value).lower()}")
    if isinstance(value, str):
        raise ValueError(f"expected {what}, got the string {value!r} (write it without quotes)")


class StrictModel(BaseModel):
    """Unknown keys are errors; booleans and strings are not taken for numbers."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_coercion(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        if field is not None:
            _check(value, field.annotation)
        return value
