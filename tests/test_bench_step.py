"""python -m miniclip.bench step: it runs, counts FLOPs right, and compares with OpenCLIP."""
import json
import os

import numpy as np
import pytest

from miniclip import bench, bench_step
from miniclip.models.config import load_config

TINY = {"embed_dim": 32, "vision_cfg": {"image_size": 16, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
        "text_cfg": {"context_length": 12, "vocab_size": 600, "width": 32, "heads": 2, "layers": 1}}


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY))
    return str(path)


def test_inputs_are_sot_ids_eot_and_padding():
    images, tokens = bench_step.make_inputs(TINY, 5)
    assert images.shape == (5, 3, 16, 16) and images.dtype == np.float32
    assert (tokens[:, 0] == 598).all() and ((tokens == 599).sum(axis=1) == 1).all()
    eot = tokens.argmax(axis=1)
    assert all((row[end + 1:] == 0).all() and (row[1:end] > 0).all() for row, end in zip(tokens, eot))


def test_step_runs_and_writes_json(tiny, tmp_path, capsys):
    out = tmp_path / "step.jsonl"
    bench.main(["step", "--model", tiny, "--batch", "4", "--batch", "6", "--steps", "2", "--warmup", "1",
                "--json", str(out)])
    printed = capsys.readouterr().out
    assert "GFLOP/s" in printed and "miniclip" in printed
    assert "miniclip's step reaches" in printed
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["batch"] for r in results] == [4, 6]
    for r in results:
        assert r["miniclip"]["step"] > 0 and r["openclip_flops"] == bench_step.step_flops(TINY, r["batch"])
        assert r["miniclip_flops"] == bench_step.step_flops(TINY, r["batch"], keep_token=True) < r["openclip_flops"]
        assert r["sgemm_gflops"] > 0


@pytest.mark.oracle
@pytest.mark.parametrize("name", ["tiny-vit-xs", "ViT-B-32"])
def test_forward_flops_match_torch_flop_counter(torch, open_clip, name):
    """torch counts every matmul but not the ones inside scaled_dot_product_attention."""
    from torch.utils.flop_counter import FlopCounterMode
    config = load_config(name)
    model = open_clip.CLIP(config["embed_dim"], config["vision_cfg"], config["text_cfg"])
    images, tokens = bench_step.make_inputs(config, 2)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        image = model.encode_image(torch.from_numpy(images), normalize=True)
        text = model.encode_text(torch.from_numpy(tokens), normalize=True)
        image @ text.T
    assert bench_step.forward_flops(config, 2, attention=False) == counter.get_total_flops()


@pytest.mark.parametrize("is_causal", [False, True])
def test_keep_token_flops_are_the_products_miniclips_transformer_computes(monkeypatch, is_causal):
    """Every product of the blocks' linears goes through amp.matmul_2d: their FLOPs summed must be
    the count of transformer_flops(..., attention=False, keep_token=True)."""
    from miniclip import amp, nn
    from miniclip.models.transformer import Transformer
    from miniclip.tensor import Tensor
    counted = []
    matmul_2d = amp.matmul_2d

    def counting(a, b, bias=None):
        counted.append(2 * a.shape[0] * a.shape[1] * b.shape[1])
        return matmul_2d(a, b, bias)
    monkeypatch.setattr(amp, "matmul_2d", counting)
    B, T, W, layers = 3, 7, 16, 2
    model = Transformer(W, layers, heads=2, act_layer=nn.GELU)
    model(Tensor(np.ones((B, T, W), np.float32)), is_causal=is_causal, keep_token=np.array([0, 6, 3]))
    assert sum(counted) == B * bench_step.transformer_flops(T, W, layers, attention=False, keep_token=True)


@pytest.mark.oracle
@pytest.mark.parametrize("precision", ["fp32", "amp", "amp_bf16"])
def test_vs_openclip_runs_both_and_reports_the_ratio(torch, open_clip, tiny, capsys, precision):
    result = bench_step.run(tiny, 4, steps=2, warmup=1, vs_openclip=True, threads=1, precision=precision)
    bench_step.print_result(result)
    assert result["openclip"]["step"] > 0 and result["openclip_peak_rss_gib"] > 0
    assert "miniclip / OpenCLIP step time" in capsys.readouterr().out


def test_openclips_side_runs_in_a_process_that_never_imports_miniclip():
    """(Importing miniclip sets thread settings that would slow torch down: see openclip_step.py.)"""
    import subprocess
    import sys
    from miniclip import openclip_step
    check = (f"import runpy, sys; runpy.run_path({openclip_step.__file__!r}, run_name='loaded'); "
             "print(sorted(m for m in sys.modules if m.split('.')[0] == 'miniclip'))")
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True, cwd="/")
    assert out.stdout.strip() == "[]"


def test_openclips_side_gets_the_environment_without_miniclips_thread_settings(monkeypatch):
    from miniclip import environment
    monkeypatch.setattr(environment, "SET_BY_MINICLIP", ("OMP_WAIT_POLICY",))
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    started = environment.environment_as_started()
    assert "OMP_WAIT_POLICY" not in started and started["PATH"] == os.environ["PATH"]
