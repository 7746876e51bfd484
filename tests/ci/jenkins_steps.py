"""Execute a declarative Jenkinsfile's steps the way Jenkins would, without Jenkins.

Jenkins cannot be installed here, so this reads the Jenkinsfile (with ``jenkinsfile_check``'s
parser) and runs what can run outside Jenkins, in stage order, with the environment Jenkins
gives each step:

- ``sh`` steps (single-quoted: Groovy interpolates nothing) run with ``/bin/sh -xe``, as
  Jenkins runs them, in the workspace;
- the pipeline ``environment`` block (string literals), ``parameters`` (each ``choice``'s
  first value, unless the build sets it), and what Jenkins sets itself (``WORKSPACE``,
  ``BUILD_NUMBER``, ``GIT_COMMIT``, ``GIT_PREVIOUS_SUCCESSFUL_COMMIT``...);
- ``withCredentials([usernamePassword(...)])`` binds a credential for its block only;
  ``withEnv``, ``catchError`` (stage and build results), ``echo``, and calls to functions the
  file defines;
- a step that fails outside ``catchError`` fails the build and skips the later stages, as
  in Jenkins; ``post`` conditions run by the build result, and ``archiveArtifacts`` copies
  what its Ant patterns match.

What needs Jenkins itself is recorded in ``Build.not_executed`` and never run: ``script``
blocks (Groovy), ``emailext``, ``options``, ``triggers``, ``agent``. docs/ci.md lists them as
checked by the linters only. Anything else is an error, so a new step cannot slip by unrun.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from jenkinsfile_check import Block, Statement, Token, parse

RESULTS = ("SUCCESS", "UNSTABLE", "FAILURE")  # worst last
NOT_EXECUTED = frozenset({"script", "emailext", "options", "triggers", "agent"})


class Unsupported(ValueError):
    """The Jenkinsfile uses something this executor cannot run (so the test must not pass)."""


class StepFailed(RuntimeError):
    """A step failed (``sh`` exit status non-zero, a missing credential)."""


@dataclass
class ShRun:
    """One ``sh`` step as it ran."""

    stage: str
    script: str
    env: dict[str, str]
    returncode: int
    output: str
    seconds: float


@dataclass
class Build:
    """What a build did."""

    result: str = "SUCCESS"
    stage_results: dict[str, str] = field(default_factory=dict)
    sh_runs: list[ShRun] = field(default_factory=list)
    echoes: list[str] = field(default_factory=list)
    not_executed: list[str] = field(default_factory=list)
    archived: list[str] = field(default_factory=list)

    def worsen(self, result: str) -> None:
        if RESULTS.index(result) > RESULTS.index(self.result):
            self.result = result

    @property
    def log(self) -> str:
        return "\n".join(f"[{run.stage}] $ {run.script.strip()}\n{run.output}" for run in self.sh_runs)


def _strings(tokens: list[Token]) -> list[str]:
    return [_literal(t) for t in tokens if t.kind == "string"]


def _literal(token: Token, bindings: dict[str, str] | None = None) -> str:
    """A string literal's value; in a double-quoted one, ``${name}`` and ``${env.NAME}`` are bound."""
    text = token.value
    quote = 3 if text[:3] in ("'''", '"""') else 1
    body = text[quote:-quote]
    if text[0] == "'":
        return body.replace("\\\\", "\\")
    if "${" not in body:
        return body

    def bind(match: re.Match[str]) -> str:
        name = match.group(1)
        if bindings is None or name not in bindings:
            raise Unsupported(f"line {token.line}: cannot interpolate ${{{name}}} outside Jenkins")
        return bindings[name]

    return re.sub(r"\$\{([A-Za-z_][\w.]*)\}", bind, body)


def _named_args(tokens: list[Token]) -> dict[str, str]:
    """``name: 'value'`` pairs among a call's tokens (strings only)."""
    args: dict[str, str] = {}
    for i, token in enumerate(tokens[:-2]):
        if token.kind == "ident" and tokens[i + 1].value == ":" and tokens[i + 2].kind == "string":
            args[token.value] = _literal(tokens[i + 2])
    return args


def _ant_match(pattern: str, path: str) -> bool:
    """Ant-style ``**`` (any folders) and ``*`` (within one name) matching, as archiveArtifacts uses."""
    regex = re.escape(pattern).replace(r"\*\*", "\0").replace(r"\*", "[^/]*").replace("\0", ".*")
    return re.fullmatch(regex, path) is not None or fnmatch.fnmatch(path, pattern)


class JenkinsfileRunner:
    """Runs one Jenkinsfile in a workspace, build by build."""

    def __init__(self, jenkinsfile: Path, workspace: Path, archive: Path) -> None:
        self.text = jenkinsfile.read_text(encoding="utf-8")
        self.root = parse(self.text)
        self.workspace, self.archive = workspace, archive
        pipeline = self._only_child(self.root, "pipeline")
        self.sections = {b.name: b for s in pipeline.statements for b in s.blocks}
        self.functions = self._functions()

    def _only_child(self, block: Block, name: str) -> Block:
        found = [b for s in block.statements for b in s.blocks if b.name == name]
        if len(found) != 1:
            raise Unsupported(f"expected one '{name}' block, found {len(found)}")
        return found[0]

    def _functions(self) -> dict[str, tuple[list[str], Block]]:
        """Top-level ``void name(String a, ...) { ... }`` definitions: their parameters and bodies."""
        functions = {}
        for statement in self.root.statements:
            idents = [t.value for t in statement.tokens if t.kind == "ident"]
            if statement.blocks and len(idents) >= 2 and idents[0] in ("void", "def") and statement.head != "pipeline":
                params = idents[3::2]  # void NAME ( Type a , Type b ) -> every second ident after NAME
                functions[idents[1]] = (params, statement.blocks[0])
        return functions

    def build(self, jenkins_env: dict[str, str], credentials: dict[str, tuple[str, str]]) -> Build:
        """Run every stage and the post conditions, as one build with ``jenkins_env``."""
        build = Build()
        env = {**jenkins_env, **self._parameters(jenkins_env), **self._environment()}
        failed = False
        for stage in self._stages():
            if failed:  # Jenkins skips the stages after an uncaught failure
                build.stage_results[stage.label or "?"] = "SKIPPED"
                continue
            build.stage_results[stage.label or "?"] = "SUCCESS"
            for statement in stage.statements:
                for block in statement.blocks:
                    if block.name == "steps":
                        try:
                            self._run_block(block, env, build, stage.label or "?", credentials, {})
                        except StepFailed:
                            build.stage_results[stage.label or "?"] = "FAILURE"
                            build.worsen("FAILURE")
                            failed = True
                    elif block.name in NOT_EXECUTED:
                        build.not_executed.append(f"{stage.label}: {block.name}")
                    else:
                        raise Unsupported(f"line {block.line}: stage '{stage.label}' has a '{block.name}' block")
        self._post(build, env, credentials)
        return build

    def _parameters(self, jenkins_env: dict[str, str]) -> dict[str, str]:
        values = {}
        block = self.sections.get("parameters")
        for statement in block.statements if block else []:
            if statement.head != "choice":
                raise Unsupported(f"line {statement.line}: parameter kind {statement.head}")
            args = _named_args(statement.tokens)
            choices = [_literal(t) for t in statement.tokens if t.kind == "string"]
            first = choices[choices.index(args["name"]) + 1]  # the list follows name: '...'
            values[args["name"]] = jenkins_env.get(args["name"], first)
        return values

    def _environment(self) -> dict[str, str]:
        values = {}
        block = self.sections.get("environment")
        for statement in block.statements if block else []:
            tokens = statement.tokens
            if len(tokens) != 3 or tokens[1].value != "=" or tokens[2].kind != "string":
                raise Unsupported(f"line {statement.line}: environment entries must be NAME = 'literal'")
            values[tokens[0].value] = _literal(tokens[2])
        return values

    def _stages(self) -> list[Block]:
        stages = self.sections["stages"]
        return [b for s in stages.statements for b in s.blocks if b.name == "stage"]

    def _run_block(
        self,
        block: Block,
        env: dict[str, str],
        build: Build,
        stage: str,
        credentials: dict[str, tuple[str, str]],
        bindings: dict[str, str],
    ) -> None:
        for statement in block.statements:
            self._run_statement(statement, env, build, stage, credentials, bindings)

    def _run_statement(
        self,
        statement: Statement,
        env: dict[str, str],
        build: Build,
        stage: str,
        credentials: dict[str, tuple[str, str]],
        bindings: dict[str, str],
    ) -> None:
        head = statement.head
        strings = [t for t in statement.tokens if t.kind == "string"]
        body = statement.blocks[0] if statement.blocks else None
        if head == "sh":
            if strings[0].value.startswith('"'):
                raise Unsupported(f"line {statement.line}: sh with a double-quoted (interpolated) script")
            self._sh(_literal(strings[0]), env, build, stage)
        elif head == "echo":
            build.echoes.append(_literal(strings[0], {**bindings, **{f"env.{k}": v for k, v in env.items()}}))
        elif head in NOT_EXECUTED:
            build.not_executed.append(f"{stage}: {head}")
        elif head == "catchError" and body is not None:
            args = _named_args(statement.tokens)
            try:
                self._run_block(body, env, build, stage, credentials, bindings)
            except StepFailed:
                build.worsen(args.get("buildResult", "FAILURE"))
                build.stage_results[stage] = args.get("stageResult", "FAILURE")
        elif head == "withCredentials" and body is not None:
            args = _named_args(statement.tokens)
            if "usernamePassword" not in {t.value for t in statement.tokens}:
                raise Unsupported(f"line {statement.line}: only usernamePassword credentials are supported")
            if args["credentialsId"] not in credentials:
                raise StepFailed(f"credential {args['credentialsId']} not found")
            user, password = credentials[args["credentialsId"]]
            bound = {**env, args["usernameVariable"]: user, args["passwordVariable"]: password}
            self._run_block(body, bound, build, stage, credentials, bindings)
        elif head == "withEnv" and body is not None:
            pairs = [_literal(t, bindings).split("=", 1) for t in strings]
            self._run_block(body, {**env, **dict(pairs)}, build, stage, credentials, bindings)
        elif head in self.functions:
            params, function = self.functions[head]
            args = [_literal(t, bindings) for t in strings]
            self._run_block(function, env, build, stage, credentials, dict(zip(params, args, strict=True)))
        else:
            raise Unsupported(f"line {statement.line}: step '{head}' cannot run outside Jenkins")

    def _sh(self, script: str, env: dict[str, str], build: Build, stage: str) -> None:
        # Jenkins writes the script to a file and runs it with `sh -xe` unless it has a shebang.
        started = time.monotonic()
        result = subprocess.run(
            ["/bin/sh", "-xe", "-c", script],
            cwd=self.workspace,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=1800,
        )
        seconds = time.monotonic() - started
        build.sh_runs.append(ShRun(stage, script, dict(env), result.returncode, result.stdout, seconds))
        if result.returncode != 0:
            raise StepFailed(f"script returned exit code {result.returncode}")

    def _post(self, build: Build, env: dict[str, str], credentials: dict[str, tuple[str, str]]) -> None:
        post = self.sections.get("post")
        applies = {"always", "success" if build.result == "SUCCESS" else "failure" if build.result == "FAILURE" else ""}
        if build.result == "UNSTABLE":
            applies.add("unstable")
        for statement in post.statements if post else []:
            for block in statement.blocks:
                if block.name not in applies:
                    continue
                for step in block.statements:
                    if step.head == "archiveArtifacts":
                        self._archive(_named_args(step.tokens)["artifacts"], build)
                    elif step.head in NOT_EXECUTED:
                        build.not_executed.append(f"post {block.name}: {step.head}")
                    else:
                        self._run_statement(step, env, build, f"post {block.name}", credentials, {})

    def _archive(self, patterns: str, build: Build) -> None:
        wanted = [p.strip() for p in patterns.split(",") if p.strip()]
        for path in sorted(self.workspace.rglob("*")):
            relative = path.relative_to(self.workspace).as_posix()
            if path.is_file() and any(_ant_match(p, relative) for p in wanted):
                target = self.archive / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
                build.archived.append(relative)


def jenkins_environment(workspace: Path, build_number: int, commit: str, previous: str | None) -> dict[str, str]:
    """What Jenkins (Git plugin included) sets for every step of a build of job ``mlops``."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(workspace.parent),
        "WORKSPACE": str(workspace),
        "BUILD_NUMBER": str(build_number),
        "BUILD_ID": str(build_number),
        "JOB_NAME": "mlops",
        "BUILD_URL": f"http://jenkins.example.org/job/mlops/{build_number}/",
        "JENKINS_URL": "http://jenkins.example.org/",
        "GIT_COMMIT": commit,
        "GIT_BRANCH": "origin/main",
    }
    if previous:  # absent until a build succeeded
        env["GIT_PREVIOUS_SUCCESSFUL_COMMIT"] = previous
    return env
