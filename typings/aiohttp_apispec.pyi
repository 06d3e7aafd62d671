# Types for the part of aiohttp-apispec that pollybot_leads uses: the package ships no
# py.typed marker and no stubs. Its decorators record documentation on the handler and
# return the handler itself.
from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web
from marshmallow import Schema

_Handler = TypeVar("_Handler", bound=Callable[..., Any])
_SchemaArg = Schema | type[Schema]

def docs(**kwargs: Any) -> Callable[[_Handler], _Handler]: ...
def request_schema(
    schema: _SchemaArg,
    location: str = ...,
    put_into: str | None = ...,
    example: dict[str, Any] | None = ...,
    add_to_refs: bool = ...,
    **kwargs: Any,
) -> Callable[[_Handler], _Handler]: ...
def json_schema(
    schema: _SchemaArg,
    *,
    example: dict[str, Any] | None = ...,
    add_to_refs: bool = ...,
    **kwargs: Any,
) -> Callable[[_Handler], _Handler]: ...
def querystring_schema(
    schema: _SchemaArg,
    *,
    example: dict[str, Any] | None = ...,
    add_to_refs: bool = ...,
    **kwargs: Any,
) -> Callable[[_Handler], _Handler]: ...
def response_schema(
    schema: _SchemaArg,
    code: int = ...,
    required: bool = ...,
    description: str | None = ...,
) -> Callable[[_Handler], _Handler]: ...
def setup_aiohttp_apispec(
    app: web.Application,
    *,
    title: str = ...,
    version: str = ...,
    url: str | None = ...,
    request_data_name: str = ...,
    swagger_path: str | None = ...,
    static_path: str = ...,
    error_callback: Callable[..., Any] | None = ...,
    in_place: bool = ...,
    prefix: str = ...,
    schema_name_resolver: Callable[[Any], str | None] = ...,
    openapi_version: str = ...,
    **kwargs: Any,
) -> Any: ...
