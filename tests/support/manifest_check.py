"""Checks that the deployment manifests run what the code has: every container's command is a
``selfimprove`` CLI command (walked through the typer app, options parsed) or a ``python -m`` module
with an entry point; every ``SELFIMPROVE_*`` variable a manifest sets is a setting the code reads (no
dead variables); every setting without a default is set wherever a service that reads it runs.

What the code reads is found, not listed: every pydantic-settings class under ``services/``
(``env_prefix`` + field name, or the field's alias; ``<VAR>_FILE`` too, the mounted-secret form that
``core.settings.load`` reads) and every ``os.environ`` / ``os.getenv`` read of a ``SELFIMPROVE_*``
name. A variable a manifest's own shell command reads (``$VAR``) is read too.

Each check returns problems as sentences naming the manifest, the container and the variable or
command, so a failing test says what to fix. The inputs are plain data (rendered manifests, compose
config, Dockerfile text): the unit tests feed fake manifests, the integration test the real ones.
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
import re
import shlex
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.dockerfile import Image, referenced_vars, substitute

PREFIX = "SELFIMPROVE_"
PACKAGE = "selfimprove"
SHELLS = {"sh", "bash", "dash", "ash"}
PYTHONS = {"python", "python3", "python3.11"}
# Variables compose itself reads from .env (not interpolated into the files).
COMPOSE_OWN = re.compile(r"^(COMPOSE_|DOCKER_)")


@dataclass(frozen=True)
class Setting:
    """One environment variable a settings class reads."""

    var: str
    package: str  # the service package whose code loads it; "core" for the shared classes
    required: bool
    owner: str  # module.Class
    default: str | None = None  # the default as text; None when required or computed


@dataclass
class CodeFacts:
    """What the code reads and runs: settings, ``os.environ`` reads, the CLI, the package folder."""

    settings: dict[str, Setting]
    environ: set[str]
    cli: Any  # the click command of the typer app
    package_root: Path

    def reads(self, var: str) -> bool:
        """True when some code reads ``var`` (a setting, its ``_FILE`` secret form, or an environ read)."""
        if var in self.settings or var in self.environ:
            return True
        return var.endswith("_FILE") and var[: -len("_FILE")] in self.settings

    def required(self, package: str | None) -> set[str]:
        """Settings without a default that a process of ``package`` loads (``core`` ones always)."""
        return {s.var for s in self.settings.values() if s.required and s.package in ("core", package)}


@dataclass
class Container:
    """One process a manifest starts: where it is declared, its image, argv and environment."""

    where: str
    image: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)  # set here (values of secrets/fieldRefs: "")
    inherited: set[str] = field(default_factory=set)  # set by envFrom (ConfigMap keys)
    extra_refs: set[str] = field(default_factory=set)  # $VARs its healthcheck or image command reads
    image_env: dict[str, str] = field(default_factory=dict)  # what its image's ENV sets

    def shell_env(self) -> dict[str, str]:
        """The values its shell commands see (image, then container)."""
        return {**self.image_env, **self.env}

    def refs(self) -> set[str]:
        """Variables this container's own command lines read."""
        return self.extra_refs | {v for a in self.argv for v in referenced_vars(a)}


# -- what the code reads -------------------------------------------------------------------------


def _installed_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join((PACKAGE, *parts))


def _sources(root: Path) -> Iterable[Path]:
    for path in sorted(root.rglob("*.py")):
        if "v2" not in path.relative_to(root).parts[:1]:
            yield path


def code_settings(root: Path) -> dict[str, Setting]:
    """Every variable of every pydantic-settings class defined under ``root`` (imports those modules)."""
    from pydantic_settings import BaseSettings

    out: dict[str, Setting] = {}
    for path in _sources(root):
        if "BaseSettings" not in path.read_text(encoding="utf-8"):
            continue
        name = _installed_name(root, path)
        module = importlib.import_module(name)
        parts = name.split(".")
        package = parts[1] if len(parts) > 2 else "core"
        for cls in vars(module).values():
            if not (isinstance(cls, type) and issubclass(cls, BaseSettings) and cls.__module__ == name):
                continue
            prefix = str(cls.model_config.get("env_prefix", ""))
            for field_name, info in cls.model_fields.items():
                alias = info.validation_alias if isinstance(info.validation_alias, str) else info.alias
                var = (alias or prefix + field_name).upper()
                default = None if info.is_required() or info.default_factory else str(info.default)
                out[var] = Setting(var, package, info.is_required(), f"{name}.{cls.__name__}", default)
    return out


def _is_environ(node: ast.AST) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "environ") or (
        isinstance(node, ast.Name) and node.id == "environ"
    )


def environ_reads(source: str) -> set[str]:
    """``SELFIMPROVE_*`` names a module reads with ``os.environ.get``, ``os.environ[...]``, ``in
    os.environ`` or ``os.getenv``; the name a literal or a module-level string constant.

    >>> sorted(environ_reads('import os\\nE = "SELFIMPROVE_A"\\nos.environ.get(E)\\n'
    ...                      'os.getenv("SELFIMPROVE_B")\\nos.environ["SELFIMPROVE_C"] = "1"\\n'
    ...                      '"SELFIMPROVE_D" in os.environ\\nos.environ.setdefault("SELFIMPROVE_E", "")'))
    ['SELFIMPROVE_A', 'SELFIMPROVE_B', 'SELFIMPROVE_D']
    """
    tree = ast.parse(source)
    consts = {
        t.id: n.value.value
        for n in tree.body
        if isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)
        for t in n.targets
        if isinstance(t, ast.Name)
    }

    def value(node: ast.AST) -> str | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        return consts.get(node.id) if isinstance(node, ast.Name) else None

    def reads(node: ast.AST) -> ast.AST | None:
        """The name argument when ``node`` reads the environment, else None."""
        if isinstance(node, ast.Call) and node.args:
            func = node.func
            getter = isinstance(func, ast.Attribute) and func.attr == "get" and _is_environ(func.value)
            getenv = (
                isinstance(func, ast.Attribute | ast.Name)
                and getattr(func, "attr", getattr(func, "id", "")) == "getenv"
            )
            return node.args[0] if getter or getenv else None
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and _is_environ(node.value):
            return node.slice
        if isinstance(node, ast.Compare) and isinstance(node.ops[0], ast.In | ast.NotIn):
            return node.left if _is_environ(node.comparators[0]) else None
        return None

    found = [value(arg) for arg in map(reads, ast.walk(tree)) if arg is not None]
    return {v for v in found if v and v.startswith(PREFIX)}


@functools.cache
def code_facts() -> CodeFacts:
    """The facts of the installed ``selfimprove`` package (computed once per process)."""
    import typer.main

    from selfimprove.cli.main import app

    spec = importlib.util.find_spec(PACKAGE)
    assert spec is not None and spec.submodule_search_locations, "selfimprove is not installed"
    root = Path(next(iter(spec.submodule_search_locations)))
    environ: set[str] = set()
    for path in _sources(root):
        environ |= environ_reads(path.read_text(encoding="utf-8"))
    return CodeFacts(code_settings(root), environ, typer.main.get_command(app), root)


# -- commands ------------------------------------------------------------------------------------


def _cli_problem(cli: Any, args: list[str]) -> str | None:
    """Why ``selfimprove <args>`` is not a command the CLI has, or None when it is. ``cli`` is the
    click command of the typer app (typer vendors its own click: groups are found by their
    ``commands``, usage errors by their ``format_message``)."""
    cmd, path, rest = cli, ["selfimprove"], list(args)
    while isinstance(getattr(cmd, "commands", None), dict):
        known = sorted(cmd.commands)
        if not rest or rest[0].startswith("-"):
            return f"`{' '.join(path)}` needs a subcommand (one of {', '.join(known)})"
        name = rest.pop(0)
        sub = cmd.commands.get(name)
        if sub is None:
            return f"`{' '.join(path)} {name}` does not exist (commands: {', '.join(known)})"
        cmd, path = sub, [*path, name]
    if "--help" in rest:
        return None
    try:
        cmd.make_context(" ".join(path), rest)
    except Exception as exc:  # noqa: BLE001 - click's usage errors, or its Exit after --help
        if hasattr(exc, "format_message"):
            return f"`{shlex.join([*path, *rest])}`: {exc.format_message()}"
        if getattr(exc, "exit_code", 1) != 0:
            raise
    return None


def _module_problem(root: Path, module: str) -> str | None:
    """Why ``python -m <module>`` would not run, or None."""
    if module.split(".")[0] != PACKAGE:
        return None if importlib.util.find_spec(module.split(".")[0]) else f"no module {module!r}"
    folder = root.joinpath(*module.split(".")[1:])
    if (folder / "__main__.py").is_file():
        return None
    if folder.with_suffix(".py").is_file():
        if "__main__" in folder.with_suffix(".py").read_text(encoding="utf-8"):
            return None
        return f'module {module} has no `if __name__ == "__main__"` entry point'
    if folder.is_dir():
        return f"package {module} has no __main__.py"
    return f"no module {module} (no {folder.relative_to(root.parent)}.py or package)"


def shell_commands(script: str, env: Mapping[str, str]) -> list[list[str]]:
    """The simple commands of a shell script (split at newlines, ``;``, ``&&``, ``||``, ``|``), each
    without a leading ``exec`` or ``VAR=value`` assignments, ``$VAR`` substituted from ``env``.

    >>> shell_commands('set -e; exec python -m "${M}" && X=1 selfimprove run', {"M": "selfimprove.a"})
    [['set', '-e'], ['python', '-m', 'selfimprove.a'], ['selfimprove', 'run']]
    """
    out = []
    for part in re.split(r"\n|;|&&|\|\||\|", substitute(script, env)):
        try:
            words = shlex.split(part)
        except ValueError:
            continue
        while words and (words[0] == "exec" or re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0])):
            words = words[1:]
        if words:
            out.append(words)
    return out


def resolve(
    argv: list[str], facts: CodeFacts, env: Mapping[str, str] | None = None
) -> tuple[set[str], list[str]]:
    """The service packages ``argv`` runs (``cli`` for a CLI command) and the problems found: a
    command that does not exist, a module without an entry point, an unknown program."""
    if not argv:
        return set(), ["has no command"]
    exe = Path(argv[0]).name
    if exe in SHELLS:
        packages: set[str] = set()
        problems: list[str] = []
        for words in shell_commands(argv[-1], env or {}):
            if Path(words[0]).name in PYTHONS | {"selfimprove"}:
                p, errs = resolve(words, facts, env)
                packages |= p
                problems += errs
        return packages, problems
    if exe == "selfimprove":
        problem = _cli_problem(facts.cli, argv[1:])
        return {"cli"}, [problem] if problem else []
    if exe in PYTHONS:
        if len(argv) >= 3 and argv[1] == "-m":
            module = argv[2]
            problem = _module_problem(facts.package_root, module)
            parts = module.split(".")
            package = parts[1] if parts[0] == PACKAGE and len(parts) > 1 else "other"
            return {package}, [problem] if problem else []
        if len(argv) >= 3 and argv[1] == "-c":
            return set(), []
        return set(), [f"runs `{shlex.join(argv)}`: neither `python -m <module>` nor `python -c`"]
    return set(), [f"runs {argv[0]!r}, which is neither the selfimprove CLI nor a python module"]


# -- the checks ----------------------------------------------------------------------------------


def check_containers(containers: Iterable[Container], facts: CodeFacts, ours: re.Pattern[str]) -> list[str]:
    """Commands of containers on our images (or running our programs), dead variables of every
    container, and required settings of every service a container runs."""
    problems: list[str] = []
    for c in containers:
        exe = Path(c.argv[0]).name if c.argv else ""
        packages: set[str] = set()
        if ours.search(c.image) or exe in PYTHONS | {"selfimprove"}:
            packages, errs = resolve(c.argv, facts, c.shell_env())
            problems += [f"{c.where}: {e}" for e in errs]
        refs = c.refs()
        for var in sorted(c.env):
            if var.startswith(PREFIX) and not facts.reads(var) and var not in refs:
                problems.append(f"{c.where}: sets {var}, which no code reads (a dead variable)")
        given = set(c.env) | c.inherited | set(c.image_env)
        for package in sorted(packages):
            for var in sorted(facts.required(package) - given):
                owner = facts.settings[var].owner
                problems.append(f"{c.where}: does not set {var}, a setting without a default ({owner})")
    return problems


def dead_in(where: str, names: Iterable[str], facts: CodeFacts, refs: Collection[str] = ()) -> list[str]:
    """Problems for ``SELFIMPROVE_*`` names (a ConfigMap's keys, a Dockerfile's ENV) that no code reads."""
    return [
        f"{where}: sets {var}, which no code reads (a dead variable)"
        for var in sorted(names)
        if var.startswith(PREFIX) and not facts.reads(var) and var not in refs
    ]


def dockerfile_problems(where: str, image: Image, facts: CodeFacts) -> list[str]:
    """Dead ``SELFIMPROVE_*`` variables among an image's ``ENV`` (its own command may read them)."""
    return dead_in(where, image.env, facts, image.referenced)


def env_example_problems(where: str, text: str, compose_texts: Iterable[str]) -> list[str]:
    """Variables of ``.env.example`` that no compose file interpolates: compose passes ``.env`` to
    no container, so such a variable changes nothing.

    >>> env_example_problems(".env.example", "A=1\\n# c\\nB=2\\nCOMPOSE_PROFILES=x\\n", ["x: ${A:-1}"])
    ['.env.example: sets B, which no compose file interpolates (a dead variable)']
    """
    used: set[str] = set()
    for t in compose_texts:
        used |= referenced_vars(t)
    names = [
        line.split("=", 1)[0].strip()
        for line in text.splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    ]
    return [
        f"{where}: sets {n}, which no compose file interpolates (a dead variable)"
        for n in names
        if n not in used and not COMPOSE_OWN.match(n)
    ]


# -- reading manifests ---------------------------------------------------------------------------


def _pod_specs(doc: dict) -> Iterable[dict]:
    """Every pod spec in a rendered object (Deployment, Job, CronJob, Pod, ...)."""
    stack: list[object] = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if isinstance(node.get("containers"), list):
                yield node
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def k8s_containers(
    docs: list[dict], where: str, image_default: Callable[[str], Image] | None = None
) -> list[Container]:
    """The containers (and init containers) of rendered Kubernetes objects; ``envFrom`` ConfigMaps are
    resolved from ``docs``. ``image_default`` gives, for an image reference, what it runs without a
    ``command`` and the environment it sets."""
    configmaps = {d["metadata"]["name"]: d.get("data") or {} for d in docs if d.get("kind") == "ConfigMap"}
    out = []
    for doc in docs:
        kind, name = doc.get("kind"), doc.get("metadata", {}).get("name")
        for pod in _pod_specs(doc):
            for c in pod.get("initContainers", []) + pod["containers"]:
                image = str(c.get("image", ""))
                default = image_default(image) if image_default else Image()
                inherited = set()
                for source in c.get("envFrom", []):
                    ref = source.get("configMapRef", {}).get("name")
                    inherited |= {source.get("prefix", "") + k for k in configmaps.get(ref, {})}
                if "command" in c:
                    argv, refs = [*c["command"], *c.get("args", [])], set()
                else:  # the image's entrypoint; args replace its command
                    argv, refs = [*default.entrypoint, *c.get("args", default.cmd)], set(default.referenced)
                out.append(
                    Container(
                        f"{where} {kind}/{name} container {c.get('name')}",
                        image,
                        [str(a) for a in argv],
                        {e["name"]: str(e.get("value", "")) for e in c.get("env", [])},
                        inherited,
                        refs,
                        dict(default.env),
                    )
                )
    return out


# Kinds that live outside any namespace (everything else a kustomization renders is namespaced).
CLUSTER_KINDS = frozenset(
    {
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "PriorityClass",
        "StorageClass",
        "PersistentVolume",
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
    }
)


def namespace_problems(docs: list[dict], where: str) -> list[str]:
    """Namespaced objects rendered without a namespace (``kubectl apply`` would put them in the
    caller's current namespace, apart from the rest) or in a different one from the others.

    >>> namespace_problems([{"kind": "Deployment", "metadata": {"name": "a", "namespace": "x"}},
    ...                     {"kind": "ScaledObject", "metadata": {"name": "b"}}], "o")
    ['o ScaledObject/b: no namespace (the others are in x)']
    """
    namespaced = [d for d in docs if d.get("kind") not in CLUSTER_KINDS]
    spaces = sorted({d.get("metadata", {}).get("namespace") or "" for d in namespaced} - {""})
    problems = []
    if len(spaces) > 1:
        problems.append(f"{where}: objects in several namespaces: {', '.join(spaces)}")
    for d in namespaced:
        if not d.get("metadata", {}).get("namespace"):
            others = f" (the others are in {spaces[0]})" if len(spaces) == 1 else ""
            problems.append(
                f"{where} {d.get('kind')}/{d.get('metadata', {}).get('name')}: no namespace{others}"
            )
    return problems


def configmap_problems(docs: list[dict], where: str, facts: CodeFacts) -> list[str]:
    """Dead ``SELFIMPROVE_*`` keys of every rendered ConfigMap."""
    problems = []
    for d in docs:
        if d.get("kind") == "ConfigMap":
            problems += dead_in(f"{where} ConfigMap/{d['metadata']['name']}", d.get("data") or {}, facts)
    return problems


def compose_command(svc: dict, image: Image | None) -> list[str]:
    """What a compose service runs: its entrypoint (else the image's) and command (else, when the
    entrypoint is the image's, the image's command)."""

    def words(value: object) -> list[str] | None:
        if value is None:
            return None
        return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]  # type: ignore[attr-defined]

    entry, cmd = words(svc.get("entrypoint")), words(svc.get("command"))
    image = image or Image()
    if entry is None:
        return [*image.entrypoint, *(cmd if cmd is not None else image.cmd)]
    return [*entry, *(cmd or [])]


def healthcheck_argv(svc: dict) -> list[str] | None:
    """The healthcheck of a compose service as argv (``CMD-SHELL`` through ``/bin/sh -c``), or None."""
    check = svc.get("healthcheck") or {}
    test = check.get("test")
    if check.get("disable") or not test or test == ["NONE"]:
        return None
    if isinstance(test, str):
        return ["/bin/sh", "-c", test]
    if test[0] == "CMD":
        return [str(t) for t in test[1:]]
    if test[0] == "CMD-SHELL":
        return ["/bin/sh", "-c", " ".join(str(t) for t in test[1:])]
    raise ValueError(f"healthcheck test {test!r}: expected CMD, CMD-SHELL or NONE")


def compose_containers(config: dict, where: str, images: Mapping[str, Image]) -> list[Container]:
    """The services of a rendered compose config (``docker-compose config --format json``) as
    containers; ``images`` maps a service to what its image sets and runs (from its Dockerfile)."""
    out = []
    for name, svc in sorted(config.get("services", {}).items()):
        image = images.get(name)
        env = {k: "" if v is None else str(v) for k, v in (svc.get("environment") or {}).items()}
        refs = set(image.referenced) if image and svc.get("command") is None else set()
        for word in healthcheck_argv(svc) or []:
            refs |= referenced_vars(word)
        out.append(
            Container(
                f"{where} service {name}",
                str(svc.get("image", "")),
                compose_command(svc, image),
                env,
                set(),
                refs,
                dict(image.env) if image else {},
            )
        )
    return out
