"""OpenCLIP's training step, timed in a process of its own: the other side of `bench step --vs-openclip`.

    python miniclip/openclip_step.py CONFIG_JSON BATCH WARMUP STEPS THREADS DEVICE PRECISION

prints one JSON line: the phase times of every timed step and the process's peak memory.

Why a process of its own, run as a script: in one process, each framework's idle worker threads
(OpenBLAS's, Numba's OpenMP, torch's OpenMP) keep spinning after a call and take the two cores
from the other framework's next call; measured, OpenCLIP's tiny-vit-s batch-64 step took 3.25 s
next to miniclip and 1.30 s alone. And this file imports nothing from miniclip, and bench_step
starts it with the environment as it was before miniclip's thread settings (miniclip/environment.py;
OMP_WAIT_POLICY=PASSIVE alone costs torch ~10%), so OpenCLIP runs exactly as it does for its
users. The step mirrors miniclip/bench_step.py's MiniclipStep: forward of both towers, open_clip.ClipLoss, backward, AdamW with OpenCLIP's
hyper-parameters and no decay on gains, biases and the logit scale, the logit-scale clamp;
--precision amp / amp_bf16 run under torch.autocast (with torch's GradScaler for float16).
"""
import json
import resource
import sys
import time

import numpy as np

LR, BETAS, EPS, WD = 5e-4, (0.9, 0.98), 1e-6, 0.2
PHASES = ("forward", "loss", "backward", "optimizer")
AUTOCAST_DTYPES = {"fp32": None, "amp": "float16", "amp_bf16": "bfloat16"}


def make_inputs(config, batch, seed=0):
    """(images (B, 3, S, S) float32, token ids (B, context) int64) as the reference benchmark:
    images N(0, 1), texts SOT + random ids + EOT + zero padding, of random lengths."""
    rng = np.random.default_rng(seed)
    size = config["vision_cfg"]["image_size"]
    text = config["text_cfg"]
    images = rng.standard_normal((batch, 3, size, size)).astype(np.float32)
    tokens = np.zeros((batch, text["context_length"]), np.int64)
    sot, eot = text["vocab_size"] - 2, text["vocab_size"] - 1
    for row in tokens:
        length = int(rng.integers(3, text["context_length"] - 1))
        row[0], row[1:length + 1], row[length + 1] = sot, rng.integers(1, sot, length), eot
    return images, tokens


def peak_rss_gib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20   # Linux reports KiB


class OpenclipStep:
    """One training step of open_clip's CLIP (random init: the time does not depend on the weights)."""

    def __init__(self, config, images, tokens, threads, device="cpu", precision="fp32"):
        import open_clip
        import torch
        torch.set_num_threads(threads)
        self.torch, self.device = torch, device
        dtype = AUTOCAST_DTYPES[precision]
        self.autocast_dtype = None if dtype is None else getattr(torch, dtype)
        self.scaler = torch.amp.GradScaler(device) if dtype == "float16" else None
        self.model = open_clip.CLIP(**{k: v for k, v in config.items()
                                       if k in ("embed_dim", "vision_cfg", "text_cfg", "quick_gelu")}).to(device)
        self.loss = open_clip.ClipLoss()
        # open_clip_train's split (the rule miniclip.train.parameter_groups follows too)
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            exclude = p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name
            (no_decay if exclude else decay).append(p)
        self.optimizer = torch.optim.AdamW([{"params": no_decay, "weight_decay": 0.0},
                                            {"params": decay, "weight_decay": WD}], lr=LR, betas=BETAS, eps=EPS)
        self.images, self.tokens = torch.from_numpy(images).to(device), torch.from_numpy(tokens).to(device)

    def clock(self):
        if self.device == "cuda":
            self.torch.cuda.synchronize()
        return time.perf_counter()

    def __call__(self):
        """One step; returns {phase: seconds}."""
        t0 = self.clock()
        self.optimizer.zero_grad()
        with self.torch.autocast(self.device, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
            image_features = self.model.encode_image(self.images, normalize=True)
            text_features = self.model.encode_text(self.tokens, normalize=True)
            t1 = self.clock()
            loss = self.loss(image_features, text_features, self.model.logit_scale.exp())
            t2 = self.clock()
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()
        t3 = self.clock()
        if self.scaler is None:
            self.optimizer.step()
        else:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        with self.torch.no_grad():
            self.model.logit_scale.clamp_(0, np.log(100))
        t4 = self.clock()
        return dict(zip(PHASES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)))


def main(config_json, batch, warmup, steps, threads, device, precision):
    config = json.loads(config_json)
    step = OpenclipStep(config, *make_inputs(config, batch), threads, device, precision)
    for _ in range(warmup):
        step()
    times = [step() for _ in range(steps)]
    print(json.dumps({"phase_times": times, "peak_rss_gib": peak_rss_gib()}))


if __name__ == "__main__":
    config_json, batch, warmup, steps, threads, device, precision = sys.argv[1:]
    main(config_json, int(batch), int(warmup), int(steps), int(threads), device, precision)
