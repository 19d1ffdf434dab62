"""What a ``DELETE`` or ``UPDATE`` touches: its table, and whether its ``WHERE`` limits the rows
at all (absent or always true: every row) or to a bounded set (a key pinned, or a key range no
wider than a batch). Parsed with sqlparse; pure, no database.

The lint (``bluegreen.migrations``) asks two questions of each data change in a migration:

* :func:`where_always_true` — is the condition missing or true for every row
  (``WHERE true``, ``WHERE 1 = 1``, ``WHERE x = x``, ``WHERE x IS NULL OR x IS NOT NULL``)?
* :func:`where_bounded` — does the condition pin a key (``id = 42``, ``doctor_id IN (1, 2)``)
  or keep a key within a range of at most :data:`MAX_BATCH_KEYS` (``id > 1000 AND id <= 2000``,
  ``id BETWEEN 1 AND 500``), the shape of one batch of a batched backfill?
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

import sqlparse
from sqlparse import sql
from sqlparse import tokens as T

MAX_BATCH_KEYS = 10_000
"""The widest key range one statement may cover and still count as a batch."""

_COMPARE = {"=", "<>", "!=", "<", ">", "<=", ">="}
_FLIP = {"<": ">", ">": "<", "<=": ">=", ">=": "<=", "=": "=", "<>": "<>", "!=": "!="}


# -- the expression tree -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Operand:
    """A side of a comparison: normalised text, and its value when it is a literal."""

    text: str
    number: Decimal | None = None
    string: str | None = None
    boolean: bool | None = None
    null: bool = False

    @property
    def literal(self) -> bool:
        return (
            self.number is not None
            or self.string is not None
            or self.null
            or (self.boolean is not None)
        )

    @property
    def column(self) -> str | None:
        """The column name (last dotted part, unquoted) when the operand is a plain name."""
        if self.literal or not self.text or any(c in self.text for c in " ()+-*/|:'"):
            return None
        return self.text.rsplit(".", 1)[-1].strip('"')


@dataclass(frozen=True, slots=True)
class Cmp:
    left: Operand
    op: str
    right: Operand


@dataclass(frozen=True, slots=True)
class Between:
    subject: Operand
    low: Operand
    high: Operand
    negated: bool


@dataclass(frozen=True, slots=True)
class Is:
    """``subject IS [NOT] NULL|TRUE|FALSE`` or ``IS [NOT] DISTINCT FROM other``."""

    subject: Operand
    negated: bool
    what: str  # "NULL", "TRUE", "FALSE" or "DISTINCT"
    other: Operand | None = None


@dataclass(frozen=True, slots=True)
class In:
    subject: Operand
    items: tuple[Operand, ...] | None  # None: a subquery or something not a list of values
    negated: bool


@dataclass(frozen=True, slots=True)
class Not:
    inner: Node


@dataclass(frozen=True, slots=True)
class And:
    parts: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    parts: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Value:
    """A bare operand used as a condition: ``WHERE true``, ``WHERE flag``."""

    operand: Operand


Node = Cmp | Between | Is | In | Not | And | Or | Value


# -- statements --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DataChange:
    """A ``DELETE`` or ``UPDATE`` statement: its kind, its table and its condition."""

    kind: str  # "DELETE" or "UPDATE"
    table: str
    where: Node | None
    statement: str


def data_change(statement: str) -> DataChange | None:
    """The ``DELETE``/``UPDATE`` in ``statement`` (after any ``WITH``), else None."""
    parsed = sqlparse.parse(statement)
    if not parsed:
        return None
    stmt = parsed[0]
    kind = stmt.get_type()  # type: ignore[no-untyped-call]
    if kind not in ("DELETE", "UPDATE"):
        return None
    seen_dml = False
    table = ""
    where: Node | None = None
    expect_table = False
    for tok in stmt.tokens:
        if tok.is_whitespace or tok.ttype in T.Comment:
            continue
        if tok.ttype is T.Keyword.DML and tok.normalized == kind:
            seen_dml, expect_table = True, kind == "UPDATE"
            continue
        if not seen_dml:
            continue
        if kind == "DELETE" and tok.ttype is T.Keyword and tok.normalized == "FROM" and not table:
            expect_table = True
            continue
        if expect_table and tok.ttype is T.Keyword and tok.normalized == "ONLY":
            continue
        if expect_table and isinstance(tok, sql.Identifier | sql.Token):
            table = _table_name(tok)
            expect_table = False
            continue
        if isinstance(tok, sql.Where):
            where = parse_condition(_where_tokens(tok))
    return DataChange(kind, table, where, statement)


_DOLLAR = re.compile(r"^\$(\w*)\$(.*)\$\1\$$", re.DOTALL)
_INNER_DML = re.compile(r"\b(DELETE\s+FROM|UPDATE\s+\S+\s+SET)\b", re.IGNORECASE)


def data_changes(statement: str) -> list[DataChange]:
    """The ``DELETE``/``UPDATE`` statements ``statement`` runs: itself, or those in the body of
    an anonymous code block (``DO $$ BEGIN DELETE FROM …; END $$``)."""
    top = data_change(statement)
    if top is not None:
        return [top]
    parsed = sqlparse.parse(statement)
    first = parsed[0].token_first(skip_cm=True) if parsed else None  # type: ignore[no-untyped-call]
    if first is None or first.normalized != "DO":
        return []
    found: list[DataChange] = []
    for tok in parsed[0].flatten():  # type: ignore[no-untyped-call]
        body = _DOLLAR.match(tok.value) if tok.ttype in T.Literal else None
        if body is None:
            continue
        code = body.group(2)
        for start in _INNER_DML.finditer(code):
            pieces = sqlparse.split(code[start.start() :], strip_semicolon=True)
            change = data_change(pieces[0]) if pieces else None
            if change is not None:
                found.append(change)
    return found


def _table_name(tok: sql.Token) -> str:
    name = str(tok)
    if isinstance(tok, sql.Identifier):
        name = tok.get_real_name() or name  # type: ignore[no-untyped-call]
    return name.strip('"') if name.startswith('"') else name.lower()


def _where_tokens(where: sql.Where) -> list[sql.Token]:
    """The condition's leaf tokens, without ``WHERE``, comments, whitespace and anything from
    ``RETURNING`` on."""
    out: list[sql.Token] = []
    for tok in where.flatten():  # type: ignore[no-untyped-call]
        if tok.is_whitespace or tok.ttype in T.Comment:
            continue
        if tok.ttype is T.Keyword and tok.normalized == "RETURNING":
            break
        out.append(tok)
    if out and out[0].normalized == "WHERE":
        out = out[1:]
    return out


# -- parsing a condition -----------------------------------------------------------------


class _Parser:
    """Recursive descent over sqlparse's leaf tokens: OR over AND over NOT over predicates."""

    def __init__(self, tokens: list[sql.Token]) -> None:
        self.toks = tokens
        self.pos = 0

    def peek(self, offset: int = 0) -> str:
        i = self.pos + offset
        return " ".join(self.toks[i].normalized.upper().split()) if i < len(self.toks) else ""

    def take(self) -> sql.Token:
        tok = self.toks[self.pos]
        self.pos += 1
        return tok

    def expr(self) -> Node:
        parts = [self.conj()]
        while self.peek() == "OR":
            self.pos += 1
            parts.append(self.conj())
        return parts[0] if len(parts) == 1 else Or(tuple(parts))

    def conj(self) -> Node:
        parts = [self.negation()]
        while self.peek() == "AND":
            self.pos += 1
            parts.append(self.negation())
        return parts[0] if len(parts) == 1 else And(tuple(parts))

    def negation(self) -> Node:
        if self.peek() == "NOT":
            self.pos += 1
            return Not(self.negation())
        return self.predicate()

    def predicate(self) -> Node:
        if self.peek() == "(" and self._group_is_condition():
            self.pos += 1
            inner = self.expr()
            if self.peek() == ")":
                self.pos += 1
            return inner
        left = self.operand()
        word = self.peek()
        if word in _COMPARE:
            op = self.take().value
            return Cmp(left, op, self.operand())
        negated = False
        if word == "NOT" and self.peek(1) in ("BETWEEN", "IN"):
            negated, word = True, self.peek(1)
            self.pos += 1
        if word == "BETWEEN":
            self.pos += 1
            if self.peek() == "SYMMETRIC":
                self.pos += 1
            low = self.operand()
            if self.peek() == "AND":
                self.pos += 1
            return Between(left, low, self.operand(), negated)
        if word == "IN":
            self.pos += 1
            return In(left, self._in_items(), negated)
        if word == "IS":
            return self._is(left)
        return Value(left)

    def _is(self, subject: Operand) -> Node:
        self.pos += 1  # IS
        negated = self.peek() == "NOT"
        if negated:
            self.pos += 1
        word = self.peek()
        if word == "NOT NULL":  # sqlparse reads it as one keyword
            self.pos += 1
            return Is(subject, not negated, "NULL")
        if word in ("NULL", "TRUE", "FALSE"):
            self.pos += 1
            return Is(subject, negated, word)
        if word == "DISTINCT":
            self.pos += 2 if self.peek(1) == "FROM" else 1
            return Is(subject, negated, "DISTINCT", self.operand())
        return Value(subject)

    def _group_is_condition(self) -> bool:
        """Whether the parenthesised group here is a whole condition (``(a = 1 OR b)``) rather
        than the start of an operand (``(a + 1) = 2``): nothing comparable follows it."""
        depth, i = 0, self.pos
        while i < len(self.toks):
            v = self.toks[i].value
            depth += v == "("
            depth -= v == ")"
            i += 1
            if depth == 0:
                break
        nxt = self.toks[i].normalized.upper() if i < len(self.toks) else ""
        return nxt not in _COMPARE and nxt not in ("BETWEEN", "IN", "IS", "NOT", "::")

    def operand(self) -> Operand:
        start = self.pos
        depth = 0
        while self.pos < len(self.toks):
            word = self.peek()
            if depth == 0 and (
                word in _COMPARE
                or word in ("AND", "OR", "BETWEEN", "IN", "IS", ")")
                or (word == "NOT" and self.pos > start)
            ):
                break
            depth += word == "("
            depth -= word == ")"
            self.pos += 1
        return _operand(self.toks[start : self.pos])

    def _in_items(self) -> tuple[Operand, ...] | None:
        if self.peek() != "(":
            self.operand()
            return None
        self.pos += 1
        items: list[Operand] = []
        current: list[sql.Token] = []
        depth = 0
        while self.pos < len(self.toks):
            tok = self.take()
            if tok.value == "(":
                depth += 1
            elif tok.value == ")":
                if depth == 0:
                    break
                depth -= 1
            if depth == 0 and tok.value == ",":
                items.append(_operand(current))
                current = []
            else:
                current.append(tok)
        if current:
            items.append(_operand(current))
        return tuple(items) if all(i.literal for i in items) else None


def _operand(tokens: list[sql.Token]) -> Operand:
    text = " ".join(
        t.value if t.ttype in T.String or t.value.startswith('"') else t.value.lower()
        for t in tokens
    )
    text = text.replace(" . ", ".").replace(" .", ".").replace(". ", ".")
    if len(tokens) == 1:
        tok = tokens[0]
        if tok.ttype in T.Number:
            try:
                return Operand(text, number=Decimal(tok.value))
            except InvalidOperation:
                return Operand(text)
        if tok.ttype in T.String.Single:
            return Operand(text, string=tok.value[1:-1].replace("''", "'"))
        if tok.normalized.upper() in ("TRUE", "FALSE"):
            return Operand(text, boolean=tok.normalized.upper() == "TRUE")
        if tok.normalized.upper() == "NULL":
            return Operand(text, null=True)
    if len(tokens) == 2 and tokens[0].value == "-" and tokens[1].ttype in T.Number:
        return Operand(text, number=-Decimal(tokens[1].value))
    return Operand(text)


def parse_condition(tokens: list[sql.Token]) -> Node | None:
    """The condition tree of ``WHERE``'s tokens (None when there is no condition)."""
    if not tokens:
        return None
    return _Parser(tokens).expr()


# -- questions ---------------------------------------------------------------------------


def _truth(node: Node) -> bool | None:
    """True or False when ``node`` has that value for every row, None when it depends."""
    match node:
        case Value(operand=o):
            return o.boolean
        case Not(inner=inner):
            value = _truth(inner)
            return None if value is None else not value
        case And(parts=parts):
            values = [_truth(p) for p in parts]
            if any(v is False for v in values):
                return False
            return True if all(v is True for v in values) else None
        case Or(parts=parts):
            values = [_truth(p) for p in parts]
            if any(v is True for v in values) or _null_or_not_null(parts):
                return True
            return False if all(v is False for v in values) else None
        case Cmp(left=a, op=op, right=b):
            return _compare(a, op, b)
        case Between(subject=s, low=lo, high=hi, negated=neg):
            if s.number is None or lo.number is None or hi.number is None:
                return None
            return (lo.number <= s.number <= hi.number) != neg
        case Is(subject=s, negated=neg, what="DISTINCT", other=other):
            if other is not None and s.text == other.text:
                return neg  # x IS NOT DISTINCT FROM x: always true
            return None
        case Is(subject=s, negated=neg, what="NULL"):
            return (s.null != neg) if s.literal else None
        case _:
            return None


def _compare(a: Operand, op: str, b: Operand) -> bool | None:
    if a.number is not None and b.number is not None:
        x, y = a.number, b.number
    elif a.string is not None and b.string is not None:
        x, y = a.string, b.string  # type: ignore[assignment]
    elif a.boolean is not None and b.boolean is not None:
        x, y = Decimal(a.boolean), Decimal(b.boolean)
    elif not a.literal and a.text and a.text == b.text:
        # x = x holds for every row where x is not NULL: a whole-table condition.
        return op in ("=", "<=", ">=")
    else:
        return None
    return {
        "=": x == y,
        "<>": x != y,
        "!=": x != y,
        "<": x < y,
        ">": x > y,
        "<=": x <= y,
        ">=": x >= y,
    }[op]


def _null_or_not_null(parts: tuple[Node, ...]) -> bool:
    """``x IS NULL OR x IS NOT NULL`` (in any order, among other alternatives)."""
    null = {p.subject for p in parts if isinstance(p, Is) and p.what == "NULL" and not p.negated}
    return any(
        isinstance(p, Is) and p.what == "NULL" and p.negated and p.subject in null for p in parts
    )


def where_always_true(change: DataChange) -> bool:
    """No ``WHERE``, or one that holds for every row."""
    return change.where is None or _truth(change.where) is True


def _is_key(column: str | None) -> bool:
    return column is not None and (column.lower() == "id" or column.lower().endswith("_id"))


def where_bounded(change: DataChange, *, max_keys: int = MAX_BATCH_KEYS) -> bool:
    """The condition pins a key column (``id``, ``*_id``) to given values, or keeps one within
    a literal range of at most ``max_keys``: the statement touches a bounded set of rows."""
    return change.where is not None and _bounded(change.where, max_keys)


def _bounded(node: Node, max_keys: int) -> bool:
    match node:
        case Or(parts=parts):
            return all(_bounded(p, max_keys) for p in parts)
        case And(parts=parts):
            return any(_bounded(p, max_keys) for p in parts) or _range_bounded(parts, max_keys)
        case Cmp(left=a, op="=", right=b):
            return (_is_key(a.column) and b.literal) or (_is_key(b.column) and a.literal)
        case In(subject=s, items=items, negated=False):
            return _is_key(s.column) and items is not None
        case Between(subject=s, low=lo, high=hi, negated=False):
            return (
                _is_key(s.column)
                and lo.number is not None
                and hi.number is not None
                and hi.number - lo.number <= max_keys
            )
        case _:
            return False


def _range_bounded(parts: tuple[Node, ...], max_keys: int) -> bool:
    """``key > a AND key <= b`` (any mix of strict and not, either side) with ``b - a``
    at most ``max_keys``."""
    low: dict[str, Decimal] = {}
    high: dict[str, Decimal] = {}
    for p in parts:
        if not isinstance(p, Cmp):
            continue
        col, op, value = p.left.column, p.op, p.right.number
        if value is None or not _is_key(col):
            col, op, value = p.right.column, _FLIP[p.op], p.left.number
        if value is None or col is None or not _is_key(col):
            continue
        if op in (">", ">="):
            low[col] = max(low.get(col, value), value)
        elif op in ("<", "<="):
            high[col] = min(high.get(col, value), value)
    return any(col in high and high[col] - low[col] <= max_keys for col in low)
