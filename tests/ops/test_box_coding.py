"""encode / decode against the reference and torchvision's BoxCoder, hand-worked values, the
round trip, the decode clamp, broadcasting, dtypes and bad input."""

from __future__ import annotations

import math

import pytest
import ssd_reference as ref
import torch
from helpers import DEVICES, assert_close_to_reference, random_boxes, random_priors
from hypothesis import given, settings
from hypothesis import strategies as st

from ssd_ext import ops

CLAMP = math.log(1000 / 16)


def test_hand_worked_encode(device):
    boxes = torch.tensor([[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 0.2, 0.4]], device=device)
    priors = torch.tensor([[0.3, 0.4, 0.4, 0.4], [0.2, 0.2, 0.1, 0.2]], device=device)
    expected = torch.tensor([[0.0, 0.0, 0.0, 0.0],
                             [(0.1 - 0.2) / (0.1 * 0.1), 0.0, math.log(2) / 0.2, math.log(2) / 0.2]])
    assert_close_to_reference(ops.encode(boxes, priors), expected)
    # Other variances scale each part by its own variance.
    assert_close_to_reference(ops.encode(boxes, priors, (0.2, 0.5)),
                              expected * torch.tensor([0.5, 0.5, 0.4, 0.4]))


def test_hand_worked_decode(device):
    loc = torch.tensor([[0.0, 0.0, 0.0, 0.0], [-10.0, 0.0, math.log(2) / 0.2, math.log(2) / 0.2]],
                       device=device)
    priors = torch.tensor([[0.3, 0.4, 0.4, 0.4], [0.2, 0.2, 0.1, 0.2]], device=device)
    expected = torch.tensor([[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 0.2, 0.4]])
    assert_close_to_reference(ops.decode(loc, priors), expected)


@settings(max_examples=30, deadline=None)
@given(batch=st.integers(0, 3), num_priors=st.integers(0, 60), seed=st.integers(0, 2**31 - 1),
       variances=st.tuples(st.floats(0.05, 1.0), st.floats(0.05, 1.0)), batched=st.booleans())
def test_matches_reference_random(batch, num_priors, seed, variances, batched):
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, num_priors) if batched else (num_priors,)
    boxes = random_boxes(math.prod(shape), generator, min_size=0.01).reshape(*shape, 4)
    loc = (3 * torch.randn(*shape, 4, generator=generator)).reshape(*shape, 4)
    priors = random_priors(num_priors, generator)
    expected_encoded = ref.encode(boxes, priors, variances)
    expected_decoded = ref.decode(loc, priors, variances)
    for device in DEVICES:
        encoded = ops.encode(boxes.to(device), priors.to(device), variances)
        decoded = ops.decode(loc.to(device), priors.to(device), variances)
        assert encoded.shape == boxes.shape and decoded.shape == loc.shape
        assert_close_to_reference(encoded, expected_encoded, atol=1e-5)
        assert_close_to_reference(decoded, expected_decoded, atol=1e-5)


def test_round_trip(device):
    generator = torch.Generator().manual_seed(3)
    boxes = random_boxes(2 * 500, generator, dtype=torch.float64, min_size=0.01).reshape(2, 500, 4)
    priors = random_priors(500, generator, dtype=torch.float64)
    for variances in [(0.1, 0.2), (1.0, 1.0), (0.05, 0.7)]:
        encoded = ops.encode(boxes.to(device), priors.to(device), variances)
        round_trip = ops.decode(encoded, priors.to(device), variances)
        torch.testing.assert_close(round_trip.cpu(), boxes, rtol=1e-12, atol=1e-12)
    encoded = ops.encode(boxes.float().to(device), priors.float().to(device))
    round_trip = ops.decode(encoded, priors.float().to(device))
    torch.testing.assert_close(round_trip.cpu(), boxes.float(), rtol=1e-5, atol=1e-6)


def test_decode_clamps_size_offsets(device):
    priors = torch.tensor([[0.5, 0.5, 0.1, 0.2]], device=device)
    # l_w * v1 = 100 and 1e30 are clamped to log(1000/16): w = 0.1 * 62.5; small ones pass through.
    loc = torch.tensor([[0.0, 0.0, 500.0, 5e30], [0.0, 0.0, -500.0, CLAMP / 0.2 - 1]], device=device)
    decoded = ops.decode(loc, priors).cpu()
    assert torch.isfinite(decoded).all()
    width, height = decoded[:, 2] - decoded[:, 0], decoded[:, 3] - decoded[:, 1]
    assert width[0].item() == pytest.approx(0.1 * 62.5, rel=1e-5)
    assert height[0].item() == pytest.approx(0.2 * 62.5, rel=1e-5)
    assert width[1].item() == pytest.approx(0.1 * math.exp(-100), abs=1e-12)
    assert height[1].item() == pytest.approx(0.2 * math.exp(CLAMP - 0.2), rel=1e-5)
    assert_close_to_reference(decoded, ref.decode(loc.cpu(), priors.cpu()))


def test_nan_propagates_and_infinities(device):
    priors = torch.tensor([[0.5, 0.5, 0.1, 0.2]], device=device).expand(3, 4)
    loc = torch.tensor([[float("nan"), 0.0, 0.0, 0.0], [0.0, 0.0, float("nan"), 0.0],
                        [0.0, 0.0, float("-inf"), float("inf")]], device=device)
    decoded = ops.decode(loc, priors).cpu()
    assert torch.isnan(decoded[0, [0, 2]]).all() and not torch.isnan(decoded[0, [1, 3]]).any()
    assert torch.isnan(decoded[1, [0, 2]]).all()
    # -inf gives a zero width; +inf is clamped like any large offset.
    assert decoded[2, 0].item() == decoded[2, 2].item() == 0.5
    assert decoded[2, 3].item() - decoded[2, 1].item() == pytest.approx(0.2 * 62.5, rel=1e-5)
    assert_close_to_reference(decoded, ref.decode(loc.cpu(), priors.cpu()))
    boxes = torch.tensor([[0.2, 0.2, 0.2, 0.6], [float("nan"), 0.2, 0.4, 0.6]], device=device)
    encoded = ops.encode(boxes, priors[:2]).cpu()
    # A zero-width box encodes to -inf in its width (documented; match validates ground truth).
    assert encoded[0, 2].item() == float("-inf") and torch.isfinite(encoded[0, [0, 1, 3]]).all()
    assert torch.isnan(encoded[1, [0, 2]]).all()
    assert_close_to_reference(encoded, ref.encode(boxes.cpu(), priors[:2].cpu()))


@pytest.mark.parametrize(
    "boxes_shape, priors_shape, out_shape",
    [
        ((2, 7, 4), (7, 4), (2, 7, 4)),  # the common case: the kernel indexes priors modulo P
        ((2, 7, 4), (1, 7, 4), (2, 7, 4)),
        ((2, 7, 4), (2, 7, 4), (2, 7, 4)),
        ((3, 2, 7, 4), (2, 7, 4), (3, 2, 7, 4)),
        ((2, 1, 4), (7, 4), (2, 7, 4)),  # expanded in the wrapper
        ((4,), (7, 4), (7, 4)),
        ((2, 7, 4), (4,), (2, 7, 4)),
        ((7, 4), (2, 1, 4), (2, 7, 4)),
        ((7, 4), (1, 7, 4), (1, 7, 4)),  # priors with more dimensions: the full broadcast shape
        ((2, 7, 4), (1, 1, 7, 4), (1, 2, 7, 4)),
    ],
)
def test_broadcasting(device, boxes_shape, priors_shape, out_shape):
    generator = torch.Generator().manual_seed(5)
    boxes = random_boxes(math.prod(boxes_shape[:-1]), generator, min_size=0.01).reshape(boxes_shape)
    priors = random_priors(math.prod(priors_shape[:-1]), generator).reshape(priors_shape)
    loc = torch.randn(boxes_shape, generator=generator)
    encoded = ops.encode(boxes.to(device), priors.to(device))
    decoded = ops.decode(loc.to(device), priors.to(device))
    assert encoded.shape == out_shape and decoded.shape == out_shape
    assert_close_to_reference(encoded, ref.encode(boxes.expand(out_shape), priors))
    assert_close_to_reference(decoded, ref.decode(loc.expand(out_shape), priors))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_dtypes(device, dtype):
    generator = torch.Generator().manual_seed(0)
    boxes = random_boxes(2 * 40, generator, min_size=0.05).reshape(2, 40, 4).to(dtype)
    priors = random_priors(40, generator).to(dtype)
    loc = torch.randn(2, 40, 4, generator=generator).to(dtype)
    encoded = ops.encode(boxes.to(device), priors.to(device))
    decoded = ops.decode(loc.to(device), priors.to(device))
    assert encoded.dtype == dtype and decoded.dtype == dtype
    # The kernels compute half precision in float32 and round once, like the reference.
    tolerance = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float64 else dict(rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(encoded.cpu(), ref.encode(boxes, priors), **tolerance)
    torch.testing.assert_close(decoded.cpu(), ref.decode(loc, priors), **tolerance)


def test_mixed_and_integer_dtypes_promote(device):
    boxes = torch.tensor([[0, 0, 10, 20]], device=device)
    priors = torch.tensor([[5.0, 10.0, 10.0, 20.0]], device=device, dtype=torch.float64)
    encoded = ops.encode(boxes, priors)
    assert encoded.dtype == torch.float64
    assert_close_to_reference(encoded, torch.zeros(1, 4, dtype=torch.float64))
    assert ops.decode(torch.zeros(1, 4, device=device, dtype=torch.float16), priors).dtype == torch.float64
    assert ops.encode(boxes.half(), priors.float()).dtype == torch.float32


def test_non_contiguous_input(device):
    generator = torch.Generator().manual_seed(2)
    boxes = random_boxes(30, generator, min_size=0.01).to(device)
    priors = random_priors(30, generator).to(device)
    strided_boxes = torch.cat([boxes, boxes], dim=1)[:, ::2]
    strided_priors = priors.t().contiguous().t()
    assert not strided_boxes.is_contiguous() and not strided_priors.is_contiguous()
    assert_close_to_reference(ops.encode(strided_boxes, strided_priors),
                              ref.encode(strided_boxes.cpu(), priors.cpu()))
    assert_close_to_reference(ops.decode(strided_boxes, strided_priors),
                              ref.decode(strided_boxes.cpu(), priors.cpu()))


def test_empty_inputs(device):
    priors = random_priors(5).to(device)
    assert ops.encode(torch.zeros(0, 5, 4, device=device), priors).shape == (0, 5, 4)
    assert ops.decode(torch.zeros(0, 4, device=device), torch.zeros(0, 4, device=device)).shape == (0, 4)


def test_agrees_with_torchvision_box_coder():
    torchvision = pytest.importorskip("torchvision")
    from torchvision.models.detection._utils import BoxCoder

    coder = BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
    generator = torch.Generator().manual_seed(4)
    boxes = random_boxes(300, generator, min_size=0.01)
    priors = random_priors(300, generator)
    priors_xyxy = torchvision.ops.box_convert(priors, "cxcywh", "xyxy")
    assert_close_to_reference(ops.encode(boxes, priors), coder.encode_single(boxes, priors_xyxy),
                              rtol=1e-4, atol=1e-5)
    loc = 4 * torch.randn(300, 4, generator=generator)
    assert_close_to_reference(ops.decode(loc, priors), coder.decode_single(loc, priors_xyxy),
                              rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: ops.encode(torch.zeros(3, 5), torch.zeros(3, 4)), ValueError,
         "boxes must have a last dimension of size 4"),
        (lambda: ops.decode(torch.zeros(3, 4), torch.zeros(3, 3)), ValueError,
         "priors must have a last dimension of size 4"),
        (lambda: ops.encode(torch.zeros(2, 3, 4), torch.zeros(5, 4)), ValueError, "do not broadcast"),
        (lambda: ops.decode([[0, 0, 1, 1]], torch.zeros(1, 4)), TypeError, "loc must be a torch.Tensor"),
        (lambda: ops.encode(torch.zeros(1, 4), torch.zeros(1, 4, dtype=torch.bool)), TypeError,
         "priors must be a real"),
        (lambda: ops.encode(torch.zeros(1, 4), torch.zeros(1, 4, device="meta")), ValueError, "same device"),
        (lambda: ops.encode(torch.zeros(1, 4), torch.ones(1, 4), (0.1,)), ValueError,
         "variances must have two"),
        (lambda: ops.decode(torch.zeros(1, 4), torch.ones(1, 4), (0.1, 0.0)), ValueError,
         "variances must be positive"),
        (lambda: ops.decode(torch.zeros(1, 4), torch.ones(1, 4), (0.1, float("inf"))), ValueError,
         "variances must be positive"),
        (lambda: ops.decode(torch.zeros(1, 4), torch.ones(1, 4), (0.1, float("nan"))), ValueError,
         "variances must be positive"),
        (lambda: ops.decode(torch.zeros(1, 4), torch.ones(1, 4), 0.1), TypeError, "variances must be a pair"),
    ],
)
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_kernel_checks_reach_python_as_value_errors():
    with pytest.raises(ValueError, match="priors must have the shape of the trailing dimensions of boxes"):
        torch.ops.ssd_ext.encode(torch.zeros(2, 3, 4), torch.zeros(1, 3, 4), [0.1, 0.2])
    with pytest.raises(TypeError, match="same dtype"):
        torch.ops.ssd_ext.decode(torch.zeros(3, 4), torch.zeros(3, 4, dtype=torch.float64), [0.1, 0.2])
    with pytest.raises(ValueError, match="variances must be two positive finite values"):
        torch.ops.ssd_ext.decode(torch.zeros(3, 4), torch.ones(3, 4), [0.1, -0.2])
    with pytest.raises(ValueError, match="variances must be two positive finite values"):
        torch.ops.ssd_ext.encode(torch.zeros(3, 4), torch.ones(3, 4), [0.1])
    with pytest.raises(ValueError, match="loc must have a last dimension of size 4"):
        torch.ops.ssd_ext.decode(torch.zeros(3, 2), torch.ones(3, 4), [0.1, 0.2])
