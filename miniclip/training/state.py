"""Training checkpoints: everything needed to continue a run exactly where it stopped.

One safetensors file per checkpoint, `<run>/checkpoints/epoch_<E>.safetensors` (end of an epoch)
or `step_<N>.safetensors` (a run stopped mid-epoch, e.g. by Ctrl-C). It holds
- the model's weights under OpenCLIP's key names, its config and the tokenizer's merges, so the
  file is also a model file: miniclip.load_model(path) and `python -m miniclip.zeroshot` read it;
- the optimizer's moments, as tensors named optimizer.<param index>.<name> (left out by load_model);
- as JSON metadata: the step, the data position (epoch, batches done in it), the optimizer's
  hyper-parameters and step counts, the state of miniclip's random generator, the float16 loss
  scale (--precision amp), and the flags.
Why this is enough for an exact resume: the learning rate is a function of the step, and a batch
is a function of (seed, epoch, batch index) (see miniclip/data/loader.py), so a resumed run sees
the same batches with the same weights and moments as the run that never stopped.
The write is atomic (miniclip.checkpoint.atomic_write): an interrupted save leaves the previous
checkpoint as it was.
"""
import glob
import json
import os

from miniclip.checkpoint import load_safetensors, read_safetensors_metadata, save_safetensors
from miniclip.creation import get_rng
from miniclip.models import TRAINING_STATE_PREFIX, model_metadata, model_tensors

TRAINING_KEY = "miniclip_training"


def save_training_state(path, model, tokenizer, optimizer, progress, args, grad_scaler=None):
    """Write a checkpoint; progress = {"step", "epoch", "batch"}: what is done so far;
    grad_scaler: the float16 loss scaler (--precision amp), or None."""
    tensors = model_tensors(model)
    optimizer_state = optimizer.state_dict()
    scalars = {}
    for index, state in optimizer_state["state"].items():
        for name, value in state.items():
            if hasattr(value, "shape"):
                tensors[f"{TRAINING_STATE_PREFIX}{index}.{name}"] = value
            else:
                scalars.setdefault(str(index), {})[name] = value
    training = {**progress, "param_groups": optimizer_state["param_groups"], "optimizer_scalars": scalars,
                "rng": get_rng().bit_generator.state, "args": vars(args)}
    if grad_scaler is not None:
        training["grad_scaler"] = grad_scaler.state_dict()
    metadata = model_metadata(model, tokenizer)
    metadata[TRAINING_KEY] = json.dumps(training)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_safetensors(path, tensors, metadata)


def load_training_state(path, model, optimizer, grad_scaler=None):
    """Restore the weights, the optimizer, the random generator and the loss scaler (when given
    and saved; a run that switches to --precision amp starts a fresh one); return the progress."""
    tensors, metadata = load_safetensors(path)
    if TRAINING_KEY not in metadata:
        raise SystemExit(f"{path} is a model file, not a training checkpoint (no optimizer state or "
                         f"step); to start from its weights use --pretrained {path}")
    training = json.loads(metadata[TRAINING_KEY])
    model.load_state_dict({k: v for k, v in tensors.items() if not k.startswith(TRAINING_STATE_PREFIX)})
    state = {}
    for key, value in tensors.items():
        if key.startswith(TRAINING_STATE_PREFIX):
            index, name = key[len(TRAINING_STATE_PREFIX):].split(".", 1)
            state.setdefault(int(index), {})[name] = value
    for index, scalars in training["optimizer_scalars"].items():
        state.setdefault(int(index), {}).update(scalars)
    optimizer.load_state_dict({"state": state, "param_groups": training["param_groups"]})
    get_rng().bit_generator.state = training["rng"]
    if grad_scaler is not None and "grad_scaler" in training:
        grad_scaler.load_state_dict(training["grad_scaler"])
    return {k: training[k] for k in ("step", "epoch", "batch")}


def checkpoint_step(path):
    return json.loads(read_safetensors_metadata(path)[TRAINING_KEY])["step"]


def latest_checkpoint(folder):
    """The checkpoint in `folder` with the most steps done, or None."""
    paths = glob.glob(os.path.join(folder, "*.safetensors"))
    return max(paths, key=checkpoint_step) if paths else None
