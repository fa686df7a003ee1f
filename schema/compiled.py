"""Compiled execution: hot queries answered from a plan built once per document.

graphql-core executes every field of every response through generic machinery: a resolve-info
object, Strawberry's argument conversion and resolver wrapper, a type dispatch to complete the
value, a coroutine per field. The admin page of 100 users' overviews is 1,500 such fields, 26 ms
of CPU cached or not. A validated operation always selects the same fields, so all of that can be
worked out once: `CompiledOperations` turns an operation into a tree of `ObjectPlan`s (the response
keys in order, aliases applied, fragments and literal `@skip`/`@include` already resolved, each
field's resolver or attribute, its arguments converted to Python when they are literals, and one
completion function per field for its type) and runs the tree directly (docs/performance.md,
"Compiled execution").

What it answers, and what it leaves to Strawberry (which stays the reference):

- only a **query** that Strawberry has already answered once without any error: parsing, the
  limits, validation and the ambiguity check are properties of the document, so a document that
  passed them once passes them always. The first request of a document runs through Strawberry and
  teaches the plan cache (`learn`);
- only fields that are attributes or plain Strawberry resolvers (no field extensions, permission
  classes or abstract types; no introspection, `@defer` or fragment arguments): anything else
  makes the document uncompilable, and Strawberry answers it every time;
- only the **success path**. Whatever would put an error in the response (a variable of the wrong
  type, a page size or cost over the limits, an argument PostgreSQL cannot store, a resolver that
  raises, a null for a non-null field, a value a scalar refuses) raises `Fallback` and the request
  is answered by Strawberry from the start, with a fresh context: errors, their order, their
  paths and null propagation are then exactly graphql-core's. Queries have no side effects, so
  running one again is safe; it costs the work done before the error, on a path that is rare.

Resolvers are called as Strawberry calls them (`self` is the parent object, arguments converted by
Strawberry's `convert_arguments`, `info` given by name) except that `info` is a `PlanInfo` carrying
only `context`: the gateway's resolvers read nothing else from it (the differential tests would
fail if one did). All the resolvers of one level of the response start in the same event-loop tick,
as graphql-core starts them, so the DataLoaders batch them the same way.

Equivalence is tested differentially (tests/test_compiled.py): the queries of the test suite, the
examples of docs/api.md and random queries generated over the schema give byte-identical responses
through both executors. `COMPILED_EXECUTION=false` turns the compiled path off.
"""

from __future__ import annotations

import asyncio
import datetime
import enum
import inspect
import keyword
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    GraphQLBoolean,
    GraphQLEnumType,
    GraphQLError,
    GraphQLFloat,
    GraphQLID,
    GraphQLInt,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLScalarType,
    GraphQLSchema,
    GraphQLString,
    OperationDefinitionNode,
    OperationType,
    VariableNode,
    get_nullable_type,
    parse,
)
from graphql import ExecutionResult as GraphQLExecutionResult
from graphql.execution.collect_fields import (
    FieldDetails,
    FragmentDetails,
    collect_fields,
    collect_subfields,
)
from graphql.execution.values import VariableValues, get_argument_values, get_variable_values
from graphql.language import Visitor, visit
from graphql.pyutils import Undefined
from strawberry.types.arguments import convert_arguments
from strawberry.types.execution import ExecutionResult
from strawberry.types.field import StrawberryField

from gateway.ops import metrics, tracing
from schema.extensions.cache_report import cache_report
from schema.extensions.errors import operation_done
from schema.extensions.input_check import unstorable_argument
from schema.extensions.limits import CostEstimator, Limits
from schema.extensions.tracing import finish_operation_span

PLAN_CACHE_SIZE = 512
"""Documents remembered (compiled, or known not to compile): the same bound as the parse and
validation caches of schema/schema.py."""
VARIANTS_PER_DOCUMENT = 16
"""Plans kept per document for different values of the variables its `@skip`/`@include` read."""


_IMMUTABLE = (str, int, float, bool, type(None), enum.Enum, datetime.date)
"""Converted literal arguments of these types are converted once and shared by every request."""


class Fallback(Exception):
    """The compiled path cannot answer this request exactly as graphql-core would; Strawberry
    answers it instead. `reason` labels `analytics_compiled_fallbacks_total`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Uncompilable(Exception):
    """The document selects something the plans do not cover; Strawberry answers it always."""


@dataclass(slots=True)
class PlanInfo:
    """The `info` a compiled plan hands to resolvers: the request's context, nothing else."""

    context: Any


# --- the plan ------------------------------------------------------------------------------------

Complete = Callable[[Any, "Run"], Any]
"""Turns a resolved value into its JSON value (or raises `Fallback`)."""


@dataclass(slots=True)
class FieldPlan:
    """One response key of a selection set."""

    key: str                        # the response key: the alias, else the field name
    complete: Complete | None       # None for `__typename`
    attribute: str | None = None    # a plain attribute of the parent object
    typename: str | None = None     # `__typename`: the parent type's name
    itself: bool = False            # a subscription's root field: the event is its value
    fast: str | None = None         # a built-in scalar: the Python type whose values pass as is
    # A resolver: Strawberry's, with the arguments as Strawberry converts them.
    resolver: Callable[..., Any] | None = None
    self_parameter: bool = False
    parameters: tuple[str, ...] = ()  # the parameters that receive the parent (`root`/`parent`)
    info_parameter: str | None = None
    kwargs: dict[str, Any] | None = None  # converted literal arguments (None: they read variables)
    arguments: Callable[[VariableValues], dict[str, Any]] | None = None  # ... converted per request


@dataclass(slots=True)
class ObjectPlan:
    typename: str
    fields: list[FieldPlan] = field(default_factory=list)
    # The generated function that builds the JSON object (`generate`); None only until then.
    build: Callable[[Any, Run], dict[str, Any]] | None = None


# --- running a plan ------------------------------------------------------------------------------


class Run:
    """One execution of a plan: the resolvers' results still awaited, level by level."""

    __slots__ = ("info", "pending", "variables")

    def __init__(self, context: Any, variables: VariableValues) -> None:
        self.info = PlanInfo(context)
        self.variables = variables
        self.pending: list[tuple[Any, FieldPlan, dict[str, Any]]] = []

    def object(self, plan: ObjectPlan, source: Any) -> dict[str, Any]:
        """The JSON object for `source`, from the plan's generated builder (`generate`):
        resolvers that return awaitables are queued (`resolve`), their key holding its place
        (dicts keep insertion order) until the level's results arrive."""
        build = plan.build
        assert build is not None, "a plan is run only once generated"
        return build(source, self)

    def resolve(self, entry: FieldPlan, source: Any, out: dict[str, Any]) -> None:
        """`out[key]` for a resolver field: its value, or its place kept while it is awaited."""
        value = self.call(entry, source)
        if inspect.isawaitable(value):
            out[entry.key] = None
            self.pending.append((value, entry, out))
        else:
            out[entry.key] = entry.complete(value, self)  # type: ignore[misc]

    def call(self, entry: FieldPlan, source: Any) -> Any:
        kwargs = (dict(entry.kwargs) if entry.kwargs is not None
                  else entry.arguments(self.variables))  # type: ignore[misc]
        for name in entry.parameters:
            kwargs[name] = source
        if entry.info_parameter is not None:
            kwargs[entry.info_parameter] = self.info
        assert entry.resolver is not None
        if entry.self_parameter:
            return entry.resolver(source, **kwargs)
        return entry.resolver(**kwargs)

    async def execute(self, plan: ObjectPlan, root: Any) -> dict[str, Any]:
        try:
            data = self.object(plan, root)
            while self.pending:
                level, self.pending = self.pending, []
                if len(level) == 1:
                    try:
                        results: list[Any] = [await level[0][0]]
                    except Exception as exc:
                        results = [exc]
                else:  # started together: the loaders see every key of the level in one tick
                    results = await asyncio.gather(*(item[0] for item in level),
                                                   return_exceptions=True)
                for (_, entry, out), value in zip(level, results, strict=True):
                    if isinstance(value, BaseException):
                        if isinstance(value, asyncio.CancelledError):
                            self.abandon()
                            raise value
                        raise Fallback("resolver_error")
                    out[entry.key] = entry.complete(value, self)  # type: ignore[misc]
            return data
        except (Fallback, asyncio.CancelledError):
            self.abandon()
            raise
        except Exception as exc:  # a resolver raised synchronously, or a completion failed
            self.abandon()
            raise Fallback("resolver_error") from exc

    def abandon(self) -> None:
        """Close the coroutines queued but never awaited (no "never awaited" warnings)."""
        for awaitable, _, _ in self.pending:
            close = getattr(awaitable, "close", None)
            if close is not None:
                close()
        self.pending = []


# --- compiling -----------------------------------------------------------------------------------


class Compiler:
    """Builds the plan of one operation for one set of `@skip`/`@include` values."""

    def __init__(self, strawberry_schema: Any, document: DocumentNode | None,
                 operation: OperationDefinitionNode, variables: VariableValues,
                 fragments: dict[str, FragmentDetails] | None = None) -> None:
        self.strawberry = strawberry_schema
        self.schema: GraphQLSchema = strawberry_schema._schema
        self.operation = operation
        self.variables = variables
        self.fragments = fragments if fragments is not None else {
            d.name.value: FragmentDetails(d) for d in (document.definitions if document else ())
            if isinstance(d, FragmentDefinitionNode)}

    def root(self) -> ObjectPlan:
        """The plan of a query's root selection set."""
        root_type = self.schema.query_type
        assert root_type is not None
        collected = collect_fields(self.schema, self.fragments, self.variables, root_type,
                                   self.operation)
        self._check_defer(collected)
        return self._object(root_type, collected.grouped_field_set)

    def event(self) -> ObjectPlan:
        """The plan of one event of a subscription: its root field's value is the event (what
        the subscription's generator yielded), completed with the field's selection."""
        root_type = self.schema.subscription_type
        assert root_type is not None
        collected = collect_fields(self.schema, self.fragments, self.variables, root_type,
                                   self.operation)
        self._check_defer(collected)
        plan = ObjectPlan(root_type.name)
        for key, details in collected.grouped_field_set.items():
            node = details[0].node
            definition = root_type.fields.get(node.name.value)
            if definition is None:
                plan.fields.append(FieldPlan(key, None, typename=root_type.name))
                continue
            plan.fields.append(FieldPlan(key, self._completion(definition.type, details),
                                         itself=True))
        plan.build = generate(plan)
        return plan

    @staticmethod
    def _check_defer(collected: Any) -> None:
        if collected.new_defer_usages or collected.forbidden_directive_instances:
            raise Uncompilable("@defer")

    def _object(self, type_: GraphQLObjectType,
                grouped: dict[str, list[FieldDetails]]) -> ObjectPlan:
        plan = ObjectPlan(type_.name)
        for key, details in grouped.items():
            plan.fields.append(self._field(type_, key, details))
        plan.build = generate(plan)
        return plan

    def _field(self, parent: GraphQLObjectType, key: str,
               details: list[FieldDetails]) -> FieldPlan:
        if any(d.defer_usage is not None or d.fragment_variable_values is not None
               for d in details):
            raise Uncompilable("@defer or fragment arguments")
        node = details[0].node
        name = node.name.value
        if name == "__typename":
            return FieldPlan(key, None, typename=parent.name)
        definition = parent.fields.get(name)
        if definition is None:  # __schema, __type: introspection is Strawberry's
            raise Uncompilable(name)
        strawberry_field = definition.extensions.get("strawberry-definition")
        if not isinstance(strawberry_field, StrawberryField):
            raise Uncompilable(f"{parent.name}.{name} is not a Strawberry field")
        if strawberry_field.extensions or strawberry_field.permission_classes:
            raise Uncompilable(f"{parent.name}.{name} has field extensions")
        complete = self._completion(definition.type, details)
        resolver = strawberry_field.base_resolver
        if resolver is None:
            if self.strawberry.config.default_resolver is not getattr:
                raise Uncompilable("a default resolver other than getattr")
            return FieldPlan(key, complete, attribute=strawberry_field.python_name,
                             fast=_FAST_SCALARS.get(get_nullable_type(definition.type)))
        entry = FieldPlan(
            key, complete, resolver=resolver,
            self_parameter=resolver.self_parameter is not None,
            parameters=tuple(p.name for p in (resolver.parent_parameter,
                                              resolver.root_parameter) if p is not None),
            info_parameter=resolver.info_parameter.name if resolver.info_parameter else None)
        convert = self._converter(strawberry_field, definition, node)
        literal = None if _reads_variables(node) else convert(self.variables)
        if literal is not None and all(isinstance(v, _IMMUTABLE) for v in literal.values()):
            entry.kwargs = literal
        else:  # variables, or an input object: converted per request, never shared
            entry.arguments = convert
        return entry

    def _converter(self, strawberry_field: StrawberryField, definition: Any,
                   node: FieldNode) -> Callable[[VariableValues], dict[str, Any]]:
        """The field's arguments as its resolver receives them, from the request's variables."""
        registry = self.strawberry.schema_converter.scalar_registry
        config = self.strawberry.config

        def convert(variables: VariableValues) -> dict[str, Any]:
            values = get_argument_values(definition, node, variables)
            return convert_arguments(values, strawberry_field.arguments,
                                     scalar_registry=registry, config=config)

        return convert

    def _completion(self, type_: GraphQLOutputType, details: list[FieldDetails]) -> Complete:
        """The function that completes a value of `type_` as graphql-core's `complete_value`
        would on its success path."""
        if isinstance(type_, GraphQLNonNull):
            inner = self._completion(type_.of_type, details)

            def non_null(value: Any, run: Run) -> Any:
                if value is None:
                    raise Fallback("null_for_non_null")
                return inner(value, run)

            return non_null
        inner = self._nullable(type_, details)

        def nullable(value: Any, run: Run) -> Any:
            return None if value is None else inner(value, run)

        return nullable

    def _nullable(self, type_: GraphQLOutputType, details: list[FieldDetails]) -> Complete:
        if isinstance(type_, GraphQLList):
            item = self._completion(type_.of_type, details)

            def items(value: Any, run: Run) -> Any:
                # graphql-core's `is_iterable`: not a string, bytes or a mapping
                if isinstance(value, (str, bytes, bytearray, memoryview, Mapping)) \
                        or not isinstance(value, Iterable):
                    raise Fallback("not_a_list")
                return [item(element, run) for element in value]

            return items
        if isinstance(type_, (GraphQLScalarType, GraphQLEnumType)):
            serialize = type_.serialize

            def leaf(value: Any, run: Run) -> Any:
                serialized = serialize(value)
                if serialized is None or serialized is Undefined:
                    raise Fallback("leaf_refused")
                return serialized

            return leaf
        if isinstance(type_, GraphQLObjectType):
            if type_.is_type_of is not None:
                raise Uncompilable(f"{type_.name} checks its values' types")
            collected = collect_subfields(self.schema, self.fragments, self.variables,
                                          self.operation, type_, details)
            self._check_defer(collected)
            plan = self._object(type_, collected.grouped_field_set)

            def obj(value: Any, run: Run) -> Any:
                return run.object(plan, value)

            return obj
        raise Uncompilable(f"abstract type {type_}")


# --- code generation -----------------------------------------------------------------------------

_FAST_SCALARS: dict[Any, str] = {GraphQLInt: "int", GraphQLFloat: "float", GraphQLString: "str",
                                 GraphQLBoolean: "bool", GraphQLID: "str"}
"""graphql-core's built-in scalars, by the Python type whose values their `serialize` returns
unchanged (within the bounds of `_FAST_CHECKS`): such a value is written as is, anything else
(None, a bool for an Int, a Decimal...) goes through the field's full completion."""
_FAST_CHECKS = {
    "int": "type(v) is int and -2147483648 <= v <= 2147483647",  # GraphQL's Int is 32-bit
    "float": "type(v) is float and -_INF < v < _INF",  # finite (NaN fails both comparisons)
    "str": "type(v) is str",
    "bool": "type(v) is bool",
}


def generate(plan: ObjectPlan) -> Callable[[Any, Run], dict[str, Any]]:
    """One Python function that builds the JSON object of `plan` for a source object: a
    statement per response key, built-in scalars checked inline, everything else through the
    field's completion (`C<i>`) or, for resolvers, `Run.resolve`. It does what `Run.object`
    would do walking the plan's fields, without the loop and the calls per field."""
    namespace: dict[str, Any] = {"_INF": float("inf")}
    lines = ["def build(source, run):", "    out = {}"]
    for i, entry in enumerate(plan.fields):
        key = repr(entry.key)
        if entry.attribute is not None:
            namespace[f"C{i}"] = entry.complete
            if entry.attribute.isidentifier() and not keyword.iskeyword(entry.attribute):
                lines.append(f"    v = source.{entry.attribute}")
            else:
                namespace[f"A{i}"] = entry.attribute
                lines.append(f"    v = getattr(source, A{i})")
            if entry.fast is not None:
                lines.append(f"    out[{key}] = v if {_FAST_CHECKS[entry.fast]} else C{i}(v, run)")
            else:
                lines.append(f"    out[{key}] = C{i}(v, run)")
        elif entry.resolver is not None:
            namespace[f"E{i}"] = entry
            lines.append(f"    run.resolve(E{i}, source, out)")
        elif entry.itself:
            namespace[f"C{i}"] = entry.complete
            lines.append(f"    out[{key}] = C{i}(source, run)")
        else:
            lines.append(f"    out[{key}] = {entry.typename!r}")
    lines.append("    return out")
    exec(compile("\n".join(lines), f"<plan {plan.typename}>", "exec"), namespace)
    return namespace["build"]  # type: ignore[no-any-return]


def _reads_variables(node: FieldNode) -> bool:
    """Whether any argument of the field refers to a variable."""
    found = False

    class Finder(Visitor):
        def enter_variable(self, *_: Any) -> Any:
            nonlocal found
            found = True
            return Visitor.BREAK

    for argument in node.arguments or ():
        visit(argument, Finder())
    return found


def _skip_include_variables(document: Any) -> tuple[str, ...]:
    """The variables that `@skip`/`@include` read anywhere in the document, sorted."""
    names: set[str] = set()

    class Finder(Visitor):
        def enter_directive(self, node: Any, *_: Any) -> None:
            if node.name.value in ("skip", "include"):
                for argument in node.arguments or ():
                    if isinstance(argument.value, VariableNode):
                        names.add(argument.value.name.value)

    visit(document, Finder())
    return tuple(sorted(names))


# --- the documents -------------------------------------------------------------------------------


@dataclass(slots=True)
class Prepared:
    """A document (and operation) Strawberry has answered without errors, ready to plan."""

    document: DocumentNode
    operation: OperationDefinitionNode
    name: str | None                    # the operation's name, as metrics and logs name it
    directive_variables: tuple[str, ...]
    plans: dict[tuple[Any, ...], ObjectPlan] = field(default_factory=dict)


_UNCOMPILABLE = object()


class CompiledOperations:
    """The plan cache of one schema, and the compiled path's entry point (`execute`)."""

    def __init__(self, strawberry_schema: Any, limits: Limits, *,
                 size: int = PLAN_CACHE_SIZE) -> None:
        self.strawberry = strawberry_schema
        self.schema: GraphQLSchema = strawberry_schema._schema
        self.limits = limits
        self.size = size
        self._documents: OrderedDict[tuple[str, str | None], Any] = OrderedDict()
        no_variables = _coerce(self.schema, (), {})
        assert isinstance(no_variables, VariableValues)
        self._no_variables = no_variables

    def prepared(self, query: str, operation_name: str | None) -> Prepared | None:
        """The document's preparation, or None while it is unknown or when it is uncompilable."""
        key = (query, operation_name)
        entry = self._documents.get(key)
        if entry is None or entry is _UNCOMPILABLE:
            return None
        self._documents.move_to_end(key)
        return entry  # type: ignore[no-any-return]

    def learn(self, query: str, operation_name: str | None, variables: dict[str, Any] | None,
              result: Any) -> None:
        """After Strawberry answered `query` (with `variables`) without any error: remember
        whether it compiles, and its plan for these variables."""
        key = (query, operation_name)
        if key in self._documents or getattr(result, "errors", None) \
                or not isinstance(result, ExecutionResult):
            return
        self._remember(key, self._prepare(query, operation_name, variables))

    def _remember(self, key: tuple[str, str | None], entry: Any) -> None:
        self._documents[key] = entry
        if len(self._documents) > self.size:
            self._documents.popitem(last=False)

    def _prepare(self, query: str, operation_name: str | None,
                 variables: dict[str, Any] | None) -> Any:
        document = parse(query)
        operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
        if operation_name is None:
            operation = operations[0] if len(operations) == 1 else None
        else:
            operation = next((op for op in operations
                              if op.name is not None and op.name.value == operation_name), None)
        if operation is None or operation.operation is not OperationType.QUERY:
            return _UNCOMPILABLE
        name = operation_name or (operation.name.value if operation.name else None)
        prepared = Prepared(document, operation, name, _skip_include_variables(document))
        try:  # compiled now, for the variables just accepted: an uncompilable document is known
            self._plan(prepared, variables if isinstance(variables, dict) else None, query)
        except Fallback:
            return _UNCOMPILABLE
        return prepared

    async def execute(self, prepared: Prepared, variables: dict[str, Any] | None,
                      context: Any, query: str) -> ExecutionResult:
        """The response of the prepared operation, or `Fallback` (counted in
        `analytics_compiled_fallbacks_total`)."""
        started = time.perf_counter()
        try:
            coerced, plan = self._plan(prepared, variables, query)
            if not tracing.recording():
                data = await Run(context, coerced).execute(plan, None)
            else:  # the operation's span, as schema/extensions/tracing.py makes it
                span = tracing.start_child("graphql")
                try:
                    with tracing.current(span):
                        data = await Run(context, coerced).execute(plan, None)
                finally:
                    finish_operation_span(span, prepared.operation, [])
        except Fallback as handover:
            metrics.COMPILED_FALLBACKS.labels(handover.reason).inc()
            raise
        operation_done(prepared.name, "query", True, started)
        metrics.COMPILED_OPERATIONS.inc()
        return ExecutionResult(data=data, errors=None, extensions=cache_report(context))

    def _plan(self, prepared: Prepared, variables: dict[str, Any] | None,
              query: str) -> tuple[VariableValues, ObjectPlan]:
        """The variables coerced and checked as graphql-core and our extensions would, and the
        plan for their `@skip`/`@include` values."""
        operation = prepared.operation
        coerced = self._checked(prepared, variables, query) if operation.variable_definitions \
            else self._no_variables
        key = tuple(_hashable(coerced.coerced.get(name)) for name in prepared.directive_variables)
        try:
            plan = _variant(prepared.plans, key, lambda: Compiler(
                self.strawberry, prepared.document, operation, coerced).root())
        except GraphQLError:  # e.g. a null `if:` of @skip: graphql-core reports it
            raise Fallback("variables") from None
        if plan is _NOT_COMPILED:  # a variant that selects what the first one skipped
            raise Fallback("uncompilable")
        return coerced, plan

    def _checked(self, prepared: Prepared, variables: dict[str, Any] | None,
                 query: str) -> VariableValues:
        """The request's variables coerced by graphql-core, after the per-request checks of
        QueryGuard and InputCheck (schema/extensions/); `Fallback` for anything they refuse."""
        if variables is not None and not isinstance(variables, dict):
            raise Fallback("variables")
        operation = prepared.operation
        coerced = _coerce(self.schema, operation.variable_definitions, variables or {})
        if not isinstance(coerced, VariableValues):
            raise Fallback("variables")
        if CostEstimator(self.schema, prepared.document, self.limits,
                         variables or {}).check(operation) is not None:
            raise Fallback("limits")
        if unstorable_argument(prepared.document, prepared.name, variables, query) is not None:
            raise Fallback("input")
        return coerced


def _variant(plans: dict[tuple[Any, ...], ObjectPlan], key: tuple[Any, ...],
             build: Callable[[], ObjectPlan],
             uncompilable: tuple[type[Exception], ...] = (Uncompilable,)) -> ObjectPlan:
    """The plan of a document for one set of `@skip`/`@include` values, built once (at most
    `VARIANTS_PER_DOCUMENT` kept); `_NOT_COMPILED` when building it raises `uncompilable`."""
    plan = plans.get(key)
    if plan is None:
        try:
            plan = build()
        except uncompilable:
            plan = _NOT_COMPILED
        if len(plans) >= VARIANTS_PER_DOCUMENT:
            plans.clear()
        plans[key] = plan
    return plan


def _coerce(schema: GraphQLSchema, definitions: Any, inputs: dict[str, Any]
            ) -> VariableValues | list[GraphQLError]:
    return get_variable_values(schema, definitions, inputs, max_errors=50)


def _hashable(value: Any) -> Any:
    return value if isinstance(value, (bool, type(None))) else repr(value)


# --- subscription events -------------------------------------------------------------------------


class CompiledEvent:
    """Stands in for graphql-core's per-event executor of a subscription (it is asked only to
    `execute_operation`): the event completed by the document's plan, or, when the plan hands
    over, by graphql-core's executor (`fallback`)."""

    __slots__ = ("context", "fallback", "payload", "plan", "variables")

    def __init__(self, plan: ObjectPlan, payload: Any, context: Any, variables: VariableValues,
                 fallback: Callable[[], Any]) -> None:
        self.plan, self.payload, self.context = plan, payload, context
        self.variables, self.fallback = variables, fallback

    async def execute_operation(self, serially: bool | None = None) -> GraphQLExecutionResult:
        try:
            data = await Run(self.context, self.variables).execute(self.plan, self.payload)
        except Fallback as handover:
            metrics.COMPILED_FALLBACKS.labels(handover.reason).inc()
            result = self.fallback().execute_operation(serially)
            return await result if inspect.isawaitable(result) else result  # type: ignore[no-any-return]
        metrics.COMPILED_EVENTS.inc()
        return GraphQLExecutionResult(data=data, errors=None)


_NOT_COMPILED = ObjectPlan("")  # a document whose events graphql-core executes


@dataclass(slots=True)
class _EventDocument:
    directive_variables: tuple[str, ...]
    plans: dict[tuple[Any, ...], ObjectPlan] = field(default_factory=dict)


_event_documents: dict[int, tuple[weakref.ref[OperationDefinitionNode], _EventDocument]] = {}
"""Event plans by subscription operation, by identity: Strawberry's parse cache gives every
subscription of the same document the same operation node, so they share a plan (an idle
subscription holds none of its own), and a plan goes when its node does (it leaves the parse
cache). Not a `WeakKeyDictionary`: graphql-core's nodes compare by content, and two documents
whose operations read alike but whose fragments differ must not share a plan."""


def _event_document(operation: OperationDefinitionNode,
                    fragments: dict[str, FragmentDetails]) -> _EventDocument:
    key = id(operation)
    found = _event_documents.get(key)
    if found is not None and found[0]() is operation:
        return found[1]
    document = _EventDocument(_event_directive_variables(operation, fragments))
    _event_documents[key] = (weakref.ref(operation, lambda _: _forget(key)), document)
    return document


def _forget(key: int) -> None:
    entry = _event_documents.get(key)
    if entry is not None and entry[0]() is None:
        del _event_documents[key]


def compiled_event(executor: Any, payload: Any, fallback: Callable[[], Any]
                   ) -> CompiledEvent | None:
    """The compiled stand-in for the per-event executor of `executor` (graphql-core's executor of
    a subscription operation), or None when the document's events do not compile or compiled
    execution is off (`COMPILED_EXECUTION`)."""
    context = executor.context_value
    resources = getattr(context, "resources", None)
    if resources is None or not resources.settings.compiled_execution:
        return None
    operation: OperationDefinitionNode = executor.operation
    variables: VariableValues = executor.variable_values
    document = _event_document(operation, executor.fragments)
    key = tuple(_hashable(variables.coerced.get(name)) for name in document.directive_variables)
    # Uncompilable, or a directive graphql-core would report (its way, then): not compiled.
    plan = _variant(document.plans, key, lambda: Compiler(
        executor.schema._strawberry_schema, None, operation, variables,
        executor.fragments).event(), (Exception,))
    if plan is _NOT_COMPILED:
        return None
    return CompiledEvent(plan, payload, context, variables, fallback)


def _event_directive_variables(operation: OperationDefinitionNode,
                               fragments: dict[str, FragmentDetails]) -> tuple[str, ...]:
    names: set[str] = set()
    for node in (operation, *(f.definition for f in fragments.values())):
        names.update(_skip_include_variables(node))
    return tuple(sorted(names))
