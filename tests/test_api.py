"""The Python API with plain torch modules and a plain DataLoader."""
import pytest
import torch
from torch import nn

import mtkd
from mtkd.errors import TeacherError


def _loader(n=256, seed=0, batch=32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch, shuffle=True,
                                       generator=torch.Generator().manual_seed(seed)), (x, y)


def test_distill_any_modules_with_a_torch_dataloader():
    torch.manual_seed(0)
    loader, (x, y) = _loader()
    teachers = {"a": nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 2)), "b": nn.Linear(8, 2)}
    for t in teachers.values():
        mtkd.train(t, loader, steps=150, progress=False)
    before = {k: v.clone() for k, v in teachers["a"].state_dict().items()}
    student = nn.Linear(8, 2)
    out = mtkd.distill(student, teachers, loader, steps=150, temperature=2.0, progress=False, val_data=(x, y))
    assert out is student
    acc = mtkd.accuracy(student, mtkd.IndexedTensorDataset(x, y))
    assert acc > 0.9  # a linear rule: teachers and student learn it
    assert all(torch.equal(v, before[k]) for k, v in teachers["a"].state_dict().items())


def test_api_defaults_are_the_cli_defaults():
    from mtkd.config import DistillConfig

    cfg, aggregator_options, recipe_options = mtkd.api._settings()
    assert cfg == DistillConfig()


def test_api_validates_settings_and_teachers():
    loader, _ = _loader()
    with pytest.raises(mtkd.ConfigError, match="distill.temperature"):
        mtkd.distill(nn.Linear(8, 2), [nn.Linear(8, 2)], loader, temperature=-1, progress=False)
    with pytest.raises(mtkd.ConfigError, match="distill.stepz: unknown key for distill"):
        mtkd.distill(nn.Linear(8, 2), [nn.Linear(8, 2)], loader, stepz=3, progress=False)
    with pytest.raises(TeacherError, match="'teacher0'.*2 classes"):
        mtkd.distill(nn.Linear(8, 2), [nn.Linear(8, 5)], loader, steps=2, progress=False)


def test_api_checkpoint_resumes(tmp_path):
    loader, _ = _loader()
    torch.manual_seed(0)
    student = nn.Linear(8, 2)
    mtkd.distill(student, [nn.Linear(8, 2)], loader, steps=10, checkpoint=tmp_path / "c.pt", progress=False)
    assert (tmp_path / "c.pt").exists()
    again = nn.Linear(8, 2)
    mtkd.distill(again, [nn.Linear(8, 2)], loader, steps=10, checkpoint=tmp_path / "c.pt", progress=False)
    assert torch.equal(again.weight, student.weight)  # finished run: loaded, no further steps


def test_distill_does_not_skip_the_first_batch_of_a_batch_loader():
    x = torch.randn(40, 8)
    loader = mtkd.BatchLoader(mtkd.IndexedTensorDataset(x, (x[:, 0] > 0).long()), 10, seed=3)
    seen = []

    class Spy(nn.Linear):
        def forward(self, inp):
            if self.training:
                seen.append(inp.clone())
            return super().forward(inp)

    mtkd.distill(Spy(8, 2), [nn.Linear(8, 2)], loader, steps=4, progress=False)
    seen = [s for s in seen if len(s) == 10]  # not the 1-example probe of the class count
    expected = [b[0] for b in mtkd.BatchLoader(loader.dataset, 10, seed=3)]
    assert len(seen) == 4 and all(torch.equal(a, b) for a, b in zip(seen, expected))
