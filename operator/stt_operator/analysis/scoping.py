"""Confine a custom PromQL query to one namespace, the way prom-label-proxy does.

A custom analysis query is written by a namespace's user but runs with the operator's access
to Prometheus, which holds every namespace's series. So before it is sent, every vector
selector in it gets a `namespace="<ns>"` matcher added: `foo` becomes `foo{namespace="ns"}`,
`foo{a="b"}` becomes `foo{namespace="ns",a="b"}` and `{__name__=~".+"}` becomes
`{namespace="ns",__name__=~".+"}`. A matcher the user wrote on `namespace` stays and is
ANDed with ours, so it can only narrow the result.

This is a lexer plus the little grammar knowledge that tells a metric name from a function,
an aggregation, a keyword or a label list. Anything it does not understand is refused
(`ScopeError`) rather than sent unscoped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from stt_operator.analysis.templating import escape_label_value


class ScopeError(ValueError):
    """The query cannot be confined to a namespace (and is not sent)."""


@dataclass(frozen=True)
class _Tok:
    kind: str  # ident | str | num | punct | op | space
    text: str
    start: int


_TOKEN = re.compile(
    r"""
    (?P<space>\s+|\#[^\n]*)
  | (?P<str>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|`[^`]*`)
  | (?P<num>0[xX][0-9a-fA-F]+|(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?(?:(?:ms|[smhdwy])[0-9]*)*)
  | (?P<step>:(?=[0-9]))
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<punct>[{}()\[\],@])
  | (?P<op>==|!=|<=|>=|=~|!~|[-+*/%^<>=:])
    """,
    re.VERBOSE,
)

AGGREGATIONS = frozenset(
    {
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    }
)
# Binary-operator keywords, and `offset`: keywords after an operand, but Prometheus' grammar
# also reads them as metric names where an operand starts (`offset` alone selects a metric).
INFIX_KEYWORDS = frozenset({"and", "or", "unless", "atan2", "offset"})
NUMBER_WORDS = frozenset({"inf", "nan"})
COMPARISONS = frozenset({"==", "!=", "<=", ">=", "<", ">"})
LABEL_LIST_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
# Functions that read series the query did not select (info() joins target_info itself).
UNSCOPABLE_FUNCTIONS = frozenset({"info"})
NAMESPACE_LABEL = "namespace"


def tokenize(query: str) -> list[_Tok]:
    out: list[_Tok] = []
    pos = 0
    while pos < len(query):
        m = _TOKEN.match(query, pos)
        if not m or m.end() == pos:
            raise ScopeError(f"cannot read the query at character {pos}: {query[pos : pos + 20]!r}")
        kind = {"step": "op"}.get(m.lastgroup or "space", m.lastgroup or "space")
        out.append(_Tok(kind, m.group(), pos))
        pos = m.end()
    return out


def scope_query(query: str, namespace: str, label: str = NAMESPACE_LABEL) -> str:
    """`query` with `label="namespace"` enforced on every vector selector; ScopeError when the
    query cannot be scoped with certainty."""
    if not namespace:
        raise ScopeError("no namespace to scope the query to")
    matcher = f'{label}="{escape_label_value(namespace)}"'
    toks = [t for t in tokenize(query) if t.kind != "space"]
    out: list[str] = []
    i = 0
    paren_depth = 0
    bracket_depth = 0
    found_selector = False

    def next_text(j: int) -> str:
        return toks[j].text if j < len(toks) else ""

    def copy_brace_block(j: int) -> int:
        """Copy a `{...}` matcher block starting at toks[j] with our matcher inserted first."""
        assert toks[j].text == "{"
        out.append("{" + matcher)
        j += 1
        if next_text(j) != "}":
            out.append(",")
        while j < len(toks) and toks[j].text != "}":
            if toks[j].text in ("{", "(", ")", "[", "]", "@"):
                raise ScopeError(f"unexpected {toks[j].text!r} inside a label matcher block")
            out.append(_sep(toks[j]))
            j += 1
        if j >= len(toks):
            raise ScopeError("unbalanced '{' in the query")
        out.append("}")
        return j + 1

    while i < len(toks):
        tok = toks[i]
        low = tok.text.lower()
        if tok.kind == "punct" and tok.text == "{":
            if bracket_depth:
                raise ScopeError("a label matcher block inside a range or subquery step")
            i = copy_brace_block(i)
            found_selector = True
            continue
        if tok.kind == "punct" and tok.text == "}":
            raise ScopeError("unbalanced '}' in the query")
        if tok.kind == "punct" and tok.text in "()":
            paren_depth += 1 if tok.text == "(" else -1
            if paren_depth < 0:
                raise ScopeError("unbalanced ')' in the query")
        if tok.kind == "punct" and tok.text in "[]":
            bracket_depth += 1 if tok.text == "[" else -1
            if bracket_depth < 0 or bracket_depth > 1:
                raise ScopeError("unbalanced or nested '[' in the query")
        if tok.kind == "ident" and not bracket_depth:
            nxt = next_text(i + 1)
            if low in LABEL_LIST_KEYWORDS:
                out.append(_sep(tok))
                i += 1
                if next_text(i) == "(":  # a label list: copy it verbatim up to its ')'
                    while i < len(toks) and toks[i].text != ")":
                        if toks[i].kind not in ("ident", "punct", "str") or toks[i].text in "{}[]@":
                            raise ScopeError(f"unexpected {toks[i].text!r} in a label list")
                        out.append(_sep(toks[i]))
                        i += 1
                    if i >= len(toks):
                        raise ScopeError("unbalanced '(' in a label list")
                    out.append(")")
                    i += 1
                continue
            prev = toks[i - 1] if i > 0 else None
            after_operand = prev is not None and (
                prev.text in (")", "}", "]")
                or prev.kind in ("num", "str")
                or (prev.kind == "ident" and prev.text.lower() not in INFIX_KEYWORDS | {"bool"})
            )
            keyword = (
                low in NUMBER_WORDS
                or (low in INFIX_KEYWORDS and after_operand)
                or (low == "bool" and prev is not None and prev.text in COMPARISONS)
                or (prev is not None and prev.text == "@")
            )
            if keyword:
                out.append(_sep(tok))
                i += 1
                continue
            if tok.text in AGGREGATIONS and (nxt == "(" or nxt.lower() in ("by", "without")):
                out.append(_sep(tok))
                i += 1
                continue
            if nxt == "(":
                if tok.text in UNSCOPABLE_FUNCTIONS:
                    raise ScopeError(f"function {tok.text}() reads series outside the query's selectors")
                out.append(_sep(tok))
                i += 1
                continue
            # A metric name: a vector selector.
            found_selector = True
            out.append(_sep(tok))
            i += 1
            if next_text(i) == "{":
                i = copy_brace_block(i)
            else:
                out.append("{" + matcher + "}")
            continue
        out.append(_sep(tok))
        i += 1
    if paren_depth or bracket_depth:
        raise ScopeError("unbalanced parentheses or brackets in the query")
    if not found_selector:
        return query  # no series are read (a constant, vector(1), time()): nothing to scope
    return _join(out)


def _sep(tok: _Tok) -> str:
    """Token text; words are marked so `_join` keeps `sum by` or `a and b` apart."""
    return f"\x00{tok.text}\x00" if tok.kind in ("ident", "num") else tok.text


def _join(parts: list[str]) -> str:
    """Concatenate, with one space only between two adjacent words."""
    text = "".join(parts)
    return text.replace("\x00\x00", " ").replace("\x00", "")
