"""Strings PostgreSQL cannot store, refused before anything reads them (the request's JSON
itself is checked at the edge, gateway/http/bodies.py).

- `InputCheck`, a schema extension, refuses before execution (so before any resolver, SQL or
  value coercion that would echo the value) every argument string holding a NUL or an unpaired
  surrogate: PostgreSQL's text cannot store NUL and UTF-8 cannot encode a lone surrogate, so
  either would otherwise end in a masked internal error. It covers literals and variables, in
  input objects and lists, in fragments too, and names the argument path
  (`extensions.field = "input.title"`). It also refuses a document of several operations sent
  without `operationName` (the GraphQL spec's "must provide operation name"; Strawberry would
  run the first one silently).

The happy path stays cheap: one regex search per string of the variables and a substring test
of the query text; the document is walked (once, linearly) only when one of those found
something.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from graphql import (
    DirectiveNode,
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    ListValueNode,
    Node,
    ObjectValueNode,
    OperationDefinitionNode,
    StringValueNode,
    ValueNode,
    VariableNode,
    get_operation_ast,
)
from graphql import ExecutionResult as GraphQLExecutionResult
from strawberry.extensions import SchemaExtension
from strawberry.schema.exceptions import CannotGetOperationTypeError

from gateway.errors import BadUserInput

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def unstorable(text: str) -> bool:
    """True when `text` holds a NUL or an unpaired surrogate (which PostgreSQL cannot store)."""
    return _UNSTORABLE.search(text) is not None


# --- argument strings -------------------------------------------------------------------------


def _has_unstorable(value: Any) -> bool:
    """True when a string, or a key, anywhere in a JSON value is `unstorable`."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _UNSTORABLE.search(item):
                return True
        elif isinstance(item, dict):
            for key, child in item.items():
                if isinstance(key, str) and _UNSTORABLE.search(key):
                    return True
                stack.append(child)
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _unstorable_path(value: Any) -> str | None:
    """Where in a JSON value the first unstorable string is (`""` for the value itself,
    `.title`, `[2].name`; a bad key names the object holding it), or None."""
    steps: list[tuple[int, str | int | None]] = []  # per container: (parent's index, key)
    stack: list[tuple[Any, int, str | int | None]] = [(value, -1, None)]
    while stack:
        item, parent, key = stack.pop()
        if isinstance(item, str):
            if _UNSTORABLE.search(item):
                return _path(steps, parent, key)
        elif isinstance(item, dict):
            here = len(steps)
            steps.append((parent, key))
            for child_key in item:
                if isinstance(child_key, str) and _UNSTORABLE.search(child_key):
                    return _path(steps, parent, key)
            stack.extend((child, here, child_key) for child_key, child in reversed(item.items()))
        elif isinstance(item, list):
            here = len(steps)
            steps.append((parent, key))
            stack.extend((child, here, i) for i, child in reversed(list(enumerate(item))))
    return None


def _path(steps: list[tuple[int, str | int | None]], parent: int, key: str | int | None) -> str:
    keys = [key]
    while parent >= 0:
        parent, step = steps[parent]
        keys.append(step)
    return "".join(f"[{k}]" if isinstance(k, int) else f".{k}"
                   for k in reversed(keys) if k is not None)


class _ArgumentWalk:
    """Finds the first argument of an operation holding an unstorable string, as a path."""

    def __init__(self, operation: OperationDefinitionNode, variables: dict[str, Any]) -> None:
        self.variables = variables
        self.defaults = {definition.variable.name.value: definition.default_value
                         for definition in operation.variable_definitions or ()}
        self.seen: set[str] = set()  # each variable's value is walked once

    def find(self, roots: list[Node]) -> str | None:
        stack = list(reversed(roots))
        while stack:
            node = stack.pop()
            directives: tuple[DirectiveNode, ...] = getattr(node, "directives", None) or ()
            for owner in (node, *directives):
                if isinstance(owner, (FieldNode, DirectiveNode)):
                    for argument in owner.arguments or ():
                        path = self._value(argument.value, argument.name.value)
                        if path is not None:
                            return path
            selection_set = getattr(node, "selection_set", None)
            if selection_set is not None:
                stack.extend(reversed(selection_set.selections))
        return None

    def _value(self, node: ValueNode, path: str) -> str | None:
        stack: list[tuple[ValueNode, str]] = [(node, path)]
        while stack:
            value, where = stack.pop()
            if isinstance(value, StringValueNode):
                if _UNSTORABLE.search(value.value):
                    return where
            elif isinstance(value, ListValueNode):
                stack.extend((item, f"{where}[{i}]")
                             for i, item in reversed(list(enumerate(value.values))))
            elif isinstance(value, ObjectValueNode):
                stack.extend((field.value, f"{where}.{field.name.value}")
                             for field in reversed(value.fields))
            elif isinstance(value, VariableNode):
                name = value.name.value
                if name in self.seen:
                    continue
                self.seen.add(name)
                if name in self.variables:
                    inner = _unstorable_path(self.variables[name])
                    if inner is not None:
                        return where + inner
                elif self.defaults.get(name) is not None:
                    default = self.defaults[name]
                    assert default is not None
                    stack.append((default, where))
        return None


def unstorable_argument(document: DocumentNode, operation_name: str | None,
                        variables: dict[str, Any] | None, query: str | None) -> str | None:
    """The path of the first argument of the operation to run that holds a NUL or an unpaired
    surrogate (`input.title`, `filter.search`), or None."""
    variables = variables or {}
    # A literal string can only hold one through an escape (or a NUL in a block string).
    suspicious = _has_unstorable(variables) or (
        query is not None and ("\\u" in query or "\x00" in query))
    if not suspicious:
        return None
    operation = get_operation_ast(document, operation_name)
    if operation is None:
        return None
    roots: list[Node] = [operation, *(d for d in document.definitions
                                      if isinstance(d, FragmentDefinitionNode))]
    return _ArgumentWalk(operation, variables).find(roots)


class AmbiguousOperation(CannotGetOperationTypeError):
    """Several operations and no `operationName`: the HTTP view answers 400."""

    def __init__(self) -> None:
        super().__init__(None)

    def as_http_error_reason(self) -> str:
        return ("The document has several operations: say which one to run with "
                "operationName")


class InputCheck(SchemaExtension):
    """Refuses an ambiguous document after parsing, and arguments holding strings PostgreSQL
    cannot store before execution (see the module docstring)."""

    def on_parse(self) -> Iterator[None]:
        yield
        context = self.execution_context
        document = context.graphql_document
        # Strawberry's `operation_name` falls back to the first operation's name: only the one
        # the client sent says whether it chose.
        if document is None or getattr(context, "_provided_operation_name", None) is not None:
            return
        operations = sum(isinstance(d, OperationDefinitionNode) for d in document.definitions)
        if operations > 1:
            raise AmbiguousOperation

    def on_execute(self) -> Iterator[None]:
        context = self.execution_context
        document = context.graphql_document
        if document is not None and context.result is None:
            path = unstorable_argument(document, context.operation_name, context.variables,
                                       context.query)
            if path is not None:
                error = BadUserInput(f"{path} must not contain a NUL character or an unpaired "
                                     "surrogate", field=path)
                context.result = GraphQLExecutionResult(data=None, errors=[error])
        yield
