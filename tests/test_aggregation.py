import math

import pytest
import torch

from mtkd.aggregation import AGGREGATORS, AggregatorContext, build_aggregator
from mtkd.errors import ConfigError

LN3 = math.log(3.0)
# two teachers, one sample, two classes: teacher 0 says [0.75, 0.25], teacher 1 [0.25, 0.75] (at T=1)
LOGITS = torch.tensor([[[LN3, 0.0]], [[0.0, LN3]]])
LABELS = torch.tensor([0])


def ctx(k, weights=None):
    return AggregatorContext(teachers=[None] * k, num_classes=2, teacher_weights=weights)


def full_ctx(k, c, features=6):
    """Real teachers, a validation split and a feature width: what the pipeline gives aggregators."""
    from torch import nn

    from mtkd.data import IndexedTensorDataset
    from mtkd.teachers import FrozenTeacher

    teachers = [FrozenTeacher(nn.Linear(3, c), f"t{i}", c) for i in range(k)]
    val = IndexedTensorDataset(torch.randn(20, 3), torch.randint(0, c, (20,)))
    return AggregatorContext(teachers, c, None, val, features)


@pytest.mark.parametrize("name", sorted(AGGREGATORS))
def test_every_aggregator_returns_distributions_and_weights(name):
    torch.manual_seed(0)
    k, b, c = 3, 5, 4
    agg = build_aggregator(name, full_ctx(k, c))
    student = torch.randn(b, c, requires_grad=True)
    target, weights, _ = agg(torch.randn(k, b, c), torch.randint(0, c, (b,)), 2.0, student_logits=student,
                             features=torch.randn(b, 6))
    assert target.shape == (b, c) and weights.shape == (b, k)
    assert torch.allclose(target.sum(1), torch.ones(b), atol=1e-6)
    assert torch.allclose(weights.sum(1), torch.ones(b), atol=1e-6)
    assert (target >= 0).all() and (weights >= 0).all()
    assert AGGREGATORS[name].description


def test_mean_averages_probabilities():
    target, weights, _ = build_aggregator("mean", ctx(2))(LOGITS, LABELS, 1.0)
    assert torch.allclose(target, torch.tensor([[0.5, 0.5]]))
    assert torch.allclose(weights, torch.tensor([[0.5, 0.5]]))


def test_mean_softens_at_temperature():
    target, _, _ = build_aggregator("mean", ctx(1))(LOGITS[:1], LABELS, 2.0)
    # softmax([ln3 / 2, 0]) = [sqrt3, 1] / (sqrt3 + 1)
    s3 = math.sqrt(3.0)
    assert torch.allclose(target, torch.tensor([[s3 / (s3 + 1), 1 / (s3 + 1)]]))


def test_weighted_uses_normalized_fixed_weights():
    target, weights, _ = build_aggregator("weighted", ctx(2, [3.0, 1.0]))(LOGITS, LABELS, 1.0)
    # 0.75 * [0.75, 0.25] + 0.25 * [0.25, 0.75] = [0.625, 0.375]
    assert torch.allclose(target, torch.tensor([[0.625, 0.375]]))
    assert torch.allclose(weights, torch.tensor([[0.75, 0.25]]))


@pytest.mark.parametrize("bad", [[1.0], [-1.0, 2.0], [0.0, 0.0]])
def test_weighted_rejects_bad_weights(bad):
    with pytest.raises(ConfigError):
        build_aggregator("weighted", ctx(2, bad))


# a third teacher that is undecided: [0.5, 0.5]
LOGITS3 = torch.cat([LOGITS, torch.zeros(1, 1, 2)])


def test_confidence_weights_match_camkd_eq2():
    # CE of the teachers on label 0: -ln 0.75, -ln 0.25, -ln 0.5 -> exp(CE) = 4/3, 4, 2
    # softmax over teachers = [4/22, 12/22, 6/22]; w = (1 - softmax) / (K - 1)
    _, weights, _ = build_aggregator("confidence", ctx(3))(LOGITS3, LABELS, 1.0)
    assert torch.allclose(weights, torch.tensor([[9 / 22, 5 / 22, 8 / 22]]), atol=1e-6)
    target, weights, _ = build_aggregator("confidence", ctx(2))(LOGITS, LABELS, 1.0)
    assert torch.allclose(weights, torch.tensor([[0.75, 0.25]]), atol=1e-6)
    assert torch.allclose(target, torch.tensor([[0.625, 0.375]]), atol=1e-6)


def test_confidence_uses_the_ensemble_vote_for_unlabeled_samples():
    # teachers 0 and 2 vote for class 0 (mean probability [0.5, 0.5] -> argmax 0), like label 0
    _, labeled, _ = build_aggregator("confidence", ctx(3))(LOGITS3, LABELS, 1.0)
    _, unlabeled, _ = build_aggregator("confidence", ctx(3))(LOGITS3, torch.tensor([-1]), 1.0)
    assert torch.allclose(labeled, unlabeled)


def test_best_picks_the_right_teacher_with_highest_confidence():
    # label 0: teacher 0 right (0.75), teacher 2 right by tie-break (0.5), teacher 1 wrong -> teacher 0
    target, weights, _ = build_aggregator("best", ctx(3))(LOGITS3, LABELS, 1.0)
    assert weights.tolist() == [[1.0, 0.0, 0.0]]
    assert torch.allclose(target, torch.tensor([[0.75, 0.25]]))
    # label 1 where no teacher is right: the least wrong (highest probability on label 1)
    wrong = torch.tensor([[[2.0, 0.0]], [[1.0, 0.0]]])
    _, weights, _ = build_aggregator("best", ctx(2))(wrong, torch.tensor([1]), 1.0)
    assert weights.tolist() == [[0.0, 1.0]]


@pytest.mark.parametrize("name", ["confidence", "best"])
def test_a_teacher_that_is_always_wrong_gets_less_weight(name):
    torch.manual_seed(1)
    b, c = 64, 5
    labels = torch.randint(0, c, (b,))
    right = torch.nn.functional.one_hot(labels, c).float() * 3 + 0.3 * torch.randn(b, c)
    wrong = torch.nn.functional.one_hot((labels + 1) % c, c).float() * 3 + 0.3 * torch.randn(b, c)
    _, weights, _ = build_aggregator(name, ctx(2))(torch.stack([right, wrong]), labels, 4.0)
    assert (weights[:, 0] > weights[:, 1]).all()


def test_disagreement_measures_by_hand():
    from mtkd.aggregation.disagreement import pairwise_kl, vote_entropy

    # KL([.75,.25] || [.25,.75]) = 0.5 ln 3 in both directions
    assert pairwise_kl(LOGITS).item() == pytest.approx(0.5 * math.log(3), rel=1e-6)
    assert vote_entropy(LOGITS).item() == pytest.approx(math.log(2), rel=1e-6)
    same = LOGITS[:1].expand(3, -1, -1)
    assert pairwise_kl(same).item() == pytest.approx(0.0, abs=1e-7)
    assert vote_entropy(same).item() == pytest.approx(0.0, abs=1e-7)


def test_accuracy_weights_are_softmax_of_validation_accuracy():
    from torch import nn

    from mtkd.data import IndexedTensorDataset
    from mtkd.teachers import FrozenTeacher

    class Says(nn.Module):  # predicts class x[:, 0] where `right`, else the next class
        def __init__(self, right):
            super().__init__()
            self.right = right

        def forward(self, x):
            y = x[:, 0].long()
            y = torch.where(self.right, y, (y + 1) % 2)
            return torch.nn.functional.one_hot(y, 2).float() * 5

    x = torch.tensor([[0.0], [1.0], [0.0], [1.0]])
    val = IndexedTensorDataset(x, x[:, 0].long())
    always = FrozenTeacher(Says(torch.tensor([True] * 4)), "always", 2)
    half = FrozenTeacher(Says(torch.tensor([True, True, False, False])), "half", 2)
    never = FrozenTeacher(Says(torch.tensor([False] * 4)), "never", 2)
    agg = build_aggregator("accuracy", AggregatorContext([always, half, never], 2, None, val),
                           {"weight_temperature": 0.5})
    assert agg.accuracy.tolist() == [1.0, 0.5, 0.0]
    e = torch.exp(torch.tensor([2.0, 1.0, 0.0]))  # accuracy / 0.5
    _, weights, _ = agg(torch.zeros(3, 2, 2), torch.tensor([0, 1]), 1.0)
    assert torch.allclose(weights, (e / e.sum()).expand(2, -1))
    assert weights[0, 0] > weights[0, 1] > weights[0, 2]


def test_accuracy_without_validation_split_is_a_clear_error():
    with pytest.raises(ConfigError, match="needs a labeled validation split"):
        build_aggregator("accuracy", ctx(2))


def test_entropy_weights_match_ebkd():
    # H([.75, .25]) and H([.5, .5]) = ln 2; w_k = 1 - H_k / sum_j H_j (K = 2, so no rescaling)
    h0 = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    h1 = math.log(2)
    logits = torch.tensor([[[LN3, 0.0]], [[0.0, 0.0]]])
    _, weights, _ = build_aggregator("entropy", ctx(2))(logits, torch.tensor([-1]), 1.0)
    assert torch.allclose(weights, torch.tensor([[1 - h0 / (h0 + h1), 1 - h1 / (h0 + h1)]]), atol=1e-6)
    # K = 3: the reference weights sum to K - 1 = 2; ours are divided by 2
    _, weights3, _ = build_aggregator("entropy", ctx(3))(LOGITS3, LABELS, 1.0)
    h = torch.tensor([h0, h0, h1])
    assert torch.allclose(weights3, ((1 - h / h.sum()) / 2).unsqueeze(0), atol=1e-6)


def test_entropy_weights_are_equal_when_every_teacher_is_certain():
    # all entropies 0: H_k / sum_j H_j is 0 / 0; the limit of equal entropies gives 1/K each
    # (the unguarded formula gave 1 / (K - 1) each, rows summing to K / (K - 1))
    certain = torch.tensor([[[200.0, 0.0]], [[0.0, 200.0]], [[200.0, 0.0]]])
    target, weights, _ = build_aggregator("entropy", ctx(3))(certain, torch.tensor([-1]), 1.0)
    assert torch.allclose(weights, torch.full((1, 3), 1 / 3))
    assert torch.allclose(target, torch.tensor([[2 / 3, 1 / 3]]))


@pytest.mark.parametrize("vectors, cap, expected", [
    ([[1.0, 0.0], [-1.0, 0.0]], 1.0, [0.5, 0.5]),  # opposite gradients cancel
    ([[1.0, 0.0], [0.0, 2.0]], 1.0, [0.8, 0.2]),  # min of w^2 + 4 (1 - w)^2
    ([[1.0, 0.0], [0.0, 2.0]], 0.6, [0.6, 0.4]),  # the cap binds
    ([[2.0, 0.0], [1.0, 0.0]], 1.0, [0.0, 1.0]),  # the shorter vector alone
    ([[2.0, 0.0], [1.0, 0.0]], 0.3, [0.5, 0.5]),  # cap below 1/K: uniform
])
def test_aekd_min_norm_weights_by_hand(vectors, cap, expected):
    from mtkd.aggregation.aekd import min_norm_weights

    w = min_norm_weights(torch.tensor(vectors), cap, tolerance=1e-9, max_iterations=5000)
    assert torch.allclose(w, torch.tensor(expected), atol=1e-4)


def test_aekd_matches_a_brute_force_search():
    from mtkd.aggregation.aekd import min_norm_weights

    torch.manual_seed(3)
    v = torch.randn(3, 5).double()
    w = min_norm_weights(v, 0.6, tolerance=1e-10, max_iterations=20000)
    grid = torch.stack(torch.meshgrid(torch.linspace(0, 0.6, 241), torch.linspace(0, 0.6, 241), indexing="ij"), -1)
    grid = torch.cat([grid.reshape(-1, 2), 1 - grid.reshape(-1, 2).sum(1, keepdim=True)], 1)
    grid = grid[(grid[:, 2] >= 0) & (grid[:, 2] <= 0.6)].double()
    best = grid[((grid @ v).norm(dim=1)).argmin()]
    assert (w @ v).norm() <= (best @ v).norm() + 1e-9
    assert torch.allclose(w, best, atol=5e-3) and w.sum().item() == pytest.approx(1.0)


def test_aekd_favours_the_teacher_the_student_is_closest_to():
    # student predicts class 0; teacher 0 agrees, teacher 1 says class 1 -> weight moves to teacher 0
    teacher = torch.tensor([[[3.0, 0.0]] * 4, [[0.0, 3.0]] * 4])
    student = torch.tensor([[3.0, 0.0]] * 4)
    _, weights, _ = build_aggregator("aekd", ctx(2), {"weight_cap": 1.0})(teacher, torch.full((4,), -1), 1.0,
                                                                           student_logits=student)
    assert weights[0, 0] > 0.95


def test_adaptive_temperature_by_hand():
    # teacher 0: [.75, .25] -> confidence rescaled 0.5 -> T; teacher 1: [.5, .5] -> 0 -> T (1 + spread)
    # teacher 2: nearly one-hot -> ~1 -> T (1 - spread)
    logits = torch.tensor([[[LN3, 0.0]], [[0.0, 0.0]], [[50.0, 0.0]]])
    agg = build_aggregator("adaptive_temperature", ctx(3), {"spread": 0.5, "weight_temperature": 1.0})
    target, weights, temps = agg(logits, LABELS, 4.0)
    assert torch.allclose(temps, torch.tensor([[4.0, 6.0, 2.0]]), atol=1e-5)
    # weights proportional to the probability on the label: .75, .5, ~1
    assert torch.allclose(weights, torch.tensor([[0.75, 0.5, 1.0]]) / 2.25, atol=1e-5)
    # the target mixes each teacher softened at its own temperature
    p = torch.stack([torch.softmax(logits[k, 0] / temps[0, k], -1) for k in range(3)])
    assert torch.allclose(target[0], (weights[0].unsqueeze(1) * p).sum(0), atol=1e-6)


def test_adaptive_temperature_weighs_a_confidently_wrong_teacher_down():
    right = torch.tensor([[[4.0, 0.0]]])
    wrong = torch.tensor([[[0.0, 8.0]]])  # more confident, but wrong
    _, weights, _ = build_aggregator("adaptive_temperature", ctx(2))(torch.cat([right, wrong]), LABELS, 4.0)
    assert weights[0, 0] > 0.99


def test_meta_mmkd_hypergradient_matches_finite_differences_of_the_authors_procedure():
    # MMKD (train_meta.py): two KD-only virtual SGD steps, one CE step, outer CE on the same batch.
    # For a linear student s = W x the step gradients are analytic (no autograd below):
    #   d/dW mean_b sum_k w_bk T^2 KL(p_kb || softmax(s_b / T)) = mean_b T (q_b - sum_k w_bk p_kb) x_b^T
    #   d/dW CE = mean_b (softmax(s_b) - onehot(y_b)) x_b^T
    from torch import nn

    torch.manual_seed(0)
    dtype, t, lr = torch.float64, 2.0, 0.5
    x = torch.randn(4, 3, dtype=dtype)
    y = torch.tensor([0, 1, 1, 0])
    z = torch.randn(2, 4, 2, dtype=dtype) * 2  # K = 2 teachers, B = 4, C = 2
    student = nn.Linear(3, 2, bias=False).double()
    agg = build_aggregator("meta", AggregatorContext([None, None], 2, None, None, 3),
                           {"meta_every": 1, "virtual_lr": lr})
    agg.double()
    agg.meta_optimizer = torch.optim.SGD(agg.net.parameters(), lr=1e-3)  # phi moves by -1e-3 * hypergradient

    def outer(net_params, net_inputs):
        """The outer loss as a function of phi; the network reads the student's logits detached
        (as the authors' LogitsWeight(logit_t_list, logit_s.detach())), so they are given."""
        w_mat, seen = student.weight.detach().clone(), []
        p = torch.softmax(z / t, -1)  # [K, B, C]
        for i in range(2):
            s = x @ w_mat.t()
            seen.append(s)
            net_in = s if net_inputs is None else net_inputs[i]
            weights = torch.func.functional_call(agg.net, net_params, (None, z, net_in))  # [B, K]
            target = torch.einsum("bk,kbc->bc", weights, p)
            w_mat = w_mat - lr * t * (torch.softmax(s / t, -1) - target).t() @ x / 4
        s = x @ w_mat.t()
        w_mat = w_mat - lr * (torch.softmax(s, -1) - nn.functional.one_hot(y, 2)).t() @ x / 4
        return nn.functional.cross_entropy(x @ w_mat.t(), y), seen

    base = {n: p.detach().clone() for n, p in agg.net.named_parameters()}
    with torch.no_grad():
        base_loss, inputs = outer(base, None)
    expected = {}
    for n, p in base.items():
        g = torch.zeros_like(p)
        for i in range(p.numel()):
            up, down = dict(base), dict(base)
            e = torch.zeros_like(p).view(-1)
            e[i] = 1e-6
            up[n], down[n] = p + e.view_as(p), p - e.view_as(p)
            with torch.no_grad():
                g.view(-1)[i] = (outer(up, inputs)[0] - outer(down, inputs)[0]) / 2e-6
        expected[n] = g

    student_before = student.weight.detach().clone()
    # the recipe's loss closure is not used by this form: its virtual steps are KD-only, then CE-only
    agg.before_step(student, None, x, y, z, torch.tensor([True, True]), t,
                    lambda logits, kd: 0.5 * nn.functional.cross_entropy(logits, y) + 0.5 * kd)
    for n, p in agg.net.named_parameters():
        assert torch.allclose((base[n] - p.detach()) / 1e-3, expected[n], atol=1e-6), n
    assert agg.logged()["meta_outer"].item() == pytest.approx(base_loss.item(), rel=1e-9)
    assert torch.equal(student.weight, student_before)  # the virtual steps are discarded
    assert agg.net.net[0].in_features == 2 * 3 and agg.net.net[0].out_features == 3  # LogitsWeight: width // 2
