"""Property-based checks of the projectors between feature layouts (FitNet regressors, TAS's
projector): every layout round-trips through the canonical [C, L] form, every pair of layouts
and shapes maps to the requested shape, and a channels-last grid is projected exactly as the same
grid channels-first."""
import torch
from hypothesis import given, settings, strategies as st

from mtkd.models.projectors import LocalToGlobalProjector, Projector, from_channels, map_shape, to_channels

dims = st.integers(1, 5)


@st.composite
def features(draw):
    """(layout, per-sample shape) of every kind a model's layer hands on."""
    layout = draw(st.sampled_from(["vector", "channels", "channels2d", "tokens", "channels_last"]))
    if layout == "vector":
        return "vector", (draw(dims),)
    if layout == "channels":
        return "channels", (draw(dims), draw(dims))  # [C, L]: a 1-D CNN
    if layout == "channels2d":
        return "channels", (draw(dims), draw(dims), draw(dims))  # [C, H, W]
    if layout == "tokens":
        return "tokens", (draw(dims), draw(dims))  # [T, D]
    return "channels_last", (draw(dims), draw(dims), draw(dims))  # [H, W, C]: a Swin stage


@settings(max_examples=60, deadline=None)
@given(features(), st.integers(1, 3))
def test_every_layout_round_trips_through_the_canonical_form(feature, batch):
    layout, shape = feature
    x = torch.randn(batch, *shape)
    assert torch.equal(from_channels(to_channels(x, layout), shape, layout), x)


@settings(max_examples=60, deadline=None)
@given(features(), features(), st.sampled_from([1, 3]), st.booleans())
def test_any_layout_maps_to_any_other_with_gradients(source, target, kernel, mix):
    (in_layout, in_shape), (out_layout, out_shape) = source, target
    torch.manual_seed(0)
    proj = Projector(in_shape, in_layout, out_shape, out_layout, kernel=kernel, mix_positions=mix)
    x = torch.randn(2, *in_shape, requires_grad=True)
    y = proj(x)
    assert y.shape == (2, *out_shape) and torch.isfinite(y).all()
    y.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@settings(max_examples=40, deadline=None)
@given(dims, dims, dims, dims, dims, dims)
def test_a_channels_last_grid_is_projected_as_the_same_grid_channels_first(h, w, c, h2, w2, c2):
    torch.manual_seed(0)
    first = Projector((c, h, w), "channels", (c2, h2, w2), "channels")
    last = Projector((h, w, c), "channels_last", (h2, w2, c2), "channels_last")
    last.load_state_dict(first.state_dict())  # the same 1x1 conv
    x = torch.randn(2, h, w, c)  # [B, H, W, C]
    assert map_shape((h, w, c), "channels_last") == (c, h, w)
    assert torch.allclose(last(x), first(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1), atol=1e-6)


def test_tas_projector_reaches_a_channels_last_grid():
    proj = LocalToGlobalProjector((4, 6, 6), "channels", (3, 3, 8), "channels_last")  # CNN map -> Swin grid
    assert proj(torch.randn(2, 4, 6, 6)).shape == (2, 3, 3, 8)
