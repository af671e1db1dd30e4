"""EdgeFace (EdgeNeXt, CC BY-NC-SA weights) in plain torch with dequantised Linear weights.

The reference is the PyTorch model as distributed: the same module with ``Linear`` layers under
dynamic int8 quantisation, the state dict loaded as is, run one face at a time. Dynamic
quantisation also rounds each call's activations to 8 bits, so the reference differs from the
float weights it encodes by that rounding noise — and from *itself* between batch sizes by as
much (the reason the product dequantises). The bar is therefore statistical: on 200 LFW faces,
mean cosine ≥ 0.95 and min ≥ 0.90 to the reference (measured: XS 0.9727 / 0.9451, XXS
0.9628 / 0.9430), while our float module is batch-independent to 1e-5.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pura_client.datasets.lfw import LFWDataset, identification_split
from pura_client.embedding.aligned import AlignedEmbedder
from pura_client.embedding.edgeface import (
    EdgeFaceNet,
    build_edgenext,
    dequantized_state_dict,
    load_edgeface,
    read_state_dict,
)
from pura_client.embedding.image import load_rgb
from pura_client.embedding.registry import (
    EDGEFACE_XS_MODEL_ID,
    EDGEFACE_XXS_MODEL_ID,
    SFACE_MODEL_ID,
    get_model,
    network_file,
    weight_path,
)
from pura_client.embedding.types import MultiFacePolicy

from pura.errors import ConfigError

N_PARITY = 200


def _reference(model_id: str) -> torch.nn.Module:
    raw = read_state_dict(weight_path(network_file(get_model(model_id))))
    net = EdgeFaceNet(build_edgenext(dequantized_state_dict(raw)))
    ref: torch.nn.Module = torch.ao.quantization.quantize_dynamic(  # type: ignore[no-untyped-call]
        net, {torch.nn.Linear}, dtype=torch.qint8
    )
    ref.load_state_dict(raw, strict=True)  # the distributed file loads unchanged: same layout
    return ref.eval()


@pytest.mark.parametrize("model_id", [EDGEFACE_XS_MODEL_ID, EDGEFACE_XXS_MODEL_ID])
def test_state_dict_loads_strictly_and_gives_512_d(model_id: str) -> None:
    net = load_edgeface(get_model(model_id))
    chips = torch.randint(0, 256, (2, 112, 112, 3), dtype=torch.uint8)
    with torch.inference_mode():
        out = net(chips)
    assert out.shape == (2, 512) and torch.isfinite(out).all()


def test_refuses_a_non_edgeface_spec() -> None:
    with pytest.raises(ConfigError):
        load_edgeface(get_model(SFACE_MODEL_ID))


def test_edgeface_is_never_any_use() -> None:
    assert not get_model(EDGEFACE_XS_MODEL_ID).any_use
    assert "NC" in get_model(EDGEFACE_XXS_MODEL_ID).licence


@pytest.mark.slow
@pytest.mark.lfw
@pytest.mark.parametrize("model_id", [EDGEFACE_XS_MODEL_ID, EDGEFACE_XXS_MODEL_ID])
def test_matches_the_quantised_reference_on_lfw(lfw_dataset: LFWDataset, model_id: str) -> None:
    split = identification_split(N_PARITY, 3, n_non_enrolled=0, dataset=lfw_dataset)
    embedder = AlignedEmbedder(model_id, device="cpu", policy=MultiFacePolicy.CENTER)
    located = embedder.locate([load_rgb(g.path) for g in split.gallery])
    chips = np.stack([chip for _, _, chip in located if chip is not None])
    mine = embedder.embed_chips(chips)
    single = np.concatenate([embedder.embed_chips(chips[i : i + 1]) for i in range(20)])
    assert np.abs(single - mine[:20]).max() < 1e-5  # batch-independent
    ref = _reference(model_id)
    with torch.inference_mode():
        theirs = torch.cat([ref(torch.from_numpy(c[None])) for c in chips])
    theirs_unit = torch.nn.functional.normalize(theirs, dim=1).numpy()
    cosine = (mine * theirs_unit).sum(1)
    print(f"{model_id} float vs dynamic-int8 reference (1 face/call) on {len(chips)} LFW faces: "
          f"cosine mean {cosine.mean():.4f}, min {cosine.min():.4f}")
    assert cosine.mean() >= 0.95
    assert cosine.min() >= 0.90
