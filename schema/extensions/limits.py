"""GraphQL query limits: each refused with QUERY_TOO_COMPLEX (or BAD_USER_INPUT for a page size)
before any resolver or SQL runs.

- tokens in the document (`MAX_QUERY_TOKENS`): the parser, through Strawberry's
  `MaxTokensLimiter`;
- fields once fragments are expanded (2 × `MAX_QUERY_TOKENS`) and one field repeated in a
  selection set (`MAX_FIELD_REPEATS`): `QueryGuard`, after parsing and before validation;
- depth (`MAX_QUERY_DEPTH`) and aliases, fragment spreads included (`MAX_QUERY_ALIASES`):
  validation, through Strawberry's `QueryDepthLimiter` and `MaxAliasesLimiter`;
- `first` (`MAX_PAGE_SIZE`, BAD_USER_INPUT) and the cost, fields × page sizes × days
  (`MAX_QUERY_COST`): validation for literals, `QueryGuard.on_execute` once variables are known.

The guard runs before validation because validation itself can be the attack: graphql-core's
overlapping-fields rule is quadratic in a field repeated hundreds of times, and Strawberry's depth
and alias counters walk every path through the fragments, which is exponential in a "fragment
bomb" (each fragment spreading the next one twice). The guard expands each fragment once.

Validation results are cached per document (Strawberry's `ValidationCache`, keyed by the rules),
so the rule classes are built once per application, not per request.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import Enum
from typing import Any

from graphql import (
    ASTValidationRule,
    DocumentNode,
    FieldNode,
    FloatValueNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLField,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SchemaMetaFieldDef,
    SelectionSetNode,
    StringValueNode,
    TypeMetaFieldDef,
    TypeNameMetaFieldDef,
    ValidationContext,
    ValidationRule,
    VariableNode,
    get_named_type,
    get_operation_ast,
)
from graphql import ExecutionResult as GraphQLExecutionResult
from graphql.language import EnumValueNode
from strawberry.extensions import (
    AddValidationRules,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    QueryDepthLimiter,
    SchemaExtension,
)

from domain.ranges import DEFAULT_WINDOW
from gateway.errors import BadUserInput, QueryTooComplex
from gateway.ops.settings import Settings

DEFAULT_DAY_MARGIN = 1
"""A range with no `from` costs its default window (domain/ranges.py) in buckets, a DAY window
one day more: 31 for the 30 days `to − 29 … to`. No default DAY answer has 31 points; the day
was counted from the start (the dates `today − 30 … today`) and is kept as a margin so that no
query's cost, nor which queries pass, changes. An estimate may round up, never down."""
DEFAULT_RANGE_UNITS = {period: units + (DEFAULT_DAY_MARGIN if period == "DAY" else 0)
                       for period, units in DEFAULT_WINDOW.items()}
"""What the `from`/`to` multiplier of a field is when `from` is omitted: 31, 12 and 12."""
MAX_RANGE_DAYS = 366 * 100     # beyond this a range costs the same (and is refused anyway)
EXPANSION_FACTOR = 2           # fields after fragment expansion: at most this × MAX_QUERY_TOKENS
PERIOD_DAYS = {"DAY": 1, "WEEK": 7, "MONTH": 30}
_GUARD_CACHE_SIZE = 512


@dataclass(frozen=True)
class Limits:
    max_depth: int
    max_aliases: int
    max_tokens: int
    max_field_repeats: int
    max_page_size: int
    max_cost: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(settings.max_query_depth, settings.max_query_aliases,
                   settings.max_query_tokens, settings.max_field_repeats,
                   settings.max_page_size, settings.max_query_cost)

    @property
    def max_expanded_fields(self) -> int:
        return EXPANSION_FACTOR * self.max_tokens


def limit_extensions(limits: Limits) -> list[Callable[[], SchemaExtension]]:
    """The schema extensions that enforce `limits`, as per-request factories."""
    rules: list[type[ASTValidationRule]] = [
        _with_code(rule, QueryTooComplex.code)
        for rule in (*QueryDepthLimiter(max_depth=limits.max_depth).validation_rules,
                     *MaxAliasesLimiter(max_alias_count=limits.max_aliases).validation_rules)
    ]
    rules.append(_page_and_cost_rule(limits))
    guard = DocumentGuard(limits)
    return [
        lambda: MaxTokensLimiter(max_token_count=limits.max_tokens),
        lambda: QueryGuard(limits, guard),
        lambda: AddValidationRules(rules),
    ]


def is_token_limit_error(error: GraphQLError) -> bool:
    """The parser's "Document contains more than N tokens" (a syntax error without a class of its
    own; graphql-core words it the same for `max_tokens` and `max_lexical_tokens`)."""
    description = getattr(error, "description", None)
    return isinstance(description, str) and description.startswith((
        "Document contains more than", "Source contains more than"))


def _with_code(rule: type[ASTValidationRule], code: str) -> type[ValidationRule]:
    """A validation rule whose errors carry `extensions.code`. Strawberry's limiters check the
    whole document in their constructor and report through the context, so the context's error
    callback is wrapped for the duration of that constructor."""

    class Coded(ValidationRule):
        def __init__(self, context: ValidationContext) -> None:
            report = context.on_error

            def on_error(error: GraphQLError) -> None:
                error.extensions = {**(error.extensions or {}), "code": code}
                report(error)

            context.on_error = on_error  # type: ignore[method-assign]
            try:
                self.inner = rule(context)
            finally:
                context.on_error = report  # type: ignore[method-assign]
            super().__init__(context)

    Coded.__name__ = Coded.__qualname__ = f"Coded{rule.__name__}"
    return Coded


# --- the document guard: fragment expansion and repeated fields -------------------------------


class DocumentGuard:
    """Checks a parsed document before validation; remembers the verdict per document object
    (Strawberry's parser cache hands out the same object for the same query text)."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._verdicts: dict[int, tuple[DocumentNode, QueryTooComplex | None]] = {}

    def check(self, document: DocumentNode) -> None:
        cached = self._verdicts.get(id(document))
        if cached is not None and cached[0] is document:
            error = cached[1]
        else:
            error = self._inspect(document)
            if len(self._verdicts) >= _GUARD_CACHE_SIZE:
                self._verdicts.clear()
            self._verdicts[id(document)] = (document, error)
        if error is not None:
            raise QueryTooComplex(error.message, **(error.extensions or {}))

    def _inspect(self, document: DocumentNode) -> QueryTooComplex | None:
        fragments = {d.name.value: d for d in document.definitions
                     if isinstance(d, FragmentDefinitionNode)}
        walker = _Expansion(fragments, self.limits)
        try:
            for definition in document.definitions:
                if isinstance(definition, OperationDefinitionNode):
                    walker.count(definition.selection_set)
        except QueryTooComplex as error:
            return error
        except RecursionError:
            return QueryTooComplex("Query nests too deeply")
        return None


class _Expansion:
    """Counts fields with every fragment expanded (each fragment walked once, then reused), and
    stops at the first selection set that repeats a field or the first count over the limit."""

    def __init__(self, fragments: dict[str, FragmentDefinitionNode], limits: Limits) -> None:
        self.fragments = fragments
        self.limits = limits
        self.memo: dict[str, tuple[int, Counter[str]]] = {}
        self.visiting: set[str] = set()

    def count(self, selection_set: SelectionSetNode) -> int:
        total, names = self._walk(selection_set)
        self._check(names)
        return total

    def _walk(self, selection_set: SelectionSetNode) -> tuple[int, Counter[str]]:
        """(fields below and at this level, the names selected at this level)."""
        total = 0
        names: Counter[str] = Counter()
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                names[selection.name.value] += 1
                total += 1
                if selection.selection_set is not None:
                    total += self.count(selection.selection_set)
            elif isinstance(selection, InlineFragmentNode):
                inner_total, inner_names = self._walk(selection.selection_set)
                total += inner_total
                names.update(inner_names)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = self.fragments.get(name)
                if fragment is None or name in self.visiting:
                    continue  # unknown or cyclic: validation reports it
                if name not in self.memo:
                    self.visiting.add(name)
                    self.memo[name] = self._walk(fragment.selection_set)
                    self.visiting.discard(name)
                inner_total, inner_names = self.memo[name]
                total += inner_total
                names.update(inner_names)
            if total > self.limits.max_expanded_fields:
                raise QueryTooComplex(
                    f"Query selects more than {self.limits.max_expanded_fields} fields "
                    "once its fragments are expanded")
        return total, names

    def _check(self, names: Counter[str]) -> None:
        if names:
            name, repeats = names.most_common(1)[0]
            if repeats > self.limits.max_field_repeats:
                raise QueryTooComplex(
                    f"Field '{name}' is selected {repeats} times in one selection set; "
                    f"the limit is {self.limits.max_field_repeats}")


class QueryGuard(SchemaExtension):
    """Runs the document guard after parsing, and the page-size and cost check again once the
    variables are known (validation, cached per document, only sees literals)."""

    def __init__(self, limits: Limits, guard: DocumentGuard) -> None:
        self.limits = limits
        self.guard = guard

    def on_parse(self) -> Any:
        yield
        document = self.execution_context.graphql_document
        if document is not None:
            self.guard.check(document)

    def on_execute(self) -> Any:
        context = self.execution_context
        document = context.graphql_document
        if document is not None and context.result is None:
            operation = get_operation_ast(document, context.operation_name)
            if operation is not None and operation.variable_definitions:
                error = CostEstimator(context.schema._schema, document, self.limits,
                                      context.variables or {}).check(operation)
                if error is not None:
                    context.result = GraphQLExecutionResult(data=None, errors=[error])
        yield


# --- page sizes and cost ----------------------------------------------------------------------


def _page_and_cost_rule(limits: Limits) -> type[ValidationRule]:
    class PageSizeAndCostRule(ValidationRule):
        """`first` within 1..MAX_PAGE_SIZE and the estimated cost within MAX_QUERY_COST, for the
        literal arguments of each operation (variables are checked per request)."""

        def __init__(self, context: ValidationContext) -> None:
            super().__init__(context)
            document = context.document
            estimator = CostEstimator(context.schema, document, limits, None)
            for definition in document.definitions:
                if isinstance(definition, OperationDefinitionNode):
                    error = estimator.check(definition)
                    if error is not None:
                        context.report_error(error)

    return PageSizeAndCostRule


class CostEstimator:
    """Estimated number of objects a query returns: each field counts 1, and what a field selects
    counts once per item it returns: `first` items for a page, one per day (week, month) of a
    `from`/`to` range. `variables=None` means literals only (a variable counts as the default)."""

    def __init__(self, schema: GraphQLSchema, document: DocumentNode, limits: Limits,
                 variables: dict[str, Any] | None) -> None:
        self.schema = schema
        self.limits = limits
        self.variables = variables
        self.fragments = {d.name.value: d for d in document.definitions
                          if isinstance(d, FragmentDefinitionNode)}
        self.memo: dict[str, int] = {}
        self.visiting: set[str] = set()

    def check(self, operation: OperationDefinitionNode) -> GraphQLError | None:
        root = self.schema.get_root_type(operation.operation)
        try:
            cost = self._cost(operation.selection_set, root)
        except BadUserInput as error:
            return error
        except RecursionError:
            return QueryTooComplex("Query nests too deeply")
        if cost > self.limits.max_cost:
            return QueryTooComplex(
                f"Query cost {cost} exceeds the limit of {self.limits.max_cost} (each page "
                "size and each day of a date range multiplies what it contains)",
                cost=cost, maxCost=self.limits.max_cost)
        return None

    def _cost(self, selection_set: SelectionSetNode, parent: Any) -> int:
        total = 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                field = self._field(parent, selection.name.value)
                total += 1
                if selection.selection_set is not None:
                    child_type = get_named_type(field.type) if field is not None else None
                    inner = self._cost(selection.selection_set, child_type)
                    total += inner * (self._multiplier(selection, field) if field else 1)
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                inner_type = self.schema.get_type(condition.name.value) if condition else parent
                total += self._cost(selection.selection_set, inner_type)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = self.fragments.get(name)
                if fragment is None or name in self.visiting:
                    continue
                if name not in self.memo:
                    self.visiting.add(name)
                    fragment_type = self.schema.get_type(fragment.type_condition.name.value)
                    self.memo[name] = self._cost(fragment.selection_set, fragment_type)
                    self.visiting.discard(name)
                total += self.memo[name]
            if total > self.limits.max_cost:
                return total  # no need to count further
        return total

    def _field(self, parent: Any, name: str) -> GraphQLField | None:
        if name == "__typename":
            return TypeNameMetaFieldDef
        if name == "__schema":
            return SchemaMetaFieldDef
        if name == "__type":
            return TypeMetaFieldDef
        fields = getattr(parent, "fields", None)
        return fields.get(name) if fields else None

    def _multiplier(self, node: FieldNode, field: GraphQLField) -> int:
        multiplier = 1
        if "first" in field.args:
            first = self._argument(node, field, "first")
            if first is None:
                first = self.limits.max_page_size
            first = _whole_number(first, "first")
            if not 1 <= first <= self.limits.max_page_size:
                raise BadUserInput(f"first must be between 1 and {self.limits.max_page_size}",
                                   field="first")
            multiplier *= first
        if "from" in field.args or "to" in field.args:
            multiplier *= self._range_units(node, field)
        return multiplier

    def _range_units(self, node: FieldNode, field: GraphQLField) -> int:
        start = _as_date(self._argument(node, field, "from"))
        end = _as_date(self._argument(node, field, "to"))
        period = self._argument(node, field, "period") if "period" in field.args else None
        period = str(period).upper() if period is not None else "DAY"
        if start is None:  # the resolvers' default range: 30 days, 12 weeks or 12 months
            return DEFAULT_RANGE_UNITS.get(period, DEFAULT_RANGE_UNITS["DAY"])
        days = ((end or datetime.now(UTC).date()) - start).days + 1
        days = min(max(days, 1), MAX_RANGE_DAYS)
        return max(1, math.ceil(days / PERIOD_DAYS.get(period, 1)))

    def _argument(self, node: FieldNode, field: GraphQLField, name: str) -> Any:
        """The argument's value: literal, variable (when known) or the schema's default."""
        for argument in node.arguments or ():
            if argument.name.value != name:
                continue
            value = argument.value
            if isinstance(value, VariableNode):
                if self.variables is not None and value.name.value in self.variables:
                    return self.variables[value.name.value]
                break
            if isinstance(value, IntValueNode):
                return int(value.value)
            if isinstance(value, FloatValueNode):
                return float(value.value)
            if isinstance(value, (StringValueNode, EnumValueNode)):
                return value.value
            return None
        default = field.args[name].default_value
        if isinstance(default, Enum):
            return default.name
        return default if isinstance(default, (int, str)) else None


def _whole_number(value: Any, name: str) -> int:
    """An argument that must be an Int, as graphql-core would coerce it (5.0 is 5); anything else
    is BAD_USER_INPUT saying what it is, before the range is checked."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float):
        given = f"{value:g}"
    elif isinstance(value, bool):
        given = "a boolean"
    elif isinstance(value, str):
        given = "a string"
    elif isinstance(value, dict):
        given = "an object"
    else:
        given = "a list" if isinstance(value, list) else "no number"
    raise BadUserInput(f"{name} must be an integer (Int), got {given}", field=name)


def _as_date(value: Any) -> date | None:
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            return None
    return None
