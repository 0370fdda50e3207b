"""The shape of the code: one home per decision, configs below the trainers, rule == function.

These tests fail when a backend name is compared outside the registry, when building the DAG
imports torch, when a rule's keys and its stage function's parameters drift apart, or when a
module grows past 400 lines.
"""
from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from opd import backends
from opd.config import ConfigError, check_config
from opd.stages import RULES, stage_function

BACKEND_NAMES = sorted({n for s in backends.STAGES for n in backends.names(s)})


def test_building_the_dag_imports_no_torch():
    code = ("import sys, opd.config, opd.backends, opd.stages, opd.train.config, opd.sft.config, "
            "opd.generation, opd.generation.config, opd.objectives.config, opd.objectives.registry\n"
            "print(sorted(m for m in ('torch', 'transformers', 'pandas', 'math_verify') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_registry_rejects_duplicates_and_lists_valid_names():
    with pytest.raises(ValueError, match="already registered.*hf.*vllm"):
        backends.register(backends.Backend("generation", "vllm", run="x:y"))
    with pytest.raises(ValueError, match="unknown train backend 'deepspeed'; valid: native, trl, verl"):
        backends.get("train", "deepspeed")
    assert backends.names("sft") == ["native", "llamafactory"]  # the CPU default first


@pytest.mark.parametrize("stage,name", [(s, n) for s in backends.STAGES for n in backends.names(s)])
def test_every_registered_entry_and_check_imports(stage, name):
    b = backends.get(stage, name)
    assert callable(backends.load(b.run))
    if b.check:
        assert callable(backends.load(b.check))


def test_no_backend_name_is_compared_outside_the_registry():
    names = "|".join(map(re.escape, BACKEND_NAMES))
    pattern = re.compile(rf"""(==|!=|\bin\s*[(\[{{])\s*["']({names})["']|["']({names})["']\s*(==|!=)""")
    # (opd/data/ names dataset formats, one of which is called "verl": not a backend)
    files = [p for p in ROOT.glob("opd/**/*.py") if p.name != "backends.py" and p.parent.name != "data"]
    files += list(ROOT.glob("rules/*.smk")) + list(ROOT.glob("scripts/*.py")) + [ROOT / "Snakefile"]
    hits = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}" for p in files
            for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not hits, hits


def test_schema_names_no_backend_or_objective_choice():
    """Those names live in opd/backends.py and opd/objectives; the schema leaves them to the
    config check, which lists the valid ones."""
    schema = yaml.safe_load((ROOT / "config" / "schema.yaml").read_text())
    enums = []
    schema["properties"].pop("kernels")  # CPU kernel modes (opd/kernels.py): `native` is no backend

    def walk(node):
        if isinstance(node, dict):
            if "enum" in node:
                enums.extend(node["enum"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    walk(schema)
    from opd.objectives.config import LOSS_AGG_MODES, STRATEGIES, WEIGHT_MODES
    assert not set(enums) & (set(BACKEND_NAMES) | set(STRATEGIES) | set(WEIGHT_MODES) | set(LOSS_AGG_MODES))
    # each non-default backend's option section in the schema belongs to a registered backend
    options = set(schema["properties"]["backends"]["properties"]) - set(backends.STAGES)
    assert options == {n for s in backends.STAGES for n in backends.names(s)[1:]}


def test_unknown_backend_stack_or_resource_rule_is_refused():
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    bad = dict(cfg, backends={"generation": "sglang"})
    with pytest.raises(ConfigError, match="backends.generation: unknown backend 'sglang'; valid: hf, vllm"):
        backends.check_backends(bad, using_conda=True)
    with pytest.raises(ConfigError, match="stacks.sglang"):
        backends.check_backends(dict(cfg, stacks={"sglang": "/x"}), using_conda=True)
    with pytest.raises(ConfigError, match="resources.trian: no such rule"):
        check_config(dict(cfg, resources={"trian": {"threads": 2}}))


def test_a_user_policy_loss_and_estimator_are_usable_from_the_config(tmp_path, monkeypatch):
    (tmp_path / "my_opd_ext.py").write_text(
        "from opd.objectives import ADV_ESTIMATORS, register_policy_loss, token_reward_direct\n"
        "from opd.objectives.losses import vanilla_token_loss\n"
        "register_policy_loss('my_loss')(lambda *a: vanilla_token_loss(*a))\n"
        "ADV_ESTIMATORS.register('my_estimator')(token_reward_direct)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg["train_defaults"]["objective"].update(policy_loss="my_loss", adv_estimator="my_estimator")
    with pytest.raises(ConfigError, match="'my_(loss|estimator)' is invalid; valid: "):
        check_config(cfg)
    cfg["extensions"] = ["my_opd_ext"]
    check_config(cfg)  # the extension registered both names before the check
    from opd.objectives import ADV_ESTIMATORS, POLICY_LOSSES
    assert "my_loss" in POLICY_LOSSES.names() and "my_estimator" in ADV_ESTIMATORS.names()
    with pytest.raises(ConfigError, match=r"extensions\[0\]: cannot import 'no_such_ext'"):
        check_config(dict(cfg, extensions=["no_such_ext"]))


@pytest.fixture(scope="module")
def workflow_rules():
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, ResourceSettings

    with SnakemakeApi() as api:
        wf = api.workflow(resource_settings=ResourceSettings(cores=1), config_settings=ConfigSettings(),
                          snakefile=ROOT / "Snakefile", workdir=ROOT)
        wf.list_rules()
        return {r.name: r for r in wf._workflow.rules if r.name != "all"}


def test_every_rule_calls_its_stage_function_with_its_own_names(workflow_rules):
    assert set(workflow_rules) == set(RULES)
    for name, rule in workflow_rules.items():
        assert rule.script and Path(rule.script).name == "stage.py", name
        params = inspect.signature(stage_function(name)).parameters
        given = set(rule.input._names) | set(rule.output._names) | set(rule.params._names)
        assert given <= set(params), (name, given - set(params))
        required = {p for p, v in params.items() if v.default is inspect.Parameter.empty}
        unpacked = any(getattr(f, "flags", {}).get("unpack") for f in rule.input)  # named at job time
        if not unpacked:
            assert required <= given | rule.wildcard_names, (name, required - given - rule.wildcard_names)


def test_every_rule_names_its_function_in_its_docstring(workflow_rules):
    """A reader goes from a rule to its code without running anything: each rule's docstring
    (``snakemake --list-rules`` prints it) names ``opd/stages/<module>.py:<function>``, and that
    is the function the adapter ``opd.stages.run`` calls for the rule."""
    import importlib

    for name, rule in workflow_rules.items():
        found = re.search(r"\b(opd/stages/\w+)\.py:(\w+)\b", rule.docstring or "")
        assert found, f"rule {name}: no `opd/stages/<module>.py:<function>` in its docstring"
        module = importlib.import_module(found.group(1).replace("/", "."))
        assert getattr(module, found.group(2), None) is stage_function(name), (name, found.group(0))


def _docstring_calls(doc: str):
    """``ast.Call`` nodes of the lines of ``doc`` that parse as Python (usage examples)."""
    import ast

    for line in doc.splitlines():
        code = re.sub(r"^>>>\s*", "", line.strip()).split("  #")[0].split(" # ")[0].strip()
        try:
            tree = ast.parse(code)
        except SyntaxError:
            continue
        yield from (n for n in ast.walk(tree) if isinstance(n, ast.Call))


#: Packages of the tool stacks (not in the core venv): modules importing them run only there.
TOOL_PACKAGES = {"trl", "vllm", "verl", "llamafactory"}


def test_docstring_examples_match_signatures():
    """Every call in a module's, function's or class's docstring to a function of that module
    (or a method of its classes) binds to its signature: an example never shows arguments the
    code no longer takes."""
    import ast
    import importlib

    wrong = []
    for f in sorted((ROOT / "opd").rglob("*.py")):
        parts = list(f.relative_to(ROOT).with_suffix("").parts)
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as err:   # a module that runs only inside its tool stack
            if err.name in TOOL_PACKAGES:
                continue
            raise
        docs = [(name, mod.__doc__)] + [(f"{name}.{k}", v.__doc__) for k, v in vars(mod).items()
                                        if (inspect.isfunction(v) or inspect.isclass(v))
                                        and getattr(v, "__module__", None) == name]
        for where, doc in docs:
            for call in _docstring_calls(doc or ""):
                fn = None
                if isinstance(call.func, ast.Name):
                    fn = getattr(mod, call.func.id, None)
                elif isinstance(call.func, ast.Attribute) and isinstance(call.func.value, ast.Name):
                    owner = getattr(mod, call.func.value.id, None)
                    fn = getattr(owner, call.func.attr, None) if inspect.isclass(owner) else None
                if not callable(fn) or any(isinstance(a, ast.Starred) for a in call.args) \
                        or any(k.arg is None for k in call.keywords):
                    continue
                try:
                    sig = inspect.signature(fn)
                except (TypeError, ValueError):
                    continue
                try:
                    sig.bind(*call.args, **{k.arg: k.value for k in call.keywords})
                except TypeError as err:
                    wrong.append(f"{where}: {ast.unparse(call)}: {err}")
    assert not wrong, wrong


def test_modules_stay_small():
    long = {str(p.relative_to(ROOT)): n for p in ROOT.glob("opd/**/*.py")
            if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long


def import_graph() -> dict[str, set[str]]:
    """Module -> the opd modules it imports, anywhere in its text (lazy imports inside functions
    count; ``from pkg import x`` counts as importing ``pkg``, and ``pkg.x`` when that is a module)."""
    import ast

    mods = {}
    for f in (ROOT / "opd").rglob("*.py"):
        parts = list(f.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = f

    def owner(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph = {m: set() for m in mods}
    for m, f in mods.items():
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    pkg = m.split(".") if f.name == "__init__.py" else m.split(".")[:-1]
                    pkg = pkg[:len(pkg) - node.level + 1]
                    base = ".".join(pkg + ([base] if base else []))
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            graph[m].update(o for n in names if (o := owner(n)) and o != m)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_in_opd():
    assert not cycles(import_graph())


def test_the_cycle_test_sees_lazy_imports_and_finds_a_cycle():
    graph = import_graph()
    assert "opd.experiments" in graph["opd.config"]          # a top-level import
    assert "opd.stages" in graph["opd.config"]               # one inside check_config
    graph["opd.errors"].add("opd.config")                    # what a lazy `from opd.config import` adds
    assert any({"opd.config", "opd.errors"} <= set(c) for c in cycles(graph))


def test_the_layers_of_the_config_code_point_down():
    """Errors at the bottom (no project import), plain model lookups next, the DAG-time check
    ``opd.config`` on top: nothing in opd/ imports it."""
    graph = import_graph()
    assert graph["opd.errors"] == set() and graph["opd.model_refs"] == set()
    assert not [m for m, deps in graph.items() if "opd.config" in deps]
