"""The structure contracts: no import cycles, no import side effects, every recipe keeps the
recipe protocol, and a new aggregator is one class plus one table entry."""
import inspect
import json
from pathlib import Path
import subprocess
import sys

import pytest
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from mtkd.aggregation import AGGREGATORS
from mtkd.aggregation.base import Aggregate, AggregatorContext, Capabilities, check_aggregator, softened
from mtkd.cli import main
from mtkd.config import parse_config
from mtkd.errors import ConfigError
from mtkd.recipes import RECIPES
from mtkd.recipes.base import Traits, check_recipe


def _cycles(graph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    m = stack.pop()
                    on.discard(m)
                    component.append(m)
                    if m == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def test_the_import_graph_of_mtkd_has_no_cycle():
    grimp = pytest.importorskip("grimp")
    # every import counts, also those inside functions: a lazy import must not hide a cycle
    graph = grimp.build_graph("mtkd", include_external_packages=False)
    assert len(graph.modules) > 50
    assert _cycles(graph) == []


def test_the_cycle_check_finds_a_cycle():
    class Graph:  # a -> b -> c -> a, d alone
        modules = {"a", "b", "c", "d"}
        edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}

        def find_modules_directly_imported_by(self, m):
            return self.edges[m]

    assert _cycles(Graph()) == [["a", "b", "c"]]


IMPORTS = """
import json, sys
mtkd_modules = lambda: sorted(m for m in sys.modules if m == "mtkd" or m.startswith("mtkd."))
import mtkd
bare, matplotlib = mtkd_modules(), "matplotlib" in sys.modules
import mtkd.losses.kd
leaf = mtkd_modules()
unresolved = [n for n in mtkd.__all__ if getattr(mtkd, n, None) is None]
print(json.dumps({"bare": bare, "matplotlib": matplotlib, "leaf": leaf, "unresolved": unresolved,
                  "in_dir": set(mtkd.__all__) <= set(dir(mtkd)), "distill": mtkd.distill.__module__,
                  "load_student": mtkd.load_student.__module__, "unknown": hasattr(mtkd, "no_such_name"),
                  "submodule": mtkd.config.__name__, "version": mtkd.__version__}))
"""


@pytest.fixture(scope="module")
def fresh_imports() -> dict:
    """What a fresh interpreter loads: ``import mtkd``, then ``import mtkd.losses.kd``, then every public name."""
    out = subprocess.run([sys.executable, "-c", IMPORTS], capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def test_import_mtkd_loads_no_matplotlib_and_keeps_the_backend(fresh_imports):
    assert fresh_imports["matplotlib"] is False


def test_importing_one_module_loads_only_what_it_needs(fresh_imports):
    """``mtkd/__init__`` loads its public names on first use (PEP 562): ``import mtkd`` loads the package
    and its version, and importing the KD loss loads the loss package and its leaves, not the library."""
    assert fresh_imports["bare"] == ["mtkd", "mtkd.version"]
    leaf = fresh_imports["leaf"]
    assert len(leaf) < 10, leaf
    assert "mtkd.data" not in leaf and "mtkd.pipeline" not in leaf


def test_the_lazy_top_level_keeps_every_public_name(fresh_imports):
    got = fresh_imports
    assert got["unresolved"] == [] and got["in_dir"] and not got["unknown"] and got["version"]
    assert (got["distill"], got["load_student"]) == ("mtkd.api", "mtkd.student")
    assert got["submodule"] == "mtkd.config"  # a submodule is reachable as an attribute, as before


def test_drawing_a_report_does_not_switch_the_users_backend(tmp_path):
    code = ("import matplotlib; matplotlib.use('svg'); from mtkd.report import plots; "
            "plots.plot_accuracy([('a', 0.5, 10)], __import__('pathlib').Path(r'%s')); "
            "print(matplotlib.get_backend())") % (tmp_path / "a.png")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "svg" and (tmp_path / "a.png").stat().st_size > 0


def _documented_step_path() -> set[str]:
    """The files listed in docs/architecture.md's table of the offline + mean step."""
    import re

    page = (Path(__file__).parent.parent / "docs" / "architecture.md").read_text()
    section = page.split("## The `offline` + `mean` step path")[1].split("\n## ")[0]
    return set(re.findall(r"^\| `([\w/]+\.py)` \|", section, re.M))


def test_the_offline_mean_step_path_crosses_at_most_five_files(tmp_path, tiny_raw_config, monkeypatch):
    """Trace one step of ``mtkd run`` (offline + mean): every mtkd source file with a frame between
    the trainer's call of the recipe's step and the return of ``optimizer.step()``."""
    from mtkd.recipes.offline import OfflineRecipe

    src = Path(__file__).parent.parent / "src" / "mtkd"
    entered: list[str] = []
    state = {"recording": False, "done": False}

    def profile(frame, event, arg):
        code = frame.f_code
        if event == "call" and code is OfflineRecipe.step.__code__ and not state["done"]:
            state["recording"] = True  # called from the trainer's loop, whose frame is already running:
            entered.append(Path(frame.f_back.f_code.co_filename).relative_to(src).as_posix())
        if not state["recording"]:
            return
        if event == "call" and code.co_filename.startswith(str(src)):
            entered.append(Path(code.co_filename).relative_to(src).as_posix())
        # the optimizer's own step (torch/optim/adam.py or sgd.py) returning ends the step
        if event == "return" and code.co_name == "step" and Path(code.co_filename).name in ("adam.py", "sgd.py") \
                and Path(code.co_filename).parent.name == "optim":
            state["recording"], state["done"] = False, True

    raw = dict(tiny_raw_config)
    raw["teachers"] = [dict(t, train={"steps": 2, "eval_every": 2}) for t in raw["teachers"]]
    raw["distill"] = dict(raw["distill"], recipe="offline", aggregator="mean", steps=1, baseline=False)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    from mtkd.trainer import Trainer

    fit = Trainer.fit

    def profiled_fit(self):  # profile the student's stage only (the teachers' training is not traced)
        sys.setprofile(profile if isinstance(self.recipe, OfflineRecipe) else None)
        try:
            return fit(self)
        finally:
            sys.setprofile(None)

    monkeypatch.setattr(Trainer, "fit", profiled_fit)
    code = main(["run", str(cfg), "--out", str(tmp_path / "run"), "--no-progress"])
    assert code == 0 and state["done"]
    # the networks' own forward passes (student and teachers built from mtkd's model zoo) are not the path
    files = {f for f in entered if not f.startswith("models/")}
    assert len(files) <= 5, sorted(files)
    assert files == _documented_step_path(), "docs/architecture.md lists other files than the step enters"


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_keeps_the_recipe_contract(name):
    check_recipe(RECIPES[name])  # traits, declared hooks present, constructor takes only build inputs


def test_the_contract_check_refuses_an_undeclared_hook_and_catch_all_keywords():
    class Sloppy(nn.Module):
        description, traits, Options = "x", Traits(), BaseModel

        def __init__(self, student, **_):
            super().__init__()

        def step(self, x, y, index):
            return {}

        def finish(self):
            pass

    with pytest.raises(TypeError, match="finishes=False but hook finish"):
        check_recipe(Sloppy)
    Sloppy.traits = Traits(finishes=True)
    with pytest.raises(TypeError, match=r"takes \*_"):
        check_recipe(Sloppy)


def test_a_wrong_keyword_to_a_recipe_is_an_error():
    with pytest.raises(TypeError):
        RECIPES["offline"](nn.Linear(2, 2), [], None, temprature=2.0)


# ---------------------------------------------------------------- a toy aggregator: one class, one table entry

class ToyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    sharpness: float = Field(2.0, gt=0, description="power applied to each teacher's confidence")


class ToyAggregator(nn.Module):
    """Weights each teacher by its (max probability) ** sharpness, per sample."""

    description = "toy: teachers weighted by confidence ** sharpness"
    Options = ToyOptions
    capabilities = Capabilities()

    def __init__(self, ctx: AggregatorContext, options: ToyOptions | None = None):
        super().__init__()
        self.sharpness = (options or ToyOptions()).sharpness

    def forward(self, teacher_logits, labels, temperature, **_):
        probs = softened(teacher_logits, temperature)  # [K, B, C]
        w = probs.amax(-1).t() ** self.sharpness  # [B, K]
        w = w / w.sum(1, keepdim=True)
        return Aggregate(torch.einsum("bk,kbc->bc", w, probs), w)


@pytest.mark.parametrize("name", sorted(AGGREGATORS))
def test_every_aggregator_keeps_the_aggregator_interface(name):
    """description, Options, forward, a Capabilities record (on the class, or set by __init__ from the
    options) and every hook it declares; build_aggregator runs the same check."""
    from mtkd.aggregation import build_aggregator
    from mtkd.data import IndexedTensorDataset
    from mtkd.teachers import FrozenTeacher

    torch.manual_seed(0)
    teachers = [FrozenTeacher(nn.Linear(4, 3), f"t{k}", 3) for k in range(2)]
    val = IndexedTensorDataset(torch.randn(8, 4), torch.randint(0, 3, (8,)))
    aggregator = build_aggregator(name, AggregatorContext(teachers, 3, [1.0, 2.0], val, feature_dim=5))
    check_aggregator(aggregator)
    # what forward returns agrees with what it declared
    z, y = torch.randn(2, 6, 3), torch.randint(0, 3, (6,))
    out = aggregator(z, y, 2.0, student_logits=torch.randn(6, 3), features=torch.randn(6, 5))
    assert (out.temperatures is not None) == aggregator.capabilities.per_teacher_temperatures


@pytest.mark.parametrize("form", ["mmkd", "bilevel", "joint"])
def test_the_meta_aggregator_declares_what_each_form_needs(form):
    from mtkd.aggregation import build_aggregator
    from mtkd.data import IndexedTensorDataset

    teachers = [nn.Linear(4, 3), nn.Linear(4, 3)]
    val = IndexedTensorDataset(torch.randn(8, 4), torch.randint(0, 3, (8,)))
    agg = build_aggregator("meta", AggregatorContext(teachers, 3, val_data=val, feature_dim=5),
                           {"form": form})  # build_aggregator checks it
    caps = agg.capabilities
    assert (caps.needs_features, caps.looks_ahead, caps.adds_losses) == \
        (form != "mmkd", form != "joint", form == "joint")


def test_the_interface_check_refuses_a_missing_record_or_hook():
    class Bare(ToyAggregator):
        capabilities = None

    with pytest.raises(TypeError, match=r"Bare.capabilities: an aggregation.base.Capabilities"):
        check_aggregator(Bare)

    class Claims(ToyAggregator):
        capabilities = Capabilities(looks_ahead=True)

    with pytest.raises(TypeError, match=r"capability looks_ahead=True but hook before_step\(\) is missing"):
        check_aggregator(Claims)


@pytest.fixture
def toy_table(monkeypatch):
    monkeypatch.setitem(AGGREGATORS, "toy", ToyAggregator)


def test_a_toy_aggregator_is_listed_and_validated(toy_table, capsys, tiny_raw_config):
    assert main(["list"]) == 0
    assert any(line.split()[:1] == ["toy"] for line in capsys.readouterr().out.splitlines())
    raw = dict(tiny_raw_config, distill={"aggregator": {"name": "toy", "sharpness": 3.0}})
    assert parse_config(raw).aggregator_options.sharpness == 3.0
    with pytest.raises(ConfigError, match=r"distill.aggregator.sharpnes: unknown option for aggregator 'toy'"):
        parse_config(dict(tiny_raw_config, distill={"aggregator": {"name": "toy", "sharpnes": 3.0}}))
    with pytest.raises(ConfigError, match=r"distill.aggregator.sharpness"):
        parse_config(dict(tiny_raw_config, distill={"aggregator": {"name": "toy", "sharpness": -1}}))


# every recipe whose constructor takes an aggregator, and the options under which it uses one
TAKES_AGGREGATOR = {name: {"teacher_free": {"mode": "reverse"}}.get(name, {}) for name, cls in RECIPES.items()
                    if "aggregator" in inspect.signature(cls.__init__).parameters}


def test_the_recipes_that_take_an_aggregator_are_the_ones_expected():
    # uses_aggregator: takes any aggregator of the table; continual and teacher_free (mode reverse) take one too
    assert {n for n, c in RECIPES.items() if c.traits.uses_aggregator} < set(TAKES_AGGREGATOR)
    assert {"continual", "teacher_free", "offline", "progressive", "semi_supervised", "tas"} <= set(TAKES_AGGREGATOR)


@pytest.mark.parametrize("recipe", sorted(TAKES_AGGREGATOR))
def test_every_recipe_that_takes_an_aggregator_runs_the_toy_one(toy_table, tmp_path, tiny_raw_config, recipe):
    raw = dict(tiny_raw_config)
    options = TAKES_AGGREGATOR[recipe]
    raw["distill"] = dict(raw["distill"], recipe={"name": recipe, **options} if options else recipe,
                          aggregator={"name": "toy", "sharpness": 1.5}, steps=6, baseline=False)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    assert main(["run", str(cfg), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in records if r["stage"] == "distill" and "loss" in r][-1]
    names = ["assistant1"] if recipe == "assistant" else ["cnn", "mlp"]
    assert sum(last[f"weight/{n}"] for n in names) == pytest.approx(1.0, abs=1e-5)
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["distill"]["aggregator"] == {"name": "toy", "sharpness": 1.5}


# ---------------------------------------------------------------- nested component options

def test_component_options_nest_under_their_component(tiny_raw_config):
    from mtkd.config import apply_overrides

    raw = dict(tiny_raw_config, distill={"aggregator": "meta"})
    cfg = parse_config(apply_overrides(raw, ["distill.aggregator.form=joint"]))
    assert cfg.distill.aggregator == "meta" and cfg.aggregator_options.form == "joint"
    cfg = parse_config(apply_overrides(dict(tiny_raw_config, distill={"aggregator": {"name": "meta", "form": "joint"}}),
                                       ["distill.aggregator=weighted"]))
    assert cfg.distill.aggregator == "weighted"
    flat = parse_config(dict(tiny_raw_config, distill={"aggregator": "meta", "form": "joint"}))  # shorthand
    assert flat.aggregator_options.form == "joint"
    assert flat.to_dict()["distill"]["aggregator"]["form"] == "joint"
    assert flat.to_dict()["distill"]["recipe"] == "offline"  # a component without options stays a name


def test_a_flat_key_two_schemas_declare_is_refused_and_works_nested(monkeypatch, tiny_raw_config):
    class ClashOptions(BaseModel):
        model_config = ConfigDict(extra="forbid")
        temperature: float = 1.0  # also a distill key

    class Clash(ToyAggregator):
        Options = ClashOptions

        def __init__(self, ctx, options=None):
            nn.Module.__init__(self)
            self.sharpness = 1.0

    monkeypatch.setitem(AGGREGATORS, "clash", Clash)
    with pytest.raises(ConfigError, match=r"distill.temperature: a key of both distill and aggregator 'clash'"):
        parse_config(dict(tiny_raw_config, distill={"aggregator": "clash", "temperature": 2.0}))
    cfg = parse_config(dict(tiny_raw_config, distill={"aggregator": {"name": "clash", "temperature": 2.0},
                                                      "temperature": 3.0}))
    assert cfg.aggregator_options.temperature == 2.0 and cfg.distill.temperature == 3.0
    with pytest.raises(ConfigError, match=r"distill.form: given twice"):
        parse_config(dict(tiny_raw_config, distill={"aggregator": {"name": "meta", "form": "joint"}, "form": "joint"}))


# ---------------------------------------------------------------- the Python API honours a setting or refuses it

def test_the_api_refuses_settings_it_cannot_honour_and_caches_when_asked(tmp_path):
    import mtkd
    from mtkd import BatchLoader, IndexedTensorDataset

    torch.manual_seed(0)
    x = torch.randn(64, 6)
    data = IndexedTensorDataset(x, (x[:, 0] > 0).long())
    teacher, student = nn.Linear(6, 2), nn.Linear(6, 2)
    for settings, message in [({"cache": "auto"}, "distill.cache: caching teacher outputs needs"),
                              ({"batch_size": 16}, r"batch_size=16: the batches come from train_loader \(batch size 8\)"),
                              ({"baseline": True}, "baseline: not a setting of mtkd.distill")]:
        with pytest.raises(ConfigError, match=message):
            mtkd.distill(student, [teacher], BatchLoader(data, 8), steps=2, progress=False, **settings)
    mtkd.distill(student, [teacher], BatchLoader(data, 8), steps=2, progress=False, cache="always",
                 cache_dir=tmp_path / "cache", batch_size=8)
    # one entry (beside it, the entry's hidden lock files)
    assert [p.name.split("-")[0] for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")] == ["teacher0"]


# ---------------------------------------------------------------- docs/extending.md stays true

def _extending_blocks() -> list[str]:
    import re

    page = (Path(__file__).parent.parent / "docs" / "extending.md").read_text()
    return re.findall(r"```python\n(.*?)```", page, re.S)


def test_the_aggregator_written_in_the_extending_page_runs(monkeypatch):
    """The page's example aggregator, as written (its relative import made absolute), added with
    its one table entry: it distils, and its weights are a distribution per sample."""
    import mtkd

    source = next(b for b in _extending_blocks() if b.startswith("# src/mtkd/aggregation/sharpest.py"))
    namespace: dict = {}
    exec(compile(source.replace("from .base import", "from mtkd.aggregation.base import"), "sharpest.py", "exec"),
         namespace)
    entry = next(b for b in _extending_blocks() if b.strip().startswith('"sharpest":'))
    assert entry.strip() == '"sharpest": SharpestAggregator,'
    monkeypatch.setitem(AGGREGATORS, "sharpest", namespace["SharpestAggregator"])
    torch.manual_seed(0)
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    teachers = [nn.Linear(8, 3), nn.Linear(8, 3)]
    weights = namespace["SharpestAggregator"](None)(torch.stack([t(x) for t in teachers]).detach(), y, 4.0).weights
    assert weights.shape == (64, 2) and torch.allclose(weights.sum(1), torch.ones(64))
    student = nn.Linear(8, 3)
    before = student.weight.detach().clone()
    mtkd.distill(student, teachers, mtkd.BatchLoader(mtkd.IndexedTensorDataset(x, y), batch_size=16), steps=3,
                 aggregator={"name": "sharpest", "sharpness": 3.0}, progress=False)
    assert not torch.equal(before, student.weight)


def test_the_code_quoted_in_the_extending_page_is_the_code():
    """The page quotes the Recipe protocol and the offline step: each quoted line is in the source."""
    root = Path(__file__).parent.parent / "src" / "mtkd"
    quoted = {"class Recipe(Protocol):": root / "recipes" / "base.py", "def step(self, x, y, index):": root /
              "recipes" / "offline.py"}
    for block in _extending_blocks():
        head = block.strip().splitlines()[0]
        if head not in quoted:
            continue
        source = " ".join(quoted[head].read_text().split())
        for line in block.strip().splitlines()[1:]:
            code = " ".join(line.split("#")[0].split()).removesuffix(" ...")  # a stub's body
            assert code in source, f"{quoted[head].name} has no line {code!r}"


# ---------------------------------------------------------------- user-facing text

ROOT = Path(__file__).parent.parent


def test_user_facing_text_cites_papers_not_internal_documents():
    """README, CONTRIBUTING, the docs, examples and the source (docstrings, errors) name no
    "seed document" and no issue number a user could not resolve."""
    import re

    banned = re.compile(r"seed[ -]?doc|\bissues?\s*#?\s*\d+|\bthe issue\b", re.I)
    files = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *(ROOT / "docs").rglob("*.md"),
             *(ROOT / "src" / "mtkd").rglob("*.py"), *(ROOT / "examples").rglob("*.py")]
    found = [f"{f.relative_to(ROOT)}:{i}: {line.strip()}" for f in files
             for i, line in enumerate(f.read_text().splitlines(), 1) if banned.search(line)]
    assert found == []


def test_the_readme_stays_short():
    assert len((ROOT / "README.md").read_text().splitlines()) < 200  # the rest lives in the docs site
