from pathlib import Path

import pytest

from mtkd.aggregation import AGGREGATORS
from mtkd.config import apply_overrides, load_config, parse_config
from mtkd.errors import ConfigError
from mtkd.pipeline import prepare
from mtkd.recipes import RECIPES

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


def test_there_are_shipped_configs_for_mnist1d_and_digits():
    names = {p.stem for p in CONFIGS}
    assert {"mnist1d", "digits"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads_and_validates(path):
    if "timm:" in path.read_text() or "torchvision:" in path.read_text():
        try:  # a torchvision built for another torch fails with RuntimeError, not ImportError
            import timm  # noqa: F401
            import torchvision  # noqa: F401
        except Exception:  # noqa: BLE001
            pytest.skip("timm/torchvision not usable here (extra: vision)")
    cfg = load_config(path, ["data.unlabeled=100"] if "mnist1d" in path.name else [])  # a small pool: fast
    assert (cfg.teachers or not RECIPES[cfg.distill.recipe].traits.needs_teachers) and cfg.student.arch
    if cfg.data.name == "digits":
        pytest.importorskip("sklearn")
    prepare(cfg)  # data loads, shapes and class counts agree


def test_defaults_make_a_short_config_work():
    cfg = parse_config({"teachers": [{"name": "t", "arch": "cnn1d"}]})
    assert cfg.data.name == "mnist1d" and cfg.student.arch == "mlp"
    assert cfg.distill.recipe == "offline" and cfg.distill.aggregator == "mean"
    assert cfg.distill.temperature == 4.0 and cfg.distill.alpha == 0.9
    resolved = cfg.to_dict()
    assert resolved["teachers"][0]["channels"] == 25 and resolved["teachers"][0]["train"]["steps"] == 3000


def test_resolved_config_round_trips():
    cfg = parse_config({"teachers": [{"name": "t", "arch": "gru", "hidden": 8}], "student": {"arch": "linear"}})
    assert parse_config(cfg.to_dict()).to_dict() == cfg.to_dict()


def test_overrides_set_nested_values_and_list_items():
    raw = {"teachers": [{"name": "a", "arch": "mlp"}], "distill": {"steps": 5}}
    out = apply_overrides(raw, ["distill.steps=100", "teachers[0].arch=gru", "teachers.0.hidden=16",
                                "student.hidden=[8, 8]", "distill.aggregator=weighted"])
    assert out["distill"]["steps"] == 100 and out["teachers"][0] == {"name": "a", "arch": "gru", "hidden": 16}
    assert out["student"]["hidden"] == [8, 8]
    assert raw["distill"]["steps"] == 5  # the input is not modified
    with pytest.raises(ConfigError, match="teachers.3 is not an item"):
        apply_overrides(raw, ["teachers.3.arch=mlp"])
    with pytest.raises(ConfigError, match="expected key.path=value"):
        apply_overrides(raw, ["distill.steps"])


@pytest.mark.parametrize("raw, message", [
    ({"data": {"name": "imagenet"}}, r"data.name: unknown data set 'imagenet' \(did you mean 'images'\?\); choose one of: arrays, csv, digits, hf_disk, images, mnist1d, npz, parquet"),
    ({"student": {"arch": "resnet"}}, r"student.arch: unknown model 'resnet'; choose one of: cnn1d, cnn2d, gpt, gru"),
    ({"distill": {"aggregator": "median"}},
     r"distill.aggregator: unknown aggregator 'median' \(did you mean 'mean'\?\); choose one of: " + ", ".join(sorted(AGGREGATORS))),
    ({"distill": {"recipe": "magic"}}, r"distill.recipe: unknown recipe 'magic'; choose one of: "
     + ", ".join(sorted(RECIPES))),
    ({"distill": {"temperature": 0}}, r"distill.temperature: Input should be greater than 0"),
    ({"distill": {"temperature": -1.5}}, r"distill.temperature: Input should be greater than 0"),
    ({"distill": {"batch_size": 0}}, r"distill.batch_size: Input should be greater than 0"),
    ({"distill": {"steps": -3}}, r"distill.steps: Input should be greater than 0"),
    ({"distill": {"steps": "many"}}, r"distill.steps: Input should be a valid integer"),
    ({"distill": {"temprature": 2}}, r"distill.temprature: unknown key for distill \(recipe 'offline', aggregator 'mean'\) \(did you mean 'temperature'\?\); allowed keys: steps"),
    ({"student": {"arch": "mlp", "channels": 3}}, r"student.channels: unknown key for model 'mlp'; allowed keys: num_classes, arch, hidden"),
    ({"teachers": [{"name": "t", "arch": "cnn1d", "train": {"steps": 0}}]}, r"teachers\[0\].train.steps: Input should be greater than 0"),
    ({"teachers": [{"arch": "cnn1d"}]}, r"teachers\[0\].name: required"),
    ({"teachers": [{"name": "t"}]}, r"teachers\[0\]: give 'arch'"),
    ({"teachers": [{"name": "t", "checkpoint": "/nonexistent/t.pt"}]}, r"teachers\[0\].checkpoint: file not found"),
    ({"teachers": [{"name": "t", "arch": "mlp"}, {"name": "t", "arch": "mlp"}]}, r"name 't' is used twice"),
    ({"teachers": [{"name": "t", "arch": "mlp", "num_classes": 5}], "student": {"arch": "mlp", "num_classes": 10}},
     r"teacher 't' has 5 classes but the student has 10"),
    ({"teachers": []}, r"recipe 'offline' needs at least one teacher"),
    ({"seeds": 1}, r"unknown section 'seeds' \(did you mean 'seed'\?\); allowed sections: seed, data"),
])
def test_bad_configs_name_the_key_and_what_is_allowed(raw, message):
    raw.setdefault("teachers", [{"name": "t", "arch": "mlp"}])
    with pytest.raises(ConfigError, match=message):
        parse_config(raw)


def test_teacher_classes_checked_against_the_data():
    cfg = parse_config({"data": {"name": "mnist1d", "num_samples": 100},
                        "teachers": [{"name": "t", "arch": "mlp", "num_classes": 4}]})
    with pytest.raises(ConfigError, match="teacher has 4 classes but the student has 10"):
        prepare(cfg)


def test_not_yaml_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("distill: {steps: [1, 2\n")
    with pytest.raises(ConfigError, match="is not valid YAML at line"):
        load_config(bad)
    binary = tmp_path / "model.pt"
    binary.write_bytes(bytes(range(256)))
    with pytest.raises(ConfigError):
        load_config(binary)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_no_component_option_is_shadowed_by_a_distill_key():
    """parse_distill gives a key to the first schema that declares it (distill, then recipe, then
    aggregator): an option sharing a name with a distill key (or a recipe's) could never be set."""
    from mtkd.aggregation import AGGREGATORS
    from mtkd.config import DistillConfig
    from mtkd.recipes import RECIPES

    base = set(DistillConfig.model_fields)
    for name, cls in {**RECIPES, **AGGREGATORS}.items():
        assert not base & set(cls.Options.model_fields), (name, base & set(cls.Options.model_fields))
    for recipe in RECIPES.values():
        for aggregator in AGGREGATORS.values():
            assert not set(recipe.Options.model_fields) & set(aggregator.Options.model_fields), (recipe, aggregator)


def test_progressive_temperature_schedule_is_settable_from_a_config():
    from mtkd.config import parse_distill

    base, _, recipe_options = parse_distill({"recipe": "progressive", "temperature_schedule": "constant"})
    assert recipe_options.temperature_schedule == "constant" and base.schedule == "cosine"
