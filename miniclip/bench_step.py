"""`python -m miniclip.bench step`: the time of one training step, phase by phase, and vs OpenCLIP.

    python -m miniclip.bench step --model tiny-vit-s --batch 64
    python -m miniclip.bench step --model tiny-vit-s --batch 64 --vs-openclip   # needs torch + open_clip

One step is what `python -m miniclip.train` does per batch: forward of both towers (normalised
features), the CLIP loss, backward, AdamW (lr 5e-4, betas (0.9, 0.98), eps 1e-6, wd 0.2, no decay on
gains, biases and the logit scale, as OpenCLIP), then the logit-scale clamp. Inputs are made once:
images N(0, 1) of shape (B, 3, S, S), texts SOT + random ids + EOT + zero padding, random lengths.

Reported: the median step time after warm-up (Numba compiles on the first call), the median of
each phase, achieved GFLOP/s (and, on the CPU, as a share of NumPy's own float32 matmul rate,
measured in the same run on the image tower's MLP product) and the peak resident memory of the
process. FLOPs of one step are counted from the architecture:
a transformer layer over T tokens of width W does 24*T*W^2 (the four W x W and two W x 4W
projections) + 4*T^2*W (Q K^T and P V) multiply-adds x 2 in the forward pass, and the backward
pass twice that, so a step is 3x the forward count (ModifiedResNet towers are not counted).
miniclip's last block of each tower computes only the token the tower reads (models/transformer.py),
so its step does fewer FLOPs than OpenCLIP's: each side's GFLOP/s is counted on the FLOPs it does.
(Its text tower also stops at the batch's longest caption; that is not counted: the benchmark's
random captions nearly fill the context.)

--vs-openclip then runs open_clip's model of the same config (pretrained=None) on the same inputs
for as many steps in a child process of its own, with the same number of threads, and reports
both: miniclip/openclip_step.py says why a process of its own (in one process, one framework's
spinning idle threads slow the other down 2.5x). Each side's peak memory is its own process's.

--precision amp (or amp_bf16) times the mixed-precision step of `python -m miniclip.train --precision
amp`: matmuls in float16 (bfloat16) under miniclip.amp.autocast, the loss scaled by a GradScaler
(float16 only), the optimizer step skipped on overflow; OpenCLIP's side runs under torch.autocast
with torch's GradScaler. (On the CPU miniclip's 16-bit matmuls run at float32 speed: see amp.py.)

--device cuda runs both on the GPU (CuPy arrays for miniclip, torch's CUDA tensors for OpenCLIP);
each phase then waits for the GPU (synchronize) before its clock stops, and the memory column is
the host process's, not the GPU's.
"""
import json
import statistics
import subprocess
import sys
import time

import numpy as np

from miniclip import amp, backend, environment, openclip_step, optim
from miniclip.losses import clip_loss
from miniclip.models import create_model
from miniclip.models.config import load_config
from miniclip.tensor import Tensor
from miniclip.train import parameter_groups   # OpenCLIP's split
from miniclip.training.options import PRECISIONS
# OpenCLIP's hyper-parameters and the inputs of the reference benchmark, the same for both sides
from miniclip.openclip_step import BETAS, EPS, LR, PHASES, WD, make_inputs, peak_rss_gib


def transformer_flops(tokens, width, layers, attention=True, keep_token=False):
    """Forward FLOPs of `layers` pre-LN blocks over `tokens` tokens (see the module docstring);
    attention=False leaves out Q K^T and P V (torch's flop counter does not see them in sdpa).
    keep_token=True: the last block computes one token's row, as miniclip's towers do: keys and
    values of every token (2 T W^2), that token's query, out_proj and MLP (10 W^2) and its
    attention over T keys (2 T W), multiply-adds x 2."""
    full = layers - 1 if keep_token else layers
    flops = 2 * full * (12 * tokens * width ** 2 + (2 * tokens ** 2 * width if attention else 0))
    if keep_token:
        flops += 2 * (2 * tokens * width ** 2 + 10 * width ** 2 + (2 * tokens * width if attention else 0))
    return flops


def forward_flops(config, batch, attention=True, keep_token=False):
    """FLOPs of the forward pass of both towers and the logits, or None for a ResNet image tower.
    keep_token=True counts miniclip's towers (the last block for the read token only), False
    OpenCLIP's (every token through every block)."""
    vision, text, embed = config["vision_cfg"], config["text_cfg"], config["embed_dim"]
    if isinstance(vision["layers"], (list, tuple)):
        return None
    patches = (vision["image_size"] // vision["patch_size"]) ** 2
    image = (2 * patches * 3 * vision["patch_size"] ** 2 * vision["width"]
             + transformer_flops(patches + 1, vision["width"], vision["layers"], attention, keep_token)
             + 2 * vision["width"] * embed)
    text_flops = (transformer_flops(text["context_length"], text["width"], text["layers"], attention, keep_token)
                  + 2 * text["width"] * embed)
    similarity = 2 * batch * embed   # per sample: one row of the B x B logits
    return batch * (image + text_flops + similarity)


def step_flops(config, batch, keep_token=False):
    """FLOPs of one training step: the backward pass costs twice the forward (dX and dW per product)."""
    forward = forward_flops(config, batch, keep_token=keep_token)
    return None if forward is None else 3 * forward


def sgemm_gflops(config, batch, seconds=0.5):
    """NumPy's own float32 matmul rate now, on the step's most common product: the image tower's
    MLP, (B * tokens, width) @ (width, 4 * width). The step's GFLOP/s is read against it."""
    vision = config["vision_cfg"]
    if isinstance(vision["layers"], (list, tuple)):   # a ResNet: the text tower's MLP instead
        width, tokens = config["text_cfg"]["width"], config["text_cfg"]["context_length"]
    else:
        width, tokens = vision["width"], (vision["image_size"] // vision["patch_size"]) ** 2 + 1
    rng = np.random.default_rng(0)
    a = rng.standard_normal((batch * tokens, width), np.float32)
    b = rng.standard_normal((width, 4 * width), np.float32)
    times = []
    started = time.perf_counter()
    while len(times) < 5 or time.perf_counter() - started < seconds:
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * a.shape[0] * width * 4 * width / statistics.median(times) / 1e9


class MiniclipStep:
    def __init__(self, config, images, tokens, device="cpu", precision="fp32"):
        self.model = create_model(config).to(device)
        self.optimizer = optim.AdamW(parameter_groups(self.model, WD), lr=LR, betas=BETAS, eps=EPS)
        self.images, self.tokens = backend.to_device(images, device), backend.to_device(tokens, device)
        self.wait = backend.synchronize
        self.low_precision = PRECISIONS[precision]
        self.scaler = amp.GradScaler() if self.low_precision == "float16" else None

    def clock(self):
        self.wait()
        return time.perf_counter()

    def __call__(self):
        """One step; returns {phase: seconds}."""
        t0 = self.clock()
        self.optimizer.zero_grad()
        with amp.autocast(self.low_precision):
            image_features = self.model.encode_image(Tensor(self.images), normalize=True)
            text_features = self.model.encode_text(self.tokens, normalize=True)
            t1 = self.clock()
            loss = clip_loss(image_features, text_features, self.model.logit_scale.exp())
            t2 = self.clock()
            loss.backward(grad=1.0 if self.scaler is None else self.scaler.scale)
        t3 = self.clock()
        overflow = self.scaler is not None and self.scaler.unscale_(self.model.parameters())
        if self.scaler is not None:
            self.scaler.update(overflow)
        if not overflow:
            self.optimizer.step()
        scale = self.model.logit_scale.data
        backend.get_array_module(scale).clip(scale, 0, np.log(100), out=scale)
        t4 = self.clock()
        return dict(zip(PHASES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)))


def summarise(phase_times):
    """{phase: median seconds, "step": median of the step totals}."""
    summary = {phase: statistics.median(t[phase] for t in phase_times) for phase in PHASES}
    summary["step"] = statistics.median(sum(t.values()) for t in phase_times)
    return summary


def openclip_child(config, batch, steps, warmup, threads, device, precision):
    """OpenCLIP's phase times and peak memory, from miniclip/openclip_step.py run as a script."""
    command = [sys.executable, openclip_step.__file__, json.dumps(config), str(batch), str(warmup), str(steps),
               str(threads), device, precision]
    done = subprocess.run(command, capture_output=True, text=True, env=environment.environment_as_started())
    if done.returncode != 0:
        raise RuntimeError(f"OpenCLIP's step failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(model, batch, steps=5, warmup=2, vs_openclip=False, threads=2, device="cpu", precision="fp32"):
    backend.reuse_freed_host_memory()   # as python -m miniclip.train does
    config = load_config(model)
    images, tokens = make_inputs(config, batch)
    ours = MiniclipStep(config, images, tokens, device, precision)
    for _ in range(warmup):
        ours()
    result = {"model": model, "batch": batch, "device": device, "precision": precision,
              "miniclip_flops": step_flops(config, batch, keep_token=True), "openclip_flops": step_flops(config, batch),
              "sgemm_gflops": sgemm_gflops(config, batch) if device == "cpu" else None}
    if not vs_openclip:
        result["miniclip"] = summarise([ours() for _ in range(steps)])
        result["miniclip_peak_rss_gib"] = peak_rss_gib()
        return result
    ours_times = [ours() for _ in range(steps)]
    result["miniclip"], result["miniclip_peak_rss_gib"] = summarise(ours_times), peak_rss_gib()
    theirs = openclip_child(config, batch, steps, warmup, threads, device, precision)
    result["openclip"], result["openclip_peak_rss_gib"] = summarise(theirs["phase_times"]), theirs["peak_rss_gib"]
    return result


def print_result(r):
    frameworks = [f for f in ("miniclip", "openclip") if f in r]
    print(f"model {r['model']}, batch {r['batch']}, {r['device']}, {r['precision']}: median seconds per phase")
    print(f"{'':10}" + "".join(f"{p:>11}" for p in (*PHASES, "step")) + f"{'GFLOP/s':>10}{'peak GiB':>10}")
    for f in frameworks:
        s, flops = r[f], r[f + "_flops"]
        rate = f"{flops / s['step'] / 1e9:10.1f}" if flops else f"{'n/a':>10}"
        print(f"{f:10}" + "".join(f"{s[p]:11.4f}" for p in (*PHASES, "step")) + rate
              + f"{r[f + '_peak_rss_gib']:10.2f}")
    if r["miniclip_flops"]:
        print(f"GFLOP/s on the FLOPs each side computes: miniclip {r['miniclip_flops'] / 1e9:.1f} GFLOP per step, "
              f"OpenCLIP {r['openclip_flops'] / 1e9:.1f} (miniclip's last blocks compute one token)")
    if r["miniclip_flops"] and r.get("sgemm_gflops"):
        print(f"NumPy's sgemm runs {r['sgemm_gflops']:.0f} GFLOP/s here now: miniclip's step reaches "
              f"{r['miniclip_flops'] / r['miniclip']['step'] / 1e9 / r['sgemm_gflops']:.0%} of it")
    if "openclip" in r:
        print(f"miniclip / OpenCLIP step time: {r['miniclip']['step'] / r['openclip']['step']:.2f}x "
              f"(below 1 means miniclip is faster)")
