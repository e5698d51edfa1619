"""Helpers for the live Prometheus test: run the real ``prometheus`` binary with one scrape job per
service (the job names of ``deploy/prometheus/prometheus.yml``) and the project's rule files, query
its HTTP API, and pull the PromQL expressions out of the dashboard and the rules.

An alert expression is empty while the system is healthy, so ``operands`` splits an expression at
its top-level set operators (``and``, ``or``, ``unless``) and comparisons (``>``, ``==``, ...) and
drops number literals: every operand that is left must return data on its own.
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

from selfimprove.core.procs import LOOPBACK, Proc, free_ports, http_ok

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "rules.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "selfimprove-loop-health.json"
# Grafana's interval variables, and the dashboard's run variable as its "All" value (every run).
GRAFANA_VARS = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "5m", "$run_id": ".+"}


class PromServer:
    """``/usr/bin/prometheus`` scraping ``jobs`` (job name -> ``host:port``) every second."""

    def __init__(self, home: Path, jobs: dict[str, str], rule_files: list[Path]) -> None:
        self.home = home
        (home / "data").mkdir(parents=True, exist_ok=True)
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [target]}]} for job, target in jobs.items()
            ],
        }
        (home / "prometheus.yml").write_text(json.dumps(config, indent=2))  # JSON is YAML
        (port,) = free_ports(1)
        self.url = f"http://{LOOPBACK}:{port}"
        self.proc = Proc(
            "prometheus",
            [
                "/usr/bin/prometheus",
                f"--config.file={home / 'prometheus.yml'}",
                f"--storage.tsdb.path={home / 'data'}",
                f"--web.listen-address={LOOPBACK}:{port}",
            ],
            home / "prometheus.log",
        )

    def start(self) -> PromServer:
        self.proc.start()
        self.proc.wait_ready(lambda: http_ok(f"{self.url}/-/ready"), 60)
        return self

    def stop(self) -> None:
        self.proc.stop()

    def api(self, path: str, **params: str) -> dict:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        """The instant vector of ``expr`` (a scalar result counts as one sample)."""
        data = self.api("query", query=expr)
        return data["result"] if data["resultType"] == "vector" else [{"value": data["result"]}]

    def firing(self, alert: str) -> list[dict]:
        return [
            a
            for a in self.api("alerts")["alerts"]
            if a["labels"].get("alertname") == alert and a["state"] == "firing"
        ]

    def wait(self, check, timeout: float, what: str):
        """Poll ``check()`` until it returns something true; fail naming ``what`` and the log tail."""
        deadline = time.monotonic() + timeout
        while True:
            result = check()
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{what} not seen within {timeout:.0f}s; prometheus log:\n{self.proc.tail()}"
                )
            time.sleep(0.5)


def dashboard_exprs(path: Path = DASHBOARD) -> list[str]:
    """Every panel target's ``expr`` (nested rows included), Grafana variables substituted."""

    def walk(panels: list[dict]):
        for panel in panels:
            for target in panel.get("targets", []):
                if target.get("expr"):
                    yield grafana_subst(target["expr"])
            yield from walk(panel.get("panels", []))

    return list(walk(json.loads(path.read_text())["panels"]))


def grafana_subst(expr: str) -> str:
    """Grafana's interval variables replaced by fixed durations, the run variable by every run.

    >>> grafana_subst('rate(x{run_id=~"$run_id"}[$__rate_interval])')
    'rate(x{run_id=~".+"}[1m])'
    """
    for var, value in GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    return expr


def rule_exprs(text: str) -> dict[str, str]:
    """Alert (or record) name -> expression of every rule."""
    return {
        r.get("alert") or r["record"]: r["expr"].strip()
        for g in yaml.safe_load(text)["groups"]
        for r in g["rules"]
    }


def shortened_rules(text: str, alert: str, old_threshold: str, threshold_s: int, for_: str) -> str:
    """The rules with ONLY the threshold (``> <old>`` seconds) and the ``for:`` duration of ``alert``
    changed; every other rule and every other part of the expression is kept as it is."""
    doc = yaml.safe_load(text)
    (rule,) = [r for g in doc["groups"] for r in g["rules"] if r.get("alert") == alert]
    assert f"> {old_threshold}" in rule["expr"], rule["expr"]
    rule["expr"] = rule["expr"].replace(f"> {old_threshold}", f"> {threshold_s}")
    rule["for"] = for_
    return yaml.safe_dump(doc, sort_keys=False)


_SET_OPS = re.compile(r"\b(?:and|or|unless)\b")
_COMPARE = re.compile(r"==|!=|>=|<=|>|<")
_NUMBER = re.compile(r"^[+-]?\d+(?:\.\d+)?$")


def _split_top(expr: str, pattern: re.Pattern) -> list[str]:
    """Split at matches of ``pattern`` outside (), {}, [] and quotes."""
    parts, depth, quote, start, i = [], 0, "", 0, 0
    while i < len(expr):
        c = expr[i]
        if quote:
            quote = "" if c == quote and expr[i - 1] != "\\" else quote
        elif c in "\"'":
            quote = c
        elif c in "({[":
            depth += 1
        elif c in ")}]":
            depth -= 1
        elif depth == 0 and (m := pattern.match(expr, i)):
            parts.append(expr[start:i])
            start = i = m.end()
            continue
        i += 1
    return [p.strip() for p in [*parts, expr[start:]]]


def _wrapped(expr: str) -> bool:
    """True when the first "(" closes at the very end: ``(a > b)`` but not ``(a) > (b)``."""
    if not (expr.startswith("(") and expr.endswith(")")):
        return False
    depth = 0
    for i, c in enumerate(expr):
        depth += (c == "(") - (c == ")")
        if depth == 0:
            return i == len(expr) - 1
    return False


def operands(expr: str) -> list[str]:
    """The non-literal operands of an expression's top-level set operators and comparisons.

    >>> operands('(time() - max(x) > 7200) and max(x) > 0')
    ['time() - max(x)', 'max(x)']
    >>> operands('up{job=~"a|b"} == 0')
    ['up{job=~"a|b"}']
    >>> operands('sum(rate(x[5m]))')
    ['sum(rate(x[5m]))']
    """
    out: list[str] = []
    for part in _split_top(expr.strip(), _SET_OPS):
        if _wrapped(part):
            out += operands(part[1:-1])
        else:
            out += [s for s in _split_top(part, _COMPARE) if not _NUMBER.match(s)]
    return out
