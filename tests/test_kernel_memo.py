"""The kernel factorizations kept between builds (``compressor.transforms.kernel_memo``): a kept one is
what computing it gives, a changed kernel never meets a stale one, and the memo stays within its size."""

from __future__ import annotations

import pytest
import torch

from compressor import apply, unet
from compressor.transforms import kernel_memo
from compressor.transforms.kernel_memo import input_channel_svd, input_gram_eigenvectors


@pytest.fixture(autouse=True)
def _empty_memo():
    kernel_memo.clear()
    yield
    kernel_memo.clear()


def kernel(out_channels: int = 32, in_channels: int = 256, seed: int = 0) -> torch.Tensor:
    """A 3x3 kernel large enough to be kept (the memo leaves small ones out)."""
    weight = torch.randn(out_channels, in_channels, 3, 3, generator=torch.Generator().manual_seed(seed))
    assert weight.numel() >= kernel_memo.SMALLEST_KEPT
    return weight


def computed(weight: torch.Tensor) -> torch.Tensor:
    """The eigenvectors as written out: Gram of the input-channel unfolding, largest first."""
    unfolded = weight.double().permute(1, 0, 2, 3).reshape(weight.shape[1], -1)
    return torch.linalg.eigh(unfolded @ unfolded.T)[1].flip(1)


def test_a_kept_factorization_is_the_computed_one_and_is_served_again():
    weight = kernel()
    first = input_gram_eigenvectors(weight)
    assert torch.equal(first, computed(weight))
    assert kernel_memo.stats()["misses"] == 1 and kernel_memo.stats()["hits"] == 0
    again = input_gram_eigenvectors(weight.clone())  # another tensor with the same bytes
    assert kernel_memo.stats()["hits"] == 1
    assert torch.equal(again, first) and again is not first


def test_a_kernel_changed_in_place_or_reshaped_is_factorized_anew():
    weight = kernel()
    before = input_gram_eigenvectors(weight).clone()
    with torch.no_grad():
        weight[3, 7, 1, 1] += 1.0
    after = input_gram_eigenvectors(weight)
    assert torch.equal(after, computed(weight))
    assert not torch.allclose(after.abs(), before.abs())
    transposed = weight.reshape(weight.shape[1], weight.shape[0], 3, 3)  # the same bytes, another kernel
    assert input_gram_eigenvectors(transposed).shape == (weight.shape[0], weight.shape[0])
    assert kernel_memo.stats() | {"bytes": 0} == {"hits": 0, "misses": 3, "entries": 3, "bytes": 0}


def test_kernels_alike_in_bytes_but_not_in_dtype_layout_or_threads_do_not_share_an_entry():
    """fp16 and bf16 kernels with the same bits are two kernels; a channels-last kernel is its contiguous
    copy (factorized from the same layout); another thread count is another entry."""
    bits = kernel().half()
    as_bf16 = bits.view(torch.bfloat16)
    assert torch.equal(input_gram_eigenvectors(bits), computed(bits))
    assert torch.equal(input_gram_eigenvectors(as_bf16), computed(as_bf16))
    assert kernel_memo.stats()["misses"] == 2
    weight = kernel(seed=4)
    assert torch.equal(input_gram_eigenvectors(weight.to(memory_format=torch.channels_last)), computed(weight))
    assert torch.equal(input_gram_eigenvectors(weight), computed(weight))
    assert kernel_memo.stats() | {"bytes": 0} == {"hits": 1, "misses": 3, "entries": 3, "bytes": 0}
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1 if threads != 1 else 2)
        input_gram_eigenvectors(weight)
    finally:
        torch.set_num_threads(threads)
    assert kernel_memo.stats()["misses"] == 4


def test_each_caller_gets_its_own_tensor_whatever_its_mode():
    weight = kernel()
    with torch.inference_mode():
        first = input_gram_eigenvectors(weight)
    first.mul_(-1)  # a caller changing what it got
    second = input_gram_eigenvectors(weight)
    assert kernel_memo.stats()["hits"] == 1
    assert torch.equal(second, computed(weight)) and not second.is_inference()
    second.add_(1.0)
    assert torch.equal(input_gram_eigenvectors(weight), computed(weight))


def test_small_kernels_are_not_kept():
    weight = torch.randn(4, 8, 3, 3)
    assert torch.equal(input_gram_eigenvectors(weight), computed(weight))
    assert kernel_memo.stats()["entries"] == 0


def test_the_memo_forgets_the_least_recently_used_beyond_its_limit(monkeypatch):
    one = 256 * 256 * 8  # the bytes of one 256-input factorization
    monkeypatch.setattr(kernel_memo, "LIMIT_BYTES", 2 * one)
    a, b, c = kernel(seed=1), kernel(seed=2), kernel(seed=3)
    input_gram_eigenvectors(a)
    input_gram_eigenvectors(b)
    input_gram_eigenvectors(a)  # a used last: b goes first
    input_gram_eigenvectors(c)
    assert kernel_memo.stats()["entries"] == 2 and kernel_memo.stats()["bytes"] <= 2 * one
    hits = kernel_memo.stats()["hits"]
    input_gram_eigenvectors(a)
    assert kernel_memo.stats()["hits"] == hits + 1
    input_gram_eigenvectors(b)
    assert kernel_memo.stats()["hits"] == hits + 1  # b was forgotten: computed again


def test_separable_triplets_are_the_svds_cut_to_the_rank_and_each_rank_is_its_own_entry():
    weight = kernel(out_channels=64, in_channels=128)
    slices = weight.double().permute(1, 0, 2, 3).reshape(128, 64, 9)
    u, s, vh = torch.linalg.svd(slices, full_matrices=False)
    for rank, kept in ((1, 1), (2, 2), (20, 9)):  # at most min(out, k*k) triplets
        got = input_channel_svd(weight, rank)
        assert [tuple(t.shape) for t in got] == [(128, 64, kept), (128, kept), (128, kept, 9)]
        assert all(torch.equal(a, b) for a, b in zip(got, (u[:, :, :kept], s[:, :kept], vh[:, :kept]), strict=True))
    assert kernel_memo.stats() | {"bytes": 0} == {"hits": 0, "misses": 3, "entries": 3, "bytes": 0}
    assert input_channel_svd(weight, 12)[1].shape == (128, 9)  # a rank beyond the kernel's reads rank 9's entry
    assert kernel_memo.stats()["hits"] == 1 and kernel_memo.stats()["entries"] == 3
    served = input_channel_svd(weight.to(memory_format=torch.channels_last), 2)
    served[0].mul_(-1)  # the caller's own copy
    assert kernel_memo.stats()["hits"] == 2
    assert torch.equal(input_channel_svd(weight, 2)[0], u[:, :, :2])
    assert input_gram_eigenvectors(weight).shape == (128, 128)  # the same kernel, another factorization
    assert kernel_memo.stats()["misses"] == 4


@pytest.mark.parametrize("recipe", [[{"name": "fire", "squeeze_ratio": 0.25}], [{"name": "separable"}]],
                         ids=["fire", "separable"])
def test_a_build_that_meets_kept_factorizations_is_the_build_that_computed_them(recipe):
    """Two builds of the same recipe from one trained network: the second is served from the memo,
    and both are bit for bit the same network."""
    torch.manual_seed(0)
    parent = unet(in_channels=1, num_classes=2, base_width=16, norm="batch").eval()
    torch.manual_seed(1)  # the new layers' random parts (squeeze channels beyond the rank) alike, as a search seeds
    first, _ = apply(parent, recipe, (1, 1, 32, 32), init="inherit", count_flops=False, diagnostics=False)
    misses = kernel_memo.stats()["misses"]
    assert misses > 0 and kernel_memo.stats()["hits"] == 0
    torch.manual_seed(1)
    second, _ = apply(parent, recipe, (1, 1, 32, 32), init="inherit", count_flops=False, diagnostics=False)
    assert kernel_memo.stats()["hits"] == misses and kernel_memo.stats()["misses"] == misses
    one, two = first.state_dict(), second.state_dict()
    assert one.keys() == two.keys()
    assert all(torch.equal(one[key], two[key]) for key in one)
