import math

import pytest
import torch

from mtkd.losses import LOSSES, ce_loss, kd_ce_loss, kd_loss, kd_loss_per_sample


def test_kd_loss_matches_hand_computed_value():
    # target [0.75, 0.25]; student logits [0, 0] at T=2 -> q = [0.5, 0.5]
    # KL = 0.75 ln(1.5) + 0.25 ln(0.5) = 0.130812..., times T^2 = 4
    target = torch.tensor([[0.75, 0.25]])
    student = torch.tensor([[0.0, 0.0]])
    expected = 4 * (0.75 * math.log(1.5) + 0.25 * math.log(0.5))
    assert kd_loss(student, target, temperature=2.0).item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(0.523248, abs=1e-6)


def test_kd_loss_is_zero_when_student_matches_target():
    student = torch.tensor([[math.log(3.0), 0.0]])  # softmax at T=1: [0.75, 0.25]
    target = torch.tensor([[0.75, 0.25]])
    assert kd_loss(student, target, temperature=1.0).item() == pytest.approx(0.0, abs=1e-7)


def test_kd_loss_handles_zero_probabilities_in_target():
    target = torch.tensor([[1.0, 0.0]])
    student = torch.tensor([[0.0, 0.0]])  # q = [0.5, 0.5]; KL = 1 * ln 2
    assert kd_loss(student, target, temperature=1.0).item() == pytest.approx(math.log(2), rel=1e-6)


def test_kd_loss_per_sample_and_weights():
    target = torch.tensor([[0.75, 0.25], [0.5, 0.5]])
    student = torch.zeros(2, 2)
    per = kd_loss_per_sample(student, target, 1.0)
    assert per[1].item() == pytest.approx(0.0, abs=1e-7)
    weighted = kd_loss(student, target, 1.0, sample_weights=torch.tensor([1.0, 0.0]))
    assert weighted.item() == pytest.approx(per[0].item())


def test_ce_loss_skips_unlabeled_samples():
    logits = torch.tensor([[5.0, -5.0], [0.0, 0.0]])
    labels = torch.tensor([-1, 0])  # first sample unlabeled
    assert ce_loss(logits, labels).item() == pytest.approx(math.log(2), rel=1e-6)
    all_unlabeled = ce_loss(logits.requires_grad_(), torch.tensor([-1, -1]))
    assert all_unlabeled.item() == 0.0
    all_unlabeled.backward()  # still part of the graph


def test_kd_ce_loss_is_the_alpha_weighted_sum():
    logits = torch.tensor([[0.0, 0.0]])
    labels = torch.tensor([0])
    target = torch.tensor([[0.75, 0.25]])
    out = kd_ce_loss(logits, labels, target, temperature=2.0, alpha=0.25)
    ce, kd = math.log(2), 4 * (0.75 * math.log(1.5) + 0.25 * math.log(0.5))
    assert out["ce"].item() == pytest.approx(ce, rel=1e-6)
    assert out["kd"].item() == pytest.approx(kd, rel=1e-6)
    assert out["loss"].item() == pytest.approx(0.75 * ce + 0.25 * kd, rel=1e-6)


def test_every_listed_loss_has_a_description():
    for name, (fn, text) in LOSSES.items():
        assert callable(fn) and text, name


def test_multi_temperature_kd_by_hand():
    from mtkd.losses import multi_temperature_kd_loss

    teacher = torch.tensor([[[math.log(3.0), 0.0]], [[0.0, 0.0]]])  # [K=2, B=1, C=2]
    student = torch.tensor([[0.0, math.log(3.0)]])
    temps, weights = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.25, 0.75]])
    # teacher 0 at T=1: KL([.75,.25] || [.25,.75]) = 0.5 ln 3; teacher 1 at T=2: p = [.5,.5],
    # q = softmax([0, ln3 / 2]) = [1, sqrt3] / (1 + sqrt3); KL = -ln 2 - 0.5 (ln q0 + ln q1), times 4
    s3 = math.sqrt(3)
    kl1 = -math.log(2) - 0.5 * (math.log(1 / (1 + s3)) + math.log(s3 / (1 + s3)))
    expected = 0.25 * 0.5 * math.log(3) + 0.75 * 4 * kl1
    assert multi_temperature_kd_loss(student, teacher, temps, weights).item() == pytest.approx(expected, rel=1e-5)


def test_multi_temperature_kd_with_one_temperature_has_the_mixture_gradient():
    from mtkd.losses import multi_temperature_kd_loss

    torch.manual_seed(0)
    teacher, weights = torch.randn(3, 4, 5), torch.softmax(torch.randn(4, 3), 1)
    s1 = torch.randn(4, 5, requires_grad=True)
    s2 = s1.detach().clone().requires_grad_()
    multi_temperature_kd_loss(s1, teacher, torch.full((4, 3), 2.0), weights).backward()
    mixture = torch.einsum("bk,kbc->bc", weights, torch.softmax(teacher / 2.0, -1))
    kd_loss(s2, mixture, 2.0).backward()
    assert torch.allclose(s1.grad, s2.grad, atol=1e-6)
