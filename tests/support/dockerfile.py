"""What a Dockerfile's final stage gives a container, read without Docker: its environment (``ENV``,
with ``ARG`` values substituted), the repository folders it copies in (``COPY <src> <dest>``), and its
default command (``ENTRYPOINT`` + ``CMD``). ``ADD <url> <dest>`` counts as a copy of the URL. Pure text logic: the deployment checks use it to know what
an image sets and runs (tests/support/compose_plan.py, tests/support/manifest_check.py).

>>> image = parse('FROM x AS a\\nARG SERVICE=trainer\\nENV A=1 \\\\\\n    M=selfimprove.${SERVICE}\\n'
...               'COPY benchmarks/data /opt/data\\nCMD ["/bin/sh", "-c", "exec python -m $M"]\\n')
>>> image.env, image.copies, image.command
({'A': '1', 'M': 'selfimprove.trainer'}, {'/opt/data': ['benchmarks/data']}, ['/bin/sh', '-c', 'exec python -m $M'])
>>> parse('FROM x\\nARG SERVICE=a\\nENV M=${SERVICE}\\n', {"SERVICE": "b"}).env
{'M': 'b'}
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


@dataclass
class Image:
    """The final stage of a Dockerfile: environment, copied repository paths (dest -> src), command."""

    env: dict[str, str] = field(default_factory=dict)
    copies: dict[str, list[str]] = field(default_factory=dict)  # image path -> repo paths or URLs
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    # Every $VAR / ${VAR} the stage's RUN, CMD, ENTRYPOINT and HEALTHCHECK lines mention.
    referenced: set[str] = field(default_factory=set)

    @property
    def command(self) -> list[str]:
        return [*self.entrypoint, *self.cmd]


def instructions(text: str) -> list[tuple[str, str]]:
    """``(KEYWORD, arguments)`` of every instruction: comments dropped, continuation lines joined.

    >>> instructions("# c\\nRUN a \\\\\\n  && b\\nenv X=1\\n")
    [('RUN', 'a  && b'), ('ENV', 'X=1')]
    """
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, args = line.partition(" ")
        out.append((keyword.upper(), args.strip()))
    return out


def substitute(value: str, values: Mapping[str, str]) -> str:
    """``$X``, ``${X}`` and ``${X:-default}`` replaced from ``values``; unknown names kept as written.

    >>> substitute("a.${S}.$T.${U:-u}.${V}", {"S": "s", "T": "t"})
    'a.s.t.u.${V}'
    """

    def one(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(3)
        if name in values:
            return values[name]
        return m.group(2) if m.group(2) is not None else m.group(0)

    return _VAR.sub(one, value)


def referenced_vars(text: str) -> set[str]:
    """Names a shell line reads: ``$X`` and ``${X...}`` (``$$X``, compose's escape, counts too).

    >>> sorted(referenced_vars('exec python -m "${MOD}" $A $$B ${C:-x}'))
    ['A', 'B', 'C', 'MOD']
    """
    return {m.group(1) or m.group(3) for m in _VAR.finditer(text)}


def _exec_form(args: str) -> list[str]:
    try:
        value = json.loads(args)
    except ValueError:
        return ["/bin/sh", "-c", args]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"not an exec-form list: {args!r}")
    return value


def _pairs(args: str) -> dict[str, str]:
    """``ENV a=1 b="x y"`` (or the legacy ``ENV a 1``) as a dict."""
    words = shlex.split(args)
    if words and "=" not in words[0]:
        return {words[0]: " ".join(words[1:])}
    return dict(w.split("=", 1) for w in words)


def parse(text: str, build_args: Mapping[str, str] | None = None) -> Image:
    """The final stage of a Dockerfile (``build_args`` override its ``ARG`` defaults)."""
    given = dict(build_args or {})
    global_args: dict[str, str] = {}
    image = Image()
    args: dict[str, str] = {}
    in_stage = False
    for keyword, rest in instructions(text):
        if keyword == "FROM":
            image, args, in_stage = Image(), {}, True
            continue
        if keyword == "ARG":
            name, _, default = rest.partition("=")
            value = given.get(name, default.strip('"') or global_args.get(name, ""))
            (args if in_stage else global_args)[name] = value
        elif keyword == "ENV":
            scope = {**args, **image.env}
            for name, value in _pairs(rest).items():
                image.env[name] = substitute(value, scope)
                scope[name] = image.env[name]
        elif keyword in ("COPY", "ADD"):
            words = shlex.split(rest)
            if any(w.startswith("--from") for w in words):
                continue
            words = [w for w in words if not w.startswith("--")]
            if len(words) >= 2:
                dest = image.copies.setdefault(words[-1].rstrip("/") or "/", [])
                dest += [src.rstrip("/") for src in words[:-1]]
        elif keyword in ("CMD", "ENTRYPOINT"):
            form = _exec_form(rest)
            if keyword == "CMD":
                image.cmd = form
            else:
                image.entrypoint, image.cmd = form, []
            image.referenced |= referenced_vars(rest)
        elif keyword in ("RUN", "HEALTHCHECK"):
            image.referenced |= referenced_vars(rest)
    return image
