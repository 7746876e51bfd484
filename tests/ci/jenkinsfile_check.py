"""A structural checker for declarative Jenkinsfiles, for what npm-groovy-lint cannot see.

npm-groovy-lint parses Groovy, so a misspelt declarative section (``stepz {``) is valid
Groovy to it; only Jenkins would reject it, at build time. This module reads the block
structure of a Jenkinsfile (brace matching that skips strings, GString interpolation and
comments), then checks every section and directive name against the declarative syntax
where it stands (pipeline → agent, options, stages, post, ...; stage → steps, when, ...;
post → always, success, failure, ...). Blocks of Groovy code (``steps``, ``script``, post
conditions, ``options``, ``triggers``, ...) are matched for braces but not checked inside.

Usage: ``python tests/ci/jenkinsfile_check.py [Jenkinsfile]`` prints one line per problem
and exits 1 when there is any.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

POST_CONDITIONS = frozenset(
    {
        "always",
        "changed",
        "fixed",
        "regression",
        "aborted",
        "failure",
        "success",
        "unstable",
        "unsuccessful",
        "cleanup",
    }
)
WHEN_CONDITIONS = frozenset(
    {
        "branch",
        "buildingTag",
        "changelog",
        "changeset",
        "changeRequest",
        "environment",
        "equals",
        "expression",
        "tag",
        "triggeredBy",
        "not",
        "allOf",
        "anyOf",
    }
)
WHEN_OPTIONS = frozenset({"beforeAgent", "beforeInput", "beforeOptions"})

# What each declarative section may contain. A section not listed here (steps, script, a post
# condition, options, triggers, parameters, tools, agent) holds Groovy and is not checked.
ALLOWED: dict[str, frozenset[str]] = {
    "pipeline": frozenset(
        {
            "agent",
            "environment",
            "libraries",
            "options",
            "parameters",
            "post",
            "stages",
            "tools",
            "triggers",
        }
    ),
    "stages": frozenset({"stage"}),
    "parallel": frozenset({"stage"}),
    "stage": frozenset(
        {
            "agent",
            "environment",
            "failFast",
            "input",
            "matrix",
            "options",
            "parallel",
            "post",
            "stages",
            "steps",
            "tools",
            "when",
        }
    ),
    "matrix": frozenset(
        {
            "agent",
            "axes",
            "environment",
            "excludes",
            "input",
            "options",
            "post",
            "stages",
            "tools",
            "when",
        }
    ),
    "axes": frozenset({"axis"}),
    "axis": frozenset({"name", "values"}),
    "excludes": frozenset({"exclude"}),
    "exclude": frozenset({"axis"}),
    "input": frozenset({"message", "id", "ok", "submitter", "submitterParameter", "parameters"}),
    "post": POST_CONDITIONS,
    "when": WHEN_CONDITIONS | WHEN_OPTIONS,
    "not": WHEN_CONDITIONS,
    "allOf": WHEN_CONDITIONS,
    "anyOf": WHEN_CONDITIONS,
}
# Sections whose statements are ``NAME = value`` assignments.
ASSIGNMENT_SECTIONS = frozenset({"environment"})
# The stage kinds a stage must have exactly one of.
STAGE_BODIES = ("steps", "stages", "parallel", "matrix")

_IDENT = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")


@dataclass
class Token:
    """One lexical token: an identifier, a string literal, a bracket, a newline or other."""

    kind: str  # "ident", "string", "newline", "{", "}", "(", ")", "[", "]", ";", "op"
    value: str
    line: int
    start: int
    end: int


@dataclass
class Block:
    """A ``{ ... }`` block and the statements it contains."""

    name: str | None  # the identifier that opened it (``stage``, ``steps``), None for a closure
    label: str | None  # the first string argument before it: ``stage('Build')`` -> "Build"
    line: int
    start: int  # offset of ``{``
    end: int  # offset just after ``}``
    statements: list[Statement] = field(default_factory=list)


@dataclass
class Statement:
    """One statement in a block: its tokens (without nested blocks) and the blocks it opens."""

    tokens: list[Token]
    blocks: list[Block] = field(default_factory=list)

    @property
    def head(self) -> str | None:
        """The leading identifier (``agent``, ``stage``, ``MY_VAR``), or None."""
        if self.tokens and self.tokens[0].kind == "ident":
            return self.tokens[0].value
        return None

    @property
    def line(self) -> int:
        """The line the statement starts on."""
        if self.tokens:
            return self.tokens[0].line
        return self.blocks[0].line if self.blocks else 0


class JenkinsfileSyntaxError(ValueError):
    """The text is not even well-formed enough to find its blocks (unbalanced, unterminated)."""


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _skip_string(text: str, i: int) -> int:
    """Return the offset just past the string literal starting at ``text[i]``.

    Handles '...', "...", '''...''', \"\"\"...\"\"\" and ``${...}`` interpolation inside
    double-quoted strings (which may itself hold strings and braces).
    """
    quote = text[i]
    triple = text.startswith(quote * 3, i)
    delim = quote * 3 if triple else quote
    j = i + len(delim)
    while j < len(text):
        ch = text[j]
        if ch == "\\":
            j += 2
            continue
        if text.startswith(delim, j):
            return j + len(delim)
        if ch == "\n" and not triple:
            raise JenkinsfileSyntaxError(f"line {_line_of(text, i)}: unterminated string")
        if quote == '"' and text.startswith("${", j):
            j = _skip_interpolation(text, j + 2)
            continue
        j += 1
    raise JenkinsfileSyntaxError(f"line {_line_of(text, i)}: unterminated string")


def _skip_interpolation(text: str, j: int) -> int:
    """Return the offset just past the ``}`` closing a ``${`` whose body starts at ``j``."""
    depth = 1
    while j < len(text):
        ch = text[j]
        if ch in "'\"":
            j = _skip_string(text, j)
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return j + 1
        j += 1
    raise JenkinsfileSyntaxError("unterminated ${...} in a string")


def tokenize(text: str) -> list[Token]:
    """Split Groovy source into tokens, dropping comments and whitespace other than newlines."""
    tokens: list[Token] = []
    i = 0
    line = 1
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\n":
            tokens.append(Token("newline", ch, line, i, i + 1))
            line += 1
            i += 1
        elif ch in " \t\r\f":
            i += 1
        elif ch == "\\" and text.startswith("\\\n", i):  # explicit line continuation
            line += 1
            i += 2
        elif text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise JenkinsfileSyntaxError(f"line {line}: unterminated /* comment")
            line += text.count("\n", i, end)
            i = end + 2
        elif ch in "'\"":
            end = _skip_string(text, i)
            tokens.append(Token("string", text[i:end], line, i, end))
            line += text.count("\n", i, end)
            i = end
        elif ch in "{}()[];":
            tokens.append(Token(ch, ch, line, i, i + 1))
            i += 1
        else:
            match = _IDENT.match(text, i)
            if match:
                tokens.append(Token("ident", match.group(), line, i, match.end()))
                i = match.end()
            else:
                tokens.append(Token("op", ch, line, i, i + 1))
                i += 1
    return tokens


def _string_value(token: Token) -> str:
    """The content of a string literal token, without its quotes (escapes left as written)."""
    text = token.value
    quote = 3 if text[:3] in ("'''", '"""') else 1
    return text[quote:-quote]


def parse(text: str) -> Block:
    """Parse ``text`` into a tree of blocks; the root is a nameless block for the file."""
    tokens = tokenize(text)
    root = Block(name=None, label=None, line=1, start=0, end=len(text))
    pos = _parse_body(text, tokens, 0, root)
    if pos != len(tokens):
        raise JenkinsfileSyntaxError(f"line {tokens[pos].line}: unmatched '}}'")
    return root


def _parse_body(text: str, tokens: list[Token], pos: int, block: Block) -> int:
    """Fill ``block.statements`` from ``tokens[pos:]``; stop at its ``}`` (not consumed)."""
    while pos < len(tokens):
        tok = tokens[pos]
        if tok.kind in ("newline", ";"):
            pos += 1
            continue
        if tok.kind == "}":
            return pos
        statement = Statement(tokens=[])
        pos = _parse_statement(text, tokens, pos, statement)
        block.statements.append(statement)
    return pos


def _parse_statement(text: str, tokens: list[Token], pos: int, statement: Statement) -> int:
    """Read one statement: up to a newline or ``;`` outside brackets, or the enclosing ``}``."""
    depth = 0  # () and [] nesting: newlines inside them do not end the statement
    while pos < len(tokens):
        tok = tokens[pos]
        if tok.kind in ("(", "["):
            depth += 1
        elif tok.kind in (")", "]"):
            depth -= 1
            if depth < 0:
                raise JenkinsfileSyntaxError(f"line {tok.line}: unmatched '{tok.value}'")
        elif tok.kind == "}":
            if depth:
                raise JenkinsfileSyntaxError(f"line {tok.line}: '}}' inside an open bracket")
            return pos
        elif tok.kind in ("newline", ";") and depth == 0:
            return pos + 1
        if tok.kind == "{":
            label = next((_string_value(t) for t in statement.tokens if t.kind == "string"), None)
            name = statement.head if depth == 0 else None
            child = Block(name=name, label=label, line=tok.line, start=tok.start, end=tok.end)
            pos = _parse_body(text, tokens, pos + 1, child)
            if pos >= len(tokens):
                raise JenkinsfileSyntaxError(f"line {tok.line}: '{{' is never closed")
            child.end = tokens[pos].end
            statement.blocks.append(child)
            pos += 1
            continue
        if tok.kind != "newline":
            statement.tokens.append(tok)
        pos += 1
    if depth:
        raise JenkinsfileSyntaxError("unclosed '(' or '[' at end of file")
    return pos


def _check_section(block: Block, where: str, problems: list[str]) -> None:
    """Check the statements of the declarative section ``block`` (named ``block.name``)."""
    assert block.name is not None
    allowed = ALLOWED.get(block.name, frozenset())
    for statement in block.statements:
        head = statement.head
        if block.name in ASSIGNMENT_SECTIONS:
            ok = head is not None and len(statement.tokens) > 1 and statement.tokens[1].value == "="
            if not ok:
                problems.append(f"line {statement.line}: {where}: expected NAME = value in '{block.name}'")
            continue
        if head is None or head not in allowed:
            shown = statement.tokens[0].value if statement.tokens else "{"
            problems.append(
                f"line {statement.line}: {where}: '{shown}' is not allowed in '{block.name}' "
                f"(allowed: {', '.join(sorted(allowed))})"
            )
            continue
        for child in statement.blocks:
            if child.name == head:
                _check_child(child, block, where, problems)


def _check_child(child: Block, parent: Block, where: str, problems: list[str]) -> None:
    """Check a declarative child section and recurse where its content is declarative too."""
    assert child.name is not None
    here = f"{where} > {child.name}" + (f"('{child.label}')" if child.label else "")
    if child.name == "stage":
        heads = [s.head for s in child.statements]
        bodies = [h for h in heads if h in STAGE_BODIES]
        if len(bodies) != 1:
            problems.append(
                f"line {child.line}: {here}: a stage needs exactly one of "
                f"{', '.join(STAGE_BODIES)} (found {bodies or 'none'})"
            )
        if not child.label:
            problems.append(f"line {child.line}: {here}: a stage needs a name: stage('Name')")
    if child.name == "stages" and not child.statements:
        problems.append(f"line {child.line}: {here}: 'stages' holds no stage")
    if child.name == "post" and parent.name not in ("pipeline", "stage", "matrix"):
        problems.append(f"line {child.line}: {here}: 'post' cannot stand in '{parent.name}'")
    if child.name in ALLOWED or child.name in ASSIGNMENT_SECTIONS:
        _check_section(child, here, problems)


def check_structure(text: str) -> list[str]:
    """Return the declarative-syntax problems of a Jenkinsfile's text (empty when fine)."""
    try:
        root = parse(text)
    except JenkinsfileSyntaxError as error:
        return [str(error)]
    problems: list[str] = []
    pipelines = [b for s in root.statements for b in s.blocks if b.name == "pipeline"]
    if len(pipelines) != 1:
        return [f"expected one 'pipeline {{ ... }}' block, found {len(pipelines)}"]
    pipeline = pipelines[0]
    heads = {s.head for s in pipeline.statements}
    for required in ("agent", "stages"):
        if required not in heads:
            problems.append(f"line {pipeline.line}: pipeline: '{required}' is required")
    _check_section(pipeline, "pipeline", problems)
    return problems


def stage_blocks(text: str) -> list[Block]:
    """All ``stage('...')`` blocks, depth first, in source order."""
    found: list[Block] = []

    def walk(block: Block) -> None:
        for statement in block.statements:
            for child in statement.blocks:
                if child.name == "stage":
                    found.append(child)
                walk(child)

    walk(parse(text))
    return found


# Which `mlops` sub-command a stage named like the pipeline stage must call.
STAGE_COMMANDS: dict[str, tuple[str, ...]] = {
    "detect": ("detect",),
    "classify": ("classify",),
    "build": ("build",),
    "tune": ("tune", "run"),  # `mlops run` tunes (and does the rest) for every model
    "notify": ("notify",),  # sends what `mlops run --notify queue` queued
}
_MLOPS_CALL = re.compile(r"\bmlops[\"']?\s+([a-z]+)\b")


def check_mlops_calls(text: str) -> list[str]:
    """Check that each pipeline stage has a Jenkins stage that calls its `mlops` command."""
    problems: list[str] = []
    stages = {(b.label or "").lower(): text[b.start : b.end] for b in stage_blocks(text)}
    for stage, commands in STAGE_COMMANDS.items():
        matching = [body for label, body in stages.items() if stage in label]
        if not matching:
            problems.append(f"no stage named like '{stage}' (stages: {', '.join(stages)})")
            continue
        called = {m.group(1) for body in matching for m in _MLOPS_CALL.finditer(body)}
        if not called & set(commands):
            wanted = " or ".join(f"mlops {c}" for c in commands)
            problems.append(f"stage '{stage}' does not call {wanted} (calls: {sorted(called)})")
    return problems


# Anything that names the SMTP login: the credential's id, the variables it binds.
SMTP_SECRETS = ("mlops-smtp", "MLOPS_SMTP_USER", "MLOPS_SMTP_PASSWORD", "MLOPS_SMTP_CRED")
SECRET_STAGE = "Notify"


def check_credentials(text: str) -> list[str]:
    """Check that only the Notify stage references the SMTP credential (code, not comments).

    Every other stage, and the pipeline-wide ``environment`` block, reaches code the push
    brought (``mlops run`` imports and runs the models): a credential there is readable by
    that code. The Notify stage must bind it, with ``withCredentials``.
    """
    try:
        tokens = tokenize(text)
        stages = stage_blocks(text)
    except JenkinsfileSyntaxError as error:
        return [str(error)]
    problems: list[str] = []
    for token in tokens:
        if token.kind not in ("ident", "string") or not any(name in token.value for name in SMTP_SECRETS):
            continue
        around = [b for b in stages if b.start <= token.start < b.end]
        label = around[-1].label if around else None  # the innermost stage
        if label != SECRET_STAGE:
            where = f"stage '{label}'" if label else "outside every stage"
            problems.append(f"line {token.line}: {where} references the SMTP credential: only {SECRET_STAGE} may")
    notify = next((b for b in stages if b.label == SECRET_STAGE), None)
    if notify is None:
        problems.append(f"no stage '{SECRET_STAGE}' sends the result e-mails")
    elif not any(t.value == "withCredentials" for t in tokens if notify.start <= t.start < notify.end):
        problems.append(f"stage '{SECRET_STAGE}' does not bind the SMTP login with withCredentials")
    return problems


def main(argv: list[str]) -> int:
    """Check the Jenkinsfile named in ``argv`` (default ./Jenkinsfile); 1 on any problem."""
    path = Path(argv[0] if argv else "Jenkinsfile")
    text = path.read_text(encoding="utf-8")
    problems = check_structure(text) or check_mlops_calls(text) or check_credentials(text)
    for problem in problems:
        print(f"{path}: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
