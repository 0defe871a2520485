"""Training checkpoints, and the run folder they live in: everything needed to continue a run
exactly where it stopped, and nothing that a crash or a second run could silently spoil.

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

What keeps a checkpoint good:
- the write is atomic (miniclip.checkpoint.atomic_write): an interrupted save leaves the previous
  checkpoint as it was (and, after kill -9, a hidden .tmp-* file, which the next run removes);
- a diverged state is never saved: every weight and optimizer moment must be finite (checked on the
  host copy that the save makes anyway, so it costs no read from the GPU);
- one live run per folder: the run holds an flock on <run>/.lock, so a second run with the same
  --name stops with a message instead of mixing its checkpoints and metrics into the first's.
"""
import contextlib
import fcntl
import glob
import json
import os
import warnings

from miniclip.checkpoint import load_safetensors, read_safetensors_metadata, save_safetensors
from miniclip.creation import get_rng
from miniclip.errors import UserError
from miniclip.models import TRAINING_STATE_PREFIX, model_metadata, model_tensors
from miniclip.models.factory import non_finite_tensors

TRAINING_KEY = "miniclip_training"
LOCK_FILE = ".lock"
TEMPORARY_PREFIX = ".tmp-"   # miniclip.checkpoint.atomic_write's temporary files


class NonFiniteState(ArithmeticError):
    """The weights or optimizer moments hold NaN or infinity: a diverged run, not saved."""


def save_training_state(path, model, tokenizer, optimizer, progress, args, grad_scaler=None):
    """Write a checkpoint; progress = {"step", "epoch", "batch"}: what is done so far;
    grad_scaler: the float16 loss scaler (--precision amp), or None.
    Raises NonFiniteState, writing nothing, if a weight or a moment is not finite."""
    tensors = model_tensors(model)
    optimizer_state = optimizer.state_dict()
    scalars = {}
    for index, state in optimizer_state["state"].items():
        for name, value in state.items():
            if hasattr(value, "shape"):
                tensors[f"{TRAINING_STATE_PREFIX}{index}.{name}"] = value
            else:
                scalars.setdefault(str(index), {})[name] = value
    bad = non_finite_tensors(tensors)
    if bad:
        raise NonFiniteState(f"{len(bad)} of {len(tensors)} weight and optimizer tensors hold NaN or "
                             f"infinity ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''})")
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
    training = training_metadata(path)
    tensors, _ = load_safetensors(path)
    bad = non_finite_tensors(tensors)
    if bad:   # written before saves were checked: a diverged run
        raise UserError(f"--resume {path}: {len(bad)} tensors hold NaN or infinity ({bad[0]}, ...); "
                        f"resume from an earlier checkpoint of the run")
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


def training_metadata(path):
    """The training state (step, data position, optimizer scalars, flags) saved in a checkpoint's
    metadata; a UserError if the file is a model file or its training state is unreadable."""
    metadata = read_safetensors_metadata(path)
    if TRAINING_KEY not in metadata:
        raise UserError(f"{path} is a model file, not a training checkpoint (no optimizer state or "
                        f"step); to start from its weights use --pretrained {path}")
    try:
        training = json.loads(metadata[TRAINING_KEY])
        for key in ("step", "epoch", "batch"):
            int(training[key])
    except (ValueError, KeyError, TypeError) as error:
        raise UserError(f"{path}: its training state ({TRAINING_KEY} metadata) is unreadable: {error!r}") from None
    return training


def checkpoint_step(path):
    return training_metadata(path)["step"]


def latest_checkpoint(folder):
    """The training checkpoint in `folder` with the most steps done, or None. A file there that is
    not a readable training checkpoint (a model file, a copied-in or damaged file) is skipped with a
    warning naming it, so that it cannot block `--resume latest`."""
    steps = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.safetensors"))):
        try:
            steps[path] = checkpoint_step(path)
        except (UserError, OSError) as error:   # the reader checks the whole header, offsets included
            warnings.warn(f"--resume latest: skipping {path}: not a readable training checkpoint ({error})",
                          stacklevel=2)
    return max(steps, key=steps.get) if steps else None


@contextlib.contextmanager
def own_run_folder(run_folder, resuming):
    """Hold the run folder for one run, from before it reads anything there to its end.

    - The lock: an exclusive flock on <run>/.lock (holding the pid, for the message). A second run
      with the same --name, even with --resume, stops here while the first lives. The kernel drops
      an flock when its process ends, however it ends (kill -9 too), so a dead run's lock never
      blocks; the file itself stays (deleting it would let two runs lock two different files).
    - A folder that already holds a run needs --resume: a new run would overwrite its checkpoints,
      replace its config.json and append to its metrics.jsonl, and `--resume latest` would later
      mix the two runs' checkpoints.
    - The .tmp-* files of saves that kill -9 interrupted are removed: the lock says no save is
      running."""
    os.makedirs(run_folder, exist_ok=True)
    path = os.path.join(run_folder, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise UserError(f"{run_folder} is in use by a run that is still going (process {holder}, which "
                            f"holds {path}): wait for it to end, or choose another --name") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        held = sorted(set(os.listdir(run_folder)) - {LOCK_FILE})
        if held and not resuming:
            raise UserError(f"{run_folder} already holds a run ({', '.join(held)}): continue it with "
                            f"--resume latest, or choose another --name (a run never writes over another)")
        removed = remove_temporaries(run_folder)
        if removed:
            print(f"removed {len(removed)} temporary files left by an interrupted save: {', '.join(removed)}")
        yield
    finally:
        os.close(fd)   # and with it the lock


def remove_temporaries(run_folder):
    """Delete the .tmp-* files in the run folder and its checkpoints/; return their paths."""
    paths = [path for folder in (run_folder, os.path.join(run_folder, "checkpoints"))
             for path in sorted(glob.glob(os.path.join(folder, TEMPORARY_PREFIX + "*")))]
    for path in paths:
        os.remove(path)
    return paths
